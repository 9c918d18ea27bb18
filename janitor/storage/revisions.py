"""The stored manifests of every repository as the last window listed them, kept in Redis, so the next
window lists again only the repositories and revisions changed since (storage.revisions_since) instead of
stat-ing every revision link of the registry.

`<prefix>:window:revisions` holds {"read_at": <container clock of that listing>, "repos": {name: [digest]}}.
It is only ever a starting point: what changed since `read_at` is read from storage every time.
"""

from __future__ import annotations

import json

import redis


class RevisionBook:
    def __init__(self, conn: redis.Redis, prefix: str) -> None:
        self.conn = conn
        self.key = f"{prefix}:window:revisions"

    def load(self) -> tuple[float, dict[str, set[str]]] | None:
        raw = self.conn.get(self.key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return float(data["read_at"]), {str(r): set(map(str, ds)) for r, ds in data["repos"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable: the caller lists everything again

    def save(self, read_at: float, repos: dict[str, set[str]]) -> None:
        self.conn.set(self.key, json.dumps({"read_at": read_at, "repos": {r: sorted(ds) for r, ds in repos.items()}}))
