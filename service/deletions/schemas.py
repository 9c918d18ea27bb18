from __future__ import annotations

from typing import Any

import marshmallow as ma

from service import validators


class DeletionSchema(ma.Schema):
    """What to delete: some tags, or some manifests by digest, of one repository."""

    class Meta:
        unknown = ma.RAISE

    repository = ma.fields.String(required=True, validate=validators.repository)
    tags = ma.fields.List(ma.fields.String(validate=validators.tag), validate=ma.validate.Length(min=1, max=100))
    digests = ma.fields.List(ma.fields.String(validate=validators.digest), validate=ma.validate.Length(min=1, max=100))

    @ma.validates_schema
    def one_kind(self, data: dict[str, Any], **_: Any) -> None:
        if ("tags" in data) == ("digests" in data):
            raise ma.ValidationError("give exactly one of tags or digests", "_schema")
