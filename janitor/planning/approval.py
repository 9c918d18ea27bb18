"""Plan → approve: a job that needs approval is planned, parked with its plan, and, once approved, carries out
only what is both in the approved plan and in a fresh plan of the registry as it is then.

Approval is a property of any job that plans deletions (kind `deletion`, `policy`, ...): `job["approval"]
== "required"`. Items are compared by identity, not by name: a tag is `repo:tag@digest` (re-pushing a tag
makes it a different item), a manifest is `repo@digest`. A manifest is deleted only if it was approved and
every tag that now points at it was approved too; anything else the new plan adds is `skipped`, untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from janitor.jobs import webhooks
from janitor.planning.rules import Plan, RepoPlan

REQUIRED = "required"
# (repository, tag) -> the digest the tag points at now, or None
TagDigest = Callable[[str, str], str | None]


def needed(request: Mapping[str, Any], require_all: bool) -> str | None:
    """What a new job's `approval` is: asked for explicitly, or the rule for every real deletion."""
    if request.get("approval") == REQUIRED or (require_all and not request.get("dry_run")):
        return REQUIRED
    return None


def items(plan: Plan, tag_digest: TagDigest) -> dict[str, list[str]]:
    """The plan as the set of things a person approves."""
    tags: set[str] = set()
    manifests: list[str] = []
    removed: list[str] = []
    for r in plan.repos:
        for tag in r.untag:
            tags.add(f"{r.repository}:{tag}@{tag_digest(r.repository, tag)}")
        for digest in r.delete:
            manifests.append(f"{r.repository}@{digest}")
            tags.update(f"{r.repository}:{t}@{digest}" for t in r.tags_removed.get(digest, []))
        if r.remove_repository:
            removed.append(r.repository)
    return {"tags": sorted(tags), "manifests": manifests, "repositories_removed": removed}


def intersect(approved: Mapping[str, list[str]], plan: Plan,
              tag_digest: TagDigest) -> tuple[Plan, list[dict[str, Any]], list[str]]:
    """What may be carried out now (never more than approved), what the new plan adds (skipped, with a
    reason), and what was approved but is no longer planned (already gone, or no longer matching)."""
    ok_tags = set(approved.get("tags", ()))
    ok_manifests = set(approved.get("manifests", ()))
    ok_removed = set(approved.get("repositories_removed", ()))
    skipped: list[dict[str, Any]] = []
    now_planned: set[str] = set()
    repos: list[RepoPlan] = []
    for r in plan.repos:
        repo = r.repository
        out = RepoPlan(repo)
        for tag in r.untag:
            item = f"{repo}:{tag}@{tag_digest(repo, tag)}"
            now_planned.add(item)
            if item in ok_tags:
                out.untag.append(tag)
            else:
                skipped.append({"tag": f"{repo}:{tag}", "reason": "not in the approved plan"})
        for digest in r.delete:
            item = f"{repo}@{digest}"
            now_planned.add(item)
            tags = r.tags_removed.get(digest, [])
            tag_items = {t: f"{repo}:{t}@{digest}" for t in tags}
            now_planned.update(tag_items.values())
            unapproved = sorted(t for t, i in tag_items.items() if i not in ok_tags)
            if item in ok_manifests and not unapproved:
                out.delete.append(digest)
                out.tags_removed[digest] = list(tags)
                continue
            reason = "not in the approved plan" if item not in ok_manifests else \
                f"tags not in the approved plan now point at it: {', '.join(unapproved)}"
            skipped.append({"manifest": item, "tags": [f"{repo}:{t}" for t in tags], "reason": reason})
            # Approved tags on a manifest that stays still go, alone: that much was approved.
            out.untag.extend(t for t, i in tag_items.items() if i in ok_tags)
        kept_something = any(s.get("manifest", "").startswith(f"{repo}@") or
                             s.get("tag", "").startswith(f"{repo}:") for s in skipped)
        if r.remove_repository:
            if repo in ok_removed and not kept_something:
                out.remove_repository = True
            else:
                skipped.append({"repository": repo, "reason": "not approved for removal" if repo not in ok_removed
                                else "it still holds items the approved plan did not include"})
        out.guarded = [d for d in r.guarded if d in out.delete]  # the check before each delete still applies
        out.forced_pairs = set(r.forced_pairs)
        if out.untag or out.delete or out.remove_repository:
            repos.append(out)
    not_planned = sorted((ok_tags | ok_manifests) - now_planned)
    return Plan(repos, None if skipped else plan.blobs_freed), skipped, not_planned


def expires_at(ttl: float, start: datetime | None = None) -> str:
    at = (start or datetime.now(timezone.utc)) + timedelta(seconds=ttl)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gate(job: dict[str, Any], plan: Plan, tag_digest: TagDigest, ttl: float) -> Plan | None:
    """The window's hook, called with a fresh plan. Returns the plan to carry out, or None when the job was
    just planned and now waits for approval (its status is then `awaiting_approval`)."""
    if job.get("approval") != REQUIRED:
        return plan
    if not job.get("approved_by"):
        job["result"].update(plan=plan.as_dict(), approved_items=items(plan, tag_digest))
        job.update(status="awaiting_approval", expires_at=expires_at(ttl))
        job["summary"] = webhooks.summary(job)
        return None
    carried, skipped, not_planned = intersect(job["result"].get("approved_items") or {}, plan, tag_digest)
    job["result"].update(skipped=skipped, no_longer_planned=not_planned)
    return carried
