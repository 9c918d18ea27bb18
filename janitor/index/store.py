"""The index in Redis: its keys, what it holds, and the one way to change it (`commit`, guarded by the
repository's generation). It never reads the registry; IndexReader (reading.py) does.

Keys (all under the registry's prefix P):
  P:index:tags:<repo>   hash tag -> JSON {digest, media_type, size, created, platforms, blobs}
  P:index:repos         hash repo -> JSON {tag_count, size, updated_at}   (one HGETALL lists every repository)
  P:index:blobs         hash repo -> JSON {blob digest: size}              (usage: shared vs unique bytes)
  P:index:gen:<repo>    the repository's generation, bumped by every change of it
  P:index:checked       hash repo -> when its last registry read began (epoch s)
  P:index:reading:<repo> one reader of a repository at a time, across processes
  P:index:meta          hash: filled_at, reconciled_at, last_event_at, configured (notifications), mode
  P:index:reconcile     set by a window after its restart: reconcile now
  P:index:lock          one reconciler per registry at a time

Race guard: whoever read the registry to write a repository (reconcile, on-demand fill, a polling refresh, an
event's confirmation) first reads that repository's generation and commits only if it is unchanged (WATCH on the
generation key, then MULTI). The janitor's own deletions commit unconditionally and bump the generation, so a
read taken before a deletion can never put the deleted tag back.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import redis

from janitor.index.entries import now_iso, summary
from janitor.planning.pulls import PullBook

log = logging.getLogger("janitor.index")

NOTIFICATIONS, POLLING = "notifications", "polling"
MODES = ("auto", NOTIFICATIONS, POLLING)
CHUNK = 500
# Polling mode: a repository read from the registry this recently (seconds) is listed from the index as is, so
# a listing that just filled it does not read it again; any later request reads it again.
RECENTLY_READ = 1.0
# Longest one reader holds a repository (its claim expires then): others wait at most this long for its read.
READ_CLAIM = 10.0
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_EXTEND = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"


class IndexStore:
    """One registry's index in Redis. Thread-safe: per call state only; Redis does the sharing."""

    def __init__(self, conn: redis.Redis, prefix: str, mode: str = "auto") -> None:
        self.conn = conn
        self.prefix = prefix
        self.mode_setting = mode
        self.repos_key = f"{prefix}:index:repos"
        self.blobs_key = f"{prefix}:index:blobs"
        self.meta_key = f"{prefix}:index:meta"
        self.reconcile_key = f"{prefix}:index:reconcile"
        self.lock_key = f"{prefix}:index:lock"
        self.checked_key = f"{prefix}:index:checked"  # repo -> when its last registry read began (epoch s)

    def tags_key(self, repo: str) -> str:
        return f"{self.prefix}:index:tags:{repo}"

    def gen_key(self, repo: str) -> str:
        return f"{self.prefix}:index:gen:{repo}"

    # -- what the index holds --------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in self.conn.hgetall(self.meta_key).items()}

    def mode(self, meta: Mapping[str, str] | None = None) -> str:
        """notifications when set so, or (auto) when the worker found the registry configured to send events
        to /v1/events; else polling."""
        if self.mode_setting in (NOTIFICATIONS, POLLING):
            return self.mode_setting
        meta = self.meta() if meta is None else meta
        return NOTIFICATIONS if meta.get("configured") == "1" else POLLING

    def filled(self, meta: Mapping[str, str] | None = None) -> bool:
        meta = self.meta() if meta is None else meta
        return bool(meta.get("filled_at"))

    def summaries(self) -> dict[str, dict[str, Any]]:
        """repo -> {tag_count, size}, every repository indexed, in one round trip."""
        return {_s(k): json.loads(v) for k, v in self.conn.hgetall(self.repos_key).items()}

    def summaries_of(self, repos: list[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for start in range(0, len(repos), CHUNK):
            part = repos[start:start + CHUNK]
            for repo, raw in zip(part, self.conn.hmget(self.repos_key, part), strict=True):
                if raw is not None:
                    found[repo] = json.loads(raw)
        return found

    def tags(self, repo: str) -> dict[str, dict[str, Any]] | None:
        """tag -> entry (blobs left out), None when the repository is not indexed."""
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.hexists(self.repos_key, repo)
            pipe.hgetall(self.tags_key(repo))
            known, raw = pipe.execute()
        if not known:
            return None
        out = {}
        for tag, value in raw.items():
            entry = json.loads(value)
            entry.pop("blobs", None)
            out[_s(tag)] = entry
        return out

    def blobs(self) -> dict[str, dict[str, int]]:
        return {_s(k): json.loads(v) for k, v in self.conn.hgetall(self.blobs_key).items()}

    # -- changing it ------------------------------------------------------------------------------------------

    def generation(self, repo: str) -> int:
        return int(self.conn.get(self.gen_key(repo)) or 0)

    def commit(self, repo: str, expect: int | None,
               change: Callable[[dict[str, dict[str, Any]], bool], dict[str, dict[str, Any]] | None]) -> bool:
        """Apply `change(current tags, indexed)` -> new tags (None: the repository is gone) atomically. With
        `expect`, only while the repository's generation is still `expect` (else False: the read was stale);
        without, retried until it applies (the janitor's own deletions: the registry already changed)."""
        gen_key, tags_key = self.gen_key(repo), self.tags_key(repo)
        with self.conn.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(gen_key, tags_key)
                    current = int(pipe.get(gen_key) or 0)
                    if expect is not None and current != expect:
                        pipe.reset()
                        return False
                    indexed = bool(pipe.hexists(self.repos_key, repo))
                    existing = {_s(k): json.loads(v) for k, v in pipe.hgetall(tags_key).items()}
                    new = change(existing, indexed)
                    if indexed and new is not None and new == existing:
                        pipe.reset()
                        return True  # already so: no write, no new generation
                    pipe.multi()
                    pipe.delete(tags_key)
                    if new is None:
                        pipe.hdel(self.repos_key, repo)
                        pipe.hdel(self.checked_key, repo)
                        pipe.hdel(self.blobs_key, repo)
                    else:
                        if new:
                            pipe.hset(tags_key, mapping={t: json.dumps(e) for t, e in new.items()})
                        counts, blobs = summary(new)
                        pipe.hset(self.repos_key, repo, json.dumps({**counts, "updated_at": now_iso()}))
                        pipe.hset(self.blobs_key, repo, json.dumps(blobs))
                    pipe.incr(gen_key)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    if expect is not None:
                        return False
                    continue

    def forget_manifest(self, repo: str, digest: str) -> None:
        """The janitor deleted this manifest: every tag on it went with it (distribution untags on delete)."""
        self.commit(repo, None, lambda tags, indexed: {t: e for t, e in tags.items() if e["digest"] != digest}
                    if indexed else None)

    def forget_tag(self, repo: str, tag: str) -> None:
        self.commit(repo, None, lambda tags, indexed: {t: e for t, e in tags.items() if t != tag}
                    if indexed else None)

    def forget_repository(self, repo: str) -> None:
        self.commit(repo, None, lambda tags, indexed: None)

    def request_reconcile(self) -> None:
        self.conn.set(self.reconcile_key, now_iso())

    def note(self, **fields: str) -> None:
        self.conn.hset(self.meta_key, mapping=dict(fields))  # type: ignore[arg-type]

    # -- who read what, when: one reader per repository, and how fresh each read is ------------------------------

    def _reading_key(self, repo: str) -> str:
        return f"{self.prefix}:index:reading:{repo}"

    def _claim(self, repo: str) -> str | None:
        owner = uuid.uuid4().hex
        return owner if self.conn.set(self._reading_key(repo), owner, nx=True, px=int(READ_CLAIM * 1000)) else None

    def _release(self, repo: str, owner: str) -> None:
        self.conn.eval(_RELEASE, 1, self._reading_key(repo), owner)

    def _await_read(self, repo: str) -> None:
        deadline = time.monotonic() + READ_CLAIM
        while self.conn.exists(self._reading_key(repo)) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _checked(self, repo: str, began: float) -> None:
        self.conn.hset(self.checked_key, repo, repr(began))

    def read_recently(self, repo: str, within: float = RECENTLY_READ) -> bool:
        """The index shows this repository as the registry answered a read begun less than `within` s ago."""
        raw = self.conn.hget(self.checked_key, repo)
        return raw is not None and time.time() - float(raw) < within

    def read_since(self, repos: list[str], when: float) -> set[str]:
        """Those of `repos` whose last registry read began at or after `when` (epoch s)."""
        found: set[str] = set()
        for start in range(0, len(repos), CHUNK):
            part = repos[start:start + CHUNK]
            found |= {r for r, raw in zip(part, self.conn.hmget(self.checked_key, part), strict=True)
                      if raw is not None and float(raw) >= when}
        return found

    # -- reconciler lock ----------------------------------------------------------------------------------------

    def try_lock(self, ttl: float) -> str | None:
        owner = uuid.uuid4().hex
        return owner if self.conn.set(self.lock_key, owner, nx=True, px=int(ttl * 1000)) else None

    def unlock(self, owner: str) -> None:
        self.conn.eval(_RELEASE, 1, self.lock_key, owner)

    def extend_lock(self, owner: str, ttl: float) -> bool:
        """Keep the reconciler lock while its owner works: a killed owner's lock lapses within `ttl`."""
        return bool(self.conn.eval(_EXTEND, 1, self.lock_key, owner, int(ttl * 1000)))


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- what a maintenance window calls (best effort: the registry is the truth, a reconcile repairs) --------------------


def _best_effort(what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except redis.RedisError as exc:
        log.warning("index not updated after %s (%s); the next reconcile repairs it", what, exc)


def manifest_deleted(conn: redis.Redis, prefix: str, repo: str, digest: str) -> dict[str, int]:
    """After the window's delete_by_digest: the manifest's tags leave the listing at once, for good, and its
    pull times go (a digest pushed again starts unpulled). Returns the pull time dropped ({} when none), for
    the restore record to put back."""
    _best_effort(f"deleting {repo}@{digest}", lambda: IndexStore(conn, prefix).forget_manifest(repo, digest))
    dropped: dict[str, int] = {}
    _best_effort(f"dropping the pull time of {repo}@{digest}",
                 lambda: dropped.update(PullBook(conn, prefix).forget(repo, [digest])))
    return dropped


def tag_removed(conn: redis.Redis, prefix: str, repo: str, tag: str) -> None:
    """After the window's untag."""
    _best_effort(f"untagging {repo}:{tag}", lambda: IndexStore(conn, prefix).forget_tag(repo, tag))


def repository_removed(conn: redis.Redis, prefix: str, repo: str) -> None:
    """After the window removed a repository's directory: its listing and its pull times go."""
    _best_effort(f"removing {repo}", lambda: IndexStore(conn, prefix).forget_repository(repo))
    _best_effort(f"dropping the pull times of {repo}", lambda: PullBook(conn, prefix).forget_repository(repo))


def pulls_restored(conn: redis.Redis, prefix: str, repo: str, times: Mapping[str, int]) -> None:
    """After a restore put manifests back: the pull times they had when deleted."""
    _best_effort(f"restoring the pull times in {repo}", lambda: PullBook(conn, prefix).put_back(repo, times))


def window_restarted(conn: redis.Redis, prefix: str) -> None:
    """After the window's restart: the worker's reconciler reads the whole registry again soon."""
    _best_effort("the restart", lambda: IndexStore(conn, prefix).request_reconcile())
