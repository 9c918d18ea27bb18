"""One structured log line per request that changes something: who, what, which job, and the outcome.
Never the token: only its name."""

from __future__ import annotations

import json
import logging
import sys

from flask import Response, g, request

from service.auth import READ_METHODS, caller

log = logging.getLogger("janitor.audit")


def setup(log_format: str) -> None:
    """Audit lines and token-file reports go to stderr at INFO. With LOG_FORMAT=json they go through the
    service's JSON logging like every other line (janitor.logs), the audit fields at the top level; as text,
    each is `... janitor.audit: {json}`, one line a log shipper can split."""
    if log_format == "json":
        return
    for logger in (log, logging.getLogger("janitor.config.tokens")):
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def _delivered_event(response: Response) -> bool:
    """The registry's notifications (POST /v1/events, one per push, delete and pull): a delivery taken is a
    registry reporting, not someone changing something, and at a thousand a second it would drown every other
    line; a refused one (401, 403, 422) is audited."""
    return response.status_code < 400 and request.endpoint is not None and request.endpoint.endswith("events.Events")


def record(response: Response) -> Response:
    if request.method in READ_METHODS or not request.path.startswith("/v1/") or _delivered_event(response):
        return response
    body = response.get_json(silent=True) if response.is_json else None
    body = body if isinstance(body, dict) else {}
    line = {
        "who": caller().name if hasattr(g, "caller") else "unauthenticated",
        "what": f"{request.method} {request.path}",
        "operation": request.endpoint,
        "job_id": body.get("id") or (request.view_args or {}).get("job_id"),
        "status": response.status_code,
        "outcome": body.get("status") if response.status_code < 400 else body.get("code"),
    }
    log.info(json.dumps(line, sort_keys=True), extra={"audit": line})
    return response
