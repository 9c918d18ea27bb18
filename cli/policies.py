"""Retention policies and approvals from the command line: list, show, preview and run a policy; list the
jobs awaiting approval, approve or reject one."""

from __future__ import annotations

import sys
from typing import Any

import click

from cli import render
from cli.common import (
    FAILED,
    OK,
    Ctx,
    carry_out,
    confirm,
    emit_json,
    finish,
    json_option,
    pass_ctx,
    run_job,
)


@click.command()
@json_option
@pass_ctx
def policies(c: Ctx) -> None:
    """Retention policies with their schedule, last and next run (`policy show NAME` for one in full)."""
    items = c.client.policies()
    if c.json:
        emit_json(items)
    else:
        c.out.print(render.policies_table(items))


@click.group()
def policy() -> None:
    """One retention policy: show it, preview what a run would delete, or run it."""


@policy.command("show")
@click.argument("name")
@json_option
@pass_ctx
def policy_show(c: Ctx, name: str) -> None:
    """Every field of policy NAME, its last run and its next one."""
    found = c.client.policy(name)
    if c.json:
        emit_json(found)
    else:
        c.out.print(render.policy_table(found))


def _policy_preview(c: Ctx, name: str) -> dict[str, Any]:
    """A dry-run run of the policy, followed to its end: its plan, every tag kept or deleted and why."""
    preview = run_job(c, lambda: c.client.policy_run(name, dry_run=True), label="planning", quiet=True)
    if preview["status"] != "succeeded":
        finish(c, preview)
    return preview


@policy.command("preview")
@click.argument("name")
@json_option
@pass_ctx
def policy_preview(c: Ctx, name: str) -> None:
    """What a run of policy NAME would delete now, and every tag it keeps with the reason (changes nothing)."""
    preview = _policy_preview(c, name)
    if c.json:
        emit_json(preview)
    else:
        c.out.print(render.policy_plan_table((preview.get("result") or {}).get("plan") or {}))
        c.out.print(f"dry run (job {preview['id']}): nothing was changed")


@policy.command("run")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting (and skip the preview).")
@json_option
@pass_ctx
def policy_run(c: Ctx, name: str, yes: bool) -> None:
    """Run policy NAME now: its plan is shown and you are asked [y/N], then the run is followed to the end.

    Without a terminal (scripts, CI) nobody can answer: pass -y/--yes. The run plans again in its window, so it
    deletes what the policy matches then. A run that needs approval is queued and left for `approve`.
    """
    if not yes:
        preview = _policy_preview(c, name)
        plan = (preview.get("result") or {}).get("plan") or {}
        c.err.print(render.policy_plan_table(plan))
        if not plan.get("manifests") and not plan.get("tags"):
            c.err.print("nothing to delete")
            if c.json:
                emit_json(preview)
            sys.exit(OK)
        if not confirm(f"Run policy {name} on the registry behind {c.client.url}? GC follows, and the registry "
                        "refuses pushes while it runs (-y/--yes skips this question)"):
            c.err.print("nothing was deleted")
            sys.exit(FAILED)
    carry_out(c, lambda: c.client.policy_run(name, dry_run=False), label=f"policy {name}")


@click.command()
@json_option
@pass_ctx
def approvals(c: Ctx) -> None:
    """Jobs awaiting approval, with what each would delete and when it expires."""
    items = c.client.jobs(500, status="awaiting_approval")
    if c.json:
        emit_json(items)
    else:
        c.out.print(render.approvals_table(items))


@click.command()
@click.argument("job_id")
@click.option("--yes", "-y", is_flag=True, help="Approve without showing the plan and asking.")
@json_option
@pass_ctx
def approve(c: Ctx, job_id: str, yes: bool) -> None:
    """Approve JOB_ID, awaiting approval: its plan is shown and you are asked [y/N] (-y/--yes skips this).

    The next window plans again and deletes only what is in both plans; anything new is skipped. Follow it with
    `registry-janitor jobs JOB_ID --watch`.
    """
    if not yes:
        waiting = c.client.job(job_id)
        if waiting["status"] != "awaiting_approval":
            c.err.print(f"job {job_id} is {waiting['status']}, not awaiting approval")
            sys.exit(FAILED)
        plan = (waiting.get("result") or {}).get("plan") or {}
        table = render.policy_plan_table(plan) if waiting["kind"] == "policy" else render.plan_table(plan, {})
        c.err.print(table)
        if not confirm(f"Approve job {job_id} ({render.job_target(waiting)}, asked by "
                        f"{waiting.get('requested_by') or 'unknown'})? (-y/--yes skips this question)"):
            c.err.print("not approved")
            sys.exit(FAILED)
    job = c.client.approve(job_id)
    if c.json:
        emit_json(job)
    else:
        c.out.print(f"job {job['id']}: approved by {job.get('approved_by') or '?'}, {job['status']} for the next "
                    f"window; follow it with `registry-janitor jobs {job['id']} --watch`")


@click.command()
@click.argument("job_id")
@json_option
@pass_ctx
def reject(c: Ctx, job_id: str) -> None:
    """Reject JOB_ID, awaiting approval: it ends as `rejected` and changes nothing."""
    job = c.client.reject(job_id)
    if c.json:
        emit_json(job)
    else:
        by = f" by {job['rejected_by']}" if job.get("rejected_by") else ""
        c.out.print(f"job {job['id']}: {job['status']}{by}; nothing was changed")
