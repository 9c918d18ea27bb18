"""registry-janitor: list, delete, collect garbage, run retention policies, protect tags and approve jobs
through the janitor's API.

Exit codes: 0 done, 1 the job failed (or the API refused or could not be reached), 2 bad usage (of the
command line, or a request the API calls invalid), 3 the job awaits approval (nothing changed yet), 4 the job
ended without being carried out (rejected, expired or cancelled).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console

from cli import policies, protections, render, restore
from cli.client import ApiError, Client, Unreachable
from cli.common import (
    EXIT_CODES,
    FAILED,
    OK,
    USAGE,
    Ctx,
    carry_out,
    confirm,
    emit_json,
    finish,
    follow,
    json_option,
    pass_ctx,
    run_job,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="JANITOR_URL", default="http://127.0.0.1:8000", show_default=True,
              help="The janitor API (env JANITOR_URL).")
@click.option("--token", envvar="JANITOR_TOKEN", default=None, help="Bearer token for /v1 (env JANITOR_TOKEN).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")
@click.option("--registry", envvar="JANITOR_REGISTRY", default=None,
              help="With several registries (REGISTRIES_FILE): act on this one, by name, not the default "
                   "(env JANITOR_REGISTRY).")
@click.pass_context
def cli(ctx: click.Context, url: str, token: str | None, as_json: bool, registry: str | None) -> None:
    """Safe maintenance of a registry: list, delete, garbage-collect, run policies, approve, follow the jobs."""
    ctx.obj = Ctx(Client(url, token, registry=registry), as_json, Console(), Console(stderr=True))




@cli.command()
@click.option("--sort", type=click.Choice(["name", "size", "tags"]), default="name", show_default=True,
              help="Order by name, or largest / most tags first.")
@json_option
@pass_ctx
def repos(c: Ctx, sort: str) -> None:
    """Repositories with their tag counts and sizes.

    A repository's size is the bytes of its blobs, each counted once; layers shared with other repositories
    count in each, so deleting one frees at most its size (`GET /v1/usage` tells shared from unique bytes).
    """
    items = c.client.repositories(sort={"name": None, "size": "-size", "tags": "-tags"}[sort])
    if c.json:
        emit_json(items)
    else:
        c.out.print(render.repositories_table(items))


@cli.command()
@click.argument("repository")
@json_option
@pass_ctx
def tags(c: Ctx, repository: str) -> None:
    """Tags of REPOSITORY with digest, size, creation time and platforms."""
    items = c.client.tags(repository)
    if c.json:
        emit_json(items)
    else:
        c.out.print(render.tags_table(repository, items))


@cli.command()
@click.argument("repository")
@click.option("--tag", "tags_", multiple=True, help="Delete this tag (repeatable); tags sharing its manifest stay.")
@click.option("--digest", "digests", multiple=True, help="Delete this manifest and every tag on it (repeatable).")
@click.option("--untagged", is_flag=True, help="Delete the manifests no tag reaches.")
@click.option("--all-tags", is_flag=True, help="Delete every manifest, then the repository.")
@click.option("--dry-run", is_flag=True, help="Show the plan and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting (and skip the preview).")
@click.option("--force", is_flag=True, help="Delete a manifest even though a tagged index references it.")
@click.option("--no-referrers", is_flag=True, help="Keep signatures and SBOMs of deleted manifests.")
@click.option("--override-protection", is_flag=True,
              help="Delete protected tags too (scope admin; the job records it).")
@click.option("--restore-window", help="How long it can be put back (`registry-janitor restore JOB`), e.g. 7d; 0: off.")
@json_option
@pass_ctx
def delete(c: Ctx, repository: str, tags_: tuple[str, ...], digests: tuple[str, ...], untagged: bool,
           all_tags: bool, dry_run: bool, yes: bool, force: bool, no_referrers: bool,
           override_protection: bool, restore_window: str | None) -> None:
    """Delete from REPOSITORY: give exactly one of --tag, --digest, --untagged or --all-tags.

    The plan is shown first (from a dry-run job) and you are asked [y/N] before anything is deleted; then the
    job is followed step by step to the end. Without a terminal (scripts, CI) nobody can answer: pass -y/--yes.
    """
    chosen = [name for name, given in (("--tag", tags_), ("--digest", digests), ("--untagged", untagged),
                                       ("--all-tags", all_tags)) if given]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --tag, --digest, --untagged or --all-tags"
                               + (f" (got {', '.join(chosen)})" if chosen else ""))
    body: dict[str, Any] = {"repository": repository}
    if tags_:
        body["tags"] = list(tags_)
    elif digests:
        body["digests"] = list(digests)
    elif untagged:
        body["untagged"] = True
    else:
        body["all_tags"] = True
    if force:
        body["force"] = True
    if no_referrers:
        body["referrers"] = False
    if override_protection:
        body["override_protection"] = True
    if restore_window is not None:
        body["restore_window"] = restore_window

    if not (yes and not dry_run):
        preview = run_job(c, lambda: c.client.delete({**body, "dry_run": True}), label="planning", quiet=True)
        if preview["status"] != "succeeded":
            finish(c, preview)
        plan = (preview.get("result") or {}).get("plan") or {}
        if dry_run:
            if c.json:
                emit_json(preview)
            else:
                c.out.print(render.plan_table(plan, _sizes(c, repository)))
                c.out.print("dry run: nothing was changed")
            sys.exit(OK)
        c.err.print(render.plan_table(plan, _sizes(c, repository)))
        if not plan.get("manifests") and not plan.get("tags"):
            c.err.print("nothing to delete")
            if c.json:
                emit_json(preview)
            sys.exit(OK)
        if not confirm(f"Delete this from the registry behind {c.client.url}? GC follows, and the registry "
                        "refuses pushes while it runs (-y/--yes skips this question)"):
            c.err.print("nothing was deleted")
            sys.exit(FAILED)
    carry_out(c, lambda: c.client.delete(body), label="deleting")


def _sizes(c: Ctx, repository: str) -> dict[str, int]:
    """Manifest digest -> size, from the tag listing (the plan names digests, the listing has sizes)."""
    try:
        return {t["digest"]: t["size"] for t in c.client.tags(repository) if t.get("size") is not None}
    except ApiError:
        return {}


@cli.command()
@json_option
@pass_ctx
def gc(c: Ctx) -> None:
    """A maintenance window with no deletion: garbage-collect and restart, followed to the end."""
    finish(c, run_job(c, c.client.gc, label="gc"))


JOB_STATUSES = ["queued", "running", "succeeded", "failed", "awaiting_approval", "rejected", "expired", "cancelled"]


@cli.command()
@click.argument("job_id", required=False)
@click.option("--watch", "-w", is_flag=True, help="Follow the job until it finishes.")
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs in this state.")
@click.option("--kind", type=click.Choice(["deletion", "gc", "policy", "restore"]), help="Only jobs of this kind.")
@click.option("--repository", help="Only jobs on this repository.")
@click.option("--policy", help="Only runs of this policy.")
@click.option("--requested-by", help="Only jobs asked for by this token (its name).")
@click.option("--since", help="Only jobs created at or after this time (ISO 8601, e.g. 2024-05-01T00:00:00Z).")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True, help="At most this many.")
@json_option
@pass_ctx
def jobs(c: Ctx, job_id: str | None, watch: bool, status: str | None, kind: str | None, repository: str | None,
         policy: str | None, requested_by: str | None, since: str | None, limit: int) -> None:
    """Show job JOB_ID with its steps, or, without an id, recent jobs (newest first, dry runs marked)."""
    filters = {"status": status, "kind": kind, "repository": repository, "policy": policy,
               "requested_by": requested_by, "since": since}
    if job_id is None:
        if watch:
            raise click.UsageError("--watch needs a JOB_ID")
        try:
            items = c.client.jobs(limit, **filters)
        except ApiError as exc:
            if exc.status in (404, 405) and exc.code != "REGISTRY_UNKNOWN":
                raise click.UsageError("this server has no job list; give a JOB_ID") from None
            raise
        if c.json:
            emit_json(items)
        else:
            c.out.print(render.jobs_table(items))
        return
    if any(filters.values()):
        raise click.UsageError("filters list jobs; they do not go with a JOB_ID")
    if watch:
        finish(c, follow(c, c.client.job(job_id)))
    job = c.client.job(job_id)
    if c.json:
        emit_json(job)
    else:
        c.out.print(render.steps_table(job))
        for line in render.job_summary(job):
            c.out.print(line)
    sys.exit(EXIT_CODES.get(job["status"], OK))  # queued or running: shown, nothing went wrong


for command in (policies.policies, policies.policy, policies.approvals, policies.approve, policies.reject,
                *protections.COMMANDS, *restore.COMMANDS):
    cli.add_command(command)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(FAILED)
    except click.UsageError as exc:
        exc.show()
        sys.exit(USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ApiError as exc:
        click.echo(f"error: {exc.code} ({exc.status}): {exc.message}", err=True)
        if exc.details:
            click.echo(f"details: {json.dumps(exc.details)}", err=True)
        sys.exit(USAGE if exc.status in (400, 422) else FAILED)
    except (Unreachable, TimeoutError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(FAILED)


if __name__ == "__main__":
    main()
