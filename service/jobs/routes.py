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


@blp.route("/<string:job_id>")
class Job(MethodView):
    @blp.response(200, JobSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such job")
    def get(self, job_id: str) -> dict[str, Any]:
        return maintenance.get_job(state(), job_id)
