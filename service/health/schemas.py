from __future__ import annotations

import marshmallow as ma


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True)


class CheckSchema(ma.Schema):
    ok = ma.fields.Boolean(required=True)
    code = ma.fields.String()
    message = ma.fields.String()
    at = ma.fields.String(metadata={"description": "When the worker last checked (docker only)"})


class ReadinessSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"description": "ready or unavailable"})
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(CheckSchema))
