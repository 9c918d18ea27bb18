"""The restore window: put back what a deletion deleted (POST /v1/jobs/{id}/restore), and what can be
(GET /v1/restorable). Rules and records: janitor/planning/restore.py; the restore itself: worker/restore.py."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from service import auth, maintenance, pagination
from service.errors import ErrorSchema
from service.jobs.schemas import JobSchema
from service.openapi import location_header
from service.restore.schemas import (
    RestorablePageSchema,
    RestorableQueryArgsSchema,
    RestoreRequestSchema,
)
from service.state import state

blp = Blueprint("restore", __name__, url_prefix="/v1/jobs", description="Put back what a job deleted")
listing_blp = Blueprint("restorable", __name__, url_prefix="/v1/restorable",
                        description="Deletions that can still be put back")


@blp.route("/<string:job_id>/restore", parameters=[{
    "in": "path", "name": "job_id", "required": True, "description": "The deletion or policy run to restore",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"}}])
class Restore(MethodView):
    @blp.doc(operationId="restoreJob", summary="Put back what a job deleted",
             description="Scope `delete`. While the job's restore window runs (`result.restorable_until`; "
                         "JANITOR_RESTORE_WINDOW or `restore_window` on the deletion or policy), queues a job of "
                         "kind `restore`: every manifest it deleted is PUT back byte for byte (children before "
                         "indexes) and every tag it removed points where it pointed; a tag pushed anew since is "
                         "left alone and reported in `result.skipped`. The body may name a subset (`tags`, "
                         "`manifests`). Answers 202 with the restore job; follow it at `Location`.")
    @blp.arguments(RestoreRequestSchema(), required=False,
                   example={"tags": ["team/app:v1.0"], "manifests": ["sha256:" + "0" * 64]})
    @blp.response(202, JobSchema, description="Queued; the restore job is at Location",
                  headers=location_header("the job"))
    @blp.alt_response(403, schema=ErrorSchema, description="The token lacks the scope (FORBIDDEN)")
    @blp.alt_response(404, schema=ErrorSchema, description="No such job (JOB_UNKNOWN)")
    @blp.alt_response(409, schema=ErrorSchema, description="Nothing to restore: the job deleted nothing, was a "
                      "dry run or had no restore window (NOT_RESTORABLE), or its window ended "
                      "(RESTORE_WINDOW_ENDED)")
    @blp.alt_response(503, schema=ErrorSchema, description="Job queue unreachable (QUEUE_UNAVAILABLE)")
    @auth.scope("delete")
    def post(self, body: dict[str, Any], job_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        job = maintenance.submit_restore(state(), job_id, body or {}, auth.caller().name)
        return job, 202, {"Location": url_for("jobs.Job", job_id=job["id"])}


@listing_blp.route("")
class Restorable(MethodView):
    @listing_blp.doc(operationId="listRestorable", summary="What can be restored",
                     description="Scope `read`. Every job whose restore window still runs, newest deletion first, "
                                 "with what it deleted and the bytes GC keeps for it meanwhile.")
    @listing_blp.arguments(RestorableQueryArgsSchema, location="query")
    @listing_blp.response(200, RestorablePageSchema, description="A page of restorable jobs")
    @listing_blp.alt_response(503, schema=ErrorSchema, description="Job store (Redis) unreachable "
                              "(QUEUE_UNAVAILABLE)")
    def get(self, args: dict[str, int]) -> dict[str, Any]:
        page, meta = pagination.window(maintenance.restorable(state()), args)
        return pagination.envelope(list(page), meta)
