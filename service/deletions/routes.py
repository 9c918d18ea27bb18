"""Deletion requests: validated, checked against the registry, then queued for a maintenance window."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from service import auth, maintenance
from service.deletions.schemas import EXAMPLES, RULES, DeletionSchema
from service.errors import ErrorSchema
from service.jobs.schemas import JobSchema
from service.openapi import location_header
from service.state import state

blp = Blueprint("deletions", __name__, url_prefix="/v1/deletions",
                description="Delete tags or manifests, then garbage-collect and restart the registry")


@blp.route("")
class Deletions(MethodView):
    @blp.doc(operationId="createDeletion", summary="Delete tags, manifests or repositories",
             description="Scope `delete` (`admin` for `all_repositories` and `override_protection`). Checks the "
                         "request against the registry (unknown names: 404, a manifest a tagged index still needs or "
                         "a protected tag: 409, a wrong `confirm`: 422) "
                         "and queues it for the next maintenance window, which deletes, garbage-collects and "
                         "restarts the registry. Answers 202 with the job; follow it at `Location`. With `dry_run` "
                         "the job reports the plan and changes nothing. With `\"approval\": \"required\"` (or "
                         "JANITOR_REQUIRE_APPROVAL) it is planned and waits as `awaiting_approval` until another "
                         "token approves it.")
    @blp.arguments(DeletionSchema, examples=EXAMPLES, description=RULES)
    @blp.response(202, JobSchema, description="Queued; the job is at Location", headers=location_header("the job"))
    @blp.alt_response(403, schema=ErrorSchema, description="The token lacks the scope (FORBIDDEN)")
    @blp.alt_response(404, schema=ErrorSchema, description="Repository, tag or digest unknown (REPOSITORY_UNKNOWN, "
                      "TAG_UNKNOWN, MANIFEST_UNKNOWN); nothing queued")
    @blp.alt_response(409, schema=ErrorSchema, description="The deletion would remove more than was asked "
                      "(REFERENCED_BY_INDEX), or a protected tag or what it reaches (TAG_PROTECTED: details name "
                      "the tags and rules), or needs the registry's files and its storage driver is not "
                      "filesystem (STORAGE_ACCESS_REQUIRED); nothing queued")
    @blp.alt_response(502, schema=ErrorSchema, description="The registry answered unexpectedly: REGISTRY_ERROR, "
                      "REGISTRY_AUTH_FAILED (its credentials were refused) or REGISTRY_DELETE_DISABLED")
    @blp.alt_response(503, schema=ErrorSchema, description="Registry or job queue unreachable (REGISTRY_UNAVAILABLE, "
                      "QUEUE_UNAVAILABLE)")
    @auth.scope("delete")
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        if body.get("all_repositories"):
            auth.require("admin", " to delete every repository")
        if body.get("override_protection"):
            auth.require("admin", " to override tag protection")
        job = maintenance.submit_deletion(state(), body, auth.caller().name)
        return job, 202, {"Location": url_for("jobs.Job", job_id=job["id"])}
