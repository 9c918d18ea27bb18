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
import posixpath
import re
import tarfile
import time
from dataclasses import dataclass

from janitor import names
from janitor.container import RegistryContainer
from janitor.manifests import OCI_MANIFEST, sha256_digest

_LAYER_LINK = re.compile(r"^(\d+) (.+)/repositories/(.+)/_layers/sha256/([a-f0-9]{64})/link$")
HOLD_ANNOTATION = "io.registry-janitor.hold"


@dataclass(frozen=True)
class Hold:
    repository: str
    digest: str
    blobs: tuple[str, ...]


def recent_blobs(container: RegistryContainer, root: str, grace: float, now: float | None = None) -> dict[str, set[str]]:
    """Blobs linked into each repository within the last `grace` seconds (link mtime = upload time)."""
    repos = f"{root.rstrip('/')}/docker/registry/v2/repositories"
    result = container.exec(["find", repos, "-path", "*/_layers/sha256/*/link", "-type", "f",
                             "-exec", "stat", "-c", "%Y %n", "{}", "+"])
    cutoff = (now or time.time()) - grace
    found: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():
        match = _LAYER_LINK.match(line.strip())
        if match and int(match.group(1)) >= cutoff and names.is_repository(match.group(3)):
            found.setdefault(match.group(3), set()).add("sha256:" + match.group(4))
    return found


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
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for hold, body in built:
            hexd = hold.digest.split(":", 1)[1]
            _add(tar, f"blobs/sha256/{hexd[:2]}/{hexd}/data", body)
            _add(tar, f"repositories/{hold.repository}/_manifests/revisions/sha256/{hexd}/link", hold.digest.encode())
    container.get().put_archive(f"{root.rstrip('/')}/docker/registry/v2", buf.getvalue())


def release(container: RegistryContainer, root: str, holds: list[Hold]) -> None:
    """Remove the hold manifests (their revision links and their own blobs)."""
    paths: list[str] = []
    for hold in holds:
        hexd = hold.digest.split(":", 1)[1]
        repo_dir = names.repository_dir(root, hold.repository)
        paths.append(posixpath.join(repo_dir, "_manifests/revisions/sha256", hexd))
        paths.append(f"{root.rstrip('/')}/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}")
    for start in range(0, len(paths), 200):
        container.exec(["rm", "-rf", *paths[start:start + 200]])


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
