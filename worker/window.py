"""One maintenance window: the deletions, then writes refused while GC runs, then writes back on.

Order matters. Deletions need a writable registry. GC must not run while anything is pushed, so the registry
restarts read-only first, and a blob upload must then be refused; blobs of pushes in flight are held; GC
runs only while this window owns its lease and within its time limits; then the original config returns,
the restart clears the in-memory blob-descriptor cache (so a re-push cannot be told "layer already exists"
about a blob GC just removed), and a blob upload must be accepted before the registry is called writable.
Every change to the registry goes through the window's WindowGuard (janitor/window/guard.py), which owns the
lease, the fence and the holds record.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis as redis_lib
from rq import Queue

from janitor import errors, index, logs
from janitor.jobs import pending, telemetry
from janitor.jobs.records import FAILED, RUNNING, SUCCEEDED, now
from janitor.storage import freed
from janitor.window import holds, journal, leftovers, preflight
from janitor.window.guard import WindowGuard
from janitor.window.lease import MaintenanceLock
from worker import (
    blob_cache,
    deletion,
    events,
    incremental_gc,
    policy_window,
    restore,
    verify,
)
from worker.context import Context
from worker.state import StepError, WindowState

log = logging.getLogger(__name__)
MAINTENANCE_STEPS = ("drain", "fence", "hold", "remove_repositories", "gc")


def lease_connection(ctx: Context) -> redis_lib.Redis:
    """The lease's own connection, with timeouts: a Redis that hangs (paused, partitioned) must turn into
    failed renewals that are retried within the TTL, never into a renewal thread blocked for good."""
    timeout = max(0.5, min(5.0, ctx.settings.lock_ttl / 6))
    return redis_lib.Redis.from_url(ctx.settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)


def guard_for(ctx: Context, lease: MaintenanceLock) -> WindowGuard:
    return WindowGuard(ctx.settings, lease, ctx.container, ctx.fence, ctx.client, replicas=ctx.replicas or None)


def run(ctx: Context) -> None:
    """Take the lease, undo anything a dead window left, then run every waiting job in one window.

    Whatever stops the start ends the waiting jobs with the reason or leaves them waiting (never claimed and
    lost): the jobs are marked running before they leave the waiting list, and a worker's supervision gives
    requests still waiting a window when none is coming (worker/supervision.py)."""
    lease = MaintenanceLock(lease_connection(ctx), ctx.keys.lock, ctx.settings.lock_ttl)
    if not lease.acquire(ctx.settings.lock_wait):
        _fail_waiting(ctx, errors.LockLost(f"no maintenance window within {ctx.settings.lock_wait:.0f}s"), "lock")
        return
    try:
        guard = guard_for(ctx, lease)
        try:
            recover(ctx, guard)
        except redis_lib.RedisError:
            raise  # the jobs stay waiting: a window is given to them once Redis answers
        except Exception as exc:  # noqa: BLE001 - every cause is told to the jobs
            # Docker or the container is out of reach: nothing can be done safely, say why to every job.
            _fail_waiting(ctx, exc if isinstance(exc, errors.JanitorError) else errors.InternalError(
                f"the registry could not be checked before the window ({type(exc).__name__}: {exc})"), "preflight")
            return
        ids = pending.peek(ctx.conn, ctx.keys)
        jobs = _load(ctx, ids)
        pending.remove(ctx.conn, ctx.keys, ids)
        if jobs:
            Window(ctx, guard, jobs).run()
    finally:
        lease.release()


def _fail_waiting(ctx: Context, exc: errors.JanitorError, step: str) -> None:
    ids = pending.peek(ctx.conn, ctx.keys)
    for job in _load(ctx, ids):
        _fail(ctx, job, exc, step)
    pending.remove(ctx.conn, ctx.keys, ids)


def schedule_recovery(ctx: Context, attempts: int = 20) -> None:
    """Queue a window (with or without jobs it recovers first) for when the lease is free again. Best
    effort: a worker start recovers too."""
    for attempt in range(attempts):
        try:
            Queue(ctx.keys.queue_name, connection=ctx.conn).enqueue(
                "worker.jobs.run_window", ctx.settings.name, job_timeout=-1, result_ttl=3600)
            return
        except redis_lib.RedisError as exc:
            log.warning("cannot queue a recovery window yet (%s)", exc)
            time.sleep(0.5 * (attempt + 1))


def recover(ctx: Context, guard: WindowGuard) -> list[str]:
    """Bring back a registry a dead window left read-only, drop its holds, then end its jobs as failed.
    Call only under the lease. Returns what was done, for the log."""
    try:
        config_path = ctx.container.config_path()
        root, store = preflight.storage_of(ctx.container, config_path, ctx.settings.s3)
        guard.locate(config_path, root, storage=store)
        done = guard.recover()
    except errors.JanitorError as exc:
        log.error("recovery could not check the registry: %s", exc.message)
        raise
    for job in ctx.store.running():
        reached = job["steps"][-1]["name"] if job["steps"] else "start"
        _fail(ctx, job, errors.JanitorError(
            f"the worker stopped during step {reached!r}; the registry was checked and is writable again"), reached,
            code="INTERRUPTED")
        done.append(f"job {job['id']} ended as failed (interrupted at {reached})")
    for line in done:
        log.warning("recovery: %s", line)
    return done


def _load(ctx: Context, ids: list[str]) -> list[dict[str, Any]]:
    return ctx.store.claim(ids)  # queued -> running atomically: a job cancelled meanwhile is not taken


def _fail(ctx: Context, job: dict[str, Any], exc: errors.JanitorError, step: str, code: str | None = None) -> None:
    job["status"] = FAILED
    job["finished_at"] = now()
    job["error"] = {"code": code or exc.code, "message": exc.message, "details": exc.details, "step": step}
    events.summarize([job])
    ctx.store.save(job)
    events.finished(ctx, [job])


class Window(WindowState):
    """The window's steps in order: preflight, the deletions and policy runs, then the fence, GC and the
    restart; every change to the registry goes through the guard."""

    def run(self) -> None:
        self.guard.start_clock()
        logs.bind(window_id=self.info["id"], job_id=self.jobs[0]["id"] if len(self.jobs) == 1 else None)
        for job in self.jobs:
            job.update(status=RUNNING, started_at=now())
        self.save(self.jobs)
        outcome = SUCCEEDED
        try:
            self._run()
        except BaseException:
            outcome = FAILED  # anything that escaped a step: never call such a job succeeded
            raise
        finally:
            self.info["finished_at"] = now()
            for job in self.jobs:
                if job["status"] != RUNNING:
                    continue  # a dry run, finished when its plan was ready
                if outcome == FAILED and not job["error"]:
                    job["error"] = {"code": "INTERNAL_ERROR", "message": "the window stopped unexpectedly; "
                                    "see the worker log", "step": job["steps"][-1]["name"] if job["steps"] else None}
                job.update(status=FAILED if job["error"] else SUCCEEDED, finished_at=now())
            events.summarize(self.jobs)
            self.save(events.settled(self.jobs))  # a parked job may be approved or cancelled meanwhile
            events.finished(self.ctx, self.jobs)
            telemetry.record(self.ctx.conn, self.ctx.keys, self.info, self.jobs)

    def _run(self) -> None:
        try:
            with self.step(self.jobs, "preflight") as out:
                # Reach Docker and the container, and find the traps the fence cannot work around, before
                # deleting anything, so nothing is left half-done.
                report = preflight.check(self.ctx.container, self.ctx.settings.registry_cache_url, self.ctx.settings.s3)
                config_path, root = report.config_path, report.storage_root
                others = [r.container for r in self.guard.replicas[1:]]
                replica_reports = preflight.check_replicas(self.ctx.container, report, others)
                self.guard.locate(config_path, root or "", [r.config_path for r in replica_reports],
                                  storage=report.store)
                self.blob_cache = report.cache
                out.update(container=self.ctx.container.name, **report.as_dict())
                # Taken whether used or not: a window that does not carry a view of its own leaves none behind.
                if (carried := journal.resume(self.guard, self.ctx.views.take())) is not None:
                    out["carried_view"] = carried
                if replica_reports:  # every container of the registry, the one GC runs in first
                    out["replicas"] = [{"container": c.name, "config_path": r.config_path}
                                       for c, r in zip([self.ctx.container, *others], [report, *replica_reports])]
                if report.cache is not None:
                    out.update(blob_cache.forget_left_over(self, report.cache))
                self._storage_limits(report.storage)
        except StepError:
            return
        for job in self.jobs:
            if job["kind"] in ("deletion", "policy", "restore") and job["status"] == RUNNING and not job["error"]:
                with contextlib.suppress(StepError):
                    if job["kind"] == "deletion":
                        deletion.run(self, job, root)
                    elif job["kind"] == "restore":
                        restore.run(self, job)  # PUTs only: done before the fence, no part in GC
                    else:
                        policy_window.run(self, job, root)
                events.parked(self.ctx, job)
        if self.alive():
            if report.storage.gc_runs:
                self.maintain(config_path, root)
            else:
                with self.step(self.alive(), "gc") as out:
                    out.update(skipped=True, reason=report.storage.protections_off[preflight.NO_GC[0]])

    def _storage_limits(self, access: preflight.StorageAccess) -> None:
        """Every job says which protections are off; a request that needs the registry's files fails here."""
        for job in self.jobs:
            job["result"]["storage"] = access.as_dict()
            if job["kind"] in ("deletion", "policy"):
                try:
                    preflight.refuse_without_storage(
                        job["request"] if job["kind"] == "deletion"
                        else {"untagged": bool(job["request"]["policy"].get("untagged"))}, access)
                except errors.StorageAccessRequired as exc:
                    job["error"] = {"code": exc.code, "message": exc.message, "details": exc.details,
                                    "step": "preflight"}

    def maintain(self, config_path: str, root: str | None) -> None:
        """Drain and prepare, then fence, hold, GC, release, unfence, check. Whatever needs no fence (blob
        sizes, the cache settings, the reference files for `find -newer`) is done before it, so writes are
        refused for GC and what must surround it only. Each step's changes go through the guard, which checks the lease and
        the window's time first."""
        ctx, guard = self.ctx, self.guard
        try:
            with self.step(self.alive(), "drain") as out:
                out.update(self._drain(root) if root is not None else {"skipped": True, "reason": "no filesystem access"})
                marker, said = journal.begin(guard) if root is not None else (None, {})
                out.update(said)
                self.prepared_at = time.time()
                sizes = self._prepare_sizes(root, out) if root is not None else None
                early = self._early_links(out) if root is not None else None
                found = incremental_gc.premark(self, root, out)  # gc_mode incremental: the mark, before the fence
            with self.step(self.alive(), "fence") as out:
                out.update(guard.close())
                if guard.storage is not None:
                    self.storage.writes_refused(True)  # proven: from here until _unfence only this window writes
                    if marker is not None:
                        out["fenced_listing"] = journal.follow(guard, marker)
            self._report_writes(True)
            built: list[tuple[holds.Hold, bytes]] = []
            with self.step(self.alive(), "hold") as out:
                if root is None:
                    out.update(skipped=True, reason="no filesystem access: pushes in flight are not held")
                else:
                    # Links since the grace before the drain step's mark: a superset of those since the grace
                    # before now, found without stat-ing every link.
                    if "grace" in self.marks and "prepared" in self.marks:
                        # With the links read before the fence (`early`), only repositories that linked a blob
                        # since the drain step's mark are entered now.
                        recent, late = holds.recent_blobs_and_sizes(
                            self.storage, ctx.settings.upload_grace, self.prepared_at,
                            self.marks["grace" if early is None else "prepared"], self.marks["prepared"])
                        for repo, blobs in (early or {}).items():
                            recent.setdefault(repo, set()).update(blobs)
                        if sizes is not None:
                            sizes.update(late)  # blobs stored since the sizes were read
                    else:
                        recent = holds.recent_blobs(self.storage, ctx.settings.upload_grace)
                    kept = restore.holds(self, out)  # blobs of deletions still restorable
                    built = holds.build(holds.unreleased(recent, self.released_blobs)) + kept
                    if found is None:
                        guard.place_holds(built)
                    else:  # the janitor's own sweep keeps these blobs: nothing to write, nor to remove after
                        out["kept_by_the_sweep"] = True
                    out.update(holds=len(built), blobs_held=sum(len(h.blobs) for h, _ in built))
            if self.remove_repos and root is not None:  # without filesystem access such requests are refused
                with self.step(self.alive(), "remove_repositories") as out:
                    held = {h.repository for h, _ in built}
                    for repo, jobs in sorted(self.remove_repos.items()):
                        kept = "a push into it is in flight" if repo in held else \
                            self.storage.remove_repository(repo)
                        out.setdefault("kept" if kept else "removed", []).append(
                            {"repository": repo, "reason": kept} if kept else repo)
                        if not kept:
                            index.repository_removed(ctx.conn, ctx.keys.prefix, repo)
                        for job in jobs:
                            if not kept:
                                job["result"]["repositories_removed"].append(repo)
            with self.step(self.alive(), "gc") as out:
                self._gc(root, sizes, out, found, [] if found is None else built)
        except StepError:
            pass
        finally:
            self._unfence()
            with contextlib.suppress(errors.JanitorError):
                if self.guard.storage is not None:
                    self.storage.drop_marks(self.marks.values())

    def _prepare_sizes(self, root: str, out: dict[str, Any]) -> dict[str, int]:
        """Before the fence: the size of every blob GC may sweep. Sizes from the manifests this window's plans
        read go into the size book; blob files written since the last GC (less the upload grace) are stat-ed,
        and only those. A window of GC alone planned nothing: it stats every blob file (what GC itself reads
        in full anyway) and fills the book with them, reading no manifest from the registry."""
        ctx = self.ctx
        known = freed.known_sizes(self.manifests.values())
        grace = ctx.settings.upload_grace
        since = freed.stat_since(ctx.sizes.last_gc(), self.prepared_at, grace) if self.manifests else None
        wanted = {"grace": self.prepared_at - grace - 1, "prepared": self.prepared_at - 1,
                  **({"sizes": since - 1} if since is not None else {}),
                  # The check after GC lists again what changed since the plan read the revisions (verify).
                  **({"revisions": self.stored_read_at - 1} if self.stored is not None else {})}
        self.marks = self.storage.marks(self.guard.window_id, wanted)
        statted = self.storage.blob_sizes(self.marks.get("sizes"))
        ctx.sizes.remember({**known, **statted})
        out.update(blob_sizes_known=len(known), blob_files_stat=len(statted),
                   stat_since=None if "sizes" not in self.marks else round(since or 0.0, 3))
        return {**known, **statted}

    def _early_links(self, out: dict[str, Any]) -> dict[str, set[str]] | None:
        """Before the fence, on the filesystem: the blobs linked within the upload grace up to the drain step's
        mark, so that under the fence the hold step enters only the repositories that linked a blob since
        (with the default grace of an hour, every repository pushed to in that hour otherwise). None when the
        marks are missing, or on an object store, which lists every link either way."""
        if self.storage.driver != "filesystem" or "grace" not in self.marks or "prepared" not in self.marks:
            return None
        early = holds.recent_blobs(self.storage, self.ctx.settings.upload_grace, self.prepared_at,
                                   self.marks["grace"])
        out["recent_links_before_fence"] = sum(len(b) for b in early.values())
        return early

    def _gc(self, root: str | None, sizes: dict[str, int] | None, out: dict[str, Any], found: Any = None,
            unplaced: list[tuple[holds.Hold, bytes]] | None = None) -> None:
        """garbage-collect, then what must happen before writes resume: holds released, the directories of
        swept blobs removed, their registry cache keys forgotten. `unplaced`: holds the incremental sweep keeps
        without writing them (placed after all if the registry's GC has to run instead)."""
        ctx, guard = self.ctx, self.guard
        started = time.monotonic()
        mode: dict[str, Any] = {"mode": "registry"}
        if found is not None and root is not None:  # incremental: under the fence only the change, then the sweep
            summary = incremental_gc.collect(self, root, found, sizes, mode, unplaced or [])
        else:
            summary = guard.gc()  # lease, time, and a refused blob upload checked right before
        summary.duration_seconds = round(time.monotonic() - started, 3)
        self.swept_alone = mode.get("mode") == "incremental"  # only the janitor's own sweep: nothing unseen deleted
        if sizes is not None:  # only a GC that finished swept what it found unreferenced
            ctx.sizes.gc_started(self.prepared_at)
        self.swept = list(summary.deleted_blobs)
        held = [h.digest for h in guard.placed]  # each hold's own blob goes with it
        named = sorted({*self.released_blobs, *self.deleted, *(h.repository for h in guard.placed),
                        *(h.repository for h, _ in unplaced or ())})
        guard.release_holds()
        guard.check("cleaning up after GC")
        if root is not None:
            self.storage.remove_blob_dirs(incremental_gc.dirs_maybe_left(mode, found, summary.deleted_blobs, held))
        if self.blob_cache is not None:  # before writes resume: nobody may be told a swept blob exists
            out["cache_keys_removed"] = blob_cache.forget(self, summary.deleted_blobs, named)
        unknown: list[str] = []
        if sizes is not None:
            missing = [d for d in summary.deleted_blobs if d not in sizes]
            summary.bytes_freed, unknown = freed.count(summary.deleted_blobs, {**sizes, **ctx.sizes.lookup(missing)})
            ctx.sizes.forget(summary.deleted_blobs)
        done = {**summary.as_dict(), **mode}
        if sizes is None:  # blob sizes unreadable: no bytes figure at all, not a zero
            done.pop("bytes_freed", None)
        if unknown:  # never expected: said, not hidden in a smaller figure
            done["blobs_of_unknown_size"] = unknown
            log.error("GC swept %d blobs whose size was not known: %s", len(unknown), unknown[:20])
        out.update(done)
        for job in self.alive():
            job["result"].update(gc=done, **({"bytes_freed": summary.bytes_freed} if sizes is not None else {}))

    def _drain(self, root: str) -> dict[str, Any]:
        """Give blob uploads in progress a bounded chance to finish before writes are refused."""
        ctx = self.ctx
        start = time.monotonic()
        while True:
            active = self.storage.active_uploads(within=60, now=time.time())
            waited = time.monotonic() - start
            if not active or waited >= min(ctx.settings.upload_drain, self.guard.remaining()):
                return {"waited_seconds": round(waited, 3), "uploads_still_active": active}
            time.sleep(0.5)

    def _unfence(self) -> None:
        """Always runs: this window's holds go, its original config returns, the registry restarts, and a
        write must be accepted. A window that lost its lease to another worker leaves all that to it."""
        ctx = self.ctx
        if self.guard.storage is not None:
            self.storage.writes_refused(False)  # before anything else: the registry takes writes again soon
        everyone = [j for j in self.jobs if j["steps"] and j["steps"][-1]["name"] in MAINTENANCE_STEPS]
        try:
            with self.step(everyone, "restart") as out:
                out.update(self.guard.restore())
                refused = self.guard.write_refused_seconds()
                self.info["write_refused_seconds"] = None if refused is None else round(refused, 3)
                out["write_refused_seconds"] = self.info["write_refused_seconds"]
                if out.get("restored") and (carried := journal.carry(self.guard, ctx.views, self.swept_alone)):
                    out["carried_view"] = carried
            if out.get("restored"):
                self._report_writes(False)
        except StepError as exc:
            refused = self.guard.write_refused_seconds()
            self.info["write_refused_seconds"] = None if refused is None else round(refused, 3)
            if isinstance(exc.__cause__, errors.LockLost):
                schedule_recovery(self.ctx)  # whoever takes the lease next undoes this window's fence
                return  # not this window's registry to check any more
        index.window_restarted(ctx.conn, ctx.keys.prefix)  # the worker's reconciler reads the registry again
        with contextlib.suppress(StepError):
            with self.step(everyone, "health") as out:
                ctx.client.ping()
                out["write_probe_seconds"] = round(self.guard.require_accepted(), 3)
                out["registry"] = "answering, writable"
        with contextlib.suppress(StepError):
            with self.step(everyone, "verify") as out:
                verify.run(self, everyone, out)

    def _report_writes(self, read_only: bool) -> None:
        """Dashboards see the fence when it is proven, and its end when a write was accepted again (the
        worker's supervision reports the rest of the time, while no window runs)."""
        found = leftovers.report(True, leftovers.CONFIG_MARKER, self.guard.owner) if read_only else \
            leftovers.report(False, leftovers.WRITE_PROBE)
        with contextlib.suppress(redis_lib.RedisError):
            leftovers.publish(self.ctx.conn, self.ctx.keys, found)
