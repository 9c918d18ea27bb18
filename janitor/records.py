"""Job records in Redis: what was asked, which window ran it, and each step's times and outcome.

The API creates a record and queues its id; the worker is the only writer afterwards.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

import redis

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
FINISHED = frozenset({SUCCEEDED, FAILED})


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Keys:
    """Redis key names for one registry, so two registries can share a Redis."""

    def __init__(self, registry: str) -> None:
        self.prefix = f"janitor:{registry}"
        self.lock = f"{self.prefix}:lock"
        self.pending = f"{self.prefix}:pending"
        self.scheduled = f"{self.prefix}:window-scheduled"
        self.heartbeat = f"{self.prefix}:worker-heartbeat"
        self.queue_name = "janitor"

    @staticmethod
    def job(job_id: str) -> str:
        return f"janitor:job:{job_id}"


class JobStore:
    def __init__(self, conn: redis.Redis, ttl: float) -> None:
        self.conn = conn
        self.ttl = int(ttl)

    def create(self, kind: str, request: dict[str, Any]) -> dict[str, Any]:
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
        }
        self.save(job)
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.conn.get(Keys.job(job_id))
        return json.loads(raw) if raw else None

    def save(self, job: dict[str, Any]) -> None:
        ttl = self.ttl if job["status"] in FINISHED else None
        self.conn.set(Keys.job(job["id"]), json.dumps(job), ex=ttl)

    def running(self) -> list[dict[str, Any]]:
        """Jobs marked running: after a crash these are the ones the dead worker left behind."""
        found = []
        for key in self.conn.scan_iter(match="janitor:job:*", count=500):
            raw = self.conn.get(key)
            if raw:
                job = json.loads(raw)
                if job["status"] == RUNNING:
                    found.append(job)
        return found
