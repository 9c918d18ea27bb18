"""The incremental GC's mark and sweep, as pure functions: sets in, sets out, no I/O.

They restate distribution 2.8's `MarkAndSweep` (registry/storage/garbagecollect.go, without
--delete-untagged) so that the janitor can mark before the fence and, under it, only apply the change:

* a repository is enumerated only if it has a `_layers` directory (catalog.go `handleRepository`);
* a revision of it counts only if its manifest's blob data exists (linkedblobstore.go `Enumerate` skips a
  link whose blob is unknown), tagged or not;
* a counted revision marks its own digest and its manifest's `References()`: config and layers of an image
  manifest, the children's digests of an index (not the children's layers: a child marks its own when it is
  itself a counted revision), nothing for an OCI `subject` (2.8 does not know it);
* every blob with data that nothing marked is swept.

The mark is kept as reference counts (blob -> how many counted revisions mark it), with the blobs nothing marks
(the sweep) and the stored revisions that do not count kept beside them, so revisions added or gone since it
was taken change it, and the sweep is read from it, in time proportional to the change, not to the registry.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Set as AbstractSet
from dataclasses import dataclass, field

from janitor.registry.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
)

Pair = tuple[str, str]  # (repository, manifest digest): one revision


class Unreadable(ValueError):
    """A counted revision whose manifest the janitor cannot read as distribution would: the incremental mark
    cannot be exact, so this window runs the registry's own garbage-collect instead."""


def references(raw: bytes) -> frozenset[str]:
    """What distribution 2.8's `Manifest.References()` returns for these stored bytes, by its own dispatch
    (manifests.go `Get`): schemaVersion 2, then the body's mediaType; none means an OCI index when it lists
    manifests, else an OCI image manifest. Raises Unreadable for anything that `Get` refuses or that the
    janitor does not reproduce (schema 1)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unreadable(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise Unreadable("not a schema 2 manifest")
    media_type = doc.get("mediaType") or ""
    try:
        if media_type in (DOCKER_LIST, OCI_INDEX) or (not media_type and doc.get("manifests")):
            return frozenset(str(d["digest"]) for d in doc.get("manifests") or ())
        if media_type in (DOCKER_MANIFEST, OCI_MANIFEST, ""):
            config = doc.get("config") or {}
            found = [str(config.get("digest", ""))]
            found += [str(d["digest"]) for d in doc.get("layers") or ()]
            return frozenset(found)
    except (KeyError, TypeError, AttributeError) as exc:
        raise Unreadable(f"malformed descriptor: {exc}") from exc
    raise Unreadable(f"media type {media_type!r} is not one distribution 2.8 reads")


@dataclass
class Mark:
    """Reference counts of the counted revisions, and what decided which revisions count."""

    revisions: dict[str, set[str]]  # every stored revision, counted or not
    layered: set[str]  # repositories with a _layers directory: the ones distribution enumerates
    blobs: set[str]  # every blob with data
    refs: dict[str, frozenset[str]] = field(default_factory=dict)  # manifest digest -> what it marks, itself included
    counts: Counter[str] = field(default_factory=Counter)  # only blobs marked at least once
    counted: set[Pair] = field(default_factory=set)
    unmarked: set[str] = field(default_factory=set)  # blobs with data that nothing marks: the sweep
    waiting: set[Pair] = field(default_factory=set)  # stored revisions that do not count (no data, no _layers)

    @property
    def marked(self) -> set[str]:
        return set(self.counts)

    def counts_as(self, repo: str, digest: str, new_blobs: AbstractSet[str] = frozenset(),
                  new_layered: AbstractSet[str] = frozenset()) -> bool:
        """Whether this revision counts (with these blobs and repositories added, not yet in the mark)."""
        return (repo in self.layered or repo in new_layered) and (digest in self.blobs or digest in new_blobs)

    def needed(self, pairs: Iterable[Pair], new_blobs: AbstractSet[str] = frozenset(),
               new_layered: AbstractSet[str] = frozenset()) -> set[str]:
        """Manifests among these revisions that would count and whose references are not known yet."""
        return {d for r, d in pairs if d not in self.refs and self.counts_as(r, d, new_blobs, new_layered)}

    def _count(self, pair: Pair, step: int) -> None:
        for blob in self.refs[pair[1]]:
            n = self.counts[blob] + step
            if n > 0:
                self.counts[blob] = n
                self.unmarked.discard(blob)
            else:
                self.counts.pop(blob, None)
                if blob in self.blobs:
                    self.unmarked.add(blob)


def own_refs(digest: str, raw: bytes) -> frozenset[str]:
    """What one revision marks: its own digest and its manifest's references."""
    return references(raw) | {digest}


def pairs(revisions: Mapping[str, Iterable[str]]) -> set[Pair]:
    return {(r, d) for r, ds in revisions.items() for d in ds}


def changes(before: Mapping[str, set[str]], now: Mapping[str, set[str]]) -> set[Pair]:
    """Revisions come or gone between two listings. Repository by repository: an unchanged one compares equal
    as a set, so its pairs are never built (under the fence, where the registry is large and the change small)."""
    found: set[Pair] = set()
    empty: set[str] = set()
    for repo in before.keys() | now.keys():
        was, is_now = before.get(repo, empty), now.get(repo, empty)
        if was != is_now:
            found.update((repo, d) for d in was ^ is_now)
    return found


def present(revisions: Mapping[str, set[str]], pair: Pair) -> bool:
    return pair[1] in revisions.get(pair[0], ())


def waiting_for(mark: Mark, new_blobs: set[str], new_layered: set[str]) -> set[Pair]:
    """Stored revisions that did not count and may now: their manifest's data arrived, or their repository
    gained `_layers`."""
    return {p for p in mark.waiting if p[1] in new_blobs or p[0] in new_layered}


def take(revisions: Mapping[str, set[str]], layered: Iterable[str], blobs: Iterable[str],
         refs: Mapping[str, frozenset[str]]) -> Mark:
    """The mark of a whole registry. `refs` must hold every counted revision's manifest (Mark.needed says
    which): one missing raises Unreadable."""
    mark = Mark({r: set(ds) for r, ds in revisions.items()}, set(layered), set(blobs))
    _learn(mark, refs)
    for pair in pairs(revisions):
        if mark.counts_as(*pair):
            _require(mark, pair)
            mark.counted.add(pair)
            mark._count(pair, 1)
        else:
            mark.waiting.add(pair)
    mark.unmarked = {b for b in mark.blobs if b not in mark.counts}
    return mark


def advance(mark: Mark, revisions: Mapping[str, set[str]], new_blobs: Iterable[str], new_layered: Iterable[str],
            refs: Mapping[str, frozenset[str]]) -> Mark:
    """The mark after what changed since it was taken (in place): the revisions now (a superset of changes is
    fine: only the difference is looked at), blobs stored since, repositories found with a `_layers` directory
    since, and the references of manifests that were not known. Blobs only come (nothing but GC removes one);
    a repository that went away loses its revisions, which is all distribution would see of it."""
    new_blobs, new_layered = set(new_blobs) - mark.blobs, set(new_layered) - mark.layered
    mark.blobs |= new_blobs
    mark.unmarked |= {b for b in new_blobs if b not in mark.counts}
    mark.layered |= new_layered
    _learn(mark, refs)
    # Only these can change whether they count: revisions come or gone, a manifest whose blob arrived, a
    # repository that gained _layers.
    touched = changes(mark.revisions, revisions) | waiting_for(mark, new_blobs, new_layered)
    for pair in touched:
        stored = present(revisions, pair)
        should = stored and mark.counts_as(*pair)
        if should and pair not in mark.counted:
            _require(mark, pair)
            mark.counted.add(pair)
            mark._count(pair, 1)
        elif not should and pair in mark.counted:
            mark.counted.discard(pair)
            mark._count(pair, -1)
        if stored and not should:
            mark.waiting.add(pair)
        else:
            mark.waiting.discard(pair)
    mark.revisions = {r: set(ds) for r, ds in revisions.items()}
    return mark


def sweep(mark: Mark, keep: Iterable[str] = ()) -> set[str]:
    """Every blob with data that nothing marks, less `keep`."""
    return mark.unmarked - set(keep)


def _learn(mark: Mark, refs: Mapping[str, frozenset[str]]) -> None:
    for digest, found in refs.items():
        mark.refs.setdefault(digest, frozenset(found) | {digest})


def _require(mark: Mark, pair: Pair) -> None:
    if pair[1] not in mark.refs:
        raise Unreadable(f"the manifest {pair[1]} of {pair[0]} could not be read")
