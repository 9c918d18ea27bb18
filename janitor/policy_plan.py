"""What a policy would delete on the registry as it is now: per repository, the tags that go (carried out
exactly like a `tags` deletion, plus `untagged` when asked) and every tag that stays, with its reason.

Registry reads (tags, manifests, image configs) run on a bounded thread pool, so a policy over many
repositories costs about what listing them through the API does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from janitor import errors, planner, policies, retention
from janitor.planner import Inventory, Plan, RepoPlan, RepoView

CREATED_TTL = 30 * 24 * 3600  # creation times by config digest; digests are immutable, this only bounds memory


@dataclass
class PolicyPlan:
    plan: Plan  # what the deletion machinery carries out
    decisions: dict[str, retention.Decision] = field(default_factory=dict)  # repository -> tags kept/deleted

    @property
    def changes_anything(self) -> bool:
        return self.plan.changes_anything

    def as_dict(self) -> dict[str, Any]:
        base = self.plan.as_dict()
        by_repo = {r["repository"]: r for r in base["repositories"]}
        repos = []
        for name, decision in sorted(self.decisions.items()):
            carried = by_repo.get(name, {"tags": [], "untagged_only": [], "manifests": [], "tags_by_manifest": {}})
            repos.append({
                "repository": name,
                "delete": [_tag(t) for t in decision.delete],
                "keep": [{**_tag(t), "reason": reasons[0], "reasons": reasons} for t, reasons in decision.keep],
                "tags": carried["tags"],
                "untagged_only": carried["untagged_only"],
                "manifests": carried["manifests"],
                "tags_by_manifest": carried["tags_by_manifest"],
            })
        out: dict[str, Any] = {"repositories": repos, "tags": base["tags"], "manifests": base["manifests"]}
        if "bytes" in base:
            out.update(blobs=len(base["blobs"]), bytes=base["bytes"])
        return out


def _tag(t: retention.TagInfo) -> dict[str, Any]:
    return {"tag": t.name, "digest": t.digest, "created": policies.iso(t.created)}


class CreationTimes:
    """Image creation times by manifest digest, read from image configs in parallel. Digests are immutable,
    so a window keeps one of these for all its policies."""

    def __init__(self, client: Any, workers: int, conn: redis.Redis | None = None, prefix: str = "janitor") -> None:
        self.client = client
        self.workers = workers
        self.by_config: dict[str, datetime | None] = {}
        self.conn = conn  # when given, creation times are remembered across windows (a config never changes)
        self.prefix = prefix

    def config(self, repo: str, digest: str) -> datetime | None:
        key = f"{self.prefix}:created:{digest}"
        if self.conn is not None:
            with contextlib.suppress(redis.RedisError):
                known = self.conn.get(key)
                if known is not None:
                    return retention.parse_time(known.decode()) if known else None
        try:
            config = self.client.image_config(repo, digest)
        except (ValueError, errors.NotFound):
            return None  # an artifact whose config is not JSON, or is missing (not remembered: it may come)
        created = retention.parse_time(config.get("created")) if isinstance(config, dict) else None
        if self.conn is not None:
            with contextlib.suppress(redis.RedisError):
                self.conn.set(key, policies.iso(created) or "", ex=CREATED_TTL)
        return created

    def read(self, views: Iterable[RepoView]) -> None:
        wanted: dict[str, str] = {}
        for view in views:
            for manifest in view.manifests.values():
                if manifest.config and not manifest.is_index and manifest.config.digest not in self.by_config:
                    wanted.setdefault(manifest.config.digest, view.name)
        with ThreadPoolExecutor(self.workers) as pool:
            found = pool.map(lambda item: (item[0], self.config(item[1], item[0])), wanted.items())
            self.by_config.update(found)

    def of(self, view: RepoView, digest: str) -> datetime | None:
        """An image's creation time; an index counts its newest child."""
        manifest = view.manifests.get(digest)
        if manifest is None:
            return None
        if manifest.is_index:
            times = [t for c in manifest.children if (t := self.of(view, c.digest)) is not None]
            return max(times, default=None)
        return self.by_config.get(manifest.config.digest) if manifest.config else None


def read_views(inv: Inventory, names: list[str], workers: int, times: CreationTimes | None = None) -> list[RepoView]:
    """The repositories' tags and manifests, read in parallel and left in the inventory for the planner.
    One GET per tag gives both its digest and its manifest (Inventory.repo would HEAD then GET, one
    repository at a time), and the image config follows in the same task, so a policy reads what listing
    the tags through the API reads, with the pool kept busy.
    TODO(merge): the snapshot module that replaces Inventory reads this in one pass; use it instead."""
    revisions = inv.revisions()
    known = inv._views  # noqa: SLF001 - the current Inventory keeps views by name; see the TODO above

    def tag_list(name: str) -> tuple[str, list[str] | None]:
        try:
            return name, inv.client.tags(name)
        except errors.RepositoryNotFound:
            return name, [] if name in revisions else None  # listed by _catalog, emptied, gone from storage

    def by_tag(item: tuple[str, str]) -> tuple[str, str, str | None]:
        name, tag = item
        try:
            manifest = inv.client.manifest(name, tag)
        except errors.NotFound:
            return name, tag, None  # deleted since the listing
        inv.cache.setdefault(manifest.digest, manifest)
        if times is not None and manifest.config and not manifest.is_index \
                and manifest.config.digest not in times.by_config:
            times.by_config.setdefault(manifest.config.digest, times.config(name, manifest.config.digest))
        return name, tag, manifest.digest

    with ThreadPoolExecutor(workers) as pool:
        listed = {n: tags for n, tags in pool.map(tag_list, [n for n in names if n not in known]) if tags is not None}
        views = {n: RepoView(n, {}, {}) for n in listed}
        for name, tag, digest in pool.map(by_tag, [(n, t) for n, tags in listed.items() for t in tags]):
            if digest:
                views[name].tags[tag] = digest
        wanted = {(n, d) for n, v in views.items() for d in [*v.tags.values(), *revisions.get(n, ())]}
        while wanted:  # tagged and stored manifests, then their children, level by level
            found = list(pool.map(lambda item: (item, inv.manifest(*item)), sorted(wanted)))
            wanted = set()
            for (name, digest), manifest in found:
                if manifest is not None and digest not in views[name].manifests:
                    views[name].manifests[digest] = manifest
                    wanted |= {(name, c.digest) for c in manifest.children if c.digest not in views[name].manifests}
    known.update(views)
    return [known[n] for n in names if n in known]


def evaluate(inv: Inventory, policy: dict[str, Any], now: datetime, workers: int,
             times: CreationTimes | None = None) -> PolicyPlan:
    """Plan one policy over every repository its globs name."""
    names = policies.select(policy, inv.repositories())
    times = times or CreationTimes(inv.client, workers)

    views = read_views(inv, names, workers, times)  # image configs read along with each tag's manifest
    times.read(views)  # the rest: children of indexes, untagged manifests
    rules = policies.rules(policy)
    result = PolicyPlan(Plan([]))
    for v in views:
        tags = [retention.TagInfo(t, d, times.of(v, d)) for t, d in sorted(v.tags.items())]
        decision = retention.decide(tags, rules, now)
        result.decisions[v.name] = decision
        request: dict[str, Any] = {"repository": v.name, "referrers": True}
        if decision.delete:
            request["tags"] = [t.name for t in decision.delete]
        if policy.get("untagged"):
            request["untagged"] = True
        if "tags" in request or "untagged" in request:
            result.plan.repos.extend(planner.plan_deletion(inv, request).repos)
        else:
            result.plan.repos.append(RepoPlan(v.name))
    if inv.complete:
        result.plan.blobs_freed = planner._blobs_freed(inv, result.plan)  # across repositories: a blob two share
    return result
