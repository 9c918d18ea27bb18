"""The view of an object store one window's fence read, carried in Redis to the next window (S3Storage.carry),
with the run of the registry it is true at the start of: the next window lists again only what that run's
access log says it wrote (janitor/window/journal.py), not the whole bucket.

`<prefix>:window:view` holds {"run": <container id@StartedAt>, "since": <worker clock>, "view": <base64 of
the compressed view>}. Each window takes it (read and deleted at once) before it may write: a window that ends
without carrying a view of its own leaves none, so a view never outlives a change the janitor made.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import NamedTuple

import redis


class Carried(NamedTuple):
    run: str  # the run of the registry that started right after the fence whose reads the view is
    since: float  # the worker's clock once that run had started
    view: bytes


class ViewBook:
    def __init__(self, conn: redis.Redis, prefix: str) -> None:
        self.conn = conn
        self.key = f"{prefix}:window:view"

    def take(self) -> Carried | None:
        try:
            raw = self.conn.getdel(self.key)
        except redis.RedisError:
            return None  # the window's own records say Redis is away; it lists the store whole
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return Carried(str(data["run"]), float(data["since"]), base64.b64decode(data["view"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None  # unreadable: the window lists the store whole

    def save(self, carried: Carried) -> bool:
        """False when Redis is away: the next window lists whole, and the registry is writable either way."""
        try:
            self.conn.set(self.key, json.dumps({"run": carried.run, "since": carried.since,
                                                "view": base64.b64encode(carried.view).decode()}))
        except redis.RedisError:
            return False
        return True
