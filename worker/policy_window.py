"""A `policy` job inside a window: plan the policy on the registry as it is now (the same snapshot read and
deletion rules as a deletion), pass the approval gate like a deletion, then carry the plan out through the
window's own untag/delete loop (worker/deletion.carry_out). A dry run, or a plan that changes nothing, ends here and
takes no part in the fence and GC."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from janitor.jobs.records import SUCCEEDED, now
from janitor.planning import approval, policy_plan
from janitor.planning.protections import ProtectionStore
from janitor.planning.pulls import PullBook
from worker.deletion import carry_out
from worker.state import WindowState


def run(window: WindowState, job: dict[str, Any], root: str | None) -> None:
    ctx = window.ctx
    request = job["request"]
    policy = request["policy"]
    if window.creation_times is None:
        window.creation_times = policy_plan.CreationTimes(
            ctx.client, ctx.settings.policy_read_concurrency, ctx.conn, ctx.keys.prefix)
    stored = None if root is None else (lambda: window.read_stored(root, bool(policy.get("untagged"))))
    with window.step([job], "delete") as out, policy_plan.PolicyReader(
            ctx.client, window.manifests, ctx.settings.policy_read_concurrency, window.creation_times,
            contents=ctx.contents) as reader:
        snap = policy_plan.read(reader, policy, stored)
        rules = ProtectionStore(ctx.conn, ctx.keys, ctx.settings.protections_file).all()  # as they are now
        pulled, heard_since = policy_plan.read_pulls(PullBook(ctx.conn, ctx.keys.prefix), policy, snap)
        planned = policy_plan.plan(snap, policy, datetime.now(timezone.utc), window.creation_times,
                                   ctx.settings.untagged_min_age, protections=rules, pulled=pulled,
                                   pulls_heard_since=heard_since)
        plan, as_dict = planned.plan, planned.as_dict()
        out.update(plan=as_dict, dry_run=bool(request.get("dry_run")))
        if plan.blobs_freed is not None:
            job["result"]["planned"] = {"blobs": len(plan.blobs_freed), "bytes": sum(plan.blobs_freed.values())}
        approved = bool(job.get("approved_by"))
        if not approved:
            job["result"]["plan"] = as_dict
        if not plan.changes_anything and not approved:
            _unchanged(job)  # nothing to approve or sweep: no part in GC
            return
        gated = approval.gate(job, plan, lambda r, t: snap.repos[r].tags.get(t), ctx.settings.approval_ttl)
        if gated is None:  # parked awaiting approval, with the policy's full plan (kept tags and reasons too)
            job["result"]["plan"] = as_dict
            return
        if request.get("dry_run"):
            job["result"]["plan"] = planned.as_dict(gated)
            _unchanged(job)
            return
        if not gated.changes_anything:
            _unchanged(job)  # what was approved is gone already, or only unapproved items are left: skipped
            return
        carry_out(window, job, out, reader, snap, gated, planned.named())
        job["result"]["changed"] = True


def _unchanged(job: dict[str, Any]) -> None:
    job["result"]["changed"] = False
    job.update(status=SUCCEEDED, finished_at=now())
