"""Approve, reject, cancel and list jobs: the chatops loop's domain functions behind /v1/jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from janitor import errors
from janitor.config.tokens import Caller
from janitor.jobs import pending, webhooks
from janitor.jobs.records import (
    AWAITING_APPROVAL,
    CANCELLED,
    EXPIRED,
    QUEUED,
    REJECTED,
    epoch,
    now,
)
from service import notify
from service.maintenance import WINDOW_JOB, get_job
from service.state import State


def _overdue(job: dict[str, Any]) -> bool:
    return bool(job.get("expires_at")) and epoch(job["expires_at"]) <= time.time()


def _finish(job: dict[str, Any], status: str, **fields: Any) -> None:
    job.update(status=status, finished_at=now(), **fields)
    job["summary"] = webhooks.summary(job)


def _refuse_state(job: dict[str, Any], action: str) -> errors.JanitorError:
    if job["status"] == EXPIRED:
        return errors.ApprovalExpired(f"job {job['id']} expired at {job['expires_at']} without approval; "
                                      "ask again", id=job["id"], status=job["status"])
    return errors.NotAwaitingApproval(f"job {job['id']} is {job['status']}; only a job awaiting approval can be "
                                      f"{action}", id=job["id"], status=job["status"])


def approve(st: State, job_id: str, who: Caller) -> dict[str, Any]:
    """Queue an awaiting job for the next window, where it is planned again and carried out no further than
    approved. The requester may not approve its own request unless it is admin."""
    job = get_job(st, job_id)
    if job.get("requested_by") == who.name and not who.may("admin"):
        raise errors.Forbidden("a different token must approve this job: it was requested by this one, and "
                               "approving one's own request needs the 'admin' scope", scope="admin", token=who.name)
    late: list[bool] = []

    def change(j: dict[str, Any]) -> None:
        if _overdue(j):
            late.append(True)
            _finish(j, EXPIRED)
        else:
            j.update(status=QUEUED, approved_by=who.name, approved_at=now(), expires_at=None)
    found, changed = st.store.transition(job_id, {AWAITING_APPROVAL}, change)
    if found is None:
        raise errors.JobNotFound(f"no job {job_id}", id=job_id)
    if changed and late:
        notify.announce(st, found)
    if not changed or late:
        raise _refuse_state(found, "approved")
    pending.submit(st.conn, st.keys, job_id, lambda: st.queue.enqueue(
        WINDOW_JOB, st.settings.name, job_timeout=-1, result_ttl=3600))
    return found


def reject(st: State, job_id: str, who: Caller) -> dict[str, Any]:
    get_job(st, job_id)
    job, changed = st.store.transition(job_id, {AWAITING_APPROVAL},
                                       lambda j: _finish(j, REJECTED, rejected_by=who.name, rejected_at=now()))
    if job is None:
        raise errors.JobNotFound(f"no job {job_id}", id=job_id)
    if not changed:
        raise _refuse_state(job, "rejected")
    notify.announce(st, job)
    return job


def cancel(st: State, job_id: str, who: Caller) -> dict[str, Any]:
    """Take back a job still queued or awaiting approval. A running window is never interrupted."""
    job = get_job(st, job_id)
    if job.get("requested_by") != who.name and not who.may("admin"):
        raise errors.Forbidden(f"job {job_id} was requested by {job.get('requested_by')}: cancelling another "
                               "token's job needs the 'admin' scope", scope="admin", token=who.name)
    found, changed = st.store.transition(job_id, {QUEUED, AWAITING_APPROVAL},
                                         lambda j: _finish(j, CANCELLED, cancelled_by=who.name, cancelled_at=now()))
    if found is None:
        raise errors.JobNotFound(f"no job {job_id}", id=job_id)
    if not changed:
        why = "its window is running and a running window is never interrupted" if found["status"] == "running" \
            else "it has already finished"
        raise errors.JobNotCancellable(f"job {job_id} is {found['status']}: {why}", id=job_id, status=found["status"])
    notify.announce(st, found)
    return found


def _matches(job: dict[str, Any], args: dict[str, Any]) -> bool:
    request = job.get("request") or {}
    return (("status" not in args or job.get("status") == args["status"])
            and ("kind" not in args or job.get("kind") == args["kind"])
            and ("requested_by" not in args or job.get("requested_by") == args["requested_by"])
            and ("policy" not in args or job.get("policy") == args["policy"])
            and ("repository" not in args or args["repository"] in (request.get("repository"), job.get("repository"))))


def history(st: State, args: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Jobs newest first, filtered; `since` narrows the index read itself."""
    since = args["since"].timestamp() if args.get("since") else None
    return (j for j in st.store.history(since) if _matches(j, args))
