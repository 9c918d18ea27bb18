"""Keeping blobs of pushes in flight out of GC's reach.

A client uploads its blobs first and PUTs the manifest last. GC in between sweeps those blobs (nothing
references them yet), and the registry later accepts the manifest anyway. So, while the registry is
read-only and before GC, every blob linked into a repository within the grace period gets a hold: a
manifest written straight into storage that references it, which GC marks like any other. The holds are
removed right after GC, before writes resume; the manifest that the client PUTs then keeps the blobs.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass

import docker.errors

from janitor import errors
from janitor.registry import names
from janitor.registry.container import RegistryContainer
from janitor.registry.manifests import OCI_MANIFEST, sha256_digest
from janitor.storage.files import checked
from janitor.storage.layout import Layout

HOLD_ANNOTATION = "io.registry-janitor.hold"


@dataclass(frozen=True)
class Hold:
    repository: str
    digest: str
    blobs: tuple[str, ...]


def recent_blobs(container: RegistryContainer, root: str, grace: float, now: float | None = None,
                 newer_than: str | None = None) -> dict[str, set[str]]:
    """Blobs linked into each repository within `grace` seconds before `now` (link mtime = upload time).

    `find` skips the manifests and uploads of every repository and keeps only links newer than the file
    `newer_than` (a mark written with mtime `now - grace - 1`), or else younger than the grace to the minute,
    rounded up; only those are printed and stat-ed, and the cutoff is then exact."""
    layout = Layout(root)
    if newer_than:
        # A blob linked for the first time adds a directory to its repository's _layers/sha256, which makes
        # that directory newer than the mark: the layer links of every other repository are never looked at.
        # (A link rewritten in place, a blob uploaded again into a repository that had it linked already,
        # leaves the directory as it was: the registry answered that blob as present all along, so clients
        # skip its upload; such a blob is not held.)
        recent = ["-path", "*/_layers/sha256", "!", "-newer", newer_than, "-prune", "-o", "-type", "f",
                  "-path", "*/_layers/sha256/*/link", "-newer", newer_than]
    else:
        recent = ["-type", "f", "-path", "*/_layers/sha256/*/link", "-mmin", f"-{max(1, math.ceil(grace / 60) + 1)}"]
    result = checked(container, ["find", layout.repositories, "(", "-name", "_manifests", "-o", "-name", "_uploads",
                                 ")", "-prune", "-o", *recent, "-exec", "stat", "-c", "%Y %n", "{}", "+"])
    cutoff = (now or time.time()) - grace
    found: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():
        mtime, _, path = line.strip().partition(" ")
        parsed = layout.parse_layer_link(path)
        if parsed and mtime.isdigit() and int(mtime) >= cutoff:
            found.setdefault(parsed[0], set()).add(parsed[1])
    return found


def recent_blobs_and_sizes(container: RegistryContainer, root: str, grace: float, now: float, newer_than: str,
                           stored_since: str) -> tuple[dict[str, set[str]], dict[str, int]]:
    """`recent_blobs` (with a mark), and in the same exec the size of every blob stored since the file
    `stored_since` (the window's sizes were read before it): one `find` over both trees while writes are
    refused, so a blob stored after that read (a push cut off between storing and linking it leaves one, which
    GC then sweeps) still has a size."""
    layout = Layout(root)
    result = checked(container, [
        "find", layout.repositories, layout.blobs, "(", "-name", "_manifests", "-o", "-name", "_uploads", ")",
        "-prune",
        "-o", "-path", "*/_layers/sha256", "!", "-newer", newer_than, "-prune",
        "-o", "-type", "f", "-path", "*/_layers/sha256/*/link", "-newer", newer_than,
        "-exec", "stat", "-c", "%Y %n", "{}", "+",
        "-o", "-path", f"{layout.blobs}/sha256/??", "!", "-newer", stored_since, "-prune",
        "-o", "-type", "f", "-path", f"{layout.blobs}/sha256/*/data", "-newer", stored_since,
        "-exec", "stat", "-c", "%s %n", "{}", "+"])
    cutoff = now - grace
    found: dict[str, set[str]] = {}
    sizes: dict[str, int] = {}
    for line in result.stdout.splitlines():
        number, _, path = line.strip().partition(" ")
        if not number.isdigit():
            continue
        parsed = layout.parse_layer_link(path)
        if parsed:
            if int(number) >= cutoff:
                found.setdefault(parsed[0], set()).add(parsed[1])
        elif (digest := layout.parse_blob_data(path)) is not None:
            sizes[digest] = int(number)
    return found, sizes


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


def place(container: RegistryContainer, root: str, built: list[tuple[Hold, bytes]]) -> None:
    """Write the hold manifests into storage in a single archive: their blob and a revision link each."""
    if not built:
        return
    layout = Layout(root)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for hold, body in built:
            _add(tar, layout.rel_blob_data(hold.digest), body)
            _add(tar, layout.rel_revision_link(hold.repository, hold.digest), hold.digest.encode())
    checked(container, ["mkdir", "-p", layout.v2], missing_ok=False)
    try:
        ok = container.get().put_archive(layout.v2, buf.getvalue())
    except docker.errors.APIError as exc:
        raise errors.ContainerError(f"cannot write the holds into {layout.v2}: {exc.explanation or exc}") from exc
    if not ok:
        raise errors.ContainerError(f"cannot write the holds into {layout.v2}")


def release(container: RegistryContainer, root: str, holds: list[Hold]) -> None:
    """Remove the hold manifests (their revision links and their own blobs)."""
    if not holds:
        return
    layout = Layout(root)
    paths: list[str] = []
    for hold in holds:
        paths.append(layout.revision(hold.repository, hold.digest))
        paths.append(layout.blob(hold.digest))
    for start in range(0, len(paths), 200):
        checked(container, ["rm", "-rf", *paths[start:start + 200]], missing_ok=False)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))


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
