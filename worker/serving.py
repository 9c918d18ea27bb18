"""One registry served by this process: recover what a crashed worker left, then take the registry's windows
from its own RQ queue, but only while this process reaches the registry's Docker host.

A worker that cannot reach the Docker host does not listen on the registry's queue (so another worker that
can takes its windows), says so in the log and on /readyz (`janitor:<ns>:worker-unreachable`), and looks
again every few seconds. When the engine goes away while it listens, the RQ worker is stopped the way RQ
stops on SIGTERM (a window in progress ends first), and listening resumes once the engine answers again.
When no worker has reached the engine for JANITOR_DOCKER_GRACE seconds, a worker that cannot takes the
windows after all, so that requests fail with DOCKER_UNAVAILABLE (as with one worker) instead of waiting for
good; it stops again as soon as a worker that reaches the engine reports.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import redis
from rq import Queue

from janitor import errors
from janitor.config.settings import Settings
from janitor.jobs import records
from janitor.window import heartbeat
from worker import events, indexer, schedules, supervision
from worker.context import Context
from worker.rqworkers import Worker

log = logging.getLogger("worker")
WINDOW_JOB = supervision.WINDOW_JOB
# After a look that found the registry container not running (a window's restart lasts about a second).
RELOOK = 1.0
# Consecutive failed looks (one per heartbeat.INTERVAL) before a listening worker stops taking windows.
LOST_AFTER = 3


def recover_on_start(ctx: Context) -> None:
    """The lock of a killed worker expires within its TTL; wait that long, then undo what it left."""
    try:
        if supervision.recover_now(ctx, ctx.settings.lock_ttl * 2) is None:
            log.warning("[%s] maintenance lock busy; a live worker owns the window, nothing to recover",
                        ctx.settings.name)
    except errors.JanitorError as exc:
        log.error("[%s] could not recover the registry at start: %s", ctx.settings.name, exc.message)


class DockerWatch:
    """Looks at the registry's Docker host every heartbeat.INTERVAL and publishes what it saw (the heartbeat
    /readyz reads). `reachable` is set while this worker should listen on the registry's queue: the engine
    answers, or (`fallback`) no worker has reached it for JANITOR_DOCKER_GRACE seconds, so the windows come
    here to fail with DOCKER_UNAVAILABLE rather than wait for good. `lost` once the RQ worker was asked to
    stop listening."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.reachable = threading.Event()
        self.listening = False
        self.lost = False
        self.fallback = False
        self.failures = 0
        self.alone_since: float | None = None
        self.last_problem: str | None = None
        self.not_running = False

    def look(self) -> None:
        try:
            found = heartbeat.report(self.ctx.conn, self.ctx.keys, self.ctx.container, self.ctx.settings.s3)
            self.not_running = found.get("code") == heartbeat.NOT_RUNNING
            # Only workers that reach the engine write the heartbeat: is there one (within the last 15 s)?
            other = found.get("code") == heartbeat.UNREACHABLE and bool(self.ctx.conn.exists(self.ctx.keys.heartbeat))
        except redis.RedisError:
            return  # Redis is down: /readyz says so on its own
        name, host = self.ctx.settings.name, self.ctx.settings.docker_host or "DOCKER_HOST"
        if found.get("code") != heartbeat.UNREACHABLE:
            if self.last_problem is not None:
                log.info("[%s] Docker host %s answers again: taking this registry's windows", name, host)
            self.failures, self.last_problem, self.alone_since, self.fallback = 0, None, None, False
            self.reachable.set()
            return
        self.failures += 1
        if self.last_problem is None:
            log.error("[%s] cannot reach Docker host %s (%s): not taking this registry's windows; a worker "
                      "that reaches it will", name, host, found.get("message"))
        self.last_problem = str(found.get("message"))
        now = time.monotonic()
        self.alone_since = None if other else (self.alone_since or now)
        fallback = self.alone_since is not None and now - self.alone_since >= self.ctx.settings.docker_grace
        if self.listening:
            if not fallback and self.failures >= LOST_AFTER and not self.lost:
                self.reachable.clear()
                self.lost = True
                log.error("[%s] Docker host %s lost: stop listening on the queue after the current window",
                          name, host)
                os.kill(os.getpid(), signal.SIGTERM)  # RQ's warm shutdown, in the main thread
        elif fallback:
            if not self.fallback:
                log.warning("[%s] no worker has reached Docker host %s for %.0fs: taking this registry's windows "
                            "so that they fail with DOCKER_UNAVAILABLE instead of waiting", name, host,
                            self.ctx.settings.docker_grace)
            self.fallback = True
            self.reachable.set()
        else:
            self.fallback = False
            self.reachable.clear()

    def start(self) -> threading.Thread:
        def loop() -> None:
            while True:
                try:
                    self.look()
                except Exception:  # noqa: BLE001 - the watch never dies
                    log.exception("Docker watch failed")
                # A look that caught a window's restart would say "not running" until the next one: looked at
                # again soon, so /readyz and janitor_worker_up do not show a registry down for 5 s after it.
                time.sleep(RELOOK if self.not_running else heartbeat.INTERVAL)
        thread = threading.Thread(target=loop, name=f"docker-watch-{self.ctx.settings.name}", daemon=True)
        thread.start()
        return thread

def _wait_for_redis(conn: redis.Redis, name: str) -> None:
    """Until Redis answers: a worker that Redis restarts under must wait for it, not exit (with one registry
    nothing would start it again, and the requests it should serve would wait for ever)."""
    delay = 0.5
    while True:
        try:
            conn.ping()
            return
        except redis.RedisError as exc:
            log.warning("[%s] Redis not answering (%s); trying again in %.1fs", name, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def serve(settings: Settings) -> None:
    """Serve one registry in this process until stopped (SIGTERM/SIGINT: RQ's warm shutdown)."""
    conn = redis.Redis.from_url(settings.redis_url)
    _wait_for_redis(conn, settings.name)
    ctx = Context.build(settings, conn)
    # The listing index first: a cold listing waits on its fill, which needs nothing set up below.
    index_stop = indexer.start(ctx)  # filled now, reconciled every JANITOR_RECONCILE_INTERVAL
    moved = records.adopt_legacy(conn, ctx.keys)
    if moved:
        log.info("[%s] %d job records moved under %s (upgrade)", settings.name, moved, ctx.keys.prefix)
    watch = DockerWatch(ctx)
    watch.look()
    watch.start()
    events.start_sweeper(ctx)  # awaiting approval past JANITOR_APPROVAL_TTL -> expired
    supervision.Supervisor(ctx).start()  # a window that died half-way is recovered without a new request
    while True:
        if not watch.reachable.is_set():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing in progress: a stop request ends us now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            watch.reachable.wait()
        watch.lost = False
        try:
            recover_on_start(ctx)
            # A fresh connection per RQ worker: a warm shutdown may leave the last one mid-read.
            rq_conn = redis.Redis.from_url(settings.redis_url)
            queue = Queue(ctx.keys.queue_name, connection=rq_conn)
            supervision.resume_waiting(ctx)  # requests a dead worker never claimed get a window
            try:
                for line in schedules.reconcile(settings, conn):
                    log.info("[%s] policy schedule: %s", settings.name, line)
            except (errors.JanitorError, OSError) as exc:
                log.error("[%s] policy schedules not set: %s", settings.name, getattr(exc, "message", exc))
        except redis.RedisError as exc:  # Redis restarted while this worker set up: set up again once it answers
            log.warning("[%s] Redis stopped answering while the worker set up (%s)", settings.name, exc)
            _wait_for_redis(conn, settings.name)
            continue
        watch.listening = True
        worker = Worker([queue], connection=rq_conn,
                        work_horse_killed_handler=supervision.on_work_horse_killed(ctx))
        try:
            # RQ's scheduler (one worker per queue holds its lock) moves due policy moments to the queue.
            worker.work(with_scheduler=True)
        except redis.RedisError as exc:
            log.warning("[%s] the RQ worker lost Redis (%s)", settings.name, exc)
        finally:
            watch.listening = False
        if watch.lost:
            log.warning("[%s] not listening on %s until Docker host answers again", settings.name, queue.name)
            continue
        if getattr(worker, "_shutdown_requested_date", None) is not None:
            # Stopped from outside (SIGTERM/SIGINT). The reconciler is told first: a reconcile still running when
            # the interpreter shuts down meets a closed thread pool, which is no failure to report.
            index_stop.set()
            return
        # RQ gave up on its own (it quits on a Redis timeout): serve again once Redis answers, never end quietly.
        log.warning("[%s] the RQ worker stopped without a stop request; listening again", settings.name)
        _wait_for_redis(conn, settings.name)
