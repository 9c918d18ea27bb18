"""Bearer tokens for /v1 and the scope each operation needs.

`read` covers every GET. Any other method needs the scope its view method declares with `@scope(...)`; a
method that declares none needs `admin`, so an endpoint added without thought is closed, not open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request
from werkzeug.exceptions import Unauthorized

from janitor import errors
from janitor.config.tokens import ANONYMOUS, Caller, Tokens

F = TypeVar("F", bound=Callable[..., Any])
READ_METHODS = ("GET", "HEAD", "OPTIONS")


def scope(name: str) -> Callable[[F], F]:
    """Declare the scope a view method needs (stacks with flask-smorest's decorators in any order)."""
    def mark(fn: F) -> F:
        fn._janitor_scope = name  # type: ignore[attr-defined]
        return fn
    return mark


def caller() -> Caller:
    return getattr(g, "caller", ANONYMOUS)


def require(name: str, why: str = "") -> None:
    """Refuse with 403 FORBIDDEN naming the scope, unless the caller has it (or admin)."""
    who = caller()
    if not who.may(name):
        have = ", ".join(sorted(who.scopes)) or "none"
        raise errors.Forbidden(f"this needs the {name!r} scope{why}; token {who.name!r} has: {have}",
                               scope=name, token=who.name)


def _declared_scope() -> str:
    if request.method in READ_METHODS:
        return "read"
    view = current_app.view_functions.get(request.endpoint or "")
    cls = getattr(view, "view_class", None)
    method = getattr(cls, request.method.lower(), None) if cls else view
    return getattr(method, "_janitor_scope", "admin")


def caller_for(tokens: Tokens, authorization: str) -> Caller | None:
    """The caller an Authorization header names (anonymous when no token is configured), or None: the one
    reading of the header, for `check` and for the events endpoint's thin path (service/events/fast.py)."""
    if not tokens.enabled:
        return ANONYMOUS
    kind, _, given = authorization.partition(" ")
    return tokens.lookup(given.strip()) if kind.lower() == "bearer" and given.strip() else None


def check(tokens: Tokens) -> None:
    """Authenticate (401 without a valid token) and authorize (403 without the scope) a /v1 request."""
    if not tokens.enabled:
        g.caller = ANONYMOUS
    else:
        found = caller_for(tokens, request.headers.get("Authorization", ""))
        if found is None:
            error = Unauthorized("a valid bearer token is required: Authorization: Bearer <token>")
            error.data = {"headers": {"WWW-Authenticate": 'Bearer realm="registry-janitor"'}}  # type: ignore[attr-defined]
            raise error
        g.caller = found
    if request.endpoint is not None:  # unknown paths answer 404 as before
        require(_declared_scope())
