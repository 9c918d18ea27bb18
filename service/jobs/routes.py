"""Job status: what a request asked, and each step of its window."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from service import maintenance
from service.errors import ErrorSchema
from service.jobs.schemas import JobSchema
from service.state import state

blp = Blueprint("jobs", __name__, url_prefix="/v1/jobs", description="Maintenance jobs")


@blp.route("/<string:job_id>", parameters=[{
    "in": "path", "name": "job_id", "required": True, "description": "The id a 202 answer gave",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"}}])
class Job(MethodView):
    @blp.doc(operationId="getJob", summary="A job and the steps of its window",
             description="Poll until `status` is succeeded or failed. A failed job says why in `error` "
                         "(`code`, `message`, `step`); `result` holds what was deleted and freed, or the plan of "
                         "a dry run.")
    @blp.response(200, JobSchema, description="The job")
    @blp.alt_response(404, schema=ErrorSchema, description="No such job (JOB_UNKNOWN); records expire")
    @blp.alt_response(503, schema=ErrorSchema, description="Job store (Redis) unreachable (QUEUE_UNAVAILABLE)")
    def get(self, job_id: str) -> dict[str, Any]:
        return maintenance.get_job(state(), job_id)
