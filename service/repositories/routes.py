"""What the registry holds."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort

from janitor import names
from service import pagination
from service.errors import ErrorSchema
from service.repositories.schemas import (
    RepositoryPageSchema,
    RepositoryQueryArgsSchema,
    TagPageSchema,
    TagQueryArgsSchema,
)
from service.state import state

blp = Blueprint("repositories", __name__, url_prefix="/v1/repositories", description="Repositories and their tags")


@blp.route("")
class Repositories(MethodView):
    @blp.arguments(RepositoryQueryArgsSchema, location="query")
    @blp.response(200, RepositoryPageSchema)
    def get(self, args: dict[str, int]) -> dict[str, Any]:
        catalog = state().catalog
        names_page, meta = pagination.window(catalog.repositories(), args)
        return pagination.envelope([{"name": n, "tag_count": catalog.tag_count(n)} for n in names_page], meta)


@blp.route("/<path:name>/tags")
class Tags(MethodView):
    @blp.arguments(TagQueryArgsSchema, location="query")
    @blp.response(200, TagPageSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="Repository unknown")
    def get(self, args: dict[str, int], name: str) -> dict[str, Any]:
        if not names.is_repository(name):
            abort(422, message="not a valid repository name", messages={"name": ["not a valid repository name"]})
        catalog = state().catalog
        tags_page, meta = pagination.window(catalog.tags(name), args)
        return pagination.envelope([catalog.describe(name, t) for t in tags_page], meta)
