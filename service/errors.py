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
    (errors.Forbidden, 403),
    (errors.Conflict, 409),
    (errors.ConfirmationMismatch, 422),
    (errors.InvalidPolicy, 422),
    (errors.InvalidProtection, 422),
    (errors.InvalidRestore, 422),
    (errors.StorageAccessRequired, 409),
    (errors.RegistryUnavailable, 503),
    (errors.QueueUnavailable, 503),
    (errors.DockerUnavailable, 503),
    (errors.RegistryError, 502),
    (errors.ContainerError, 502),
    (errors.FenceNotEffective, 502),
    (errors.RegistryNotWritable, 502),
    (errors.WindowTimeout, 504),
    (errors.IntegrityBroken, 500),
]

CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "BODY_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "INVALID_REQUEST",
    431: "HEADERS_TOO_LARGE",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
}
OTHER_HTTP_CODE = "HTTP_ERROR"  # a status with no code above


def _domain_codes(cls: type[errors.JanitorError] = errors.JanitorError) -> set[str]:
    return {cls.code}.union(*(_domain_codes(sub) for sub in cls.__subclasses__()))


# Every code the service sends: Error.code, JobError.code and the readiness checks' code are this enum.
ERROR_CODES = sorted(_domain_codes() | set(CODE_BY_STATUS.values()) | {OTHER_HTTP_CODE} | set(errors.OTHER_CODES))


class CodeField(ma.fields.String):
    """One of ERROR_CODES; the document refers to the one ErrorCode schema (service/openapi.py)."""


def code_field(**kw: object) -> ma.fields.String:
    return CodeField(validate=ma.validate.OneOf(ERROR_CODES), **kw)  # type: ignore[arg-type]


class ErrorSchema(ma.Schema):
    """The one error shape of every 4xx and 5xx."""

    code = code_field(required=True, metadata={"description": "Machine-readable reason, e.g. TAG_UNKNOWN"})
    message = ma.fields.String(required=True, metadata={"description": "What went wrong, for people"})
    status = ma.fields.Integer(required=True, metadata={"description": "The HTTP status, repeated"})
    details = ma.fields.Dict(required=True, metadata={
        "description": "Field errors (field -> messages) for 422, else the names involved; may be empty"})


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
    code = data.get("code") or CODE_BY_STATUS.get(status, OTHER_HTTP_CODE)
    message = data.get("message") or error.description or error.name
    if status == 422 and details:
        message = "the request is not valid: see details"
    # Werkzeug's own headers (Allow on a 405, Retry-After, ...), never its text/html content type.
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    headers.update(data.get("headers") or {})
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
