"""The incremental GC's reads and deletes: the whole registry read before the fence, only what changed since
read under it (janitor.window.mark holds the rules).

Before the fence: a reference file for `find -newer` is written first, then every repository with `_layers`,
every blob with its size, and the references of every stored manifest (the content cache first, the
registry's files for the rest); the caller gives the revisions (the last window's list plus what changed).
Under the fence: revisions, blobs and `_layers` directories newer than that file, the manifests not known yet
(the holds' own are known), then the sweep. A crash anywhere leaves at worst a blob not deleted yet: nothing
is written before the sweep, and the sweep removes only blobs nothing references.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from janitor.registry import manifests as mf
from janitor.registry import names
from janitor.registry.client import MANIFEST_LIMIT
from janitor.registry.container import RegistryContainer
from janitor.storage import files as storage
from janitor.storage.contents import ContentCache
from janitor.storage.layout import Layout
from janitor.window import mark as rules
from janitor.window.holds import Hold

# Blob directories removed per exec; paths are ~110 bytes, far inside the kernel's argument limit.
DELETE_CHUNK = 500


@dataclass
class Premark:
    """What the mark before the fence found: the mark itself, the reference file it was taken after, and the
    size of every blob (what the sweep frees is counted from these)."""

    mark: rules.Mark
    since: str  # path of the reference file in the container: changes newer than it are read under the fence
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


def layered_repositories(container: RegistryContainer, root: str) -> set[str]:
    """Repositories with a `_layers` directory: those distribution's GC enumerates (catalog.go). One exec that
    skips every repository's manifests and uploads and stops at its `_layers`."""
    layout = Layout(root)
    repos = layout.repositories
    result = storage.checked(container, ["find", repos, "(", "-name", "_manifests", "-o", "-name", "_uploads", ")",
                                         "-prune", "-o", "-type", "d", "-name", "_layers", "-print", "-prune"])
    return {name for line in result.stdout.splitlines() if (name := _layers_owner(repos, line.strip()))}


def layered_among(container: RegistryContainer, root: str, candidates: Iterable[str]) -> set[str]:
    """Those of `candidates` with a `_layers` directory, looking at theirs only."""
    layout = Layout(root)
    wanted = sorted(set(candidates))
    found: set[str] = set()
    for start in range(0, len(wanted), DELETE_CHUNK):
        paths = [layout.layers(r) for r in wanted[start:start + DELETE_CHUNK]]
        result = storage.checked(container, ["find", *paths, "-maxdepth", "0", "-type", "d"])
        found |= {name for line in result.stdout.splitlines() if (name := _layers_owner(layout.repositories, line.strip()))}
    return found


def manifest_refs(container: RegistryContainer, root: str, contents: ContentCache | None,
                  digests: Iterable[str]) -> tuple[dict[str, frozenset[str]], int]:
    """What each of these manifests marks (rules.own_refs), from the content cache, else from the registry's
    files (and cached then). One that cannot be read is left out: rules says so if it is needed. Returns the
    references and how many manifests came from the files."""
    wanted = set(digests)
    found: dict[str, frozenset[str]] = {}
    if contents is not None and wanted:
        for digest, manifest in contents.manifests(wanted).items():
            _add_refs(found, digest, manifest.raw)
    missing = wanted - set(found)
    read = storage.read_blobs(container, root, missing, MANIFEST_LIMIT) if missing else {}
    for digest, raw in read.items():
        _add_refs(found, digest, raw)
    if contents is not None:
        contents.put_manifests(m for d, raw in read.items() if d in found and (m := _cacheable(d, raw)))
    return found, len(read)


def before_fence(container: RegistryContainer, root: str, contents: ContentCache | None,
                 revisions: Mapping[str, set[str]], since: str) -> Premark:
    """The mark of the whole registry, while it still accepts writes. `since` must have been written (with a
    modification time before this read began) before `revisions` were read."""
    layered = layered_repositories(container, root)
    sizes = storage.blob_sizes(container, root)
    probe = rules.Mark({r: set(ds) for r, ds in revisions.items()}, layered, set(sizes))
    refs, from_files = manifest_refs(container, root, contents, probe.needed(rules.pairs(revisions)))
    return Premark(rules.take(revisions, layered, sizes, refs), since, sizes, from_files)


def under_fence(container: RegistryContainer, root: str, contents: ContentCache | None, premark: Premark,
                holds: Iterable[Hold] = ()) -> Sweep:
    """Apply what changed since the mark (pushes between it and the fence, the holds just placed, the
    repositories this window removed), then decide the sweep. Reads only what is newer than the mark."""
    mark = premark.mark
    _, revisions = storage.revisions_since(container, root, premark.since, mark.revisions)
    new_sizes = storage.blob_sizes(container, root, premark.since)
    new_blobs = set(new_sizes) - mark.blobs
    changed = rules.pairs(revisions) ^ rules.pairs(mark.revisions)
    new_layered = layered_among(container, root, set(revisions) - mark.layered)
    candidates = {p for p in rules.pairs(revisions)
                  if p in changed or p[1] in new_blobs or p[0] in new_layered}
    probe = rules.Mark(revisions, mark.layered | new_layered, mark.blobs | new_blobs, mark.refs)
    wanted = probe.needed(candidates)
    held = {h.digest: frozenset(h.blobs) for h in holds}
    refs = {d: held[d] for d in wanted if d in held}
    read, from_files = manifest_refs(container, root, contents, wanted - set(refs))
    refs.update(read)
    rules.advance(mark, revisions, new_blobs, new_layered, refs)
    swept = sorted(rules.sweep(mark))
    return Sweep(blobs=swept, blobs_marked=len(mark.marked), revisions_changed=len(changed),
                 blobs_new=len(new_blobs), manifests_read=from_files, sizes=new_sizes)


def delete_blobs(container: RegistryContainer, root: str, digests: list[str],
                 before_each: Callable[[], None] | None = None) -> None:
    """Remove these blobs' directories, as distribution's vacuum does (the whole `<hex>` directory). Their
    now-empty parents are left to `storage.remove_blob_dirs`. `before_each` runs before every exec (the
    guard's lease and time check)."""
    layout = Layout(root)
    paths = sorted({layout.blob(d) for d in digests})
    for start in range(0, len(paths), DELETE_CHUNK):
        if before_each is not None:
            before_each()
        storage.checked(container, ["rm", "-rf", *paths[start:start + DELETE_CHUNK]], missing_ok=False)


def _layers_owner(repositories: str, path: str) -> str | None:
    if not path.startswith(repositories + "/") or not path.endswith("/_layers"):
        return None
    name = path[len(repositories) + 1:-len("/_layers")]
    return name if names.is_repository(name) and posixpath.normpath(name) == name else None


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
