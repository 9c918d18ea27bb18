"""Retention policies: stored in the service (or read-only in POLICIES_FILE), previewed, run on demand or on
a schedule, and carried out by the same windows as deletions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from janitor import policies
from janitor.policies import PolicyStore
from service import pagination
from service.errors import ErrorSchema
from service.jobs.schemas import JobSchema
from service.maintenance import WINDOW_JOB
from service.policies.schemas import PolicyReplaceSchema, PolicyRunSchema, PolicySchema, PolicyViewSchema
from service.state import State, state

blp = Blueprint("policies", __name__, url_prefix="/v1/policies",
                description="Retention policies: which tags to keep, run on demand or on a schedule")

PolicyPageSchema = pagination.page_schema(PolicyViewSchema, "PolicyPage")


def _store(st: State) -> PolicyStore:
    return PolicyStore(st.conn, st.keys, st.settings.policies_file)


def _schedule(st: State):  # type: ignore[no-untyped-def]
    """Puts the policy's next moment on RQ's schedule; the worker's scheduler fires it."""
    def schedule(when: datetime) -> None:
        st.queue.enqueue_at(when, policies.TICK_JOB, st.settings.registry_host,
                            job_id=policies.tick_id(st.settings.registry_host, when),
                            job_timeout=600, result_ttl=3600, failure_ttl=7 * 24 * 3600)
    return schedule


@blp.route("")
class Policies(MethodView):
    @blp.doc(operationId="listPolicies", summary="List retention policies",
             description="Every policy, from the API and from POLICIES_FILE (`source`), with its last and next run.")
    @blp.arguments(pagination.PageQueryArgsSchema, location="query")
    @blp.response(200, PolicyPageSchema)
    def get(self, args: dict[str, int]) -> dict[str, Any]:
        st = state()
        store = _store(st)
        page, meta = pagination.window(store.all(), args)
        return pagination.envelope([store.view(p, st.store) for p in page], meta)

    @blp.doc(operationId="createPolicy", summary="Create a retention policy",
             description="Validated whole (globs, durations, cron, RE2 expressions); its schedule starts now.")
    @blp.arguments(PolicySchema)
    @blp.response(201, PolicyViewSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="A policy of that name exists (in the API or the file)")
    @blp.alt_response(422, schema=ErrorSchema, description="A field is wrong: details name it and say why")
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        st = state()
        store = _store(st)
        policy = policies.validate(body)
        store.create(policy)
        store.reschedule(policy, _schedule(st))
        return store.view({**policy, "source": "api"}, st.store), 201, {
            "Location": url_for("policies.Policy", name=policy["name"])}


@blp.route("/<string:name>")
class Policy(MethodView):
    @blp.doc(operationId="getPolicy", summary="Show a retention policy",
             description="Its fields, `source`, `last_run` (job id, status, when) and `next_run`.")
    @blp.response(200, PolicyViewSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such policy")
    def get(self, name: str) -> dict[str, Any]:
        st = state()
        store = _store(st)
        return store.view(store.get(name), st.store)

    @blp.doc(operationId="replacePolicy", summary="Replace a retention policy",
             description="The whole policy is replaced and its schedule starts again; file policies are read-only.")
    @blp.arguments(PolicyReplaceSchema)
    @blp.response(200, PolicyViewSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such policy")
    @blp.alt_response(409, schema=ErrorSchema, description="The policy comes from POLICIES_FILE")
    @blp.alt_response(422, schema=ErrorSchema, description="A field is wrong: details name it and say why")
    def put(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        st = state()
        store = _store(st)
        store.get(name)  # 404 and bad names before anything else
        policy = policies.validate(body, name=name)
        store.replace(policy)
        store.reschedule(policy, _schedule(st))
        return store.view({**policy, "source": "api"}, st.store)

    @blp.doc(operationId="deletePolicy", summary="Delete a retention policy",
             description="Its schedule stops; runs already queued still happen. File policies are read-only.")
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema, description="No such policy")
    @blp.alt_response(409, schema=ErrorSchema, description="The policy comes from POLICIES_FILE")
    def delete(self, name: str) -> None:
        _store(state()).delete(name)


@blp.route("/<string:name>/runs")
class PolicyRuns(MethodView):
    @blp.doc(operationId="createPolicyRun", summary="Run a retention policy",
             description="A job of kind `policy` that joins the next window. `result.plan` lists per repository "
                         "the tags to delete and every kept tag with its reason, then the manifests and bytes GC "
                         "will free. A policy whose globs name no repository succeeds at once, changing nothing.")
    @blp.arguments(PolicyRunSchema)
    @blp.response(202, JobSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such policy")
    @blp.alt_response(503, schema=ErrorSchema, description="Registry or job queue unreachable")
    def post(self, body: dict[str, Any], name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        st = state()
        store = _store(st)
        policy = store.get(name)
        [job] = policies.submit_runs(
            st.conn, st.keys, st.store, store, [(policy, {"dry_run": body["dry_run"], "trigger": "api"})],
            st.client.catalog(),
            lambda: st.queue.enqueue(WINDOW_JOB, st.settings.registry_host, job_timeout=-1, result_ttl=3600))
        return job, 202, {"Location": url_for("jobs.Job", job_id=job["id"])}


@blp.record_once
def _check_policies_file(setup: Any) -> None:
    """A broken POLICIES_FILE stops the service at start, naming the entry and field, not at the first GET."""
    settings = setup.app.extensions["janitor"].settings
    if settings.policies_file:
        policies.load_file(settings.policies_file)
