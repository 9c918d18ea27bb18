"""Entry points for the callers: read a snapshot (janitor/snapshot.py), then plan on it (janitor/rules.py).

The API checks a request with the registry API alone, so a bad request gets its 404/409/422 before anything
is queued; the worker plans again inside the window, with storage read, on the state it is about to change.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from janitor import errors
from janitor.planning import protections as protected_rules
from janitor.planning import rules, snapshot
from janitor.planning.rules import Plan
from janitor.planning.snapshot import Reader, Snapshot, StorageReader
from janitor.registry.client import RegistryClient


def read_and_plan(reader: Reader, request: Mapping[str, Any], registry_host: str | None,
         storage: StorageReader | None = None, untagged_min_age: float = 0.0) -> tuple[Snapshot, Plan]:
    """Read what the request concerns (storage first, when given) and plan it."""
    rules.check_confirmation(request, registry_host)  # before reading a whole registry for nothing
    snap = snapshot.read(reader, request, storage)
    return snap, rules.plan_request(snap, request, registry_host, untagged_min_age)


def check_request(client: RegistryClient, request: Mapping[str, Any], registry_host: str,
                  protections: Sequence[Mapping[str, Any]] = ()) -> None:
    """What the API verifies before queueing: names exist, confirmations match, nothing would break, no
    protected tag would go (`protections`: the rules; none when an admin overrides them).
    Untagged requests only need the repository to exist (they never take a tag); the worker plans them."""
    rules.check_confirmation(request, registry_host)
    if request.get("all_repositories"):
        if protections:
            found = [{"repository": repo, "tag": t, "rule": r} for repo in client.catalog()
                     if protected_rules.covers(repo, protections)
                     for t, r in sorted(protected_rules.protected_tags(repo, _tags_or_none(client, repo),
                                                                       protections).items())]
            protected_rules.refuse(found, "deleting every repository")
        return
    repo = str(request["repository"])
    if request.get("tags"):
        # Siblings never make a tag request fail (the tag goes alone), so the names are all there is to check.
        missing = sorted(set(request["tags"]) - set(client.tags(repo)))
        if missing:
            raise errors.TagNotFound(f"tags unknown in {repo}: {', '.join(missing)}", repository=repo, tags=missing)
        named = protected_rules.protected_tags(repo, dict.fromkeys(request["tags"]), protections)
        protected_rules.refuse([{"repository": repo, "tag": t, "rule": r} for t, r in named.items()],
                               f"deleting these tags of {repo}")
        return
    if request.get("digests"):
        with Reader(client) as reader:
            snap, plan = read_and_plan(reader, request, registry_host)  # a child of a tagged index answers 409 here
        protected_rules.refuse(protected_rules.violations(snap, plan, protections), f"deleting these manifests of {repo}")
        return
    tags = client.tags(repo)
    if request.get("all_tags"):
        found = protected_rules.protected_tags(repo, tags, protections)
        protected_rules.refuse([{"repository": repo, "tag": t, "rule": r} for t, r in sorted(found.items())],
                               f"deleting every tag of {repo}")


def _tags_or_none(client: RegistryClient, repo: str) -> list[str]:
    """A repository the catalog lists may have no tags left (the registry then answers 404)."""
    try:
        return client.tags(repo)
    except errors.NotFound:
        return []


class TagWatch:
    """The check right before a guarded delete by digest: which tags reach the manifest now, apart from the
    pairs the plan removes itself. Each check reads the tag list again and HEADs every tag not seen before
    (a tag put on an old manifest since the plan is caught by the very next delete); every tag is HEADed
    again when the last full read is older than `full_every` seconds (a tag moved onto an old manifest).
    HEADing every tag before every delete would cost tags x deletes requests: minutes on a busy repository."""

    def __init__(self, reader: Reader, repo: snapshot.RepoSnapshot, full_every: float = 2.0) -> None:
        self.reader = reader
        self.repo = repo
        self.full_every = full_every
        self.known: dict[str, str] = {}
        self.full_at: float | None = None
        self.manifests = dict(repo.manifests)

    def tags(self) -> dict[str, str]:
        names = self.reader.tag_names(self.repo.name)
        if self.full_at is None or time.monotonic() - self.full_at > self.full_every:
            self.known = self.reader.heads(self.repo.name, names)
            self.full_at = time.monotonic()
            return dict(self.known)
        self.known.update(self.reader.heads(self.repo.name, [t for t in names if t not in self.known]))
        return {t: self.known[t] for t in names if t in self.known}

    def reaching(self, digest: str, ignore: set[tuple[str, str]]) -> list[str]:
        tags = self.tags()
        new = sorted({d for d in tags.values() if d not in self.manifests})
        if new:  # pushed since the snapshot: what do they name?
            self.manifests.update(self.reader.manifests(self.repo.name, new))
        return rules.tags_reaching(self.manifests, tags, digest, ignore)


def delete_by_digest(client: RegistryClient, repository: str, digest: str, attempts: int = 5) -> None:
    """DELETE a manifest; one gone already (another request in the window took it) is fine. Distribution
    deletes the manifest, then looks up its tags: a tag caught mid-write makes that lookup, and the answer,
    a 500 after the fact. Asked again, it says 404, which settles it."""
    for attempt in range(attempts):
        try:
            client.delete_manifest(repository, digest)
            return
        except errors.ManifestNotFound:
            return
        except errors.RegistryUnavailable as exc:
            if exc.details.get("status") is None or attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
