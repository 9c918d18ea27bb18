"""A maintenance window with no deletion: garbage-collect and restart."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from service import auth, maintenance
from service.errors import ErrorSchema
from service.gc.schemas import GcRequestSchema
from service.jobs.schemas import JobSchema
from service.openapi import location_header
from service.state import state

blp = Blueprint("gc", __name__, url_prefix="/v1/gc", description="Garbage collection without deletion")


@blp.route("")
class GarbageCollect(MethodView):
    @blp.doc(operationId="createGc", summary="Garbage-collect the registry",
             description="Scope `delete`. Queues a maintenance window with no deletion: writes refused, garbage "
                         "collection, restart. Answers 202 with the job; follow it at `Location`. The body may "
                         "be empty; `\"verify\": \"full\"` asks for the full integrity walk after GC instead of "
                         "the targeted check.")
    @blp.arguments(GcRequestSchema(), required=False, example={"verify": "full"})
    @blp.response(202, JobSchema, description="Queued; the job is at Location", headers=location_header("the job"))
    @blp.alt_response(403, schema=ErrorSchema, description="The token lacks the scope (FORBIDDEN)")
    @blp.alt_response(503, schema=ErrorSchema, description="Job queue unreachable (QUEUE_UNAVAILABLE)")
    @auth.scope("delete")
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        job = maintenance.submit_gc(state(), body or {}, auth.caller().name)
        return job, 202, {"Location": url_for("jobs.Job", job_id=job["id"])}
