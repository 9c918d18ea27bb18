from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import marshmallow as ma

from janitor import index
from janitor.planning import retention
from service.pagination import PageQueryArgsSchema, page_schema


def _valid(check: Any) -> Any:
    """A marshmallow validator from a janitor.planning.retention parser: its RuleError message becomes the field's."""
    def validate(value: str) -> None:
        try:
            check(value)
        except retention.RuleError as exc:
            raise ma.ValidationError(str(exc)) from None
    return validate


# What the validators below accept, stated as patterns so the OpenAPI document says it too.
GLOB_RE = r"^[a-z0-9._*-]+(?:/[a-z0-9._*-]+)*$"
# A whole number and a unit, at most 100 years whatever the unit (janitor.planning.retention.parse_duration's limit).
DURATION_RE = r"^(?:[1-9][0-9]{0,6}[sm]|[1-9][0-9]{0,4}h|[1-9][0-9]{0,3}d|[1-9][0-9]{0,2}w)$"


class RepositorySchema(ma.Schema):
    name = ma.fields.String(required=True)
    tag_count = ma.fields.Integer(required=True)
    size = ma.fields.Integer(required=True, metadata={
        "description": "Bytes of the repository's blobs (manifests, configs, layers of its tagged images, index "
                       "children included), each blob counted once"})


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
    last_pulled = ImageTime(allow_none=True, metadata={
        "format": "date-time", "description": "The newest pull of this tag's digest the registry's notifications "
                                              "told (manifest pulls by others than the janitor), in UTC, to the "
                                              "second; null when none was heard of"})


class RepositoryQueryArgsSchema(PageQueryArgsSchema):
    q = ma.fields.String(validate=[ma.validate.Length(max=255), ma.validate.Regexp(GLOB_RE), _valid(index.query_glob)], metadata={
        "description": "A glob on the whole repository name: `*` matches within one path segment (it does not "
                       "cross `/`), `**` across segments: `team/*` is team/app but not team/app/sub, `team/**` "
                       "is everything below team/, `**/app` every repository called app at any depth (three or "
                       "more `*` act as `**`)",
        "example": "team/**"})
    sort = ma.fields.String(load_default="name", validate=ma.validate.OneOf(["name", "-size", "-tags"]), metadata={
        "description": "name (A to Z), -size (largest first) or -tags (most tags first); ties by name"})


class TagQueryArgsSchema(PageQueryArgsSchema):
    page_size = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=500))
    sort = ma.fields.String(load_default="name", validate=ma.validate.OneOf(["name", "created", "-created"]),
                            metadata={"description": "name, created (oldest first) or -created (newest first); "
                                                     "tags without a creation time come last"})
    older_than = ma.fields.String(validate=[ma.validate.Regexp(DURATION_RE), _valid(retention.parse_duration)], metadata={
        "description": "Only tags created longer ago than this: a whole number and a unit s, m, h, d or w (90m, "
                       "12h, 30d, 2w). Tags without a creation time are left out", "example": "30d"})


class UsageRowSchema(ma.Schema):
    name = ma.fields.String(required=True)
    tag_count = ma.fields.Integer(required=True)
    size = ma.fields.Integer(required=True, metadata={"description": "Bytes of its blobs, each counted once"})
    shared_bytes = ma.fields.Integer(required=True, metadata={
        "description": "Bytes of its blobs that another repository uses too (deleting it frees none of them)"})
    unique_bytes = ma.fields.Integer(required=True, metadata={
        "description": "Bytes only this repository uses: what deleting it (and GC) frees"})


class UsageSchema(ma.Schema):
    total_bytes = ma.fields.Integer(required=True, metadata={
        "description": "The registry's tagged content in bytes, each blob counted once"})
    items = ma.fields.List(ma.fields.Nested(UsageRowSchema), required=True, metadata={
        "description": "Repositories, most unique bytes first"})
    page = ma.fields.Integer(required=True)
    page_size = ma.fields.Integer(required=True)
    total = ma.fields.Integer(required=True, metadata={"description": "Repositories on all pages"})


class UsageQueryArgsSchema(PageQueryArgsSchema):
    pass


RepositoryPageSchema = page_schema(RepositorySchema, "RepositoryPage")
TagPageSchema = page_schema(TagSchema, "TagPage")
