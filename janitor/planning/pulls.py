"""When each image was last pulled, as the registry's notifications tell it: recorded by POST /v1/events,
read by the listing (`last_pulled`) and by policy plans (`keep_pulled_within`, `keep_last_pulled`) before
their rules run.

Keys (under the registry's prefix P):
  P:pulls:<repo>   hash manifest digest -> epoch seconds of its newest pull heard of
  P:pulls-since    epoch seconds: when the janitor first heard a pull of this registry. It was P:pulls:since,
                   which is also the hash of a repository named `since`: a pull of it failed every envelope
                   that named it (WRONGTYPE), and the registry retried that envelope for ever, holding up
                   every later event. The old key, a string, moves here on the next write.

Pull traffic is far heavier than pushes, so recording costs one Redis round trip per envelope at most (one
script: the marker, and each digest's time only when newer), and none for a digest already recorded in the
same second by this process. The janitor's own reads (its registry client sends USER_AGENT) are not pulls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import redis

from janitor.planning import retention
from janitor.registry import names
from janitor.registry.client import USER_AGENT

BLOB_MEDIA_TYPE = "application/octet-stream"  # distribution's media type on every blob event
_MEMO_LIMIT = 100_000
# KEYS[1] the marker, KEYS[2] its old key, KEYS[3..] the repositories' hashes; ARGV[1] now, then (key index,
# digest, seconds) triples. The old marker (a string; a hash there is the repository `since`) moves over once.
_RECORD = """
if redis.call('exists', KEYS[1]) == 0 then
  local old = nil
  if redis.call('type', KEYS[2]).ok == 'string' then
    old = redis.call('get', KEYS[2])
    redis.call('del', KEYS[2])
  end
  redis.call('set', KEYS[1], old or ARGV[1])
end
local n = 0
for i = 2, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[i])]
  local known = tonumber(redis.call('hget', key, ARGV[i + 1]) or '0')
  if tonumber(ARGV[i + 2]) > known then
    redis.call('hset', key, ARGV[i + 1], ARGV[i + 2])
    n = n + 1
  end
end
return n
"""


def pulls_of(events: Iterable[Mapping[str, Any]], now: float) -> list[tuple[str, str, int]]:
    """(repository, manifest digest, epoch second) of each manifest pull by someone other than the janitor.
    The event's own timestamp is used (a registry that was retrying delivers late), never later than now."""
    found = []
    for event in events:
        if event.get("action") != "pull":
            continue
        target = event.get("target") or {}
        repo, digest = target.get("repository"), target.get("digest")
        if not isinstance(repo, str) or not isinstance(digest, str) or not digest:
            continue
        if target.get("mediaType") == BLOB_MEDIA_TYPE or not names.is_repository(repo):
            continue
        request = event.get("request") or {}
        agent = request.get("useragent") if isinstance(request, Mapping) else None
        if isinstance(agent, str) and agent.startswith(USER_AGENT):
            continue  # the janitor's own HEAD or GET of a manifest
        when = retention.parse_time(event.get("timestamp"))
        found.append((repo, digest, int(min(when.timestamp(), now) if when else now)))
    return found


class PullBook:
    """One registry's pull times in Redis. `PullBook.of` keeps one per connection and prefix (the events
    endpoint records on every request)."""

    _books: dict[tuple[int, str], PullBook] = {}

    _memo: dict[tuple[str, str, str], int] = {}  # (prefix, repo, digest) -> second last written, per process
    _memo_lock = threading.Lock()

    def __init__(self, conn: redis.Redis, prefix: str) -> None:
        self.conn = conn
        self.prefix = prefix
        self.since_key = f"{prefix}:pulls-since"
        self.old_since_key = f"{prefix}:pulls:since"  # before: the hash key of a repository named `since`
        self._script = conn.register_script(_RECORD)

    @classmethod
    def of(cls, conn: redis.Redis, prefix: str) -> PullBook:
        book = cls._books.get((id(conn), prefix))
        if book is None or book.conn is not conn:
            book = cls._books[(id(conn), prefix)] = cls(conn, prefix)
        return book

    def key(self, repo: str) -> str:
        return f"{self.prefix}:pulls:{repo}"

    def record(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Record the envelope's manifest pulls; returns how many it names (whether or not they were newer)."""
        now = time.time()
        pulls = pulls_of(events, now)
        if not pulls:
            return 0
        with self._memo_lock:
            fresh = [(r, d, s) for r, d, s in pulls if self._memo.get((self.prefix, r, d), -1) < s]
        if fresh:
            self._write(fresh, now)
            # Remembered once written: a failed write (Redis away) is tried again on the next delivery.
            with self._memo_lock:
                if len(self._memo) > _MEMO_LIMIT:
                    self._memo.clear()
                for repo, digest, second in fresh:
                    memo = (self.prefix, repo, digest)
                    if self._memo.get(memo, -1) < second:
                        self._memo[memo] = second
        return len(pulls)

    def _write(self, pulls: list[tuple[str, str, int]], now: float) -> None:
        """One round trip: the "heard since" marker, and each (repository, digest, second) when newer."""
        keys = [self.since_key, self.old_since_key]
        argv: list[Any] = [int(now)]
        for repo, digest, second in pulls:
            if self.key(repo) not in keys:
                keys.append(self.key(repo))
            argv += [keys.index(self.key(repo)) + 1, digest, second]
        self._script(keys=keys, args=argv)

    def forget(self, repo: str, digests: Iterable[str]) -> dict[str, int]:
        """Drop the pull times of manifests no longer stored (the window deleted them): a digest pushed again
        starts unpulled, and the hash does not keep every digest ever pulled. Returns the times dropped, for a
        restore to put back."""
        listed = list(dict.fromkeys(digests))
        if not listed:
            return {}
        with self._memo_lock:
            for digest in listed:
                self._memo.pop((self.prefix, repo, digest), None)
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.hmget(self.key(repo), listed)
            pipe.hdel(self.key(repo), *listed)
            times, _ = pipe.execute()
        return {d: int(float(_text(t))) for d, t in zip(listed, times, strict=True) if t is not None}

    def forget_repository(self, repo: str) -> None:
        """Drop every pull time of a repository no longer stored."""
        with self._memo_lock:
            for memo in [m for m in self._memo if m[0] == self.prefix and m[1] == repo]:
                del self._memo[memo]
        self.conn.delete(self.key(repo))

    def put_back(self, repo: str, times: Mapping[str, int]) -> None:
        """A restored manifest's pull times, as they were when it was deleted (unless a newer one is known)."""
        if times:
            self._write([(repo, d, int(t)) for d, t in times.items()], time.time())

    def heard_since(self) -> datetime | None:
        raw = self.conn.get(self.since_key)
        if raw is None and self.conn.type(self.old_since_key) in (b"string", "string"):
            raw = self.conn.get(self.old_since_key)  # not moved yet: no pull recorded since the upgrade
        return _when(raw) if raw is not None else None

    def times(self, repos: Iterable[str]) -> dict[str, dict[str, datetime]]:
        """repository -> manifest digest -> last pull heard of, in one round trip."""
        listed = list(dict.fromkeys(repos))
        if not listed:
            return {}
        with self.conn.pipeline(transaction=False) as pipe:
            for repo in listed:
                pipe.hgetall(self.key(repo))
            answers = pipe.execute()
        return {repo: {_text(d): _when(t) for d, t in raw.items()} for repo, raw in zip(listed, answers, strict=True)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _when(raw: bytes | str) -> datetime:
    return datetime.fromtimestamp(int(float(_text(raw))), timezone.utc)
