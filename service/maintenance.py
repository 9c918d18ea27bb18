"""The API's domain functions: check a request against the registry, record it, and queue it for a window."""

from __future__ import annotations

import time
from typing import Any

from janitor import errors
from janitor.jobs import pending
from janitor.jobs.records import FINISHED
from janitor.planning import approval
from janitor.planning import restore as restoring
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


def submit_restore(st: State, job_id: str, subset: dict[str, Any], requested_by: str | None = None) -> dict[str, Any]:
    """404 for a job unknown, 409 when it has nothing to restore or its window ended, 422 for a subset naming
    what it did not delete: before anything is queued."""
    valid = job_id.isalnum() and len(job_id) <= 64
    rec = restoring.RestorableStore(st.conn, st.keys.prefix).get(job_id) if valid else None
    job = st.store.get(job_id) if valid else None
    if job is None and rec is None:
        raise errors.JobNotFound(f"no job {job_id}", id=job_id)
    if rec is None:
        assert job is not None
        request = job.get("request") or {}
        if job["kind"] not in ("deletion", "policy"):
            why = f"a {job['kind']} job deletes nothing"
        elif request.get("dry_run"):
            why = "a dry run deleted nothing"
        elif job["status"] not in FINISHED:
            why = f"it is {job['status']}: it has deleted nothing yet"
        elif not (job.get("result") or {}).get("manifests_deleted") and not (job.get("result") or {}).get("tags_removed"):
            why = "it deleted nothing"
        else:
            why = "it ran without a restore window (JANITOR_RESTORE_WINDOW, or restore_window on the request or policy)"
        raise errors.NotRestorable(f"job {job_id} cannot be restored: {why}", id=job_id)
    if rec["restorable_until"] <= time.time():
        raise errors.RestoreWindowEnded(
            f"the restore window of job {job_id} ended at {restoring.iso(rec['restorable_until'])}; GC may have "
            "freed what it deleted", id=job_id, restorable_until=restoring.iso(rec["restorable_until"]))
    restoring.plan(rec, subset)  # 422 for entries the job did not delete
    return _enqueue(st, "restore", {"job": job_id, **subset}, requested_by)


def restorable(st: State) -> list[dict[str, Any]]:
    """Every job still restorable, newest deletion first, as GET /v1/restorable lists them."""
    return [restoring.summary(r) for r in restoring.RestorableStore(st.conn, st.keys.prefix).live()]
