"""Deletion requests: validated, checked against the registry, then queued for a maintenance window."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from service import auth, maintenance
from service.errors import ErrorSchema
from service.deletions.schemas import DeletionSchema
from service.jobs.schemas import JobSchema
from service.state import state

blp = Blueprint("deletions", __name__, url_prefix="/v1/deletions",
                description="Delete tags or manifests, then garbage-collect and restart the registry")


@blp.route("")
class Deletions(MethodView):
    @blp.doc(operationId="createDeletion", summary="Delete tags or manifests in the next maintenance window",
             description="Scope `delete` (`admin` for `all_repositories`). Checked against the registry, then "
                         "queued; with `\"approval\": \"required\"` (or JANITOR_REQUIRE_APPROVAL) it is planned "
                         "and waits as `awaiting_approval` until another token approves it.")
    @blp.arguments(DeletionSchema)
    @blp.response(202, JobSchema)
    @blp.alt_response(403, schema=ErrorSchema, description="The token lacks the scope")
    @blp.alt_response(404, schema=ErrorSchema, description="Repository, tag or digest unknown; nothing queued")
    @blp.alt_response(409, schema=ErrorSchema, description="The deletion would remove more than was asked")
    @blp.alt_response(503, schema=ErrorSchema, description="Registry or job queue unreachable")
    @auth.scope("delete")
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        if body.get("all_repositories"):
            auth.require("admin", " to delete every repository")
        job = maintenance.submit_deletion(state(), body, auth.caller().name)
        return job, 202, {"Location": url_for("jobs.Job", job_id=job["id"])}
