"""Reading the registry into the index: one repository (`refresh`, with one reader at a time across processes),
many (`refresh_many`), an event's claims (`confirm`), and the whole registry (`reconcile`). Details come from
`janitor.storage.contents` (manifests and config times by digest, immutable), so a known digest costs no
registry request."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis

from janitor import errors
from janitor.index.entries import now_iso, tag_entry
from janitor.index.events import Confirm
from janitor.index.store import IndexStore, _s
from janitor.planning.pulls import PullBook
from janitor.planning.snapshot import Reader, _again
from janitor.registry import names
from janitor.registry.client import RegistryClient
from janitor.registry.manifests import Manifest
from janitor.storage.contents import ContentCache

log = logging.getLogger("janitor.index")

# Commits retried this often when another writer changed the repository meanwhile (the read is then redone).
COMMIT_ATTEMPTS = 4
# A pushed tag not visible yet is checked again after these pauses (seconds): within 2 s of the event.
RECHECK_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)
RECHECKS_PENDING = 64
# The first fill does not read again a repository whose read began this long (seconds) before the fill did.
FIRST_FILL_SKIPS_READS_WITHIN = 10.0
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


UNCHANGED = object()  # read_repository: the registry shows what the index has


class IndexReader(IndexStore):
    """The index and a client to fill it from the registry."""

    def __init__(self, conn: redis.Redis, prefix: str, client: RegistryClient | None = None,
                 workers: int = 16, mode: str = "auto") -> None:
        super().__init__(conn, prefix, mode)
        self.client = client
        self.workers = workers
        self.contents = ContentCache(conn, prefix)

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

    def confirm(self, repo: str, check: Confirm) -> tuple[bool, set[str]]:
        """An event's claims, checked against the registry: the tags it names and those the index has on a
        deleted digest get a HEAD each; only what the registry confirms changes. An unindexed repository is
        read whole (so a partial view is never indexed). Returns whether a change was committed, and the pushed
        tags the registry does not show (yet: distribution sends the push event before it writes the tag)."""
        if not names.is_repository(repo):
            return False, set()
        pushed = {t for t in check.tags if names.is_tag(t)}
        with self.reader() as reader:
            self._forget_pulls_of_deleted(reader, repo, check.forget)
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
                shown = check.already_shown(current)
                checked = (pushed - shown) | {t for t, e in current.items() if e["digest"] in check.digests}
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
                    return True, pushed - shown - set(found)
            return False, set()

    def _forget_pulls_of_deleted(self, reader: Reader, repo: str, digests: set[str]) -> None:
        """A manifest deleted straight through the registry, not by the janitor (its delete event names the
        digest), loses its pull time once the registry confirms it gone (a HEAD each; deletes are rare), as one
        a window deletes does: pushed again, the digest starts unpulled. A forged or stale event changes
        nothing."""
        named = sorted(d for d in digests if names.is_digest(d))
        if not named:
            return
        gone = set(named) - reader.exists(repo, named)
        if gone:
            PullBook(self.conn, self.prefix).forget(repo, gone)

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

    def refresh_many(self, repos: list[str], listed: bool = False, since: float | None = None,
                     pause: Callable[[], None] | None = None) -> None:
        """Read these repositories (8 at a time, their tags' HEADs and manifests on the reader's bounded pool).
        `listed`: they are in the catalog, so one the registry answers NAME_UNKNOWN for (emptied) is indexed
        with no tags, as the catalog lists it. `since` (epoch s): a repository someone read after that (the
        API filling a listing meanwhile) is not read again. `pause`: called before each repository's read (it
        may block, or raise to stop the reads)."""
        if not repos:
            return

        def one(repo: str) -> None:
            if pause is not None:
                pause()
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

    def reconcile(self, catalog: list[str] | None = None, pause: Callable[[], None] | None = None) -> dict[str, Any]:
        """Read the whole registry (catalog, then each repository in parallel) and repair the index: what
        events missed, what others deleted. Each repository commits only if unchanged since its read. `pause`:
        as for `refresh_many`, before each repository."""
        assert self.client is not None
        started, began = time.monotonic(), time.time()
        listed = sorted(set(catalog if catalog is not None else _again(self.client.catalog)))
        first = not self.filled()
        # Listings page in name order; the first fill goes the other way, so the two meet in the middle
        # instead of waiting on each other's reads. The API is up before the worker: a cold listing may have
        # read repositories moments before the first fill began, and those are not read twice.
        order = listed[::-1] if first else listed
        self.refresh_many(order, listed=True, since=began - FIRST_FILL_SKIPS_READS_WITHIN if first else began,
                          pause=pause)
        gone = sorted(set(self.summaries()) - set(listed))
        for repo in gone:
            if pause is not None:
                pause()
            gen = self.generation(repo)
            # Gone from the catalog: removed from storage. Read once more to be sure it is not being pushed.
            try:
                _again(self.client.tags, repo)
                continue
            except errors.RepositoryNotFound:
                self.commit(repo, gen, lambda tags, indexed: None)
                PullBook(self.conn, self.prefix).forget_repository(repo)  # its pull times go with it
        at = now_iso()
        fields = {"reconciled_at": at}
        if not self.filled():
            fields["filled_at"] = at
        self.note(**fields)
        return {"repositories": len(listed), "removed": len(gone), "seconds": round(time.monotonic() - started, 3)}
