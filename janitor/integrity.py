"""After GC: every tagged manifest, its children and their blobs are still there. A report, read through
the registry API exactly as a client pulling would."""

from __future__ import annotations

from typing import Any

from janitor import errors
from janitor.registry import RegistryClient


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
                try:
                    manifest = client.manifest(repo, ref)
                except errors.NotFound:
                    broken.append({"repository": repo, "tag": tag, "missing": ref, "kind": "manifest"})
                    continue
                except (errors.RegistryError, errors.RegistryUnavailable) as exc:
                    if isinstance(exc, errors.RegistryUnavailable) and "status" not in exc.details:
                        raise  # the registry itself is away, not this manifest
                    broken.append({"repository": repo, "tag": tag, "missing": ref, "kind": "unreadable manifest"})
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
