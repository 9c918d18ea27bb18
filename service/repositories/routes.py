"""What the registry holds, served from the index (janitor/index.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort

from janitor import index
from janitor.planning import retention
from janitor.registry import names
from service import pagination
from service.errors import ErrorSchema
from service.repositories.schemas import (
    RepositoryPageSchema,
    RepositoryQueryArgsSchema,
    TagPageSchema,
    TagQueryArgsSchema,
    UsageQueryArgsSchema,
    UsageSchema,
)
from service.state import state

blp = Blueprint("repositories", __name__, url_prefix="/v1/repositories", description="Repositories and their tags")
usage_blp = Blueprint("usage", __name__, url_prefix="/v1/usage", description="Storage used per repository")

FRESHNESS = ("Served from the index in Redis (see docs/listing.md, \"Listing and the index\"): with registry notifications "
             "it is kept by events; without, ")


@blp.route("")
class Repositories(MethodView):
    @blp.doc(operationId="listRepositories", summary="List repositories",
             description="The registry's repositories, a page at a time, each with its number of tags and its size "
                         "(the bytes of its blobs, each once). `q` filters by a glob, `sort` orders by name, size "
                         "or tag count. " + FRESHNESS + "the catalog is read on each request and the tag list of "
                         "each repository on the page is checked.")
    @blp.arguments(RepositoryQueryArgsSchema, location="query")
    @blp.response(200, RepositoryPageSchema, description="A page of repositories")
    @blp.alt_response(502, schema=ErrorSchema, description="The registry answered unexpectedly: REGISTRY_ERROR, "
                      "REGISTRY_AUTH_FAILED (its credentials were refused)")
    @blp.alt_response(503, schema=ErrorSchema, description="Registry unreachable (REGISTRY_UNAVAILABLE)")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        start = (args["page"] - 1) * args["page_size"]
        rows, total = state().index.list_repositories(args.get("q"), args["sort"], start, args["page_size"])
        return pagination.envelope(rows, {"page": args["page"], "page_size": args["page_size"], "total": total})


@blp.route("/<path:name>/tags", parameters=[{
    "in": "path", "name": "name", "required": True, "description": "Repository name, e.g. team/app. At most 255 characters as the registry counts them: "
                   "with docker.io/library/ before a one-component name, docker.io/ before one whose first "
                   "component is not a host; 237 always fit",
    "schema": {"type": "string", "pattern": names.REPOSITORY_RE.pattern, "maxLength": names.REPOSITORY_ALWAYS_FITS}}])
class Tags(MethodView):
    @blp.doc(operationId="listTags", summary="List a repository's tags",
             description="Tags a page at a time, each with its digest, media type, size (config plus layers; for "
                         "an index the sum over its children), creation time and platforms. `sort` orders by name or "
                         "creation time; `older_than` keeps tags created longer ago. " + FRESHNESS +
                         "the repository is read on each request (its tag list and a HEAD per tag; details of known "
                         "digests from the cache), so a push or delete shows at once.")
    @blp.arguments(TagQueryArgsSchema, location="query")
    @blp.response(200, TagPageSchema, description="A page of tags")
    @blp.alt_response(404, schema=ErrorSchema, description="Repository unknown (REPOSITORY_UNKNOWN)")
    @blp.alt_response(502, schema=ErrorSchema, description="The registry answered unexpectedly: REGISTRY_ERROR, "
                      "REGISTRY_AUTH_FAILED (its credentials were refused)")
    @blp.alt_response(503, schema=ErrorSchema, description="Registry unreachable (REGISTRY_UNAVAILABLE)")
    def get(self, args: dict[str, Any], name: str) -> dict[str, Any]:
        if not names.is_repository(name):
            abort(422, message="not a valid repository name", messages={"name": ["not a valid repository name"]})
        older: timedelta | None = retention.parse_duration(args["older_than"]) if args.get("older_than") else None
        rows = index.select_tags(state().index.list_tags(name), args["sort"], older)
        tags_page, meta = pagination.window(rows, args)
        return pagination.envelope(list(tags_page), meta)


@usage_blp.route("")
class Usage(MethodView):
    @usage_blp.doc(operationId="getUsage", summary="Storage used per repository",
                   description="Bytes per repository: its size, the bytes it shares with other repositories and "
                               "the bytes only it uses (what deleting it and collecting garbage frees), most unique "
                               "bytes first; and the registry's total, each blob counted once. Counts the blobs of "
                               "tagged images (untagged manifests and blobs no manifest uses are not counted).")
    @usage_blp.arguments(UsageQueryArgsSchema, location="query")
    @usage_blp.response(200, UsageSchema, description="Usage, a page of repositories at a time")
    @usage_blp.alt_response(502, schema=ErrorSchema, description="The registry answered unexpectedly: "
                            "REGISTRY_ERROR, REGISTRY_AUTH_FAILED (its credentials were refused)")
    @usage_blp.alt_response(503, schema=ErrorSchema, description="Registry unreachable (REGISTRY_UNAVAILABLE)")
    def get(self, args: dict[str, int]) -> dict[str, Any]:
        rows, total_bytes = state().index.usage_report()
        page, meta = pagination.window(rows, args)
        return {"total_bytes": total_bytes, "items": list(page), **meta}
