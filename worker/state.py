"""What one maintenance window remembers and records, apart from the steps that use it: the jobs, the
window's own record, the manifests read (immutable by digest, shared by every plan in the window), what its
deletions let go, and how each step is recorded on the jobs. The steps (deletion, policy_window, verify) take
a WindowState; the window (worker/window.py) runs them in order and owns nothing they import.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import redis as redis_lib

from janitor import errors, logs
from janitor.jobs.records import FAILED, RUNNING, SUCCEEDED, now
from janitor.registry.manifests import Manifest
from janitor.storage.driver import Mark, Storage
from janitor.window.cache import CacheTarget
from janitor.window.guard import WindowGuard
from worker.context import Context

log = logging.getLogger("worker.window")
# Steps that change the registry: each starts only on a lease still owned (restart handles a lost one itself).
CHANGING_STEPS = frozenset({"delete", "fence", "hold", "remove_repositories", "gc"})


class StepError(Exception):
    """A step failed; the jobs it ran for are already marked failed."""



class WindowState:
    def __init__(self, ctx: Context, guard: WindowGuard, jobs: list[dict[str, Any]]) -> None:
        self.ctx = ctx
        self.guard = guard
        self.jobs = jobs
        self.info: dict[str, Any] = {
            "id": guard.window_id, "started_at": now(), "finished_at": None,
            "jobs": [j["id"] for j in jobs], "write_refused_seconds": None,
        }
        # repository -> blobs this window's deletions let go there: never held from GC in that repository
        self.released_blobs: dict[str, set[str]] = {}
        self.remove_repos: dict[str, list[dict[str, Any]]] = {}  # repository -> jobs that emptied it
        self.manifests: dict[str, Manifest] = {}  # by digest, immutable: shared by every plan in the window
        self.deleted: dict[str, set[str]] = {}  # repository -> manifests this window deleted there
        self.pulled: dict[tuple[str, str], int] = {}  # (repository, digest) deleted -> its last pull (epoch s)
        self.swept: list[str] | None = None  # blobs GC deleted; None while GC has not run
        self.swept_alone = False  # GC was the janitor's own sweep, whose deletes the storage saw
        self.prepared_at = 0.0  # epoch seconds: when the drain step prepared for the fence
        self.blob_cache: CacheTarget | None = None  # the registry's Redis blob cache, reached in preflight
        # Every stored manifest per repository at the window's last read of them, and that read's time (the
        # container's clock): the check after GC lists again only the repositories changed since.
        self.stored: dict[str, set[str]] | None = None
        self.stored_read_at = 0.0
        self.marks: dict[str, Mark] = {}  # name -> a point in time the storage compares with (Storage.marks)
        self.creation_times: Any = None  # policy_plan.CreationTimes, made by the first policy job

    @property
    def storage(self) -> Storage:
        """The registry's storage, found by preflight: only steps that run with storage access ask for it."""
        if self.guard.storage is None:
            raise errors.StorageAccessRequired("this step needs the registry's storage, which this window cannot "
                                               "read", driver="unknown")
        return self.guard.storage

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
        logs.bind(job_id=jobs[0]["id"] if len(jobs) == 1 else None)
        record: dict[str, Any] = {"name": name, "status": RUNNING, "started_at": now(), "finished_at": None, "outcome": {}}
        for job in jobs:
            job["steps"].append(record)
        self.save(jobs)
        counted = self._storage_requests(), self._storage_requests_in_a_row()
        try:
            if name in CHANGING_STEPS:
                self.guard.check(f"step {name}")  # lease still owned, window still within its time
            yield record["outcome"]
        except Exception as exc:
            self._count_requests(record, counted)
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
        self._count_requests(record, counted)
        record.update(status=SUCCEEDED, finished_at=now())
        self.save(jobs)

    def _storage_requests(self) -> int | None:
        return None if self.guard.storage is None else self.guard.storage.requests()

    def _storage_requests_in_a_row(self) -> int | None:
        return None if self.guard.storage is None else self.guard.storage.requests_in_a_row()

    def _count_requests(self, record: dict[str, Any], before: tuple[int | None, int | None]) -> None:
        """What an object store bills: its requests in this step, and in the window so far; and of the
        listings among them, how many had to follow one another (what a step's listing time grows with)."""
        after = self._storage_requests()
        if after is not None:
            record["outcome"]["storage_requests"] = after - (before[0] or 0)
            self.info["storage_requests"] = after
        in_a_row = self._storage_requests_in_a_row()
        if in_a_row is not None:
            record["outcome"]["storage_requests_in_a_row"] = in_a_row - (before[1] or 0)

    # -- the window ----------------------------------------------------------------------------

    def read_stored(self, root: str, ages: bool = True) -> tuple[float, dict[str, dict[str, float]]]:
        """Every stored manifest of every repository (storage.revision_times), remembered for the check after
        GC and for the next window. Without `ages` (only an `untagged` plan uses them: every other plan needs
        the set of stored manifests alone), the revisions the last window listed are taken from the revision
        book and only what changed since is listed again; each then reads as pushed at the read."""
        ctx = self.ctx
        book = None if ages else ctx.revisions.load()
        # The book's time is the storage's clock, taken here for the worker's: the same clock on a filesystem
        # (the container's kernel); an object store lists every revision again whatever the mark says.
        marks = {} if book is None else self.storage.marks(self.guard.window_id + "-book", {"revisions": book[0] - 1})
        if book is not None and marks:
            try:
                read_at, sets = self.storage.revisions_since(marks["revisions"], book[1])
            finally:
                self.storage.drop_marks(marks.values())
            times = {r: dict.fromkeys(ds, read_at) for r, ds in sets.items()}
        else:
            read_at, times = self.storage.revision_times()
            sets = {r: set(t) for r, t in times.items()}
        self.stored, self.stored_read_at = sets, read_at
        ctx.revisions.save(read_at, sets)
        return read_at, times

