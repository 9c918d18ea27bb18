"""What a deletion request means on the registry as it is now: which manifests go, which tags go with them.

The API runs it before enqueueing (so a bad request gets 404/409 at once) and the worker runs it again
inside the window, on the state it is about to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from janitor import errors
from janitor.registry import RegistryClient


@dataclass
class Plan:
    repository: str | None
    manifests: list[str] = field(default_factory=list)  # digests to DELETE, in order
    tags_removed: dict[str, list[str]] = field(default_factory=dict)  # digest -> tags that pointed at it

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "manifests": list(self.manifests),
            "tags": sorted({t for tags in self.tags_removed.values() for t in tags}),
            "tags_by_manifest": self.tags_removed,
        }


def tag_digests(client: RegistryClient, repository: str) -> dict[str, str]:
    """Every tag of a repository and the stored digest it points at."""
    found: dict[str, str] = {}
    for tag in client.tags(repository):
        digest = client.manifest_digest(repository, tag)
        if digest:
            found[tag] = digest
    return found


def plan_deletion(client: RegistryClient, request: dict[str, Any]) -> Plan:
    repository = request["repository"]
    tags = tag_digests(client, repository)  # RepositoryNotFound when the name is unknown
    by_digest: dict[str, list[str]] = {}
    for tag, digest in tags.items():
        by_digest.setdefault(digest, []).append(tag)
    plan = Plan(repository)
    if request.get("tags"):
        wanted = list(dict.fromkeys(request["tags"]))
        missing = [t for t in wanted if t not in tags]
        if missing:
            raise errors.TagNotFound(f"tags unknown in {repository}: {', '.join(missing)}", repository=repository, tags=missing)
        for tag in wanted:
            digest = tags[tag]
            siblings = sorted(set(by_digest[digest]) - set(wanted))
            if siblings:
                raise errors.SharedDigest(
                    f"{repository}:{tag} shares its manifest {digest} with {', '.join(siblings)}; deleting it "
                    "would remove those tags too",
                    repository=repository, tag=tag, digest=digest, tags=siblings,
                )
            if digest not in plan.manifests:
                plan.manifests.append(digest)
                plan.tags_removed[digest] = sorted(by_digest[digest])
    for digest in dict.fromkeys(request.get("digests") or []):
        if client.manifest_digest(repository, digest) is None:
            raise errors.ManifestNotFound(f"manifest {digest} unknown in {repository}", repository=repository, digest=digest)
        if digest not in plan.manifests:
            plan.manifests.append(digest)
            plan.tags_removed[digest] = sorted(by_digest.get(digest, []))
    return plan
