"""Entry points for the callers: read a snapshot (janitor/snapshot.py), then plan on it (janitor/rules.py).

The API checks a request with the registry API alone, so a bad request gets its 404/409/422 before anything
is queued; the worker plans again inside the window, with storage read, on the state it is about to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from janitor import errors, rules, snapshot
from janitor.registry import RegistryClient
from janitor.rules import Plan
from janitor.snapshot import Reader, Snapshot, StorageReader


def read_and_plan(reader: Reader, request: Mapping[str, Any], registry_host: str | None,
         storage: StorageReader | None = None, untagged_min_age: float = 0.0) -> tuple[Snapshot, Plan]:
    """Read what the request concerns (storage first, when given) and plan it."""
    rules.check_confirmation(request, registry_host)  # before reading a whole registry for nothing
    snap = snapshot.read(reader, request, storage)
    return snap, rules.plan_request(snap, request, registry_host, untagged_min_age)


def check_request(client: RegistryClient, request: Mapping[str, Any], registry_host: str) -> None:
    """What the API verifies before queueing: names exist, confirmations match, nothing would break.
    Whole-repository and untagged requests only need the repository to exist; the worker plans them."""
    rules.check_confirmation(request, registry_host)
    if request.get("all_repositories"):
        return
    repo = str(request["repository"])
    if request.get("tags"):
        # Siblings never make a tag request fail (the tag goes alone), so the names are all there is to check.
        missing = sorted(set(request["tags"]) - set(client.tags(repo)))
        if missing:
            raise errors.TagNotFound(f"tags unknown in {repo}: {', '.join(missing)}", repository=repo, tags=missing)
        return
    if request.get("digests"):
        with Reader(client) as reader:
            read_and_plan(reader, request, registry_host)  # a child of a tagged index answers 409 here
        return
    client.tags(repo)


def tags_reaching_now(reader: Reader, repo: snapshot.RepoSnapshot, digest: str,
                      ignore: set[tuple[str, str]]) -> list[str]:
    """Right before `digest` is deleted: the tags that reach it now (the tag list read again, a HEAD per tag in
    parallel, manifests pushed since the snapshot read too), apart from the pairs the plan removes itself."""
    tags = snapshot.tags_now(reader, repo.name)
    new = {d for d in tags.values() if d not in repo.manifests}
    manifests = {**repo.manifests, **reader.manifests(repo.name, sorted(new))} if new else repo.manifests
    return rules.tags_reaching(manifests, tags, digest, ignore)
