from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import marshmallow as ma

from service.pagination import PageQueryArgsSchema, page_schema


class RepositorySchema(ma.Schema):
    name = ma.fields.String(required=True)
    tag_count = ma.fields.Integer(required=True)


class ImageTime(ma.fields.String):
    """An image config's `created` is whatever its builder wrote: sent as RFC 3339 in UTC, or null when it is not
    a time, so a client parsing `date-time` never fails on a foreign value."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if not isinstance(value, str):
            return None
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class TagSchema(ma.Schema):
    name = ma.fields.String(required=True)
    digest = ma.fields.String(required=True, metadata={"description": "The digest the registry stores"})
    media_type = ma.fields.String(required=True)
    size = ma.fields.Integer(required=True, metadata={"description": "Config plus layers; for an index, "
                                                                     "the sum over its children"})
    created = ImageTime(allow_none=True, metadata={
        "format": "date-time", "description": "From the image config, in UTC; null when it states no valid time"})
    platforms = ma.fields.List(ma.fields.String(), metadata={"description": "os/arch[/variant] of an index"})


class RepositoryQueryArgsSchema(PageQueryArgsSchema):
    pass


class TagQueryArgsSchema(PageQueryArgsSchema):
    page_size = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=500))


RepositoryPageSchema = page_schema(RepositorySchema, "RepositoryPage")
TagPageSchema = page_schema(TagSchema, "TagPage")
