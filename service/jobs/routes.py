"""Job status, job history, and the chatops loop's approve / reject / cancel."""

from __future__ import annotations

import itertools
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from service import auth, job_actions, maintenance, pagination
from service.errors import ErrorSchema
from service.jobs.schemas import JobPageSchema, JobQueryArgsSchema, JobSchema
from service.state import state

blp = Blueprint("jobs", __name__, url_prefix="/v1/jobs", description="Maintenance jobs")


@blp.route("")
class Jobs(MethodView):
    @blp.doc(operationId="listJobs", summary="Job history",
             description="Jobs of this registry, newest first, paginated, filtered by `status`, `kind`, "
                         "`requested_by` (a token name), `repository`, `policy` and `since` (created at or after). "
                         "Scope `read`.")
    @blp.arguments(JobQueryArgsSchema, location="query")
    @blp.response(200, JobPageSchema, description="One page of jobs")
    @blp.alt_response(503, schema=ErrorSchema, description="Job store (Redis) unreachable (QUEUE_UNAVAILABLE)")
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        jobs = job_actions.history(state(), args)
        start = (args["page"] - 1) * args["page_size"]
        page = list(itertools.islice(jobs, start, start + args["page_size"]))
        total = start + len(page) + sum(1 for _ in jobs)
        return pagination.envelope(page, {"page": args["page"], "page_size": args["page_size"], "total": total})


@blp.route("/<string:job_id>", parameters=[{
    "in": "path", "name": "job_id", "required": True, "description": "The id a 202 answer gave",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"}}])
class Job(MethodView):
    @blp.doc(operationId="getJob", summary="A job and the steps of its window",
             description="What was asked, by whom, each step of its window, the result and its webhook deliveries. "
                         "Poll until `status` is final (succeeded, failed, rejected, expired, cancelled). A failed "
                         "job says why in `error` (`code`, `message`, `step`); `result` holds what was deleted and "
                         "freed, or the plan of a dry run or of a job awaiting approval.")
    @blp.response(200, JobSchema, description="The job")
    @blp.alt_response(404, schema=ErrorSchema, description="No such job (JOB_UNKNOWN); records expire")
    @blp.alt_response(503, schema=ErrorSchema, description="Job store (Redis) unreachable (QUEUE_UNAVAILABLE)")
    def get(self, job_id: str) -> dict[str, Any]:
        return maintenance.get_job(state(), job_id)


@blp.route("/<string:job_id>/approve")
class Approve(MethodView):
    @blp.doc(operationId="approveJob", summary="Approve a job awaiting approval",
             description="Scope `approve`. Queues the job for the next window, which plans again on the registry "
                         "as it is then and deletes only what is in both the approved plan and the new one; what "
                         "the new plan adds is reported in `result.skipped`, untouched. The requester's own token "
                         "may not approve unless it has `admin`.")
    @blp.response(200, JobSchema)
    @blp.alt_response(403, schema=ErrorSchema, description="Scope missing, or the requester approving its own job")
    @blp.alt_response(404, schema=ErrorSchema, description="No such job")
    @blp.alt_response(409, schema=ErrorSchema, description="The job is not awaiting approval (or just expired)")
    @auth.scope("approve")
    def post(self, job_id: str) -> dict[str, Any]:
        return job_actions.approve(state(), job_id, auth.caller())


@blp.route("/<string:job_id>/reject")
class Reject(MethodView):
    @blp.doc(operationId="rejectJob", summary="Reject a job awaiting approval",
             description="Scope `approve`. The job ends as `rejected` and changes nothing.")
    @blp.response(200, JobSchema)
    @blp.alt_response(403, schema=ErrorSchema, description="Scope missing")
    @blp.alt_response(404, schema=ErrorSchema, description="No such job")
    @blp.alt_response(409, schema=ErrorSchema, description="The job is not awaiting approval")
    @auth.scope("approve")
    def post(self, job_id: str) -> dict[str, Any]:
        return job_actions.reject(state(), job_id, auth.caller())


@blp.route("/<string:job_id>/cancel")
class Cancel(MethodView):
    @blp.doc(operationId="cancelJob", summary="Cancel a queued job or one awaiting approval",
             description="Scope `delete` for the requester's own jobs, `admin` for anyone's. The job ends as "
                         "`cancelled` and changes nothing. A running window is never interrupted: 409.")
    @blp.response(200, JobSchema)
    @blp.alt_response(403, schema=ErrorSchema, description="Scope missing, or another token's job without admin")
    @blp.alt_response(404, schema=ErrorSchema, description="No such job")
    @blp.alt_response(409, schema=ErrorSchema, description="The job is running or finished")
    @auth.scope("delete")
    def post(self, job_id: str) -> dict[str, Any]:
        return job_actions.cancel(state(), job_id, auth.caller())
