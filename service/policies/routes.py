"""Retention policies: stored in the service (or read-only in POLICIES_FILE), previewed, run on demand or on
a schedule, and carried out by the same windows as deletions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from janitor.planning import policies, upcoming
from janitor.planning.policies import PolicyStore
from service import auth, pagination
from service.errors import ErrorSchema
from service.jobs.schemas import JobSchema
from service.maintenance import WINDOW_JOB
from service.openapi import location_header
from service.policies.schemas import (
    POLICY_EXAMPLES,
    RUN_EXAMPLES,
    PolicyReplaceSchema,
    PolicyRunSchema,
    PolicySchema,
    PolicyViewSchema,
)
from service.state import State, state

blp = Blueprint("policies", __name__, url_prefix="/v1/policies",
                description="Retention policies: which tags to keep, run on demand or on a schedule")

PolicyPageSchema = pagination.page_schema(PolicyViewSchema, "PolicyPage")
NAME_PARAMETER = [{"in": "path", "name": "name", "required": True, "description": "The policy's name",
                   "schema": {"type": "string", "pattern": "^[a-z0-9]+(?:-[a-z0-9]+)*$", "maxLength": 63}}]
FORBIDDEN = "The token lacks the scope (FORBIDDEN)"


def _store(st: State) -> PolicyStore:
    return PolicyStore(st.conn, st.keys, st.settings.policies_file)


def _schedule(st: State):  # type: ignore[no-untyped-def]
    """Puts the policy's next moment on RQ's schedule; the worker's scheduler fires it."""
    def schedule(when: datetime) -> None:
        st.queue.enqueue_at(when, policies.TICK_JOB, st.settings.name,
                            job_id=policies.tick_id(st.settings.namespace, when),
                            job_timeout=600, result_ttl=3600, failure_ttl=7 * 24 * 3600)
    return schedule


def _warn(st: State):  # type: ignore[no-untyped-def]
    """Puts the policy's `policy.upcoming` warning on RQ's schedule, or on the queue when it is due already."""
    return upcoming.scheduler(st.queue, st.settings.name, st.settings.namespace)


@blp.route("")
class Policies(MethodView):
    @blp.doc(operationId="listPolicies", summary="List retention policies",
             description="Every policy, from the API and from POLICIES_FILE (`source`), with its last and next run. "
                         "Scope `read`.")
    @blp.arguments(pagination.PageQueryArgsSchema, location="query")
    @blp.response(200, PolicyPageSchema, description="One page of policies")
    def get(self, args: dict[str, int]) -> dict[str, Any]:
        st = state()
        store = _store(st)
        page, meta = pagination.window(store.all(), args)
        return pagination.envelope([store.view(p, st.store) for p in page], meta)

    @blp.doc(operationId="createPolicy", summary="Create a retention policy",
             description="Scope `admin`. Validated whole (globs, durations, cron, RE2 expressions); its schedule "
                         "starts now. With `\"approval\": \"required\"` its scheduled runs wait for approval.")
    @blp.arguments(PolicySchema, examples=POLICY_EXAMPLES)
    @blp.response(201, PolicyViewSchema, description="Created; the policy is at Location",
                  headers=location_header("the policy"))
    @blp.alt_response(403, schema=ErrorSchema, description=FORBIDDEN)
    @blp.alt_response(409, schema=ErrorSchema, description="A policy of that name exists (in the API or the file)")
    @blp.alt_response(422, schema=ErrorSchema, description="A field is wrong: details name it and say why")
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:  # scope: admin (default)
        st = state()
        store = _store(st)
        policy = policies.validate(body)
        store.create(policy)
        store.reschedule(policy, _schedule(st), warn=_warn(st))
        return store.view({**policy, "source": "api"}, st.store), 201, {
            "Location": url_for("policies.Policy", name=policy["name"])}


@blp.route("/<string:name>", parameters=NAME_PARAMETER)
class Policy(MethodView):
    @blp.doc(operationId="getPolicy", summary="Show a retention policy",
             description="Its fields, `source`, `last_run` (job id, status, when) and `next_run`. Scope `read`; "
                         "its runs are listed by `GET /v1/jobs?policy={name}`.")
    @blp.response(200, PolicyViewSchema, description="The policy")
    @blp.alt_response(404, schema=ErrorSchema, description="No such policy")
    @blp.alt_response(422, schema=ErrorSchema, description="Not a policy name (INVALID_REQUEST)")
    def get(self, name: str) -> dict[str, Any]:
        st = state()
        store = _store(st)
        return store.view(store.get(name), st.store)

    @blp.doc(operationId="replacePolicy", summary="Replace a retention policy",
             description="Scope `admin`. The whole policy is replaced and its schedule starts again; file policies "
                         "are read-only.")
    @blp.arguments(PolicyReplaceSchema, examples=POLICY_EXAMPLES)
    @blp.response(200, PolicyViewSchema, description="The policy as it is now")
    @blp.alt_response(403, schema=ErrorSchema, description=FORBIDDEN)
    @blp.alt_response(404, schema=ErrorSchema, description="No such policy")
    @blp.alt_response(409, schema=ErrorSchema, description="The policy comes from POLICIES_FILE")
    @blp.alt_response(422, schema=ErrorSchema, description="A field is wrong: details name it and say why")
    def put(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        st = state()
        store = _store(st)
        store.get(name)  # 404 and bad names before anything else
        policy = policies.validate(body, name=name)
        store.replace(policy)
        store.reschedule(policy, _schedule(st), warn=_warn(st))
        return store.view({**policy, "source": "api"}, st.store)

    @blp.doc(operationId="deletePolicy", summary="Delete a retention policy",
             description="Scope `admin`. Its schedule stops; runs already queued still happen. File policies are "
                         "read-only.")
    @blp.response(204, description="Deleted")
    @blp.alt_response(403, schema=ErrorSchema, description=FORBIDDEN)
    @blp.alt_response(404, schema=ErrorSchema, description="No such policy")
    @blp.alt_response(422, schema=ErrorSchema, description="Not a policy name (INVALID_REQUEST)")
    @blp.alt_response(409, schema=ErrorSchema, description="The policy comes from POLICIES_FILE")
    def delete(self, name: str) -> None:
        _store(state()).delete(name)


@blp.route("/<string:name>/runs", parameters=NAME_PARAMETER)
class PolicyRuns(MethodView):
    @blp.doc(operationId="createPolicyRun", summary="Run a retention policy",
             description="Scope `delete`. A job of kind `policy` that joins the next window. `result.plan` lists "
                         "per repository the tags to delete and every kept tag with its reason, then the manifests "
                         "and bytes GC will free. A policy whose globs name no repository succeeds at once, changing "
                         "nothing. With `\"approval\": \"required\"` (or JANITOR_REQUIRE_APPROVAL for a real run) "
                         "the job is planned and waits as `awaiting_approval` with its plan; once approved, the "
                         "window plans again and deletes only what is in both plans (the rest is `skipped`).")
    @blp.arguments(PolicyRunSchema, examples=RUN_EXAMPLES)
    @blp.response(202, JobSchema, description="Queued; the job is at Location", headers=location_header("the job"))
    @blp.alt_response(403, schema=ErrorSchema, description=FORBIDDEN)
    @blp.alt_response(404, schema=ErrorSchema, description="No such policy")
    @blp.alt_response(503, schema=ErrorSchema, description="Registry or job queue unreachable")
    @auth.scope("delete")
    def post(self, body: dict[str, Any], name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
        st = state()
        store = _store(st)
        policy = store.get(name)
        request = {"dry_run": body["dry_run"], "trigger": "api", "approval": body.get("approval"),
                   **({"gc_mode": body["gc_mode"]} if body.get("gc_mode") else {})}
        [job] = policies.submit_runs(
            st.conn, st.keys, st.store, store, [(policy, request)], st.client.catalog(),
            lambda: st.queue.enqueue(WINDOW_JOB, st.settings.name, job_timeout=-1, result_ttl=3600),
            requested_by=auth.caller().name, require_approval=st.settings.require_approval)
        return job, 202, {"Location": url_for("jobs.Job", job_id=job["id"])}


@blp.record_once
def _check_policies_file(setup: Any) -> None:
    """A broken POLICIES_FILE stops the service at start, naming the entry and field, not at the first GET."""
    settings = setup.app.extensions["janitor"].settings
    if settings.policies_file:
        policies.load_file(settings.policies_file)
