"""The registry index in Redis: repository -> tag -> digest and what the listing shows per tag, with per-repository
summaries (tag count, bytes) and the registry's usage, so a listing is served from Redis, not from one registry
round trip per tag.

Keys (all under the registry's prefix P):
  P:index:tags:<repo>   hash tag -> JSON {digest, media_type, size, created, platforms, blobs}
  P:index:repos         hash repo -> JSON {tag_count, size, updated_at}   (one HGETALL lists every repository)
  P:index:blobs         hash repo -> JSON {blob digest: size}              (usage: shared vs unique bytes)
  P:index:gen:<repo>    the repository's generation, bumped by every change of it
  P:index:meta          hash: filled_at, reconciled_at, last_event_at, configured (notifications), mode
  P:index:reconcile     set by a window after its restart: reconcile now
  P:index:lock          one reconciler per registry at a time

Race guard: whoever read the registry to write a repository (reconcile, on-demand fill, a polling refresh, an
event's confirmation) first reads that repository's generation and commits only if it is unchanged (WATCH on the
generation key, then MULTI). The janitor's own deletions commit unconditionally and bump the generation, so a
read taken before a deletion can never put the deleted tag back. Details come from `janitor.storage.contents`
(manifests and config times by digest, immutable), so a known digest costs no registry request.

This module imports neither Flask nor RQ: the API (service/) and the worker (worker/indexer.py) drive it.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
import yaml

from janitor import errors
from janitor.planning import retention
from janitor.planning.snapshot import Reader, _again
from janitor.registry import names
from janitor.registry.client import RegistryClient
from janitor.registry.manifests import Manifest
from janitor.storage.contents import ContentCache

log = logging.getLogger(__name__)

NOTIFICATIONS, POLLING = "notifications", "polling"
MODES = ("auto", NOTIFICATIONS, POLLING)
# Commits retried this often when another writer changed the repository meanwhile (the read is then redone).
COMMIT_ATTEMPTS = 4
CHUNK = 500
# A pushed tag not visible yet is checked again after these pauses (seconds): within 2 s of the event.
RECHECK_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)
RECHECKS_PENDING = 64
# Polling mode: a repository read from the registry this recently (seconds) is listed from the index as is, so
# a listing that just filled it does not read it again; any later request reads it again.
RECENTLY_READ = 1.0
# Longest one reader holds a repository (its claim expires then): others wait at most this long for its read.
READ_CLAIM = 10.0
# The first fill does not read again a repository whose read began this long (seconds) before the fill did.
FIRST_FILL_SKIPS_READS_WITHIN = 10.0
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_EXTEND = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_rechecks_lock = threading.Lock()
_rechecks_pending = 0
_rechecks_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _rechecker() -> concurrent.futures.ThreadPoolExecutor:
    """One small pool per process, made on first use (after gunicorn forks)."""
    global _rechecks_pool
    with _rechecks_lock:
        if _rechecks_pool is None:
            _rechecks_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="janitor-recheck")
        return _rechecks_pool


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- pure parts: details, summaries, usage, sorting, filtering, events ---------------------------------------------


def tag_entry(manifest: Manifest, children: Mapping[str, Manifest], created: Mapping[str, str | None]) -> dict[str, Any]:
    """What the listing shows for a manifest (as the old per-request listing did) and the blobs it keeps alive:
    its own JSON, config and layers; for an index, its children's too. `children` and `created` hold what is
    known; a child missing from the registry counts for nothing."""
    blobs: dict[str, int] = {manifest.digest: len(manifest.raw)}
    platforms: list[str] = []
    if manifest.is_index:
        size, times = 0, []
        for child in manifest.children:
            found = children.get(child.digest)
            if found is None:
                continue
            size += found.image_size
            blobs.update(_image_blobs(found))
            when = created.get(found.config.digest) if found.config and not found.is_index else None
            if when:
                times.append(when)
        when_all = max(times, default=None)
        platforms = [c.platform for c in manifest.children if c.platform and c.platform != "unknown/unknown"]
    else:
        size = manifest.image_size
        blobs.update(_image_blobs(manifest))
        when_all = created.get(manifest.config.digest) if manifest.config else None
    return {"digest": manifest.digest, "media_type": manifest.media_type, "size": size, "created": when_all,
            "platforms": platforms, "blobs": blobs}


def _image_blobs(manifest: Manifest) -> dict[str, int]:
    found = {manifest.digest: len(manifest.raw)}
    if manifest.config:
        found[manifest.config.digest] = manifest.config.size
    for layer in manifest.layers:
        found[layer.digest] = layer.size
    return found


def summary(tags: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, int]]:
    """A repository's tag count and size: the unique bytes of its blobs (union over its tags, each blob once)."""
    blobs: dict[str, int] = {}
    for entry in tags.values():
        blobs.update(entry.get("blobs") or {})
    return {"tag_count": len(tags), "size": sum(blobs.values())}, blobs


def usage(blobs_by_repo: Mapping[str, Mapping[str, int]]) -> tuple[list[dict[str, Any]], int]:
    """Per repository: size, shared bytes (blobs another repository uses too) and unique bytes (what deleting
    the repository would free); and the registry's total, each blob counted once."""
    users: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for blobs in blobs_by_repo.values():
        for digest, size in blobs.items():
            users[digest] = users.get(digest, 0) + 1
            sizes[digest] = size
    rows = []
    for name, blobs in blobs_by_repo.items():
        shared = sum(s for d, s in blobs.items() if users[d] > 1)
        total = sum(blobs.values())
        rows.append({"name": name, "size": total, "shared_bytes": shared, "unique_bytes": total - shared})
    return rows, sum(sizes.values())


def sort_repositories(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """name, -size (largest first) or -tags (most tags first); ties by name."""
    if sort == "-size":
        return sorted(rows, key=lambda r: (-r["size"], r["name"]))
    if sort == "-tags":
        return sorted(rows, key=lambda r: (-r["tag_count"], r["name"]))
    return sorted(rows, key=lambda r: r["name"])


def glob_filter(names_: Iterable[str], pattern: str | None) -> list[str]:
    """Names matching a repository glob (janitor.planning.retention.compile_glob: RE2, `*` within one path segment,
    `**` across segments); every name without a pattern."""
    if not pattern:
        return list(names_)
    regex = query_glob(pattern)
    return [n for n in names_ if regex.match(n)]


def query_glob(pattern: str) -> Any:
    """A listing's `q`: janitor.planning.retention's repository glob, with runs of three or more `*` read as `**`.
    RuleError when it is not a glob."""
    return retention.compile_glob(re.sub(r"\*{3,}", "**", pattern))


def select_tags(rows: list[dict[str, Any]], sort: str, older_than: timedelta | None,
                at: datetime | None = None) -> list[dict[str, Any]]:
    """Sort tags by name, created (oldest first) or -created (newest first; tags without a creation time
    last either way), and keep those created before now - older_than (a tag with no time is never older)."""
    if older_than is not None:
        cutoff = (at or datetime.now(timezone.utc)) - older_than
        rows = [r for r in rows if (t := retention.parse_time(r.get("created"))) is not None and t < cutoff]
    if sort in ("created", "-created"):
        timed = [(retention.parse_time(r.get("created")), r) for r in rows]
        known = sorted(((t, r) for t, r in timed if t is not None), key=lambda p: (p[0], p[1]["name"]),
                       reverse=sort == "-created")
        if sort == "-created":  # newest first, ties still by name
            known = sorted(known, key=lambda p: (-p[0].timestamp(), p[1]["name"]))
        return [r for _, r in known] + sorted((r for t, r in timed if t is None), key=lambda r: r["name"])
    return sorted(rows, key=lambda r: r["name"])


@dataclass
class Confirm:
    """What an envelope asks to check in one repository: tags pushed or deleted, digests deleted."""

    tags: set[str] = field(default_factory=set)
    digests: set[str] = field(default_factory=set)


def events_to_check(events: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Confirm], int]:
    """From distribution's events (notifications/event.go: action, target.repository/tag/digest/mediaType), what
    to confirm per repository; and how many events were ignored (pulls, mounts, blob pushes, pushes by digest).
    Events are hints: the caller checks each against the registry before changing anything."""
    found: dict[str, Confirm] = {}
    ignored = 0
    for event in events:
        action = event.get("action")
        target = event.get("target") or {}
        repo, tag, digest = target.get("repository"), target.get("tag"), target.get("digest")
        if not isinstance(repo, str):
            ignored += 1  # the schema requires it; never index under a non-name
            continue
        if action == "push" and tag:  # only a manifest push names a tag; blob pushes never do
            found.setdefault(repo, Confirm()).tags.add(tag)
        elif action == "delete" and (tag or digest):
            confirm = found.setdefault(repo, Confirm())
            if tag:
                confirm.tags.add(tag)
            if digest:
                confirm.digests.add(digest)
        else:
            ignored += 1
    return found, ignored


# The janitor's events endpoint: the default registry's, or one registry's under /v1/registries/{registry}.
EVENTS_URL = re.compile(r"/v1/(?:registries/[^/?#]+/)?events/?(?:[?#].*)?$")


def notifications_configured(env: Mapping[str, str], config: Mapping[str, Any] | None) -> bool:
    """Whether the registry's config (REGISTRY_NOTIFICATIONS_ENDPOINTS, which overrides config.yml, or
    config.yml's notifications.endpoints) sends events to a janitor's /v1/events (or
    /v1/registries/{registry}/events)."""
    endpoints: Any = None
    raw = env.get("REGISTRY_NOTIFICATIONS_ENDPOINTS")
    if raw:
        try:
            endpoints = yaml.safe_load(raw)
        except yaml.YAMLError:
            endpoints = None
    if endpoints is None and isinstance(config, Mapping):
        notifications = config.get("notifications")
        endpoints = notifications.get("endpoints") if isinstance(notifications, Mapping) else None
    if not isinstance(endpoints, list):
        return False
    return any(isinstance(e, Mapping) and not e.get("disabled") and EVENTS_URL.search(str(e.get("url", "")))
               for e in endpoints)


# -- the index in Redis --------------------------------------------------------------------------------------------


UNCHANGED = object()  # read_repository: the registry shows what the index has


class TagIndex:
    """One registry's index. Thread-safe: per call state only; Redis does the sharing."""

    def __init__(self, conn: redis.Redis, prefix: str, client: RegistryClient | None = None,
                 workers: int = 16, mode: str = "auto") -> None:
        self.conn = conn
        self.prefix = prefix
        self.client = client
        self.workers = workers
        self.mode_setting = mode
        self.contents = ContentCache(conn, prefix)
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

    # -- reading the index -----------------------------------------------------------------------------------

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

    # -- writing the index ------------------------------------------------------------------------------------

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

    # -- reading the registry ---------------------------------------------------------------------------------

    def reader(self) -> Reader:
        assert self.client is not None, "reading the registry needs a client"
        return Reader(self.client, workers=self.workers, contents=self.contents)

    def describe(self, reader: Reader, repo: str, manifests: Mapping[str, Manifest]) -> dict[str, dict[str, Any]]:
        """Entries for these manifests (children and config times read only when not cached)."""
        digests = list(manifests)
        reader.cache.update(manifests)
        everything = reader.manifests(repo, digests)
        images = [m for m in everything.values() if not m.is_index and m.config is not None]
        configs = sorted({m.config.digest for m in images if m.config})
        created = self.contents.created(configs)
        missing = [c for c in configs if c not in created]
        if missing:
            def config_time(digest: str) -> str | None:
                try:
                    config = _again(reader.client.image_config, repo, digest)
                except (ValueError, errors.NotFound):
                    return None  # an artifact whose config is not JSON, or missing
                when = config.get("created") if isinstance(config, dict) else None
                return when if isinstance(when, str) else None
            fresh = dict(zip(missing, reader.pool.map(config_time, missing), strict=True))
            self.contents.put_created(fresh)
            created.update(fresh)
        return {d: tag_entry(everything[d], everything, created) for d in digests if d in everything}

    def read_repository(self, reader: Reader, repo: str, cold: bool = False,
                        same_as: Mapping[str, str] | None = None) -> Any:
        """tag -> entry as the registry answers now; None when it does not know the repository. Cold (nothing
        indexed yet): one GET per tag gives digest and manifest together; else a HEAD per tag and manifests
        only for digests not cached. UNCHANGED when the tags and their digests are `same_as` (tag -> digest)."""
        try:
            tag_names = _again(reader.client.tags, repo)
        except errors.RepositoryNotFound:
            return None
        if cold:
            def get(tag: str) -> Manifest | None:
                try:
                    return _again(reader.client.manifest, repo, tag)
                except errors.NotFound:
                    return None  # removed since the tag list
            got = {t: m for t, m in zip(tag_names, reader.pool.map(get, tag_names), strict=True) if m is not None}
            self.contents.put_manifests(got.values())
            digests = {t: m.digest for t, m in got.items()}
            known = {m.digest: m for m in got.values()}
        else:
            digests = reader.heads(repo, tag_names)
            if same_as is not None and digests == dict(same_as):
                return UNCHANGED
            known = {}
        wanted = sorted(set(digests.values()) - set(known))
        if wanted:
            read = reader.manifests(repo, wanted)
            known.update({d: read[d] for d in wanted if d in read})
        entries = self.describe(reader, repo, known)
        return {t: entries[d] for t, d in digests.items() if d in entries}

    def refresh(self, repo: str, reader: Reader | None = None, attempts: int = COMMIT_ATTEMPTS,
                listed: bool = False) -> bool:
        """Read one repository from the registry and index it, unless a newer change landed meanwhile (then read
        again). Returns whether the registry knows it. One reader of a repository at a time across processes:
        while another (the worker's fill, another API thread) reads it, this waits for that read and uses it
        when it began less than RECENTLY_READ ago, so a cold listing and the fill never read it twice."""
        claim = self._claim(repo)
        if claim is None:
            self._await_read(repo)
            if self.read_recently(repo):
                return bool(self.conn.hexists(self.repos_key, repo))
            claim = self._claim(repo) or ""  # still busy after the wait: read anyway, the commit guard holds
        try:
            return self._refresh(repo, reader, attempts, listed)
        finally:
            if claim:
                self._release(repo, claim)

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

    def _refresh(self, repo: str, reader: Reader | None, attempts: int, listed: bool) -> bool:
        own = reader is None
        reader = reader or self.reader()
        state = None
        try:
            for _ in range(attempts):
                began = time.time()
                with self.conn.pipeline(transaction=False) as pipe:
                    pipe.get(self.gen_key(repo))
                    pipe.hexists(self.repos_key, repo)
                    pipe.hgetall(self.tags_key(repo))
                    raw_gen, indexed, raw_tags = pipe.execute()
                gen, cold = int(raw_gen or 0), not indexed
                now = {_s(t): json.loads(e)["digest"] for t, e in raw_tags.items()}
                state = self.read_repository(reader, repo, cold, same_as=None if cold else now)
                if state is UNCHANGED:
                    self._checked(repo, began)
                    return True  # every tag on the digest the index has: nothing to describe or write
                if state is None and cold and not listed:
                    return False  # unknown and never indexed: nothing to write (no key for a made-up name)
                # Unknown but indexed: emptied (distribution answers NAME_UNKNOWN): listed with no tags until
                # the catalog drops it.
                if self.commit(repo, gen, lambda tags, indexed, s=state: s if s is not None else {}):  # type: ignore[misc]
                    self._checked(repo, began)
                    return state is not None
            return state is not None
        finally:
            if own:
                reader.close()

    def _checked(self, repo: str, began: float) -> None:
        self.conn.hset(self.checked_key, repo, repr(began))

    def read_recently(self, repo: str, within: float = RECENTLY_READ) -> bool:
        """The index shows this repository as the registry answered a read begun less than `within` s ago."""
        raw = self.conn.hget(self.checked_key, repo)
        return raw is not None and time.time() - float(raw) < within

    def confirm(self, repo: str, check: Confirm) -> tuple[bool, set[str]]:
        """An event's claims, checked against the registry: the tags it names and those the index has on a
        deleted digest get a HEAD each; only what the registry confirms changes. An unindexed repository is
        read whole (so a partial view is never indexed). Returns whether a change was committed, and the pushed
        tags the registry does not show (yet: distribution sends the push event before it writes the tag)."""
        if not names.is_repository(repo):
            return False, set()
        pushed = {t for t in check.tags if names.is_tag(t)}
        with self.reader() as reader:
            for _ in range(COMMIT_ATTEMPTS):
                gen = self.generation(repo)
                current = self.tags(repo)
                if current is None:
                    if not check.tags and not check.digests:
                        return False, set()
                    state = self.read_repository(reader, repo, cold=True)
                    if state is None:
                        return False, pushed  # unknown to the registry: forged, stale, or not written yet
                    if self.commit(repo, gen, lambda tags, indexed, s=state: s):  # type: ignore[misc]
                        return True, pushed - set(state)
                    continue
                checked = pushed | {t for t, e in current.items() if e["digest"] in check.digests}
                if not checked:
                    return False, set()
                heads = reader.heads(repo, sorted(checked))
                read = reader.manifests(repo, sorted(set(heads.values())))
                known = {d: read[d] for d in set(heads.values()) if d in read}
                entries = self.describe(reader, repo, known)
                found = {t: entries[d] for t, d in heads.items() if d in entries}

                def patch(tags: dict[str, Any], indexed: bool, found: dict[str, Any] = found,
                          checked: set[str] = checked) -> dict[str, Any]:
                    kept = {t: e for t, e in tags.items() if t not in checked}
                    return {**kept, **found}
                if self.commit(repo, gen, patch):
                    return True, pushed - set(found)
            return False, set()

    def confirm_later(self, repo: str, tags: set[str]) -> bool:
        """Check pushed tags the registry did not show yet again a few times within ~1.5 s, in the background
        (the registry is not kept waiting). At most RECHECKS_PENDING at a time: beyond, the reconcile catches
        up. Returns whether it was queued."""
        with _rechecks_lock:
            global _rechecks_pending
            if _rechecks_pending >= RECHECKS_PENDING:
                return False
            _rechecks_pending += 1

        def run() -> None:
            global _rechecks_pending
            missing = set(tags)
            try:
                for delay in RECHECK_DELAYS:
                    time.sleep(delay)
                    _, missing = self.confirm(repo, Confirm(tags=missing))
                    if not missing:
                        return
            except (errors.JanitorError, redis.RedisError) as exc:
                log.info("recheck of %s %s failed (%s); the reconcile catches up", repo, sorted(tags), exc)
            finally:
                with _rechecks_lock:
                    _rechecks_pending -= 1
        _rechecker().submit(run)
        return True

    def ensure(self, repos: Iterable[str]) -> None:
        """Index those of `repos` not indexed yet, in parallel (bounded): the API's on-demand fill."""
        summaries = self.summaries_of(list(dict.fromkeys(repos)))
        missing = [r for r in dict.fromkeys(repos) if r not in summaries]
        self.refresh_many(missing, listed=True)

    def read_since(self, repos: list[str], when: float) -> set[str]:
        """Those of `repos` whose last registry read began at or after `when` (epoch s)."""
        found: set[str] = set()
        for start in range(0, len(repos), CHUNK):
            part = repos[start:start + CHUNK]
            found |= {r for r, raw in zip(part, self.conn.hmget(self.checked_key, part), strict=True)
                      if raw is not None and float(raw) >= when}
        return found

    def refresh_many(self, repos: list[str], listed: bool = False, since: float | None = None) -> None:
        """Read these repositories (8 at a time, their tags' HEADs and manifests on the reader's bounded pool).
        `listed`: they are in the catalog, so one the registry answers NAME_UNKNOWN for (emptied) is indexed
        with no tags, as the catalog lists it. `since` (epoch s): a repository someone read after that (the
        API filling a listing meanwhile) is not read again."""
        if not repos:
            return

        def one(repo: str) -> None:
            if since is not None and self.read_since([repo], since):
                return
            self.refresh(repo, reader, listed=listed)
        with self.reader() as reader, concurrent.futures.ThreadPoolExecutor(
                max_workers=min(8, len(repos)), thread_name_prefix="janitor-index") as outer:
            for _ in outer.map(one, repos):
                pass

    def verify(self, repos: list[str]) -> None:
        """Polling mode: a cheap check per repository (its tag list, in parallel) against the index; a
        repository whose tag names changed is read again (a HEAD per tag)."""
        if not repos:
            return
        with self.conn.pipeline(transaction=False) as pipe:
            for repo in repos:
                pipe.hkeys(self.tags_key(repo))
            indexed = dict(zip(repos, pipe.execute(), strict=True))
        with self.reader() as reader:
            listed = list(reader.pool.map(reader.tag_names, repos))
            changed = [r for r, now in zip(repos, listed, strict=True)
                       if set(now) != {_s(t) for t in indexed[r]}]
        self.refresh_many(changed)

    def reconcile(self, catalog: list[str] | None = None) -> dict[str, Any]:
        """Read the whole registry (catalog, then each repository in parallel) and repair the index: what
        events missed, what others deleted. Each repository commits only if unchanged since its read."""
        assert self.client is not None
        started, began = time.monotonic(), time.time()
        listed = sorted(set(catalog if catalog is not None else _again(self.client.catalog)))
        first = not self.filled()
        # Listings page in name order; the first fill goes the other way, so the two meet in the middle
        # instead of waiting on each other's reads. The API is up before the worker: a cold listing may have
        # read repositories moments before the first fill began, and those are not read twice.
        order = listed[::-1] if first else listed
        self.refresh_many(order, listed=True, since=began - FIRST_FILL_SKIPS_READS_WITHIN if first else began)
        gone = sorted(set(self.summaries()) - set(listed))
        for repo in gone:
            gen = self.generation(repo)
            # Gone from the catalog: removed from storage. Read once more to be sure it is not being pushed.
            try:
                _again(self.client.tags, repo)
                continue
            except errors.RepositoryNotFound:
                self.commit(repo, gen, lambda tags, indexed: None)
        at = now_iso()
        fields = {"reconciled_at": at}
        if not self.filled():
            fields["filled_at"] = at
        self.note(**fields)
        return {"repositories": len(listed), "removed": len(gone), "seconds": round(time.monotonic() - started, 3)}

    # -- what the API lists -------------------------------------------------------------------------------------

    def served_from_index(self, meta: Mapping[str, str]) -> bool:
        """Notifications mode after the first fill: the index is the listing. Otherwise the catalog is read
        (one request) and what the page shows is checked (polling) or filled on demand (before the fill)."""
        return self.mode(meta) == NOTIFICATIONS and self.filled(meta)

    def list_repositories(self, pattern: str | None, sort: str, start: int, count: int) -> tuple[list[dict[str, Any]], int]:
        """A page of repositories with tag_count and size, and how many match in all."""
        assert self.client is not None
        meta = self.meta()
        if self.served_from_index(meta):
            summaries = self.summaries()
            listed = glob_filter(sorted(summaries), pattern)
        else:
            listed = glob_filter(sorted(set(_again(self.client.catalog))), pattern)
            if sort == "name":
                page = listed[start:start + count]
                self._fresh(page, meta)
            else:  # the order needs every summary: missing ones are read now (bounded pool), once
                self.ensure(listed)
            summaries = self.summaries_of(listed if sort != "name" else listed[start:start + count])
        rows = [{"name": n, "tag_count": summaries.get(n, {}).get("tag_count", 0),
                 "size": summaries.get(n, {}).get("size", 0)} for n in listed]
        rows = sort_repositories(rows, sort)[start:start + count]
        if sort != "name" and not self.served_from_index(meta):
            self._fresh([r["name"] for r in rows], meta)
            fresh = self.summaries_of([r["name"] for r in rows])
            rows = [{**r, **{k: fresh[r["name"]][k] for k in ("tag_count", "size")}} if r["name"] in fresh else r
                    for r in rows]
        return rows, len(listed)

    def _fresh(self, repos: list[str], meta: Mapping[str, str]) -> None:
        """Those not indexed are read now; in polling mode the others' tag lists are checked."""
        summaries = self.summaries_of(repos)
        missing = [r for r in repos if r not in summaries]
        self.refresh_many(missing, listed=True)
        if self.mode(meta) == POLLING:
            self.verify([r for r in repos if r in summaries])

    def list_tags(self, repo: str) -> list[dict[str, Any]]:
        """Every tag of a repository with its details. Polling mode (or not indexed yet): the repository is read
        now (tag list, a HEAD per tag, details from the content cache) unless a read of it began less than
        RECENTLY_READ ago; notifications mode: from the index."""
        meta = self.meta()
        indexed = bool(self.conn.hexists(self.repos_key, repo))
        # Notifications: an indexed repository is kept current by events from the moment it was indexed (the
        # whole registry need not be filled yet). Polling: read again unless a read began within RECENTLY_READ.
        current = indexed and (self.mode(meta) == NOTIFICATIONS or self.read_recently(repo))
        if not current:
            if not self.refresh(repo):
                raise errors.RepositoryNotFound(f"repository {repo} unknown to the registry", repository=repo)
        found = self.tags(repo)
        if found is None:
            raise errors.RepositoryNotFound(f"repository {repo} unknown to the registry", repository=repo)
        return [{"name": t, **e} for t, e in found.items()]

    def usage_report(self) -> tuple[list[dict[str, Any]], int]:
        """Bytes per repository (size, shared, unique), largest unique first, and the registry's total."""
        assert self.client is not None
        meta = self.meta()
        if self.served_from_index(meta):
            listed = sorted(self.summaries())
        else:
            listed = sorted(set(_again(self.client.catalog)))
            self.ensure(listed)
        blobs = self.blobs()
        summaries = self.summaries_of(listed)
        rows, total = usage({n: blobs.get(n, {}) for n in listed})
        for row in rows:
            row["tag_count"] = summaries.get(row["name"], {}).get("tag_count", 0)
        return sorted(rows, key=lambda r: (-r["unique_bytes"], -r["size"], r["name"])), total

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


def manifest_deleted(conn: redis.Redis, prefix: str, repo: str, digest: str) -> None:
    """After the window's delete_by_digest: the manifest's tags leave the listing at once, for good."""
    _best_effort(f"deleting {repo}@{digest}", lambda: TagIndex(conn, prefix).forget_manifest(repo, digest))


def tag_removed(conn: redis.Redis, prefix: str, repo: str, tag: str) -> None:
    """After the window's untag."""
    _best_effort(f"untagging {repo}:{tag}", lambda: TagIndex(conn, prefix).forget_tag(repo, tag))


def repository_removed(conn: redis.Redis, prefix: str, repo: str) -> None:
    """After the window removed a repository's directory."""
    _best_effort(f"removing {repo}", lambda: TagIndex(conn, prefix).forget_repository(repo))


def window_restarted(conn: redis.Redis, prefix: str) -> None:
    """After the window's restart: the worker's reconciler reads the whole registry again soon."""
    _best_effort("the restart", lambda: TagIndex(conn, prefix).request_reconcile())
