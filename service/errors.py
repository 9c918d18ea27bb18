"""One JSON error shape for every 4xx and 5xx, and the one place domain errors become HTTP statuses."""

from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
import redis
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from janitor import errors

log = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides its status.
STATUS_BY_ERROR: list[tuple[type[errors.JanitorError], int]] = [
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.ConfirmationMismatch, 422),
    (errors.InvalidPolicy, 422),
    (errors.RegistryUnavailable, 503),
    (errors.QueueUnavailable, 503),
    (errors.DockerUnavailable, 503),
    (errors.RegistryError, 502),
    (errors.ContainerError, 502),
]

CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "BODY_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "INVALID_REQUEST",
    500: "INTERNAL_ERROR",
    503: "UNAVAILABLE",
}


class ErrorSchema(ma.Schema):
    code = ma.fields.String(required=True, metadata={"description": "Machine-readable reason, e.g. TAG_UNKNOWN"})
    message = ma.fields.String(required=True)
    status = ma.fields.Integer(required=True)
    details = ma.fields.Dict(metadata={"description": "Field errors or the names involved"})


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> ResponseReturnValue:
    body = {"code": code, "message": message, "status": status, "details": details or {}}
    return jsonify(body), status, headers or {}


def http_error(error: HTTPException) -> ResponseReturnValue:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    details = data.get("messages") or data.get("details") or {}
    # webargs nests field errors under the location ("json", "query"); flatten one level for clients.
    if isinstance(details, dict) and len(details) == 1 and next(iter(details)) in ("json", "query", "path"):
        details = next(iter(details.values()))
    code = data.get("code") or CODE_BY_STATUS.get(status, f"HTTP_{status}")
    message = data.get("message") or error.description or error.name
    if status == 422 and details:
        message = "the request is not valid: see details"
    headers = dict(data.get("headers") or {})
    return error_response(status, code, message, details if isinstance(details, dict) else {"errors": details}, headers)


def domain_error(error: errors.JanitorError) -> ResponseReturnValue:
    status = next((s for cls, s in STATUS_BY_ERROR if isinstance(error, cls)), 500)
    return error_response(status, error.code, error.message, error.details)


def redis_error(error: redis.RedisError) -> ResponseReturnValue:
    log.warning("redis unavailable: %s", error)
    return error_response(503, errors.QueueUnavailable.code, f"the job queue (Redis) is unavailable: {error}")


def unexpected_error(error: Exception) -> ResponseReturnValue:
    if isinstance(error, HTTPException):
        return http_error(error)
    log.exception("unhandled error")
    return error_response(500, "INTERNAL_ERROR", "internal error; see the service log")


def register(app: Flask) -> None:
    app.register_error_handler(errors.JanitorError, domain_error)
    app.register_error_handler(redis.RedisError, redis_error)
    app.register_error_handler(Exception, unexpected_error)
