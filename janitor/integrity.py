"""After GC: every tagged manifest, its children and their blobs are still there. A report, read through
the registry API exactly as a client pulling would.

The registry is writable again while this runs, so pushes land meanwhile. Distribution lists a tag as soon
as its directory exists, a moment before its `current/link` is written (and its filesystem driver writes
that link in place, not atomically), so a tag caught mid-push answers 404 or 500 for an instant. A tag whose
manifest cannot be read is therefore read again for about a second before it is called broken.
"""

from __future__ import annotations

import time
from typing import Any

from janitor import errors
from janitor.manifests import Manifest
from janitor.registry import RegistryClient

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


def _read_confirmed(client: RegistryClient, repo: str, ref: str, tag: str) -> Manifest | str | None:
    """Like _read, but a failure is confirmed by reading again; None when the tag went away meanwhile."""
    found = _read(client, repo, ref)
    for _ in range(CONFIRM_ATTEMPTS - 1):
        if isinstance(found, Manifest):
            return found
        time.sleep(CONFIRM_PAUSE)
        if ref == tag and tag not in client.tags(repo):
            return None  # deleted meanwhile: nothing of it to check
        found = _read(client, repo, ref)
    return found


def check(client: RegistryClient, repositories: list[str]) -> dict[str, Any]:
    broken: list[dict[str, str]] = []
    seen_blobs: set[tuple[str, str]] = set()
    manifests = 0
    for repo in repositories:
        try:
            tags = client.tags(repo)
        except errors.RepositoryNotFound:
            continue
        for tag in tags:
            pending = [(tag, tag)]
            while pending:
                ref, label = pending.pop()
                manifest = _read_confirmed(client, repo, ref, tag)
                if manifest is None:
                    continue
                if not isinstance(manifest, Manifest):
                    broken.append({"repository": repo, "tag": tag, "missing": ref, "kind": manifest})
                    continue
                manifests += 1
                pending.extend((c.digest, tag) for c in manifest.children)
                for blob in manifest.blob_digests[1:]:
                    if (repo, blob) in seen_blobs:
                        continue
                    seen_blobs.add((repo, blob))
                    if not client.blob_exists(repo, blob):
                        broken.append({"repository": repo, "tag": label, "missing": blob, "kind": "blob"})
    return {"manifests_checked": manifests, "blobs_checked": len(seen_blobs), "broken": broken}
