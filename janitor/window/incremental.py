"""The incremental GC's reads and deletes, through the Storage interface only (janitor/storage/driver.py): the
whole registry read before the fence, only what changed since read under it (janitor.window.mark holds the
rules). Neither this module nor its callers know the driver.

Before the fence: a mark (a reference file for `find -newer`, or a time on the object store's clock) is taken
first, then every repository with layer links, every blob with its size, and the references of every stored
manifest (the content cache first, the stored bytes for the rest); the caller gives the revisions (the last
window's list plus what changed). Under the fence: revisions, blobs and layered repositories newer than the
mark (on an object store, the listings whole: it cannot list by time), the manifests not known yet (the holds'
own are known), then the sweep. A crash anywhere leaves at worst a blob not deleted yet: nothing is written
before the sweep, and the sweep removes only blobs nothing references.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from janitor.registry import manifests as mf
from janitor.registry.client import MANIFEST_LIMIT
from janitor.storage.contents import ContentCache
from janitor.storage.driver import Mark, Storage
from janitor.window import mark as rules
from janitor.window.holds import Hold


@dataclass
class Premark:
    """What the mark before the fence found: the mark itself, the reference file it was taken after, and the
    size of every blob (what the sweep frees is counted from these)."""

    mark: rules.Mark
    since: Mark  # taken before the reads: changes newer than it are read under the fence
    sizes: dict[str, int] = field(default_factory=dict)
    read_from_files: int = 0  # manifests not in the content cache, read from storage


@dataclass
class Sweep:
    """What the sweep under the fence decided, and what it read to decide it."""

    blobs: list[str]
    blobs_marked: int
    revisions_changed: int
    blobs_new: int
    manifests_read: int  # from the registry's files (not in the content cache)
    sizes: dict[str, int]  # of blobs stored since the mark


def manifest_refs(store: Storage, contents: ContentCache | None,
                  digests: Iterable[str]) -> tuple[dict[str, frozenset[str]], int]:
    """What each of these manifests marks (rules.own_refs), from the content cache, else from their stored
    bytes (and cached then). One that cannot be read is left out: rules says so if it is needed. Returns the
    references and how many manifests came from the files."""
    wanted = set(digests)
    found: dict[str, frozenset[str]] = {}
    if contents is not None and wanted:
        for digest, manifest in contents.manifests(wanted).items():
            _add_refs(found, digest, manifest.raw)
    missing = wanted - set(found)
    read = store.read_blobs(missing, MANIFEST_LIMIT) if missing else {}
    for digest, raw in read.items():
        _add_refs(found, digest, raw)
    if contents is not None:
        contents.put_manifests(m for d, raw in read.items() if d in found and (m := _cacheable(d, raw)))
    return found, len(read)


def before_fence(store: Storage, contents: ContentCache | None, revisions: Mapping[str, set[str]],
                 since: Mark) -> Premark:
    """The mark of the whole registry, while it still accepts writes. `since` must have been taken (for a time
    before this read began) before `revisions` were read."""
    layered = store.layered_repositories(since=since)  # on S3, from the listing `revisions` came from
    sizes = store.blob_sizes()
    probe = rules.Mark({r: set(ds) for r, ds in revisions.items()}, layered, set(sizes))
    refs, from_files = manifest_refs(store, contents, probe.needed(rules.pairs(revisions)))
    return Premark(rules.take(revisions, layered, sizes, refs), since, sizes, from_files)


def under_fence(store: Storage, contents: ContentCache | None, premark: Premark,
                holds: Iterable[Hold] = ()) -> Sweep:
    """Apply what changed since the mark (pushes between it and the fence, the holds just placed, the
    repositories this window removed), then decide the sweep. Reads what is newer than the mark (a superset
    is fine: only differences from the mark count)."""
    mark = premark.mark
    _, revisions = store.revisions_since(premark.since, mark.revisions)
    new_sizes = store.blob_sizes(premark.since)
    new_blobs = set(new_sizes) - mark.blobs
    changed = rules.changes(mark.revisions, revisions)
    new_layered = store.layered_repositories(set(revisions) - mark.layered)
    # Stored now, and maybe counting now when they did not: nothing else can need a manifest read.
    candidates = {p for p in changed | rules.waiting_for(mark, new_blobs, new_layered) if rules.present(revisions, p)}
    wanted = mark.needed(candidates, new_blobs, new_layered)
    held = {h.digest: frozenset(h.blobs) for h in holds}
    refs = {d: held[d] for d in wanted if d in held}
    read, from_files = manifest_refs(store, contents, wanted - set(refs))
    refs.update(read)
    rules.advance(mark, revisions, new_blobs, new_layered, refs)
    swept = sorted(rules.sweep(mark))
    return Sweep(blobs=swept, blobs_marked=len(mark.counts), revisions_changed=len(changed),
                 blobs_new=len(new_blobs), manifests_read=from_files, sizes=new_sizes)


def _add_refs(found: dict[str, frozenset[str]], digest: str, raw: bytes) -> None:
    try:
        found[digest] = rules.own_refs(digest, raw)
    except rules.Unreadable:
        pass  # left out: needed, it stops the incremental mark with the manifest's name


def _cacheable(digest: str, raw: bytes) -> mf.Manifest | None:
    """A manifest read from the files goes into the content cache only when its body names its media type
    (the cache's other readers need one; the registry's HTTP answer would add it in a header)."""
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict) and isinstance(doc.get("mediaType"), str):
            return mf.parse(raw, None, digest)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None
