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
    @blp.doc(operationId="listRepositories", summary="List repositories",
             description="The registry's repositories in name order, a page at a time, each with its number of "
                         "tags.")
    @blp.arguments(RepositoryQueryArgsSchema, location="query")
    @blp.response(200, RepositoryPageSchema, description="A page of repositories")
    @blp.alt_response(502, schema=ErrorSchema, description="The registry answered unexpectedly: REGISTRY_ERROR, "
                      "REGISTRY_AUTH_FAILED (its credentials were refused)")
    @blp.alt_response(503, schema=ErrorSchema, description="Registry unreachable (REGISTRY_UNAVAILABLE)")
    def get(self, args: dict[str, int]) -> dict[str, Any]:
        catalog = state().catalog
        names_page, meta = pagination.window(catalog.repositories(), args)
        return pagination.envelope([{"name": n, "tag_count": catalog.tag_count(n)} for n in names_page], meta)


@blp.route("/<path:name>/tags", parameters=[{
    "in": "path", "name": "name", "required": True, "description": "Repository name, e.g. team/app. At most 255 characters as the registry counts them: "
                   "with docker.io/library/ before a one-component name, docker.io/ before one whose first "
                   "component is not a host; 237 always fit",
    "schema": {"type": "string", "pattern": names.REPOSITORY_RE.pattern, "maxLength": names.REPOSITORY_ALWAYS_FITS}}])
class Tags(MethodView):
    @blp.doc(operationId="listTags", summary="List a repository's tags",
             description="Tags in name order, a page at a time, each with its digest, media type, size (config "
                         "plus layers; for an index the sum over its children), creation time and platforms.")
    @blp.arguments(TagQueryArgsSchema, location="query")
    @blp.response(200, TagPageSchema, description="A page of tags")
    @blp.alt_response(404, schema=ErrorSchema, description="Repository unknown (REPOSITORY_UNKNOWN)")
    @blp.alt_response(502, schema=ErrorSchema, description="The registry answered unexpectedly: REGISTRY_ERROR, "
                      "REGISTRY_AUTH_FAILED (its credentials were refused)")
    @blp.alt_response(503, schema=ErrorSchema, description="Registry unreachable (REGISTRY_UNAVAILABLE)")
    def get(self, args: dict[str, int], name: str) -> dict[str, Any]:
        if not names.is_repository(name):
            abort(422, message="not a valid repository name", messages={"name": ["not a valid repository name"]})
        catalog = state().catalog
        tags_page, meta = pagination.window(catalog.tags(name), args)
        return pagination.envelope([catalog.describe(name, t) for t in tags_page], meta)
