"""Policy schedules on RQ's own scheduling: each due moment is one job put on RQ's scheduled-job registry
(`Queue.enqueue_at`), which the scheduler inside `python -m worker` (`with_scheduler=True`) moves to the
queue when due. Only the worker holding RQ's scheduler lock moves jobs, a moment has one job id however many
times it is scheduled, and each (policy, due time) is claimed once in Redis: with several workers every due
run happens once. Policies due at the same moment are fired by the same job, into the same window."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from rq import Queue

from janitor import errors
from janitor.config.settings import Settings
from janitor.jobs.records import JobStore, Keys
from janitor.planning import policies, upcoming
from janitor.planning.policies import PolicyStore
from janitor.registry.client import RegistryClient

log = logging.getLogger(__name__)
WINDOW_JOB = "worker.jobs.run_window"
SCHEDULE = "schedule"  # requested_by of a scheduled run: no token asked for it


def scheduler(queue: Queue, settings: Settings):  # type: ignore[no-untyped-def]
    """What puts a moment on RQ's schedule: one job per registry (its Redis namespace) and moment, fired by a
    worker serving that registry."""
    def schedule(when: datetime) -> None:
        queue.enqueue_at(when, policies.TICK_JOB, settings.name, job_id=policies.tick_id(settings.namespace, when),
                         job_timeout=600, result_ttl=3600, failure_ttl=7 * 24 * 3600)
    return schedule


def warner(queue: Queue, settings: Settings):  # type: ignore[no-untyped-def]
    """What puts a policy's `policy.upcoming` warning on RQ's schedule (or the queue, when already due)."""
    return upcoming.scheduler(queue, settings.name, settings.namespace)


def reconcile(settings: Settings, conn: redis.Redis) -> list[str]:
    """At worker start: every scheduled, enabled policy (the file's too) has its next moment on RQ's schedule.
    A moment missed while no worker ran is due now and fires once; re-scheduling an existing moment names the
    same job. Returns what was scheduled, for the log."""
    keys = Keys.of(settings)
    store = PolicyStore(conn, keys, settings.policies_file)
    queue = Queue(keys.queue_name, connection=conn)
    schedule, warn = scheduler(queue, settings), warner(queue, settings)
    done = []
    for policy in store.all():
        state = store.state(policy["name"])
        if not policy.get("schedule") or not policy.get("enabled"):
            store.set_next(policy["name"], None)
            continue
        due = _parse(state.get("next_run"))
        if due is None:
            due = store.reschedule(policy, schedule, warn=warn)
        else:
            schedule(due)
            if policy.get("notify_before"):
                warn(policy, due)
        done.append(f"{policy['name']} at {policies.iso(due)}")
    return done


def tick(settings: Settings, conn: redis.Redis) -> list[str]:
    """Fire every policy due now (once each, claimed in Redis), schedule their next moments, and queue their
    runs together for one window. Returns the job ids made."""
    keys = Keys.of(settings)
    store = PolicyStore(conn, keys, settings.policies_file)
    queue = Queue(keys.queue_name, connection=conn)
    schedule, warn = scheduler(queue, settings), warner(queue, settings)
    current = datetime.now(timezone.utc)
    runs = []
    warnings: list[tuple[dict[str, Any], datetime]] = []  # sent once the runs are recorded: see below

    def defer(policy: dict[str, Any], due: datetime) -> None:
        warnings.append((policy, due))
    try:
        every = store.all()
    except (errors.InvalidPolicy, OSError) as exc:
        # A broken POLICIES_FILE must not stop the API's policies: they still fire, and the log says why.
        log.error("POLICIES_FILE unreadable, its policies skipped: %s", getattr(exc, "message", exc))
        every = store.all(with_file=False)
    for policy in every:
        if not policy.get("schedule") or not policy.get("enabled"):
            continue
        due = _parse(store.state(policy["name"]).get("next_run"))
        if due is None:
            store.reschedule(policy, schedule, current, defer)
            continue
        if due > current + timedelta(seconds=1):
            continue  # not yet: its own moment is on the schedule
        if store.claim(policy["name"], due):
            runs.append((policy, {"dry_run": False, "trigger": "schedule", "due": policies.iso(due),
                                  "approval": policy.get("approval")}))
        store.reschedule(policy, schedule, max(current, due), defer)
    try:
        return _fire(settings, conn, keys, store, queue, runs)
    finally:
        # Only now: a warning due at once waits for its policy's run just queued (its `last_run`) to end.
        for policy, due in warnings:
            warn(policy, due)


def _fire(settings: Settings, conn: redis.Redis, keys: Keys, store: PolicyStore, queue: Queue,
          runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    if not runs:
        return []
    try:
        repositories = RegistryClient.from_settings(settings).catalog()
    except errors.JanitorError as exc:
        log.warning("cannot list repositories before a scheduled run (%s); the window will say why", exc.message)
        repositories = None
    made = policies.submit_runs(
        conn, keys, JobStore(conn, settings.job_ttl, keys), store, runs,
        repositories,  # None: unknown, so the window plans (or fails) them
        lambda: queue.enqueue(WINDOW_JOB, settings.name, job_timeout=-1, result_ttl=3600),
        requested_by=SCHEDULE, require_approval=settings.require_approval,
    )
    return [j["id"] for j in made]


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))

