"""gunicorn answers some requests itself, before Flask sees them (a request line over limit_request_line:
414, headers too large: 431, a malformed request: 400), with an HTML page. This makes those answers the
service's one JSON error shape. gunicorn has no hook for it, so `install()` (called from gunicorn.conf.py)
replaces `gunicorn.util.write_error`, which every worker class calls for these answers.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn import util

from service.errors import CODE_BY_STATUS, OTHER_HTTP_CODE

MESSAGES = {
    414: "the request line (method, path and query) is too long",
    431: "the request headers are too large",
}


def body(status: int, reason: str, mesg: str) -> bytes:
    message = MESSAGES.get(status) or (f"{reason}: {mesg}" if mesg else reason)
    return json.dumps({"code": CODE_BY_STATUS.get(status, OTHER_HTTP_CODE), "message": message, "status": status,
                       "details": {}}).encode()


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    payload = body(status_int, reason, mesg)
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + payload)


def install(*_: Any) -> None:
    util.write_error = write_json_error
