"""One maintenance window: the deletions, then writes refused while GC runs, then writes back on.

Order matters. Deletions need a writable registry. GC must not run while anything is pushed, so the registry
restarts read-only first; blobs of pushes in flight are held; GC runs only while this window owns the lock;
then the original config returns and the restart clears the in-memory blob-descriptor cache, so a re-push
cannot be told "layer already exists" about a blob GC just removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import redis as redis_lib

from janitor import cache, errors, gc, holds, integrity, pending, storage
from janitor.records import FAILED, QUEUED, RUNNING, SUCCEEDED, now
from janitor.lock import MaintenanceLock
from janitor.manifests import Manifest
from janitor.planner import Inventory, plan_deletion
from janitor.untag import untag
from worker import policy_window
from worker.context import Context

log = logging.getLogger(__name__)
HOLDS_SUFFIX = ".janitor-holds"
MAINTENANCE_STEPS = ("drain", "fence", "hold", "remove_repositories", "gc")


class StepError(Exception):
    """A step failed; the jobs it ran for are already marked failed."""


def run(ctx: Context) -> None:
    """Take the lock, undo anything a crashed window left, then run every waiting job in one window."""
    lock = MaintenanceLock(ctx.conn, ctx.keys.lock, ctx.settings.lock_ttl)
    if not lock.acquire(ctx.settings.lock_wait):
        for job in _load(ctx, pending.claim(ctx.conn, ctx.keys)):
            _fail(ctx, job, errors.LockLost(f"no maintenance window within {ctx.settings.lock_wait:.0f}s"), "lock")
        return
    try:
        try:
            recover(ctx)
        except errors.JanitorError as exc:
            # Docker or the container is out of reach: nothing can be done safely, say why to every job.
            for job in _load(ctx, pending.claim(ctx.conn, ctx.keys)):
                _fail(ctx, job, exc, "preflight")
            return
        jobs = _load(ctx, pending.claim(ctx.conn, ctx.keys))
        if jobs:
            Window(ctx, lock, jobs).run()
    finally:
        lock.release()


def recover(ctx: Context) -> list[str]:
    """Bring back a registry a dead window left read-only, drop its holds, then end its jobs as failed.
    Call only under the lock. Returns what was done, for the log."""
    done: list[str] = []
    try:
        config_path = ctx.container.config_path()
        root = storage.root(ctx.container, config_path)
        if ctx.container.exists(config_path + HOLDS_SUFFIX):
            left = json.loads(ctx.container.read_file(config_path + HOLDS_SUFFIX))
            holds.release(ctx.container, root, [holds.Hold(h["repository"], h["digest"], ()) for h in left])
            ctx.container.exec(["rm", "-f", config_path + HOLDS_SUFFIX])
            done.append(f"released {len(left)} holds")
        undone = ctx.fence.recover(config_path)
        if undone:
            done.append(undone)
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
    return [j for j in (ctx.store.get(i) for i in ids) if j and j["status"] == QUEUED]


def _fail(ctx: Context, job: dict[str, Any], exc: errors.JanitorError, step: str, code: str | None = None) -> None:
    job["status"] = FAILED
    job["finished_at"] = now()
    job["error"] = {"code": code or exc.code, "message": exc.message, "details": exc.details, "step": step}
    ctx.store.save(job)


class Window:
    def __init__(self, ctx: Context, lock: MaintenanceLock, jobs: list[dict[str, Any]]) -> None:
        self.ctx = ctx
        self.lock = lock
        self.jobs = jobs
        self.info: dict[str, Any] = {
            "id": uuid.uuid4().hex, "started_at": now(), "finished_at": None,
            "jobs": [j["id"] for j in jobs], "write_refused_seconds": None,
        }
        self.released_blobs: set[str] = set()  # blobs this window's deletions let go: never held from GC
        self.remove_repos: dict[str, list[dict[str, Any]]] = {}  # repository -> jobs that emptied it
        self.manifests: dict[str, Manifest] = {}  # by digest, immutable: shared by every plan in the window
        self.inventory: Inventory | None = None  # what the registry holds, kept current across the jobs

    # -- bookkeeping ---------------------------------------------------------------------------

    def alive(self) -> list[dict[str, Any]]:
        """Jobs still taking part: running and not failed. A failed job stays `running` until the window
        ends, so nobody reads `failed` while the registry may still be read-only."""
        return [j for j in self.jobs if j["status"] == RUNNING and not j["error"]]

    def save(self, jobs: list[dict[str, Any]]) -> None:
        """Best effort while Redis is away: a record that cannot be written must never stop the window
        from making the registry writable again. The last save of the window retries."""
        for job in jobs:
            job["window"] = self.info
            for attempt in range(10):
                try:
                    self.ctx.store.save(job)
                    break
                except redis_lib.RedisError as exc:
                    log.warning("cannot record job %s (%s); retrying", job["id"], exc)
                    time.sleep(0.2 * (attempt + 1))

    @contextlib.contextmanager
    def step(self, jobs: list[dict[str, Any]], name: str) -> Iterator[dict[str, Any]]:
        """Record one step on each job: start, end, outcome; on a domain error the jobs fail with its reason."""
        record: dict[str, Any] = {"name": name, "status": RUNNING, "started_at": now(), "finished_at": None, "outcome": {}}
        for job in jobs:
            job["steps"].append(record)
        self.save(jobs)
        try:
            yield record["outcome"]
        except Exception as exc:
            if not isinstance(exc, errors.JanitorError):
                log.exception("step %s failed unexpectedly", name)
                exc = errors.InternalError(f"unexpected {type(exc).__name__} in step {name}: {exc}")
            error = {"code": exc.code, "message": exc.message, "details": exc.details}
            record.update(status=FAILED, finished_at=now(), error=error)
            for job in jobs:
                if job["status"] == RUNNING and not job["error"]:
                    job["error"] = {**error, "step": name}
            self.save(jobs)
            raise StepError(name) from exc
        record.update(status=SUCCEEDED, finished_at=now())
        self.save(jobs)

    # -- the window ----------------------------------------------------------------------------

    def run(self) -> None:
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
            self.save(self.jobs)

    def _run(self) -> None:
        try:
            with self.step(self.jobs, "preflight") as out:
                # Reach Docker and the container before deleting anything, so nothing is left half-done.
                status = self.ctx.container.get().status
                if status != "running":
                    raise errors.ContainerError(
                        f"registry container {self.ctx.container.name!r} is {status}; start it, then ask again")
                config_path = self.ctx.container.config_path()
                root = storage.root(self.ctx.container, config_path)
                out.update(container=self.ctx.container.name, config_path=config_path, storage_root=root)
        except StepError:
            return
        for job in self.jobs:
            if job["kind"] == "deletion":
                with contextlib.suppress(StepError):
                    self.delete(job, root)
            elif job["kind"] == "policy":
                with contextlib.suppress(StepError):
                    policy_window.run(self, job, root)
        if self.alive():
            self.maintain(config_path, root)

    def delete(self, job: dict[str, Any], root: str) -> None:
        """Plan on the registry as it is now, then untag and delete; a dry run stops after the plan."""
        ctx = self.ctx
        request = job["request"]
        if self.inventory is None:
            self.inventory = self._read_inventory(root)
        inventory = self.inventory
        self.inventory = None  # until this job's changes are known to be complete
        with self.step([job], "delete") as out:
            try:
                plan = plan_deletion(inventory, request, ctx.settings.registry_host)
            except errors.NotFound:
                # Something pushed since this window read the registry? Read it again before saying 404.
                inventory = self._read_inventory(root)
                plan = plan_deletion(inventory, request, ctx.settings.registry_host)
            planned = {"blobs": len(plan.blobs_freed or {}), "bytes": sum((plan.blobs_freed or {}).values())}
            out.update(plan=plan.as_dict(), dry_run=bool(request.get("dry_run")))
            job["result"]["planned"] = planned
            if request.get("dry_run"):
                self.inventory = inventory
                job["result"].update(plan=plan.as_dict())
                job.update(status=SUCCEEDED, finished_at=now())  # changes nothing: no part in GC
                return
            deleted: list[str] = []
            untagged: list[str] = []
            out.update(manifests_deleted=deleted, untagged=untagged)
            for repo_plan in plan.repos:
                repo = repo_plan.repository
                for tag in repo_plan.untag:
                    self.released_blobs |= untag(ctx.client, repo, tag)
                    untagged.append(f"{repo}:{tag}")
                for digest in repo_plan.delete:
                    manifest = inventory.manifest(repo, digest)
                    self.released_blobs |= set(manifest.blob_digests if manifest else ())
                    try:
                        ctx.client.delete_manifest(repo, digest)
                    except errors.ManifestNotFound:
                        pass  # gone since the plan (another request in this window took it)
                    deleted.append(digest)
                if repo_plan.remove_repository:
                    self.remove_repos.setdefault(repo, []).append(job)
            inventory.applied(plan)
            self.inventory = inventory
            job["result"].update(manifests_deleted=list(deleted), tags_removed=plan.as_dict()["tags"],
                                 repositories_removed=[])

    def _read_inventory(self, root: str) -> Inventory:
        return Inventory(self.ctx.client, lambda: storage.revisions(self.ctx.container, root), self.manifests)

    def maintain(self, config_path: str, root: str) -> None:
        """Fence, hold, GC, release, unfence, check: the part that needs the registry to refuse writes."""
        ctx = self.ctx
        placed: list[holds.Hold] = []
        fenced_at: float | None = None
        try:
            with self.step(self.alive(), "drain") as out:
                out.update(self._drain(root))
            with self.step(self.alive(), "fence") as out:
                fenced_at = time.monotonic()
                out["ready_seconds"] = round(ctx.fence.close(config_path), 3)
            with self.step(self.alive(), "hold") as out:
                recent = holds.recent_blobs(ctx.container, root, ctx.settings.upload_grace)
                recent = {r: b - self.released_blobs for r, b in recent.items() if b - self.released_blobs}
                built = holds.build(recent)
                # Recorded before they are written, so a crash here still lets recovery remove them.
                ctx.container.write_file(config_path + HOLDS_SUFFIX, json.dumps(
                    [{"repository": h.repository, "digest": h.digest} for h, _ in built]).encode())
                holds.place(ctx.container, root, built)
                placed = [h for h, _ in built]
                out.update(holds=len(placed), blobs_held=sum(len(h.blobs) for h in placed))
            if self.remove_repos:
                with self.step(self.alive(), "remove_repositories") as out:
                    held = {h.repository for h in placed}
                    for repo, jobs in sorted(self.remove_repos.items()):
                        kept = "a push into it is in flight" if repo in held else \
                            storage.remove_repository(ctx.container, root, repo)
                        out.setdefault("kept" if kept else "removed", []).append(
                            {"repository": repo, "reason": kept} if kept else repo)
                        for job in jobs:
                            if not kept:
                                job["result"]["repositories_removed"].append(repo)
            with self.step(self.alive(), "gc") as out:
                if not self.lock.owned():
                    raise errors.LockLost("the maintenance lock was lost before GC; GC did not run")
                sizes = storage.blob_sizes(ctx.container, root)
                started = time.monotonic()
                summary = gc.run(ctx.container, config_path)
                summary.duration_seconds = round(time.monotonic() - started, 3)
                summary.bytes_freed = sum(sizes.get(d, 0) for d in summary.deleted_blobs)
                self._release(config_path, root, placed)
                placed = []
                storage.remove_empty_blob_dirs(ctx.container, root)
                redis_cache = cache.redis_settings(ctx.container, config_path)
                if redis_cache:  # before writes resume: nobody may be told a swept blob exists
                    out["cache_keys_removed"] = cache.forget(redis_lib.Redis(**redis_cache), summary.deleted_blobs)
                out.update(summary.as_dict())
                for job in self.alive():
                    job["result"].update(gc=summary.as_dict(), bytes_freed=summary.bytes_freed)
        except StepError:
            pass
        finally:
            self._unfence(config_path, root, placed, fenced_at)

    def _drain(self, root: str) -> dict[str, Any]:
        """Give blob uploads in progress a bounded chance to finish before writes are refused."""
        ctx = self.ctx
        start = time.monotonic()
        while True:
            active = storage.active_uploads(ctx.container, root, within=60, now=time.time())
            waited = time.monotonic() - start
            if not active or waited >= ctx.settings.upload_drain:
                return {"waited_seconds": round(waited, 3), "uploads_still_active": active}
            time.sleep(0.5)

    def _release(self, config_path: str, root: str, placed: list[holds.Hold]) -> None:
        """Holds go before writes resume; the record of them goes last."""
        holds.release(self.ctx.container, root, placed)
        self.ctx.container.exec(["rm", "-f", config_path + HOLDS_SUFFIX])

    def _unfence(self, config_path: str, root: str, placed: list[holds.Hold], fenced_at: float | None) -> None:
        """Always runs: holds go, the original config returns, and the registry restarts writable."""
        ctx = self.ctx
        everyone = [j for j in self.jobs if j["steps"] and j["steps"][-1]["name"] in MAINTENANCE_STEPS]
        with contextlib.suppress(StepError):
            with self.step(everyone, "restart") as out:
                self._release(config_path, root, placed)
                out["ready_seconds"] = round(ctx.fence.open(config_path), 3)
                if fenced_at is not None:
                    self.info["write_refused_seconds"] = round(time.monotonic() - fenced_at, 3)
                out["write_refused_seconds"] = self.info["write_refused_seconds"]
        with contextlib.suppress(StepError):
            with self.step(everyone, "health") as out:
                ctx.client.ping()
                if ctx.fence.left_closed(config_path):
                    raise errors.ContainerError("the registry is still configured read-only after the window")
                out["registry"] = "answering, writable"
        with contextlib.suppress(StepError):
            with self.step(everyone, "verify") as out:
                report = integrity.check(ctx.client, sorted(set(ctx.client.catalog())))
                out.update(report)
                for job in everyone:
                    job["result"]["integrity"] = report
                if report["broken"]:
                    log.error("integrity check after GC found %d missing items: %s", len(report["broken"]),
                              report["broken"][:20])
