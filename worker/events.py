"""What the worker does when jobs reach an event: the one-line summary on the job, and webhook deliveries
queued (never sent here). Also the sweeper that ends jobs nobody approved in time as `expired`."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from janitor.jobs import webhooks
from janitor.jobs.records import AWAITING_APPROVAL, EXPIRED, now
from worker.context import Context
from worker.webhooks import enqueuer

log = logging.getLogger("worker.events")
SWEEP_INTERVAL = 1.0


def summarize(jobs: list[dict[str, Any]]) -> None:
    """The one-line summary of jobs at an event, set before they are saved so nobody reads the status
    without it."""
    for job in jobs:
        if job.get("status") in webhooks.EVENT_BY_STATUS:
            job["summary"] = webhooks.summary(job)


def parked(ctx: Context, job: dict[str, Any]) -> None:
    """Right after a job was planned and saved as awaiting approval: its event goes out now, not when the
    rest of the window (other jobs' GC) is over."""
    if job.get("status") == AWAITING_APPROVAL:
        _announce(ctx, [job])


def settled(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs a window may still save at its end: not those parked awaiting approval, which the API may
    have approved, rejected or cancelled meanwhile."""
    return [j for j in jobs if j.get("status") != AWAITING_APPROVAL]


def finished(ctx: Context, jobs: list[dict[str, Any]]) -> None:
    """Jobs that reached an end (succeeded, failed, expired): webhooks queued, after the job was saved.
    Parked jobs were announced by `parked`."""
    _announce(ctx, settled(jobs))


def _announce(ctx: Context, jobs: list[dict[str, Any]]) -> None:
    """Best effort: nothing here may fail or delay a window."""
    for job in jobs:
        if job.get("status") not in webhooks.EVENT_BY_STATUS:
            continue
        try:
            summary = webhooks.summary(job)
            if job.get("summary") != summary:
                job["summary"] = summary
                ctx.store.save(job)
            webhooks.announce(ctx.store, ctx.settings.webhook_urls, job, enqueuer(ctx.conn, ctx.settings))
        except Exception:  # noqa: BLE001 - a record or a delivery must never fail the window
            log.exception("could not record the summary or queue webhooks of job %s", job.get("id"))


def expire_due(ctx: Context, at: float | None = None) -> list[str]:
    """Jobs past their approval deadline become `expired` (atomically: an approval that won the race stays)."""
    ended = []

    def expire(job: dict[str, Any]) -> None:
        job.update(status=EXPIRED, finished_at=now())
        job["summary"] = webhooks.summary(job)

    for job_id in ctx.store.due_for_expiry(time.time() if at is None else at):
        job, changed = ctx.store.transition(job_id, {AWAITING_APPROVAL}, expire)
        if job is None or not changed:
            ctx.conn.zrem(ctx.keys.awaiting, job_id)
            continue
        log.info("job %s expired: not approved by %s", job_id, job.get("expires_at"))
        finished(ctx, [job])
        ended.append(job_id)
    return ended


def start_sweeper(ctx: Context) -> threading.Thread:
    def loop() -> None:
        while True:
            try:
                expire_due(ctx)
            except redis.RedisError:
                pass  # Redis away: the next sweep catches up
            except Exception:  # noqa: BLE001
                log.exception("approval expiry sweep failed")
            time.sleep(SWEEP_INTERVAL)

    thread = threading.Thread(target=loop, name="approval-expiry", daemon=True)
    thread.start()
    return thread
