"""What a deletion request means on the registry as it is now, computed before anything changes.

It decides, per repository: which tags are only untagged (their manifest stays for its other tags or for a
tagged index), which manifests are deleted (with the index children and referrers nothing else keeps), and
whether the repository itself goes. With a full inventory (the worker reads stored revisions) it also says
which blobs GC will free: those no surviving manifest in any repository uses.

The API plans with the registry API alone, so a bad request gets its 404/409 before anything is queued; the
worker plans again inside the window, on the state it is about to change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from janitor import errors
from janitor.manifests import Manifest
from janitor.registry import RegistryClient

# Referrers stored with the tag schema: OCI 1.1 `sha256-<hex>`, cosign `sha256-<hex>.sig` / `.att` / `.sbom`.
REFERRER_TAG = re.compile(r"^sha256-([a-f0-9]{64})(?:\.[\w.-]+)?$")


@dataclass
class RepoView:
    name: str
    tags: dict[str, str]  # tag -> digest
    manifests: dict[str, Manifest]  # every manifest known in the repository, tagged or not

    def tags_of(self, digest: str) -> list[str]:
        return sorted(t for t, d in self.tags.items() if d == digest)

    def parents(self, digest: str) -> list[str]:
        return sorted(d for d, m in self.manifests.items() if any(c.digest == digest for c in m.children))


class Inventory:
    """Reads repositories through the registry API; `revisions`, when given, lists every stored manifest
    (untagged ones too) per repository, which only the registry's storage can tell."""

    def __init__(self, client: RegistryClient, revisions: Callable[[], dict[str, set[str]]] | None = None,
                 manifest_cache: dict[str, Manifest] | None = None) -> None:
        self.client = client
        self._revisions_fn = revisions
        self._revisions: dict[str, set[str]] | None = None
        self._views: dict[str, RepoView] = {}
        self.cache = manifest_cache if manifest_cache is not None else {}

    @property
    def complete(self) -> bool:
        return self._revisions_fn is not None

    def revisions(self) -> dict[str, set[str]]:
        if self._revisions is None:
            self._revisions = self._revisions_fn() if self._revisions_fn else {}
        return self._revisions

    def repositories(self) -> list[str]:
        return sorted(set(self.client.catalog()) | set(self.revisions()))

    def manifest(self, repo: str, digest: str) -> Manifest | None:
        if digest not in self.cache:
            try:
                self.cache[digest] = self.client.manifest(repo, digest)
            except errors.NotFound:
                return None
        return self.cache[digest]

    def repo(self, name: str) -> RepoView:
        if name in self._views:
            return self._views[name]
        try:
            tag_names = self.client.tags(name)
        except errors.RepositoryNotFound:
            if name not in self.revisions():
                raise errors.RepositoryNotFound(f"repository {name} unknown to the registry", repository=name) from None
            tag_names = []
        tags: dict[str, str] = {}
        for tag in tag_names:
            digest = self.client.manifest_digest(name, tag)
            if digest:
                tags[tag] = digest
        manifests: dict[str, Manifest] = {}
        pending = list(dict.fromkeys([*tags.values(), *sorted(self.revisions().get(name, ()))]))
        while pending:
            digest = pending.pop()
            if digest in manifests:
                continue
            manifest = self.manifest(name, digest)
            if manifest is not None:
                manifests[digest] = manifest
                pending.extend(c.digest for c in manifest.children)
        view = RepoView(name, tags, manifests)
        self._views[name] = view
        return view


    def applied(self, plan: Plan) -> None:
        """Bring the inventory up to date with a plan that was carried out, so the next request in the same
        window plans on the registry as it now is without reading it all again."""
        for r in plan.repos:
            view = self._views.get(r.repository)
            gone = set(r.delete)
            if self._revisions is not None:
                self._revisions[r.repository] = self._revisions.get(r.repository, set()) - gone
            if view is None:
                continue
            for tag in [*r.untag, *(t for ts in r.tags_removed.values() for t in ts)]:
                view.tags.pop(tag, None)
            for digest in gone:
                view.manifests.pop(digest, None)


@dataclass
class RepoPlan:
    repository: str
    untag: list[str] = field(default_factory=list)  # tags removed alone; their manifest stays
    delete: list[str] = field(default_factory=list)  # manifest digests, parents before children
    tags_removed: dict[str, list[str]] = field(default_factory=dict)  # deleted digest -> its tags
    remove_repository: bool = False

    @property
    def tags(self) -> list[str]:
        return sorted({*self.untag, *(t for ts in self.tags_removed.values() for t in ts)})


@dataclass
class Plan:
    repos: list[RepoPlan]
    blobs_freed: dict[str, int] | None = None  # digest -> bytes, when the inventory was complete

    @property
    def changes_anything(self) -> bool:
        return any(r.untag or r.delete or r.remove_repository for r in self.repos)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "repositories": [
                {"repository": r.repository, "tags": r.tags, "untagged_only": sorted(r.untag),
                 "manifests": list(r.delete), "tags_by_manifest": r.tags_removed,
                 "remove_repository": r.remove_repository}
                for r in self.repos
            ],
            "tags": sorted(f"{r.repository}:{t}" for r in self.repos for t in r.tags),
            "manifests": [d for r in self.repos for d in r.delete],
        }
        if self.blobs_freed is not None:
            out["blobs"] = sorted(self.blobs_freed)
            out["bytes"] = sum(self.blobs_freed.values())
        return out


def plan_deletion(inv: Inventory, request: dict[str, Any], registry_host: str | None = None) -> Plan:
    if request.get("all_repositories"):
        if request.get("confirm") != registry_host:
            raise errors.ConfirmationMismatch(
                f"deleting every repository needs \"confirm\": \"{registry_host}\" (the registry's host)",
                expected=registry_host)
        repos = [_plan_repo(inv, inv.repo(name), {"all_tags": True, **_flags(request)})
                 for name in inv.repositories()]
    else:
        repos = [_plan_repo(inv, inv.repo(request["repository"]), request)]
    plan = Plan(repos)
    if inv.complete:
        plan.blobs_freed = _blobs_freed(inv, plan)
    return plan


def _flags(request: dict[str, Any]) -> dict[str, Any]:
    return {k: request[k] for k in ("force", "referrers") if k in request}


def _plan_repo(inv: Inventory, view: RepoView, request: dict[str, Any]) -> RepoPlan:
    repo = view.name
    plan = RepoPlan(repo)
    doomed: set[str] = set()
    requested_digests: list[str] = []
    if request.get("tags"):
        wanted = list(dict.fromkeys(request["tags"]))
        missing = [t for t in wanted if t not in view.tags]
        if missing:
            raise errors.TagNotFound(f"tags unknown in {repo}: {', '.join(missing)}", repository=repo, tags=missing)
        for digest in dict.fromkeys(view.tags[t] for t in wanted):
            mine = [t for t in wanted if view.tags[t] == digest]
            others = set(view.tags_of(digest)) - set(wanted)
            if others or _kept_parents(view, digest, set()):
                plan.untag.extend(mine)  # siblings or a tagged index keep the manifest: only the tag goes
            else:
                doomed.add(digest)
    for digest in dict.fromkeys(request.get("digests") or []):
        if digest not in view.manifests and inv.client.manifest_digest(repo, digest) is None:
            raise errors.ManifestNotFound(f"manifest {digest} unknown in {repo}", repository=repo, digest=digest)
        if digest not in view.manifests:
            found = inv.manifest(repo, digest)
            if found is not None:
                view.manifests[digest] = found
        doomed.add(digest)
        requested_digests.append(digest)
    if request.get("all_tags"):
        doomed |= set(view.manifests) | set(view.tags.values())
        plan.remove_repository = True
    if request.get("untagged"):
        doomed |= set(view.manifests) - _reachable(view, set(view.tags.values()))

    _expand(view, doomed, referrers=request.get("referrers", True))
    if not request.get("force"):
        for digest in requested_digests:
            kept = _kept_parents(view, digest, doomed)
            if kept:
                raise errors.ReferencedByIndex(
                    f"{repo}@{digest} is part of the tagged index {kept[0]} ({', '.join(view.tags_of(kept[0]))}); "
                    "deleting it would break that image. Delete the index, or pass \"force\": true",
                    repository=repo, digest=digest, indexes=kept, tags=sorted({t for i in kept for t in view.tags_of(i)}))
    # Indexes before their children, so no index ever points at a missing child.
    plan.delete = sorted(doomed, key=lambda d: (not (view.manifests.get(d) and view.manifests[d].is_index), d))
    plan.tags_removed = {d: view.tags_of(d) for d in plan.delete}
    return plan


def _reachable(view: RepoView, roots: Iterable[str]) -> set[str]:
    """Roots, their children, and referrers (by subject) of anything reachable: what untagged-deletion keeps."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        digest = pending.pop()
        if digest in seen:
            continue
        seen.add(digest)
        manifest = view.manifests.get(digest)
        if manifest:
            pending.extend(c.digest for c in manifest.children)
        pending.extend(d for d, m in view.manifests.items() if m.subject == digest)
    return seen


def _kept_parents(view: RepoView, digest: str, doomed: set[str]) -> list[str]:
    """Indexes that stay and are tagged (or reached from a tag) and reference this manifest."""
    surviving_roots = {d for d in view.tags.values() if d not in doomed}
    reachable = _reachable(view, surviving_roots)
    return [p for p in view.parents(digest) if p not in doomed and p in reachable]


def _expand(view: RepoView, doomed: set[str], referrers: bool) -> None:
    """Add what goes with the doomed manifests: children nothing else keeps, and their referrers."""
    changed = True
    while changed:
        changed = False
        for digest in list(doomed):
            manifest = view.manifests.get(digest)
            for child in manifest.children if manifest else ():
                if child.digest in doomed or view.tags_of(child.digest):
                    continue
                if all(p in doomed for p in view.parents(child.digest)):
                    doomed.add(child.digest)
                    changed = True
        if referrers:
            for tag, target in view.tags.items():
                match = REFERRER_TAG.match(tag)
                if match and "sha256:" + match.group(1) in doomed and target not in doomed:
                    doomed.add(target)
                    changed = True
            for digest, manifest in view.manifests.items():
                if manifest.subject in doomed and digest not in doomed:
                    doomed.add(digest)
                    changed = True


def _blobs_freed(inv: Inventory, plan: Plan) -> dict[str, int]:
    """Blobs of the doomed manifests that no surviving manifest, in any repository, still uses."""
    doomed = {(r.repository, d) for r in plan.repos for d in r.delete}
    removed_repos = {r.repository for r in plan.repos if r.remove_repository}
    freed: dict[str, int] = {}
    for r in plan.repos:
        view = inv.repo(r.repository)
        for digest in r.delete:
            manifest = view.manifests.get(digest)
            if manifest:
                freed.update(_sizes(manifest))
    for name, digests in inv.revisions().items():
        for digest in digests:
            if (name, digest) in doomed or name in removed_repos:
                continue
            manifest = inv.manifest(name, digest)
            if manifest:
                for blob in manifest.blob_digests:
                    freed.pop(blob, None)
    return freed


def _sizes(manifest: Manifest) -> dict[str, int]:
    sizes = {manifest.digest: len(manifest.raw)}
    if manifest.config:
        sizes[manifest.config.digest] = manifest.config.size
    sizes.update({layer.digest: layer.size for layer in manifest.layers})
    return sizes


def check_request(inv: Inventory, request: dict[str, Any], registry_host: str) -> None:
    """What the API verifies before queueing: names exist, confirmations match, nothing would break.
    Whole-repository and untagged requests only need the repository to exist; the worker plans them."""
    if request.get("all_repositories"):
        if request.get("confirm") != registry_host:
            plan_deletion(inv, {"all_repositories": True, "confirm": request.get("confirm")}, registry_host)
        return
    repo = request["repository"]
    if request.get("tags"):
        # Siblings never make a tag request fail (the tag goes alone), so the names are all there is to check.
        missing = sorted(set(request["tags"]) - set(inv.client.tags(repo)))
        if missing:
            raise errors.TagNotFound(f"tags unknown in {repo}: {', '.join(missing)}", repository=repo, tags=missing)
        return
    if request.get("digests"):
        plan_deletion(inv, request, registry_host)  # a child of a tagged index answers 409 here
        return
    inv.client.tags(repo)
