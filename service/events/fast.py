"""The registry's notifications served in front of Flask: POST /v1/events (and /v1/registries/{registry}/events)
with a good token and a good envelope, answered by a thin WSGI layer.

A registry delivers one event per POST, in sequence, so the cost of each answer caps how many events a
second it can send; Flask's request machinery (request and app contexts, hooks, flask-smorest's argument
parsing and response serialization) cost more CPU than the work itself. This layer does only what those
requests need, with the same pieces: the token read by `auth.caller_for` and the scope the view declares,
the envelope checked by `check_envelope`, the work and the answer by `routes.take`, the body written by the
app's JSON provider as `jsonify` writes it, the request id, the request counted in /metrics under the same
route.

It answers only a request that the Flask view would answer 200. Anything else goes on to Flask unchanged,
the body it read handed on with it, and Flask answers as it always has (one place for auth, errors, audit
and the OpenAPI document): another path or method, a query string, no Content-Length or one over
JANITOR_MAX_BODY_BYTES, no or a bad token or one without the scope, an unknown registry, a body that is
not JSON of a JSON media type, an envelope the checks refuse, a failure while taking it (`take` may run
twice: see there), debug mode or the request log at DEBUG (it would lack the line Flask logs).
tests/test_e2e_events_fast.py holds the two paths to the same answers.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from webargs.core import is_json
from werkzeug.http import parse_options_header

from janitor import logs
from janitor.config.tokens import Tokens
from service import auth, requestlog
from service.events import routes
from service.events.schemas import check_envelope
from service.metrics.collect import count_request
from service.state import DEFAULT, STATES, State

PATH = re.compile(r"/v1/(?:registries/([^/]+)/)?events")
ROUTES = ("/v1/events", "/v1/registries/{registry}/events")  # the route labels /metrics counts them under

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class ThinEvents:
    """WSGI middleware: `app.wsgi_app = ThinEvents(app, tokens)`, installed last by create_app."""

    def __init__(self, app: Flask, tokens: Tokens) -> None:
        self.app = app
        self.inner: WsgiApp = app.wsgi_app
        self.tokens = tokens
        self.scope: str = routes.Events.post._janitor_scope  # type: ignore[attr-defined]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            found = PATH.fullmatch(environ.get("PATH_INFO", ""))
            if found is not None:
                answer = self._answer(environ, found.group(1))
                if answer is not None:
                    start_response("200 OK", answer[0])
                    return [answer[1]]
        return self.inner(environ, start_response)

    def _state(self, registry: str | None) -> State | None:
        if registry is None:
            return self.app.extensions[DEFAULT]
        return self.app.extensions[STATES].get(registry)

    def _answer(self, environ: dict[str, Any], registry: str | None) -> tuple[list[tuple[str, str]], bytes] | None:
        """The headers and body of the 200 answer, or None to let Flask answer."""
        started = time.perf_counter()
        st = self._state(registry)
        if st is None or environ.get("QUERY_STRING") or self.app.debug or self.app.json.compact is False \
                or requestlog.log.isEnabledFor(logging.DEBUG):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            return None
        limit = self.app.config.get("MAX_CONTENT_LENGTH")
        if length < 0 or (limit is not None and length > limit):
            return None
        caller = auth.caller_for(self.tokens, environ.get("HTTP_AUTHORIZATION", ""))
        if caller is None or not caller.may(self.scope):
            return None
        if not is_json(parse_options_header(environ.get("CONTENT_TYPE", ""))[0].lower()):
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # for Flask, if it answers after all
        if len(body) != length:
            return None
        try:
            # As webargs reads a JSON body (core.parse_json): UTF-8, then the standard library's parser.
            envelope = check_envelope(json.loads(body.decode("utf-8")))
        except Exception:  # not JSON, not UTF-8, too deep, refused by the checks: Flask says why
            return None
        request_id = requestlog.request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        logs.bind(request_id=request_id, job_id=None, window_id=None)
        try:
            result = routes.take(st, envelope["events"])
        except Exception:  # Redis away, ...: Flask takes it again and answers in the one error shape
            return None
        finally:
            logs.clear()
        payload = f"{self.app.json.dumps(result, separators=(',', ':'))}\n".encode()
        count_request("POST", ROUTES[registry is not None], 200, started)
        return [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                (requestlog.HEADER, request_id)], payload
