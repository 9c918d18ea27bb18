"""`python -m worker`: recover what a crashed worker left, then work the maintenance queue."""

from __future__ import annotations

import logging

import redis
from rq import Queue, Worker

from janitor import errors, heartbeat, logs, pending
from janitor.lock import MaintenanceLock
from janitor.settings import Settings
from worker import events, indexer, schedules, webhooks, window
from worker.context import Context

log = logging.getLogger("worker")


def recover_on_start(ctx: Context) -> None:
    """The lock of a killed worker expires within its TTL; wait that long, then undo what it left."""
    lock = MaintenanceLock(window.lease_connection(ctx), ctx.keys.lock, ctx.settings.lock_ttl)
    if not lock.acquire(ctx.settings.lock_ttl * 2):
        log.warning("maintenance lock busy; a live worker owns the window, nothing to recover")
        return
    try:
        window.recover(ctx, window.guard_for(ctx, lock))
    except errors.JanitorError as exc:
        log.error("could not recover the registry at start: %s", exc.message)
    finally:
        lock.release()


def main() -> None:
    settings = Settings.from_env()
    logs.configure(settings.log_format)
    conn = redis.Redis.from_url(settings.redis_url)
    ctx = Context.build(settings, conn)
    queue = Queue(ctx.keys.queue_name, connection=conn)
    recover_on_start(ctx)
    heartbeat.start(conn, ctx.keys, ctx.container)
    events.start_sweeper(ctx)  # awaiting approval past JANITOR_APPROVAL_TTL -> expired
    indexer.start(ctx)  # the listing index: filled now, reconciled every JANITOR_RECONCILE_INTERVAL
    deliveries = webhooks.start_process()  # the webhook queue, served apart so no delivery waits on a window
    if pending.waiting(conn, ctx.keys):
        # Requests a dead worker never claimed: give them a window.
        conn.set(ctx.keys.scheduled, "1")
        queue.enqueue("worker.jobs.run_window", settings.registry_host, job_timeout=-1)
    try:
        try:
            for line in schedules.reconcile(settings, conn):
                log.info("policy schedule: %s", line)
        except (errors.JanitorError, OSError) as exc:
            log.error("policy schedules not set: %s", getattr(exc, "message", exc))
        # RQ's scheduler (one worker holds its lock) moves due policy moments from enqueue_at to the queue.
        Worker([queue], connection=conn).work(with_scheduler=True)
    finally:
        deliveries.terminate()


if __name__ == "__main__":
    main()
