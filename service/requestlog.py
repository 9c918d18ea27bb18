"""Request ids and one log line per request.

An incoming `X-Request-ID` (from a proxy or a bot) is kept when it is a sane token, otherwise one is made;
either way it goes back in the response's `X-Request-ID` and on every log record of the request, with the
job id when the request names or creates a job.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from janitor import logs

HEADER = "X-Request-ID"
_SANE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
log = logging.getLogger("service.request")


def request_id_from(header: str | None) -> str:
    """Honour the caller's id when it is safe to echo into headers and logs; otherwise make one."""
    if header and _SANE.match(header):
        return header
    return uuid.uuid4().hex


def install(app: Flask) -> None:
    @app.before_request
    def bind_ids() -> None:
        g.request_started = time.perf_counter()
        g.request_id = request_id_from(request.headers.get(HEADER))
        job_id = (request.view_args or {}).get("job_id")
        logs.bind(request_id=g.request_id, job_id=job_id if isinstance(job_id, str) else None, window_id=None)

    @app.after_request
    def answer_with_id(response: Response) -> Response:
        request_id = g.get("request_id") or request_id_from(request.headers.get(HEADER))
        response.headers[HEADER] = request_id
        job_id = None
        if response.status_code in (201, 202) and response.is_json:
            body = response.get_json(silent=True)
            job_id = body.get("id") if isinstance(body, dict) else None
        started = g.get("request_started")
        extra = {"method": request.method, "path": request.path, "status": response.status_code,
                 "duration_ms": round((time.perf_counter() - started) * 1000, 3) if started else None,
                 "request_id": request_id}
        if job_id:
            extra["job_id"] = job_id
        # A delivered registry notification is logged at DEBUG: distribution sends one per pull.
        level = logging.DEBUG if response.status_code < 400 and (request.endpoint or "").endswith("events.Events") \
            else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s %s %s", request.method, request.path, response.status_code, extra=extra)
        return response

    @app.teardown_request
    def clear_ids(_exc: BaseException | None) -> None:
        logs.clear()  # gunicorn threads serve the next request in the same context

    funcs = app.before_request_funcs.setdefault(None, [])
    funcs.insert(0, funcs.pop())
