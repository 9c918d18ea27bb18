"""Nothing a window leaves half-done waits for the next request.

A window runs in RQ's work horse, a process forked per job. When that process dies (SIGKILL from the OOM
killer or a node drain) the registry may be left read-only, holds in place and jobs `running`, while the
worker that forked it lives on. Two things put that right, both under the lease (window.recover):

- RQ's hook for a work horse that died (`on_work_horse_killed`): the worker that forked it waits for the
  dead window's lease to expire, recovers, and gives the requests still waiting a window.
- A look every few seconds in each worker serving the registry (`Supervisor`): a fence marker, a holds
  record or a config backup in the container with no live lease is a window that died (whatever process
  ran it); so are jobs `running` with no lease. The same look publishes whether the registry takes writes
  (janitor/window/leftovers.py) and gives waiting requests a window when none is coming (a window job lost
  with Redis, a flag left behind).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from rq import Queue

from janitor import errors
from janitor.jobs import pending
from janitor.window import heartbeat, leftovers
from janitor.window.fence import CONFIG_READS
from janitor.window.lease import MaintenanceLock
from worker import window
from worker.context import Context

log = logging.getLogger("worker")
WINDOW_JOB = "worker.jobs.run_window"
# Jobs `running` with no lease are looked for every this many looks (it reads every job record).
RUNNING_EVERY = 6


def recover_now(ctx: Context, wait: float) -> list[str] | None:
    """Take the lease within `wait` seconds and undo what a dead window left; None when the lease stayed
    busy (its owner recovers before its own window)."""
    lock = MaintenanceLock(window.lease_connection(ctx), ctx.keys.lock, ctx.settings.lock_ttl)
    if not lock.acquire(wait):
        return None
    try:
        done = window.recover(ctx, window.guard_for(ctx, lock))
        observe(ctx)  # dashboards see the registry writable now, not at the next look
        return done
    finally:
        lock.release()


def observe(ctx: Context) -> leftovers.Leftovers | None:
    """Look at the container and publish whether the registry takes writes: a fence marker in its config, or
    read-only mode configured by hand. None when Docker or the container is out of reach (the heartbeat says
    so). No blob upload: the windows' own probes report what they see (fence proven, writes back)."""
    try:
        found = leftovers.look(ctx.container, CONFIG_READS)
    except errors.JanitorError:
        return None
    if found.fence_owner is not None:
        _publish(ctx, leftovers.report(True, leftovers.CONFIG_MARKER, found.fence_owner))
    else:
        _publish(ctx, leftovers.report(found.read_only_configured, leftovers.READ_ONLY_CONFIG))
    return found


def window_queued(ctx: Context) -> bool:
    """A window job is on the registry's queue already (it claims whatever is waiting when it starts)."""
    queue = Queue(ctx.keys.queue_name, connection=ctx.conn)
    return any(job is not None and job.func_name == WINDOW_JOB for job in queue.jobs)


def resume_waiting(ctx: Context) -> bool:
    """Requests still waiting get a window unless one is queued already. True when one was queued."""
    if window_queued(ctx):
        return False
    scheduled = pending.reschedule(ctx.conn, ctx.keys, lambda: Queue(ctx.keys.queue_name, connection=ctx.conn)
                                   .enqueue(WINDOW_JOB, ctx.settings.name, job_timeout=-1, result_ttl=3600))
    if scheduled:
        log.warning("[%s] requests were waiting with no window coming: one is queued", ctx.settings.name)
    return scheduled


def on_work_horse_killed(ctx: Context) -> Any:
    """RQ's `work_horse_killed_handler`: a window whose process died is recovered by the worker that forked
    it, as soon as the dead window's lease expires. Never raises (RQ goes on to fail the RQ job)."""
    def handler(job: Any, retpid: int | None, ret_val: int | None, _rusage: object) -> None:
        if getattr(job, "func_name", None) != WINDOW_JOB:
            return
        log.error("[%s] the process running window job %s died (pid %s, status %s): recovering the registry "
                  "once its lease expires", ctx.settings.name, job.id, retpid, ret_val)
        try:
            done = recover_now(ctx, ctx.settings.lock_ttl * 2 + 1)
            if done is None:
                log.warning("[%s] maintenance lease still busy: its owner recovers first", ctx.settings.name)
        except Exception as exc:  # noqa: BLE001 - the periodic look tries again
            log.error("[%s] recovery after the window's process died failed (%s); retried shortly",
                      ctx.settings.name, getattr(exc, "message", exc))
        try:
            resume_waiting(ctx)
        except Exception as exc:  # noqa: BLE001 - the periodic look tries again
            log.error("[%s] cannot queue a window for waiting requests (%s)", ctx.settings.name, exc)
    return handler


def _publish(ctx: Context, found: dict[str, Any]) -> None:
    try:
        leftovers.publish(ctx.conn, ctx.keys, found)
    except redis.RedisError:
        pass  # /readyz says Redis is down on its own


class Supervisor:
    """Every `interval` seconds, with no window holding the lease: what the container shows (published),
    recovery when a dead window left something, a window for requests nobody serves."""

    def __init__(self, ctx: Context, interval: float = heartbeat.INTERVAL) -> None:
        self.ctx = ctx
        self.interval = interval
        self.looks = 0
        self.stalled: bytes | None = None  # the first waiting request at the last look with the lease free

    def lease_free(self) -> bool:
        return not self.ctx.conn.exists(self.ctx.keys.lock)

    def look(self) -> None:
        ctx = self.ctx
        if not self.lease_free():
            self.stalled = None
            return  # a live window owns the fence and holds, and reports them itself
        self.looks += 1
        found = observe(ctx)
        orphans = found is not None and found.any
        if not orphans and self.looks % RUNNING_EVERY == 0:
            orphans = bool(ctx.store.running())
        if orphans and self.lease_free():
            log.warning("[%s] a window stopped half-way (%s) and no live lease: recovering", ctx.settings.name,
                        found if found is not None and found.any else "jobs left running")
            recover_now(ctx, 0)
        self._unstall()

    def _unstall(self) -> None:
        """Requests waiting at two looks in a row with the lease free and no window queued: none is coming."""
        head = self.ctx.conn.lindex(self.ctx.keys.pending, 0)
        if head is None or not self.lease_free():
            self.stalled = None
            return
        if head == self.stalled:
            resume_waiting(self.ctx)
        self.stalled = head

    def start(self) -> threading.Thread:
        def loop() -> None:
            while True:
                time.sleep(self.interval)
                try:
                    self.look()
                except Exception as exc:  # noqa: BLE001 - the look never dies
                    log.error("[%s] supervision look failed: %s", self.ctx.settings.name, getattr(exc, "message", exc))
        thread = threading.Thread(target=loop, name=f"supervise-{self.ctx.settings.name}", daemon=True)
        thread.start()
        return thread
