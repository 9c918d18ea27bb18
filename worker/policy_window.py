"""A `policy` job inside a window: plan the policy on the registry as it is now, then carry the plan out
exactly as a deletion would (the same planner, the same untag and manifest deletes). A dry run, or a plan
that changes nothing, ends here and takes no part in the fence and GC."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from janitor import errors
from janitor.policy_plan import CreationTimes, evaluate
from janitor.records import SUCCEEDED, now
from janitor.untag import untag

if TYPE_CHECKING:
    from worker.window import Window


def run(window: Window, job: dict[str, Any], root: str) -> None:
    ctx = window.ctx
    request = job["request"]
    inventory = window.inventory or window._read_inventory(root)
    window.inventory = None  # until this job's changes are known to be complete
    times = getattr(window, "creation_times", None)
    if times is None:
        times = window.creation_times = CreationTimes(  # type: ignore[attr-defined]
            ctx.client, ctx.settings.policy_read_concurrency, ctx.conn, ctx.keys.prefix)
    with window.step([job], "delete") as out:
        planned = evaluate(inventory, request["policy"], datetime.now(timezone.utc),
                           ctx.settings.policy_read_concurrency, times)
        plan, as_dict = planned.plan, planned.as_dict()
        out.update(plan=as_dict, dry_run=bool(request.get("dry_run")))
        job["result"]["planned"] = {"blobs": len(plan.blobs_freed or {}), "bytes": sum((plan.blobs_freed or {}).values())}
        job["result"]["plan"] = as_dict
        if request.get("dry_run") or not plan.changes_anything:
            window.inventory = inventory
            job["result"]["changed"] = False
            job.update(status=SUCCEEDED, finished_at=now())  # nothing to sweep: no part in GC
            return
        deleted: list[str] = []
        untagged: list[str] = []
        out.update(manifests_deleted=deleted, untagged=untagged)
        for repo_plan in plan.repos:
            repo = repo_plan.repository
            for tag in repo_plan.untag:
                window.released_blobs |= untag(ctx.client, repo, tag)
                untagged.append(f"{repo}:{tag}")
            for digest in repo_plan.delete:
                manifest = inventory.manifest(repo, digest)
                window.released_blobs |= set(manifest.blob_digests if manifest else ())
                try:
                    ctx.client.delete_manifest(repo, digest)
                except errors.ManifestNotFound:
                    pass  # gone since the plan (another request in this window took it)
                deleted.append(digest)
        inventory.applied(plan)
        window.inventory = inventory
        job["result"].update(changed=True, manifests_deleted=list(deleted), tags_removed=as_dict["tags"],
                             repositories_removed=[])
