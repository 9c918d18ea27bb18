"""What a policy would delete on the registry as it is now: per repository, the tags that go (carried out
exactly like a `tags` deletion, plus `untagged` when asked) and every tag that stays, with its reason.

The registry is read like any deletion (janitor/snapshot.py: stored revisions first, then tags, then
manifests, on a bounded pool); the retention rules (janitor/retention.py) pick the tags, and the deletion
rules (janitor/rules.py) turn them into a plan that the window carries out like a deletion's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from janitor import errors
from janitor.planning import policies, retention, rules, snapshot
from janitor.planning import protections as protected_rules
from janitor.planning.pulls import PullBook
from janitor.planning.rules import Plan
from janitor.planning.snapshot import Reader, RepoSnapshot, Snapshot, StorageReader

CREATED_TTL = 30 * 24 * 3600  # creation times by config digest; digests are immutable, this only bounds memory


@dataclass
class PolicyPlan:
    plan: Plan  # what the deletion machinery carries out
    decisions: dict[str, retention.Decision] = field(default_factory=dict)  # repository -> tags kept/deleted
    pulls: dict[str, Any] | None = None  # the policy uses pull times: since when they are heard, and whether enough

    @property
    def changes_anything(self) -> bool:
        return self.plan.changes_anything

    def named(self) -> set[tuple[str, str]]:
        """(repository, tag) the policy itself decided to delete: like tags a request names, they go even when
        their manifest stays because a tag pushed since the plan reaches it."""
        return {(repo, t.name) for repo, d in self.decisions.items() for t in d.delete}

    def as_dict(self, plan: Plan | None = None) -> dict[str, Any]:
        """The policy's view of `plan` (default its own): per repository the tags deleted and every kept tag
        with its reason, then what the deletion machinery does, the manifests and the bytes GC frees."""
        base = (plan or self.plan).as_dict()
        by_repo = {r["repository"]: r for r in base["repositories"]}
        repos = []
        for name, decision in sorted(self.decisions.items()):
            carried = by_repo.get(name, {"tags": [], "untagged_only": [], "manifests": [], "tags_by_manifest": {},
                                         "kept_too_young": []})
            repos.append({
                "repository": name,
                "delete": [_tag(t) for t in decision.delete],
                "keep": [{**_tag(t), "reason": reasons[0], "reasons": reasons} for t, reasons in decision.keep],
                "tags": carried["tags"],
                "untagged_only": carried["untagged_only"],
                "manifests": carried["manifests"],
                "tags_by_manifest": carried["tags_by_manifest"],
                "kept_too_young": carried.get("kept_too_young", []),
            })
        out: dict[str, Any] = {"repositories": repos, "tags": base["tags"], "manifests": base["manifests"]}
        if self.pulls is not None:
            out["pulls"] = self.pulls
        if "bytes" in base:
            out.update(blobs=base["blobs"], bytes=base["bytes"])
        return out


def _tag(t: retention.TagInfo) -> dict[str, Any]:
    return {"tag": t.name, "digest": t.digest, "created": policies.iso(t.created),
            "last_pulled": policies.iso(t.last_pulled)}


def pulls_note(retain: retention.Rules, heard_since: datetime | None, now: datetime) -> dict[str, Any]:
    """What the plan says about its pull data: since when pulls are heard, and whether that is long enough for
    the pull rules to judge a tag with no pull heard of (else such tags stay, `no_pull_data`)."""
    observed = retention.pulls_observed(retain, heard_since, now)
    if heard_since is None:
        note = ("no pull heard from this registry yet (its notifications must send manifest pulls): every tag "
                "the pull rules would judge stays, reason no_pull_data")
    elif not observed:
        note = (f"pulls heard only since {policies.iso(heard_since)}, less than keep_pulled_within: a tag with no "
                "pull heard of stays, reason no_pull_data, until that much time has been observed")
    else:
        note = f"pulls heard since {policies.iso(heard_since)}: a tag with no pull heard of was not pulled since"
    return {"heard_since": policies.iso(heard_since), "observed": observed, "note": note}


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
                    return retention.parse_time(known.decode() if isinstance(known, bytes) else known) if known else None
        try:
            config = self.client.image_config(repo, digest)
        except (ValueError, errors.NotFound):
            return None  # an artifact whose config is not JSON, or is missing (not remembered: it may come)
        created = retention.parse_time(config.get("created")) if isinstance(config, dict) else None
        if self.conn is not None:
            with contextlib.suppress(redis.RedisError):
                self.conn.set(key, policies.iso(created) or "", ex=CREATED_TTL)
        return created

    def read(self, repos: Iterable[RepoSnapshot]) -> None:
        wanted: dict[str, str] = {}
        for repo in repos:
            for manifest in repo.manifests.values():
                if manifest.config and not manifest.is_index and manifest.config.digest not in self.by_config:
                    wanted.setdefault(manifest.config.digest, repo.name)
        if not wanted:
            return
        with ThreadPoolExecutor(self.workers) as pool:
            found = pool.map(lambda item: (item[0], self.config(item[1], item[0])), wanted.items())
            self.by_config.update(found)

    def of(self, repo: RepoSnapshot, digest: str, seen: frozenset[str] = frozenset()) -> datetime | None:
        """An image's creation time; an index counts its newest child."""
        manifest = repo.manifests.get(digest)
        if manifest is None or digest in seen:
            return None
        if manifest.is_index:
            times = [t for c in manifest.children if (t := self.of(repo, c.digest, seen | {digest})) is not None]
            return max(times, default=None)
        return self.by_config.get(manifest.config.digest) if manifest.config else None


class PolicyReader(Reader):
    """The snapshot reader, with each tag read by one GET instead of a HEAD and then a GET: the GET answers
    the digest (as the HEAD would, in the same order: after storage, before the manifests) and the manifest,
    which goes in the cache. The image config follows in the same task. A policy reads every tag of every
    repository it matches; this keeps it at what listing the tags through the API costs."""

    def __init__(self, client: Any, cache: dict[str, Any] | None, workers: int, times: CreationTimes,
                 contents: Any = None) -> None:
        super().__init__(client, cache, workers, contents=contents)
        self.times = times

    def tags(self, repository: str) -> dict[str, str]:
        names = snapshot._again(self.client.tags, repository)  # noqa: SLF001 - the reader's own retry

        def by_tag(tag: str) -> str | None:
            try:
                manifest = snapshot._again(self.client.manifest, repository, tag)  # noqa: SLF001
            except errors.NotFound:
                return None  # removed since the tag list
            self.cache.setdefault(manifest.digest, manifest)
            config = manifest.config
            if config and not manifest.is_index and config.digest not in self.times.by_config:
                self.times.by_config[config.digest] = self.times.config(repository, config.digest)
            return manifest.digest

        return {t: d for t, d in zip(names, self.pool.map(by_tag, names), strict=True) if d}


def read(reader: Reader, policy: dict[str, Any], storage: StorageReader | None = None) -> Snapshot:
    """Every repository the policy's globs name, read as a deletion reads them (storage first)."""
    return snapshot.read_repositories(reader, lambda every: policies.select(policy, every), storage,
                                      skip_missing=True)


def read_pulls(book: PullBook, policy: dict[str, Any], snap: Snapshot) -> tuple[dict[str, dict[str, datetime]],
                                                                                  datetime | None]:
    """The pull times a policy's rules need (none unless it has a pull rule): read before the rules run."""
    if not policies.rules(policy).uses_pulls:
        return {}, None
    return book.times(sorted(snap.repos)), book.heard_since()


def plan(snap: Snapshot, policy: dict[str, Any], now: datetime, times: CreationTimes,
         untagged_min_age: float = 0.0, protections: Sequence[Mapping[str, Any]] = (),
         pulled: dict[str, dict[str, datetime]] | None = None, pulls_heard_since: datetime | None = None) -> PolicyPlan:
    """Plan one policy on a snapshot: the retention rules pick each repository's tags (never one a rule in
    `protections` names: kept with reason `protected`), the deletion rules (rules.plan_repository, the same as a
    `tags` + `untagged` request) decide what goes with them; a protected tag survives, so what it reaches
    stays too. `pulled` (repository -> digest -> last pull) and `pulls_heard_since` come from read_pulls."""
    times.read(snap.repos.values())
    retain = policies.rules(policy)
    result = PolicyPlan(Plan([]))
    if retain.uses_pulls:
        result.pulls = pulls_note(retain, pulls_heard_since, now)
    for name in sorted(snap.repos):
        repo = snap.repos[name]
        seen = (pulled or {}).get(name, {})
        tags = [retention.TagInfo(t, d, times.of(repo, d), seen.get(d)) for t, d in sorted(repo.tags.items())]
        decision = retention.decide(tags, retain, now, protected_rules.protected_tags(name, repo.tags, protections),
                                    pulls_heard_since)
        result.decisions[name] = decision
        result.plan.repos.append(rules.plan_repository(
            repo, tags=[t.name for t in decision.delete], untagged=bool(policy.get("untagged")),
            untagged_min_age=untagged_min_age, referrers=True))
    if snap.complete:
        result.plan.blobs_freed = rules.blobs_freed(snap, result.plan.repos)  # a blob two repositories share stays
    return result
