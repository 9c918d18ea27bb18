"""The API's domain functions: check a request against the registry, record it, and queue it for a window."""

from __future__ import annotations

from typing import Any

from janitor import errors
from janitor.jobs import pending
from janitor.planning import approval
from janitor.planning.planner import check_request
from janitor.planning.protections import ProtectionStore
from janitor.window import heartbeat
from janitor.window.preflight import refuse_without_storage
from service.state import State

# The worker's job, by dotted name: the API never imports the worker.
WINDOW_JOB = "worker.jobs.run_window"


def _enqueue(st: State, kind: str, request: dict[str, Any], requested_by: str | None = None,
             **fields: Any) -> dict[str, Any]:
    """Record the job and queue it for the next window. `approval`, if any, moves from the request onto the
    job: such a job is planned in that window and then waits to be approved."""
    request = dict(request)
    request.pop("approval", None)
    job = st.store.create(kind, request, requested_by=requested_by, **fields)
    pending.submit(
        st.conn, st.keys, job["id"],
        lambda: st.queue.enqueue(WINDOW_JOB, st.settings.name, job_timeout=-1, result_ttl=3600),
    )
    return job


def submit_deletion(st: State, request: dict[str, Any], requested_by: str | None = None) -> dict[str, Any]:
    """Unknown names answer 404, a child of a tagged index 409, a protected tag 409 (TAG_PROTECTED, unless the
    request overrides protection), a wrong confirmation 422, a request the storage driver cannot serve 409
    (STORAGE_ACCESS_REQUIRED): before anything is queued."""
    found = heartbeat.storage(st.conn, st.keys)
    if found is not None:  # unknown (no worker yet): the window refuses it instead
        refuse_without_storage(request, found)
    rules = [] if request.get("override_protection") else protection_store(st).all()
    check_request(st.client, request, st.settings.registry_host, rules)
    return _enqueue(st, "deletion", request, requested_by,
                    approval=approval.needed(request, st.settings.require_approval))


def protection_store(st: State) -> ProtectionStore:
    return ProtectionStore(st.conn, st.keys, st.settings.protections_file)


def submit_gc(st: State, request: dict[str, Any], requested_by: str | None = None) -> dict[str, Any]:
    return _enqueue(st, "gc", request, requested_by)


def get_job(st: State, job_id: str) -> dict[str, Any]:
    job = st.store.get(job_id) if job_id.isalnum() and len(job_id) <= 64 else None
    if job is None:
        raise errors.JobNotFound(f"no job {job_id}", id=job_id)
    return job
