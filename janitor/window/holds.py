"""Keeping blobs of pushes in flight out of GC's reach.

A client uploads its blobs first and PUTs the manifest last. GC in between sweeps those blobs (nothing
references them yet), and the registry later accepts the manifest anyway. So, while the registry is
read-only and before GC, every blob linked into a repository within the grace period gets a hold: a
manifest written straight into storage that references it, which GC marks like any other. The holds are
removed right after GC, before writes resume; the manifest that the client PUTs then keeps the blobs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from janitor.registry import names
from janitor.registry.manifests import OCI_MANIFEST, sha256_digest
from janitor.storage.driver import Mark, Storage

HOLD_ANNOTATION = "io.registry-janitor.hold"


@dataclass(frozen=True)
class Hold:
    repository: str
    digest: str
    blobs: tuple[str, ...]


def recent_blobs(store: Storage, grace: float, now: float | None = None,
                 newer_than: Mark | None = None) -> dict[str, set[str]]:
    """Blobs linked into each repository within `grace` seconds before `now` (link time = upload time)."""
    return store.recent_links(grace, now, newer_than)


def recent_blobs_and_sizes(store: Storage, grace: float, now: float, newer_than: Mark,
                           stored_since: Mark) -> tuple[dict[str, set[str]], dict[str, int]]:
    """`recent_blobs`, and in the same read the size of every blob stored since `stored_since` (the window's
    sizes were read before it), while writes are refused: a blob stored after that read (a push cut off between
    storing and linking it leaves one, which GC then sweeps) still has a size."""
    return store.recent_links_and_sizes(grace, now, newer_than, stored_since)


def unreleased(recent: Mapping[str, set[str]], released: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """What still needs a hold: a blob this window's deletions let go in one repository loses its hold there
    only. The same blob uploaded into another repository may belong to a push in flight there."""
    kept = {repo: set(blobs) - set(released.get(repo, ())) for repo, blobs in recent.items()}
    return {repo: blobs for repo, blobs in kept.items() if blobs}


def hold_manifest(blobs: list[str]) -> bytes:
    layers = [{"mediaType": "application/octet-stream", "digest": d, "size": 0} for d in blobs]
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": layers[0],
        "layers": layers[1:],
        "annotations": {HOLD_ANNOTATION: str(time.time())},
    }
    return json.dumps(body).encode()


def build(recent: dict[str, set[str]]) -> list[tuple[Hold, bytes]]:
    """One hold manifest per repository with recent blobs."""
    built = []
    for repository, blobs in sorted(recent.items()):
        if blobs:
            body = hold_manifest(sorted(blobs))
            built.append((Hold(repository, sha256_digest(body), tuple(sorted(blobs))), body))
    return built


def place(store: Storage, built: list[tuple[Hold, bytes]]) -> None:
    """Write the hold manifests into storage: their blob and a revision link each."""
    if built:
        store.write_manifests([(hold.repository, hold.digest, body) for hold, body in built])


def release(store: Storage, holds: list[Hold]) -> None:
    """Remove the hold manifests (their revision links and their own blobs)."""
    if holds:
        store.remove_manifests([(hold.repository, hold.digest) for hold in holds])


# -- the holds record ------------------------------------------------------------------------------
# Written next to the config before the holds are placed, so whoever comes after a crash can remove them.
# Read back like any other input: what does not fit the shape or the name grammar is never acted on.

RECORD_SUFFIX = ".janitor-holds"


@dataclass(frozen=True)
class HoldsRecord:
    owner: str  # the window and lease that placed the holds ("" in a record of an older version)
    holds: tuple[Hold, ...]
    rejected: tuple[str, ...] = ()  # why entries (or the whole record) were refused


def encode_record(owner: str, holds: list[Hold]) -> bytes:
    return json.dumps({"owner": owner, "holds": [{"repository": h.repository, "digest": h.digest}
                                                 for h in holds]}).encode()


def decode_record(raw: bytes) -> HoldsRecord:
    """Never raises: a bad record comes back with no holds and the reasons in `rejected`."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return HoldsRecord("", (), (f"not JSON: {exc}",))
    if isinstance(data, list):  # the shape before records named their owner
        owner, entries = "", data
    elif isinstance(data, dict) and isinstance(data.get("holds"), list) and isinstance(data.get("owner", ""), str):
        owner, entries = data.get("owner", ""), data["holds"]
    else:
        return HoldsRecord("", (), ("not a holds record: expected {\"owner\": str, \"holds\": [...]}",))
    good: list[Hold] = []
    rejected: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"repository", "digest"}:
            rejected.append(f"entry {i}: expected {{repository, digest}}, got {str(entry)[:200]!r}")
        elif not isinstance(entry["repository"], str) or not names.is_repository(entry["repository"]):
            rejected.append(f"entry {i}: not a repository name: {str(entry['repository'])[:200]!r}")
        elif not isinstance(entry["digest"], str) or not names.is_digest(entry["digest"]):
            rejected.append(f"entry {i}: not a sha256 digest: {str(entry['digest'])[:200]!r}")
        else:
            good.append(Hold(entry["repository"], entry["digest"], ()))
    return HoldsRecord(owner, tuple(good), tuple(rejected))
