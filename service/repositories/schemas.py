from __future__ import annotations

import marshmallow as ma

from service.pagination import PageQueryArgsSchema, page_schema


class RepositorySchema(ma.Schema):
    name = ma.fields.String(required=True)
    tag_count = ma.fields.Integer(required=True)


class TagSchema(ma.Schema):
    name = ma.fields.String(required=True)
    digest = ma.fields.String(required=True, metadata={"description": "The digest the registry stores"})
    media_type = ma.fields.String(required=True)
    size = ma.fields.Integer(required=True, metadata={"description": "Config plus layers; for an index, "
                                                                     "the sum over its children"})
    created = ma.fields.String(allow_none=True, metadata={"description": "From the image config"})
    platforms = ma.fields.List(ma.fields.String(), metadata={"description": "os/arch[/variant] of an index"})


class RepositoryQueryArgsSchema(PageQueryArgsSchema):
    pass


class TagQueryArgsSchema(PageQueryArgsSchema):
    page_size = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=500))


RepositoryPageSchema = page_schema(RepositorySchema, "RepositoryPage")
TagPageSchema = page_schema(TagSchema, "TagPage")
