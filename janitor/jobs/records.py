"""Job records in Redis: what was asked, which window ran it, and each step's times and outcome.

The API creates a record and queues its id; the worker is the only writer afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import redis

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
AWAITING_APPROVAL, REJECTED, EXPIRED, CANCELLED = "awaiting_approval", "rejected", "expired", "cancelled"
FINISHED = frozenset({SUCCEEDED, FAILED, REJECTED, EXPIRED, CANCELLED})


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Keys:
    """Redis key names for one registry, so two registries (or two deployments) can share a Redis. Every key,
    the RQ queue and the webhook queue derive from the registry's namespace (`Settings.namespace`)."""

    def __init__(self, namespace: str, name: str | None = None) -> None:
        self.namespace = namespace
        self.name = name or namespace  # the registry's name in URLs and records
        self.prefix = f"janitor:{namespace}"
        self.lock = f"{self.prefix}:lock"
        self.pending = f"{self.prefix}:pending"
        self.scheduled = f"{self.prefix}:window-scheduled"
        self.heartbeat = f"{self.prefix}:worker-heartbeat"
        # Workers that serve this registry but cannot reach its Docker host say so here (for /readyz).
        self.unreachable = f"{self.prefix}:worker-unreachable"
        # Whether the registry takes writes, from its config marker and the last write probe (for /readyz and
        # janitor_registry_read_only): janitor/window/leftovers.py.
        self.writes = f"{self.prefix}:registry-writes"
        # One RQ queue per registry: a worker takes only the windows of registries it serves.
        self.queue_name = f"janitor:{namespace}"
        self.jobs = f"{self.prefix}:jobs"  # sorted set: job id -> created_at (epoch ms), for job history
        self.awaiting = f"{self.prefix}:awaiting-approval"  # sorted set: job id -> approval deadline (epoch s)
        # One webhook queue per registry: its deliveries are signed with that registry's WEBHOOK_SECRET.
        self.webhook_queue = f"janitor-webhooks:{namespace}"

    @classmethod
    def of(cls, settings: Any) -> Keys:
        """The keys of the registry `settings` (a janitor.config.settings.Settings) describe."""
        return cls(settings.namespace, settings.name)

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def webhooks(self, job_id: str) -> str:
        """Delivery records, apart from the job so a delivery never races the window's saves."""
        return f"{self.prefix}:webhooks:{job_id}"


def legacy_job(job_id: str) -> str:
    """Where job records lived before they were namespaced by registry (one shared `janitor:job:` space)."""
    return f"janitor:job:{job_id}"


def adopt_legacy(conn: redis.Redis, keys: Keys) -> int:
    """Upgrade: move this registry's records from the old shared `janitor:job:<id>` and `janitor:webhooks:<id>`
    to its own namespace. Only ids in this registry's job index move (RENAMENX keeps the TTL and never
    overwrites), so another registry's records stay where they are. Returns how many moved."""
    moved = 0
    for raw in conn.zrange(keys.jobs, 0, -1):
        job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        for old, new in ((legacy_job(job_id), keys.job(job_id)),
                         (f"janitor:webhooks:{job_id}", keys.webhooks(job_id))):
            try:
                moved += int(bool(conn.renamenx(old, new)))
            except redis.ResponseError:
                pass  # no such key: nothing left there
    return moved


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class JobStore:
    def __init__(self, conn: redis.Redis, ttl: float, keys: Keys) -> None:
        self.conn = conn
        self.ttl = int(ttl)
        self.keys = keys

    def create(self, kind: str, request: dict[str, Any], requested_by: str | None = None,
               approval: str | None = None, **extra: Any) -> dict[str, Any]:
        """`extra` adds top-level fields, e.g. `policy` for a policy run."""
        job: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "kind": kind,
            "status": QUEUED,
            "request": request,
            "created_at": now(),
            "started_at": None,
            "finished_at": None,
            "window": None,
            "steps": [],
            "result": {},
            "error": None,
            "requested_by": requested_by,
            "approval": approval,
            "approved_by": None,
            "approved_at": None,
            "rejected_by": None,
            "rejected_at": None,
            "cancelled_by": None,
            "cancelled_at": None,
            "expires_at": None,
            "summary": None,
            "webhooks": [],
            "registry": self.keys.name,
            **extra,
        }
        self.save(job)
        self.conn.zadd(self.keys.jobs, {job["id"]: int(time.time() * 1000)})
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.conn.get(self.keys.job(job_id))
        return self._decode(raw, self.conn.hgetall(self.keys.webhooks(job_id))) if raw else None

    @staticmethod
    def _decode(raw: Any, hooks: Any) -> dict[str, Any]:
        job = json.loads(raw)
        job["webhooks"] = sorted((json.loads(v) for v in hooks.values()), key=lambda d: (d["queued_at"], d["url"]))
        return job

    def save(self, job: dict[str, Any], pipe: Any = None) -> None:
        target = pipe if pipe is not None else self.conn.pipeline(transaction=False)
        ttl = self.ttl if job["status"] in FINISHED else None
        stored = {k: v for k, v in job.items() if k != "webhooks"}
        target.set(self.keys.job(job["id"]), json.dumps(stored), ex=ttl)
        if job["status"] == AWAITING_APPROVAL and job.get("expires_at"):
            target.zadd(self.keys.awaiting, {job["id"]: epoch(job["expires_at"])})
        else:
            target.zrem(self.keys.awaiting, job["id"])
        if pipe is None:
            target.execute()

    def transition(self, job_id: str, allowed: Iterable[str],
                   change: Callable[[dict[str, Any]], None]) -> tuple[dict[str, Any] | None, bool]:
        """Change a job only if its status is still one of `allowed`, atomically (WATCH/MULTI), so approve,
        reject, cancel, expiry and the worker's claim never both win. Returns (job, changed)."""
        allowed = frozenset(allowed)
        key = self.keys.job(job_id)
        with self.conn.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if not raw:
                        return None, False
                    job = self._decode(raw, self.conn.hgetall(self.keys.webhooks(job_id)))
                    if job["status"] not in allowed:
                        return job, False
                    change(job)
                    pipe.multi()
                    self.save(job, pipe)
                    pipe.execute()
                    return job, True
                except redis.WatchError:
                    continue

    def claim(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The queued jobs among `ids`, marked running: a job cancelled a moment ago is not taken."""
        def start(job: dict[str, Any]) -> None:
            job.update(status=RUNNING, started_at=now())
        claimed = []
        for job_id in ids:
            job, changed = self.transition(job_id, {QUEUED}, start)
            if job and changed:
                claimed.append(job)
        return claimed

    def record_webhook(self, job_id: str, delivery_id: str, record: dict[str, Any]) -> None:
        key = self.keys.webhooks(job_id)
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.hset(key, delivery_id, json.dumps(record))
            pipe.expire(key, max(self.ttl, 3600))
            pipe.execute()

    def webhook(self, job_id: str, delivery_id: str) -> dict[str, Any] | None:
        raw = self.conn.hget(self.keys.webhooks(job_id), delivery_id)
        return json.loads(raw) if raw else None

    def history(self, since: float | None = None, chunk: int = 500) -> Iterator[dict[str, Any]]:
        """Jobs of this registry, newest first, from the index (no key scan). Ids whose record has
        expired are dropped from the index on the way."""
        ids: list[str] = [i.decode() if isinstance(i, bytes) else str(i) for i in self.conn.zrevrangebyscore(
            self.keys.jobs, "+inf", int(since * 1000) if since is not None else "-inf")]
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            with self.conn.pipeline(transaction=False) as pipe:
                for job_id in part:
                    pipe.get(self.keys.job(job_id))
                    pipe.hgetall(self.keys.webhooks(job_id))
                found = pipe.execute()
            gone = []
            for n, job_id in enumerate(part):
                raw = found[2 * n]
                if raw:
                    yield self._decode(raw, found[2 * n + 1])
                else:
                    gone.append(job_id)
            if gone:
                self.conn.zrem(self.keys.jobs, *gone)

    def due_for_expiry(self, at: float) -> list[str]:
        return [i.decode() if isinstance(i, bytes) else str(i)
                for i in self.conn.zrangebyscore(self.keys.awaiting, "-inf", at)]

    def running(self) -> list[dict[str, Any]]:
        """This registry's jobs marked running: after a crash these are the ones its dead worker left behind.
        Only this registry's key space is scanned, and a record naming another registry is left alone, so
        recovering one registry never fails another's running jobs."""
        found = []
        for key in self.conn.scan_iter(match=f"{self.keys.prefix}:job:*", count=500):
            raw = self.conn.get(key)
            if raw:
                job = json.loads(raw)
                if job["status"] == RUNNING and job.get("registry", self.keys.name) == self.keys.name:
                    found.append(job)
        return found
