"""After GC: what the window could have broken is still there. A report, read through the registry API
exactly as a client pulling would.

Two scopes. The targeted check (every window) looks only where this window could have broken something:
every surviving stored manifest that uses a blob a deleted manifest used, a blob the window let go, or a blob
GC swept, or that names (as an index) a manifest deleted or swept, and the indexes above those; plus every
blob GC swept against the surviving references (a swept blob a surviving manifest still uses is broken,
whatever the registry answers). Which manifests survive and what they reference comes from the storage's
revision links and the content cache, not from reading the registry again, so its cost follows the change.
The full walk (on request) reads every tag of every repository.

The registry is writable again while this runs, so pushes land meanwhile. Distribution lists a tag as soon
as its directory exists, a moment before its `current/link` is written (and its filesystem driver writes
that link in place, not atomically), so a tag caught mid-push answers 404 or 500 for an instant. A tag whose
manifest cannot be read is therefore read again for about a second before it is called broken.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from janitor import errors
from janitor.registry.client import RegistryClient
from janitor.registry.manifests import Manifest

# A push in progress finishes its tag link within milliseconds; a broken tag stays broken.
CONFIRM_ATTEMPTS = 6
CONFIRM_PAUSE = 0.2


def _read(client: RegistryClient, repo: str, ref: str) -> Manifest | str:
    """The manifest, or why it cannot be read ("manifest", "unreadable manifest")."""
    try:
        return client.manifest(repo, ref)
    except errors.NotFound:
        return "manifest"
    except (errors.RegistryError, errors.RegistryUnavailable) as exc:
        if isinstance(exc, errors.RegistryUnavailable) and "status" not in exc.details:
            raise  # the registry itself is away, not this manifest
        return "unreadable manifest"


def _read_confirmed(client: RegistryClient, repo: str, ref: str, tag: str,
                    by_digest: bool = False) -> Manifest | str | None:
    """Like _read, but a failure is confirmed by reading again; None when the tag went away meanwhile. An
    untagged manifest (`by_digest`) has no tag list to tell a deletion from a loss: it is read again only."""
    found = _read(client, repo, ref)
    for _ in range(CONFIRM_ATTEMPTS - 1):
        if isinstance(found, Manifest):
            return found
        time.sleep(CONFIRM_PAUSE)
        if not by_digest and ref == tag and tag not in client.tags(repo):
            return None  # deleted meanwhile: nothing of it to check
        found = _read(client, repo, ref)
    return found


# Progress of a long check: (repositories done, repositories in all, manifests checked so far).
Progress = Callable[[int, int, int], None]


class Walker:
    """Reads manifests and HEADs blobs as a pull would, remembering blobs already found per repository."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self.broken: list[dict[str, Any]] = []
        self.seen_blobs: set[tuple[str, str]] = set()
        self.seen_manifests: set[tuple[str, str]] = set()
        self.manifests = 0

    def walk(self, repo: str, ref: str, tag: str | None) -> None:
        """`ref` (a tag, or a digest when `tag` is None) and everything it reaches."""
        pending = [ref]
        while pending:
            current = pending.pop()
            if current != tag:
                if (repo, current) in self.seen_manifests:
                    continue
                self.seen_manifests.add((repo, current))
            manifest = _read_confirmed(self.client, repo, current, tag) if tag is not None else \
                _read_confirmed(self.client, repo, current, current, by_digest=True)
            if manifest is None:
                continue
            if not isinstance(manifest, Manifest):
                self.broken.append({"repository": repo, "tag": tag, "missing": current, "kind": manifest})
                continue
            self.manifests += 1
            pending.extend(c.digest for c in manifest.children)
            for blob in manifest.blob_digests[1:]:
                if (repo, blob) in self.seen_blobs:
                    continue
                self.seen_blobs.add((repo, blob))
                if not self.client.blob_exists(repo, blob):
                    self.broken.append({"repository": repo, "tag": tag, "missing": blob, "kind": "blob"})

    def report(self) -> dict[str, Any]:
        return {"manifests_checked": self.manifests, "blobs_checked": len(self.seen_blobs), "broken": self.broken}


def check(client: RegistryClient, repositories: list[str], progress: Progress | None = None) -> dict[str, Any]:
    """The full walk: every tag of every repository, with its children and blobs."""
    walker = Walker(client)
    for done, repo in enumerate(repositories):
        if progress is not None:
            progress(done, len(repositories), walker.manifests)
        try:
            tags = client.tags(repo)
        except errors.RepositoryNotFound:
            continue
        for tag in tags:
            walker.walk(repo, tag, tag)
    if progress is not None:
        progress(len(repositories), len(repositories), walker.manifests)
    return {"mode": "full", "repositories_checked": len(repositories), **walker.report()}


# -- the targeted check: pure rules --------------------------------------------------------------------

def affected(surviving: Mapping[str, Mapping[str, Manifest]], touched_blobs: Iterable[str],
             gone_manifests: Iterable[str]) -> dict[str, set[str]]:
    """Per repository, the surviving manifests this window could have broken: those using a touched blob
    (one a deleted manifest used, one the window let go, one GC swept), those naming a gone manifest as a
    child, and, in the same repository, every index above one of them (a pull of the index reaches it)."""
    touched, gone = set(touched_blobs), set(gone_manifests)
    found: dict[str, set[str]] = {}
    for repo, manifests in surviving.items():
        hit = {d for d, m in manifests.items()
               if touched.intersection(m.blob_digests) or any(c.digest in gone for c in m.children)}
        if not hit:
            continue
        parents: dict[str, set[str]] = {}
        for d, m in manifests.items():
            for child in m.children:
                parents.setdefault(child.digest, set()).add(d)
        pending = list(hit)
        while pending:
            for parent in parents.get(pending.pop(), ()):
                if parent not in hit:
                    hit.add(parent)
                    pending.append(parent)
        found[repo] = hit
    return found


def swept_still_used(surviving: Mapping[str, Mapping[str, Manifest]], swept: Iterable[str]) -> list[dict[str, Any]]:
    """Blobs GC swept that a surviving stored manifest still uses (as a layer, its config, its own JSON or an
    index's child): broken, whatever a cache in front of the storage may answer."""
    gone = set(swept)
    out: list[dict[str, Any]] = []
    for repo in sorted(surviving):
        for digest, manifest in sorted(surviving[repo].items()):
            used = {*manifest.blob_digests, *(c.digest for c in manifest.children)}
            for blob in sorted(used & gone):
                out.append({"repository": repo, "manifest": digest, "missing": blob,
                            "kind": "manifest" if blob == digest or blob in {c.digest for c in manifest.children}
                            else "blob"})
    return out


def targets(hit: Mapping[str, set[str]], tags: Mapping[str, Mapping[str, str | None]],
            manifests: Mapping[str, Mapping[str, Manifest]]) -> dict[str, list[tuple[str, str | None]]]:
    """What to read, per repository: each tag on an affected manifest (by tag, as a pull by tag reads it) or
    whose digest could not be told (None), then each affected manifest no such tag reaches (by digest,
    labelled with no tag)."""
    out: dict[str, list[tuple[str, str | None]]] = {}
    for repo, digests in sorted(hit.items()):
        repo_tags = tags.get(repo, {})
        by_tag = [(t, t) for t, d in sorted(repo_tags.items()) if d is None or d in digests]
        reached: set[str] = set()
        pending = [d for _, d in sorted(repo_tags.items()) if d is not None and d in digests]
        while pending:
            d = pending.pop()
            if d in reached:
                continue
            reached.add(d)
            m = manifests.get(repo, {}).get(d)
            if m is not None:
                pending.extend(c.digest for c in m.children)
        by_digest: list[tuple[str, str | None]] = [(d, None) for d in sorted(digests - reached)]
        out[repo] = [*by_tag, *by_digest]
    return out


def check_targets(client: RegistryClient, wanted: Mapping[str, list[tuple[str, str | None]]]) -> dict[str, Any]:
    """Read these (repository -> (ref, tag)) as a pull would, with everything they reach."""
    walker = Walker(client)
    for repo, refs in sorted(wanted.items()):
        for ref, tag in refs:
            walker.walk(repo, ref, tag)
    return walker.report()
