"""What the registry holds, read in one go and in a safe order, so the deletion rules can be pure.

Order matters for `untagged`: stored revisions are read FIRST, then the tag list, then a HEAD per tag, then
the manifests. A manifest pushed (with its tag) after the storage read is not in the snapshot, so it cannot
look untagged; one pushed before is seen with its tag, because its tag is read later. Reading the tags first
(as this service once did) let a push land in between and be deleted as "untagged", tag and all.

Reads run in parallel on a small thread pool; manifests are content-addressed, so one cache by digest serves
every repository and every job of a window.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from janitor import errors
from janitor.registry.client import RegistryClient
from janitor.registry.manifests import Manifest
from janitor.storage.contents import ContentCache

# Parallel reads against one registry: enough to hide latency, few enough not to load it.
READ_WORKERS = 8
# A registry answers 500 to a read of a link file caught mid-write (a tag being pushed): read it again.
READ_ATTEMPTS = 5
T = TypeVar("T")


def _again(read: Callable[..., T], *args: Any) -> T:
    for attempt in range(READ_ATTEMPTS):
        try:
            return read(*args)
        except errors.RegistryUnavailable as exc:
            if exc.details.get("status") is None or attempt == READ_ATTEMPTS - 1:
                raise  # unreachable (the client already retried), or still failing
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")

# Reads stored revisions: (container clock at the read, repository -> digest -> revision link mtime).
StorageReader = Callable[[], tuple[float, dict[str, dict[str, float]]]]


@dataclass
class RepoSnapshot:
    """One repository: its tags, every manifest known in it, and (from storage) the age of each stored one."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    manifests: dict[str, Manifest] = field(default_factory=dict)  # by digest: tagged, stored, children
    revision_ages: dict[str, float] | None = None  # stored digest -> seconds since pushed; None: storage unread

    @property
    def stored(self) -> set[str] | None:
        return None if self.revision_ages is None else set(self.revision_ages)


@dataclass
class Snapshot:
    """The repositories a request concerns, read in full; with storage read, every stored manifest of every
    repository too (which blobs survive a deletion depends on all of them)."""

    repos: dict[str, RepoSnapshot]
    stored: dict[str, set[str]] | None = None  # repository -> stored digests; None: storage unread
    manifests: dict[str, Manifest] = field(default_factory=dict)  # by digest, every manifest read

    @property
    def complete(self) -> bool:
        return self.stored is not None


class Reader:
    """Registry reads with a bounded thread pool and a manifest cache (by digest, immutable): in memory, and
    (with `contents`) in Redis, so a manifest read once by any process is not read from the registry again."""

    def __init__(self, client: RegistryClient, cache: dict[str, Manifest] | None = None,
                 workers: int = READ_WORKERS, contents: ContentCache | None = None) -> None:
        self.client = client
        self.cache = cache if cache is not None else {}
        self.contents = contents
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="janitor-read")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def tags(self, repository: str) -> dict[str, str]:
        """tag -> digest as the registry answers now: the tag list, then a HEAD per tag in parallel. A tag
        removed between the two is left out. RepositoryNotFound when the registry does not know the name."""
        return self.heads(repository, _again(self.client.tags, repository))

    def tag_names(self, repository: str) -> list[str]:
        """The tag list alone (one request a page); empty when the repository is gone."""
        try:
            return _again(self.client.tags, repository)
        except errors.RepositoryNotFound:
            return []

    def heads(self, repository: str, names: Iterable[str]) -> dict[str, str]:
        """tag -> digest for these tags, a HEAD each in parallel; tags gone meanwhile are left out."""
        names = list(names)
        digests = self.pool.map(lambda t: _again(self.client.manifest_digest, repository, t), names)
        return {t: d for t, d in zip(names, digests, strict=True) if d}

    def exists(self, repository: str, digests: Iterable[str]) -> set[str]:
        """Those of `digests` the repository has (a HEAD each, in parallel)."""
        wanted = list(dict.fromkeys(digests))
        found = self.pool.map(lambda d: _again(self.client.manifest_digest, repository, d) is not None, wanted)
        return {d for d, ok in zip(wanted, found, strict=True) if ok}

    def manifest(self, repository: str, digest: str) -> Manifest | None:
        if digest not in self.cache:
            try:
                manifest = _again(self.client.manifest, repository, digest)
            except errors.NotFound:
                return None
            self.cache[digest] = manifest
            if self.contents is not None and manifest.digest == digest:
                self.contents.put_manifests([manifest])
        return self.cache[digest]

    def recall(self, digests: Iterable[str]) -> None:
        """Bring what Redis knows of these digests into memory, in one round trip: a manifest cached there
        is content-addressed, so it is what the registry would answer, and no request is made for it. Does
        not say whether a repository holds it: callers learn that from tags, revisions or HEADs."""
        if self.contents is None:
            return
        missing = [d for d in digests if d not in self.cache]
        if missing:
            self.cache.update(self.contents.manifests(missing))

    def manifests(self, repository: str, digests: Iterable[str],
                  present: set[str] | None = None) -> dict[str, Manifest]:
        """These manifests and, wave by wave, the children of indexes among them. `present`, when storage was
        read, says which children the repository really holds (a force-deleted child stays listed in its
        index). Unreadable ones are left out."""
        found: dict[str, Manifest] = {}
        wave = list(dict.fromkeys(digests))
        first = True
        while wave:
            if first or present is not None:  # a child is cached but maybe deleted: only `present` says
                self.recall(wave)
            first = False
            for digest, manifest in zip(wave, self.pool.map(lambda d: self.manifest(repository, d), wave),
                                        strict=True):
                if manifest is not None:
                    found[digest] = manifest
            wave = list(dict.fromkeys(
                c.digest for d in wave if d in found for c in found[d].children
                if c.digest not in found and (present is None or c.digest in present)))
        return found

    def repository(self, name: str, stored: Mapping[str, float] | None, read_at: float,
                   extra: Iterable[str] = ()) -> RepoSnapshot:
        """One repository; `stored` (digest -> mtime) must have been read BEFORE this call. `extra` digests
        (named by a request) are looked up too, and left out when the repository does not have them."""
        try:
            tags = self.tags(name)
        except errors.RepositoryNotFound:
            if not stored:
                raise errors.RepositoryNotFound(f"repository {name} unknown to the registry", repository=name) from None
            tags = {}  # only untagged manifests left: the API lists no tags, storage still has them
        known = set(tags.values()) | set(stored or ())
        extra = [d for d in dict.fromkeys(extra) if d not in known]
        if extra:
            known |= self.exists(name, extra)
        present = None if stored is None else set(stored) | known
        manifests = self.manifests(name, sorted(known), present)
        ages = None if stored is None else {d: max(0.0, read_at - t) for d, t in stored.items()}
        return RepoSnapshot(name, tags, manifests, ages)


def read(reader: Reader, request: Mapping[str, Any], storage: StorageReader | None = None) -> Snapshot:
    """Everything a deletion request is planned on. Storage (when given) is read first; see the module doc."""
    names: list[str] | Callable[[list[str]], list[str]]
    names = (lambda every: every) if request.get("all_repositories") else [str(request["repository"])]
    return read_repositories(reader, names, storage, request.get("digests") or ())


def read_repositories(reader: Reader, names: list[str] | Callable[[list[str]], list[str]],
                      storage: StorageReader | None = None, extra: Iterable[str] = (),
                      skip_missing: bool = False) -> Snapshot:
    """The snapshot of several repositories, storage first. `names` is a list, or picks from every repository
    known (the catalog and, when storage is read, the stored ones): a retention policy's globs.
    `skip_missing`: a picked repository gone since the catalog is left out instead of failing the read."""
    read_at, stored_times = storage() if storage else (0.0, None)
    if stored_times is not None:  # every stored manifest Redis knows, in one go: only new ones are read
        reader.recall(d for times in stored_times.values() for d in times)
    if callable(names):
        names = names(sorted(set(reader.client.catalog()) | set(stored_times or ())))
    extra = list(extra)
    repos = {}
    for name in names:
        stored = None if stored_times is None else stored_times.get(name, {})
        try:
            repos[name] = reader.repository(name, stored, read_at, extra)
        except errors.RepositoryNotFound:
            if not skip_missing:
                raise
    snapshot = Snapshot(repos)
    for repo in repos.values():
        snapshot.manifests.update(repo.manifests)
    if stored_times is not None:
        snapshot.stored = {name: set(times) for name, times in stored_times.items()}
        for name, digests in sorted(snapshot.stored.items()):
            if name not in repos:  # other repositories: only to know which blobs they keep
                missing = sorted(d for d in digests if d not in reader.cache)
                if missing:  # never seen (recalled above otherwise): read, with their children
                    reader.manifests(name, missing, digests)
                snapshot.manifests.update((d, reader.cache[d]) for d in digests if d in reader.cache)
    return snapshot
