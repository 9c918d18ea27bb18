"""Bearer tokens for /v1: a chatops bot or tool presents one of API_TOKENS."""

from __future__ import annotations

import hmac

from flask import request
from werkzeug.exceptions import Unauthorized

from janitor.settings import Settings


def check_token(settings: Settings) -> None:
    if not settings.api_tokens:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given:
        if any(hmac.compare_digest(given.encode(), t.encode()) for t in settings.api_tokens):
            return
    error = Unauthorized("a valid bearer token is required: Authorization: Bearer <token>")
    error.data = {"headers": {"WWW-Authenticate": 'Bearer realm="registry-janitor"'}}  # type: ignore[attr-defined]
    raise error
