"""What the OpenAPI document says without every route repeating it.

Each route states its own meaning: `@blp.doc(operationId="camelCase", summary=..., description=...)` and the
statuses only its work can answer (404, 409, 502, 503) with `@blp.alt_response(..., schema=ErrorSchema)`.
The statuses the service answers around any view are added here, from what the operation takes:
401 under /v1 (unless `security=[]`), 400/413 with a JSON body, 422 with a body or query parameters, 414
with any path or query parameter. tests/test_openapi.py fails when an operation lacks an operationId,
summary or description, so endpoints added later are caught.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import marshmallow as ma
from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_instance

from service.errors import ERROR_CODES, CodeField

ERROR_REF = "#/components/schemas/Error"
ERROR_CODE_REF = "#/components/schemas/ErrorCode"


class CodesAsOneEnum(MarshmallowPlugin):
    """flask-smorest's marshmallow plugin, with one ErrorCode enum that Error, JobError and Check refer to, so a
    generated client has one type for every code. Set up before any schema is converted."""

    def init_spec(self, spec: APISpec) -> None:
        super().init_spec(spec)
        spec.components.schema("ErrorCode", component={
            "type": "string", "enum": ERROR_CODES,
            "description": "Every code the service sends: in errors, in failed jobs and in readiness checks"})
        assert self.converter is not None  # made by super().init_spec
        self.converter.add_attribute_function(code_as_ref)


def code_as_ref(self: Any, field: ma.fields.Field, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    if not isinstance(field, CodeField):
        return {}
    ret.pop("type", None)
    ret.pop("enum", None)
    return {"$ref": ERROR_CODE_REF}


def package_version() -> str:
    """info.version is the installed package's version, so clients can tell which API they were made from."""
    try:
        return metadata.version("registry-janitor")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}


def location_header(what: str) -> dict[str, Any]:
    return {"Location": {"description": f"URL of {what}", "schema": {"type": "string", "format": "uri-reference"}}}


class StandardResponses(BasePlugin):
    """An apispec plugin: adds the statuses the service answers before or around a view, in the error shape."""

    def init_spec(self, spec: APISpec) -> None:
        self.spec = spec

    def schema_helper(self, name: str, definition: Any, **kwargs: Any) -> dict[str, Any] | None:
        """apispec drops `additionalProperties: false` from a schema whose Meta has a description: put it back."""
        schema = kwargs.get("schema")
        if schema is not None and hasattr(getattr(schema, "Meta", None), "description") \
                and resolve_schema_instance(schema).unknown == ma.RAISE:
            return {"additionalProperties": False}
        return None

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **kwargs: Any) -> None:
        path_params = bool(path and "{" in path)
        for operation in (operations or {}).values():
            responses: dict[Any, Any] = operation.setdefault("responses", {})
            responses.pop("default", None)
            query = any(isinstance(p, dict) and p.get("in") == "query" for p in operation.get("parameters", []))
            body = "requestBody" in operation

            def add(status: int, description: str, responses: dict[Any, Any] = responses) -> None:
                if status not in responses and str(status) not in responses:
                    responses[str(status)] = error_response(description)

            if path and path.startswith("/v1/") and operation.get("security") != []:
                add(401, "No valid bearer token: send `Authorization: Bearer <token>` (code UNAUTHORIZED)")
            if body:
                add(400, "The body is not valid JSON (code BAD_REQUEST)")
                add(413, "The body is larger than MAX_BODY_BYTES (code BODY_TOO_LARGE)")
            if body or query:
                # flask-smorest documents 422 as a reference to a lazy response; inline it like the others.
                for key in (422, "422"):
                    responses.pop(key, None)
                add(422, "The request is not valid: `details` names each field and what is wrong with it "
                         "(code INVALID_REQUEST)")
            if path_params or query:
                add(414, "The request line is longer than the server accepts (code URI_TOO_LONG)")
