from __future__ import annotations

import marshmallow as ma

from service.errors import code_field


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True)


class CheckSchema(ma.Schema):
    ok = ma.fields.Boolean(required=True)
    code = code_field(metadata={"description": "Why the check failed"})
    message = ma.fields.String()
    at = ma.fields.String(metadata={"format": "date-time", "description": "When the worker last checked (docker only)"})


class ReadinessSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"description": "ready or unavailable"})
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(CheckSchema))
