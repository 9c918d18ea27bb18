"""What a deletion request means, decided on a snapshot of the registry: pure functions, no I/O.

Per repository: which tags only go (their manifest stays for other tags or a surviving index), which
manifests are deleted (with the index children and referrers nothing else keeps), and whether the
repository itself goes. With storage read, which blobs GC will free: those no surviving manifest in any
repository uses.

A request is judged as a whole: a manifest goes when none of its tags survive the request and no surviving
index (one a surviving tag reaches) uses it. So deleting an index's tag together with its children's tags
frees the whole image.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from janitor import errors
from janitor.planning.snapshot import RepoSnapshot, Snapshot
from janitor.registry.manifests import Manifest

# Referrers stored with the tag schema: OCI 1.1 `sha256-<hex>`, cosign `sha256-<hex>.sig` / `.att` / `.sbom`.
REFERRER_TAG = re.compile(r"^sha256-([a-f0-9]{64})(?:\.[\w.-]+)?$")


@dataclass
class RepoPlan:
    repository: str
    untag: list[str] = field(default_factory=list)  # tags removed alone; their manifest stays
    delete: list[str] = field(default_factory=list)  # manifest digests, parents before children
    tags_removed: dict[str, list[str]] = field(default_factory=dict)  # deleted digest -> its tags
    remove_repository: bool = False
    # Deleted only if, right before the delete, no tag the plan did not count on reaches them: everything but
    # whole-repository deletions (a digest named by the request too: never more than was planned, approved).
    guarded: list[str] = field(default_factory=list)
    # (tag, digest) pairs that reached a digest the request named (with `force`, a tagged index's child) when
    # planned: they stay, and are no reason to keep it.
    forced_pairs: set[tuple[str, str]] = field(default_factory=set)
    too_young: list[str] = field(default_factory=list)  # untagged, but pushed (or used by a push) too recently

    @property
    def tags(self) -> list[str]:
        return sorted({*self.untag, *(t for ts in self.tags_removed.values() for t in ts)})

    @property
    def removed_pairs(self) -> set[tuple[str, str]]:
        """(tag, digest) pairs this plan takes away: a tag still on its planned digest is no reason to keep it."""
        return {(t, d) for d, ts in self.tags_removed.items() for t in ts}

    @property
    def planned_pairs(self) -> set[tuple[str, str]]:
        """The tags the plan counted on reaching its deleted manifests: any other keeps the manifest."""
        return self.removed_pairs | self.forced_pairs


@dataclass
class Plan:
    repos: list[RepoPlan]
    blobs_freed: dict[str, int] | None = None  # digest -> bytes, when storage was read

    @property
    def changes_anything(self) -> bool:
        return any(r.untag or r.delete or r.remove_repository for r in self.repos)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "repositories": [
                {"repository": r.repository, "tags": r.tags, "untagged_only": sorted(r.untag),
                 "manifests": list(r.delete), "tags_by_manifest": r.tags_removed,
                 "remove_repository": r.remove_repository, "kept_too_young": list(r.too_young)}
                for r in self.repos
            ],
            "tags": sorted(f"{r.repository}:{t}" for r in self.repos for t in r.tags),
            "manifests": [d for r in self.repos for d in r.delete],
        }
        if self.blobs_freed is not None:
            out["blobs"] = sorted(self.blobs_freed)
            out["bytes"] = sum(self.blobs_freed.values())
        return out


class Graph:
    """Who references whom among a repository's manifests, indexed once."""

    def __init__(self, manifests: Mapping[str, Manifest], tags: Mapping[str, str]) -> None:
        self.manifests = manifests
        self.tags = tags
        self.parents: dict[str, set[str]] = {}
        self.referrers: dict[str, set[str]] = {}  # subject -> manifests naming it
        self.tagged: dict[str, list[str]] = {}
        for digest, manifest in manifests.items():
            for child in manifest.children:
                self.parents.setdefault(child.digest, set()).add(digest)
            if manifest.subject:
                self.referrers.setdefault(manifest.subject, set()).add(digest)
        for tag, digest in sorted(tags.items()):
            self.tagged.setdefault(digest, []).append(tag)

    def tags_of(self, digest: str) -> list[str]:
        return list(self.tagged.get(digest, ()))

    def reachable(self, roots: Iterable[str]) -> set[str]:
        """Roots, their children, and referrers (by subject) of anything reached: what a tag keeps alive."""
        seen: set[str] = set()
        pending = list(roots)
        while pending:
            digest = pending.pop()
            if digest in seen:
                continue
            seen.add(digest)
            manifest = self.manifests.get(digest)
            if manifest:
                pending.extend(c.digest for c in manifest.children)
            pending.extend(self.referrers.get(digest, ()))
        return seen

    def reaching(self, digest: str) -> set[str]:
        """Every manifest from which `digest` is reachable (itself, indexes above it, subjects it refers to)."""
        seen: set[str] = set()
        pending = [digest]
        while pending:
            d = pending.pop()
            if d in seen:
                continue
            seen.add(d)
            pending.extend(self.parents.get(d, ()))
            manifest = self.manifests.get(d)
            if manifest and manifest.subject:
                pending.append(manifest.subject)
        return seen


def check_confirmation(request: Mapping[str, Any], registry_host: str | None) -> None:
    if request.get("all_repositories") and request.get("confirm") != registry_host:
        raise errors.ConfirmationMismatch(
            f"deleting every repository needs \"confirm\": \"{registry_host}\" (the registry's host)",
            expected=registry_host)


def plan_request(snapshot: Snapshot, request: Mapping[str, Any], registry_host: str | None = None,
                 untagged_min_age: float = 0.0) -> Plan:
    """The plan of one API request (its shape: service/deletions/schemas.py) on a snapshot."""
    check_confirmation(request, registry_host)
    force, referrers = bool(request.get("force")), bool(request.get("referrers", True))
    if request.get("all_repositories"):
        repos = [plan_repository(snapshot.repos[name], all_tags=True, force=force, referrers=referrers)
                 for name in sorted(snapshot.repos)]
    else:
        repos = [plan_repository(
            snapshot.repos[str(request["repository"])], tags=request.get("tags") or (),
            digests=request.get("digests") or (), all_tags=bool(request.get("all_tags")),
            untagged=bool(request.get("untagged")), untagged_min_age=untagged_min_age, force=force,
            referrers=referrers)]
    plan = Plan(repos)
    if snapshot.complete:
        plan.blobs_freed = blobs_freed(snapshot, repos)
    return plan


def plan_repository(snap: RepoSnapshot, *, tags: Collection[str] = (), digests: Collection[str] = (),
                    all_tags: bool = False, untagged: bool = False, force: bool = False, referrers: bool = True,
                    untagged_min_age: float = 0.0) -> RepoPlan:
    """Any combination of kinds, judged together on the state the request leaves behind:
    - `tags` go; a manifest with them when none of its tags survive and no surviving index uses it;
    - `digests` go with all their tags (ReferencedByIndex for a child of a surviving index, unless `force`);
    - `all_tags`: every manifest, then the repository;
    - `untagged`: stored manifests no surviving tag reaches, except those pushed less than
      `untagged_min_age` seconds ago (by their revision link);
    and with each deleted manifest, its children nothing else references and (`referrers`) its referrers.
    """
    repo = snap.name
    g = Graph(snap.manifests, snap.tags)
    wanted = list(dict.fromkeys(tags))
    missing = [t for t in wanted if t not in snap.tags]
    if missing:
        raise errors.TagNotFound(f"tags unknown in {repo}: {', '.join(missing)}", repository=repo, tags=missing)
    named = list(dict.fromkeys(digests))
    for digest in named:
        if digest not in snap.manifests:
            raise errors.ManifestNotFound(f"manifest {digest} unknown in {repo}", repository=repo, digest=digest)

    gone_tags = set(snap.tags) if all_tags else set(wanted)
    doomed: set[str] = set(named)
    if all_tags:
        doomed |= set(snap.manifests) | set(snap.tags.values())
    targets = {snap.tags[t] for t in wanted}

    def kept() -> set[str]:
        return g.reachable(d for t, d in snap.tags.items() if t not in gone_tags and d not in doomed)

    # Until nothing changes: dooming a referrer can take away a tag that kept something else.
    while True:
        alive = kept()
        added = {d for d in targets if d not in alive and d not in doomed}
        doomed |= added
        added |= _expand(g, doomed, alive, referrers, frozenset())
        if not added:
            break

    too_young: set[str] = set()
    if untagged and snap.revision_ages is not None:
        # A recent push and what it uses stay: an index pushed by digest names children pushed before it,
        # and its tag may be on its way.
        recent = frozenset(g.reachable(d for d, age in snap.revision_ages.items() if age < untagged_min_age))
        while True:
            alive = kept()
            candidates = {d for d in snap.revision_ages if d in snap.manifests and d not in alive and d not in doomed}
            too_young |= candidates & recent
            added = candidates - recent
            doomed |= added
            added |= _expand(g, doomed, alive | recent, referrers, recent)
            if not added:
                break

    if not force:
        alive = kept()
        for digest in named:
            parents = sorted(p for p in g.parents.get(digest, ()) if p not in doomed and p in alive)
            if parents:
                raise errors.ReferencedByIndex(
                    f"{repo}@{digest} is part of the tagged index {parents[0]} ({', '.join(g.tags_of(parents[0]))}); "
                    "deleting it would break that image. Delete the index, or pass \"force\": true",
                    repository=repo, digest=digest, indexes=parents,
                    tags=sorted({t for i in parents for t in g.tags_of(i)}))

    plan = RepoPlan(repo, remove_repository=all_tags)
    plan.untag = [t for t in wanted if snap.tags[t] not in doomed]
    plan.delete = _parents_first(g, doomed)
    plan.tags_removed = {d: g.tags_of(d) for d in plan.delete}
    plan.guarded = [] if all_tags else list(plan.delete)
    plan.forced_pairs = {(t, d) for n in named for t, d in snap.tags.items() if d in g.reaching(n)}
    plan.too_young = sorted(too_young - doomed)
    return plan


def _expand(g: Graph, doomed: set[str], alive: set[str], referrers: bool, protect: Collection[str]) -> set[str]:
    """Add what goes with the doomed manifests: children nothing else references (no surviving tag reaches
    them, every index naming them goes) and, with `referrers`, their referrers. Returns what was added."""
    added: set[str] = set()
    changed = True
    while changed:
        changed = False
        for digest in list(doomed):
            manifest = g.manifests.get(digest)
            for child in manifest.children if manifest else ():
                c = child.digest
                if c in doomed or c in alive or c in protect or c not in g.manifests:
                    continue
                if all(p in doomed for p in g.parents.get(c, ())):
                    doomed.add(c)
                    added.add(c)
                    changed = True
        if referrers:
            by_tag = {g.tags[t] for t in g.tags
                      if (m := REFERRER_TAG.match(t)) and "sha256:" + m.group(1) in doomed}
            by_subject = {r for d in doomed for r in g.referrers.get(d, ())}
            for digest in (by_tag | by_subject) - doomed - set(protect):
                doomed.add(digest)
                added.add(digest)
                changed = True
    return added


def _parents_first(g: Graph, doomed: set[str]) -> list[str]:
    """Indexes before their children, so no index ever points at a missing child; by digest otherwise."""
    order: list[str] = []
    placed: set[str] = set()
    remaining = sorted(doomed, key=lambda d: (not (g.manifests.get(d) and g.manifests[d].is_index), d))
    while remaining:
        unplaced = doomed - placed
        ready = [d for d in remaining if not (g.parents.get(d, set()) & unplaced)]
        if not ready:  # a cycle cannot be stored, but never loop forever on bad data
            ready = remaining
        order.extend(ready)
        placed |= set(ready)
        remaining = [d for d in remaining if d not in placed]
    return order


def tags_reaching(manifests: Mapping[str, Manifest], tags: Mapping[str, str], digest: str,
                  ignore: Collection[tuple[str, str]] = ()) -> list[str]:
    """Tags (as they are now) that reach `digest`, apart from the (tag, digest) pairs a plan removes itself:
    the check made right before a manifest is deleted by digest."""
    above = Graph(manifests, tags).reaching(digest)
    return sorted(t for t, d in tags.items() if d in above and (t, d) not in ignore)


def blobs_freed(snapshot: Snapshot, repos: Iterable[RepoPlan]) -> dict[str, int]:
    """Blobs of the doomed manifests that no surviving manifest, in any repository, still uses."""
    repos = list(repos)
    doomed = {(r.repository, d) for r in repos for d in r.delete}
    removed = {r.repository for r in repos if r.remove_repository}
    freed: dict[str, int] = {}
    for r in repos:
        known = snapshot.repos[r.repository].manifests
        for digest in r.delete:
            manifest = known.get(digest)
            if manifest:
                freed.update(_sizes(manifest))
    for name, digests in (snapshot.stored or {}).items():
        if name in removed:
            continue
        for digest in digests:
            manifest = snapshot.manifests.get(digest)
            if (name, digest) not in doomed and manifest:
                for blob in manifest.blob_digests:
                    freed.pop(blob, None)
    return freed


def _sizes(manifest: Manifest) -> dict[str, int]:
    sizes = {manifest.digest: len(manifest.raw)}
    if manifest.config:
        sizes[manifest.config.digest] = manifest.config.size
    sizes.update({layer.digest: layer.size for layer in manifest.layers})
    return sizes
