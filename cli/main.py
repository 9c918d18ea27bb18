"""registry-janitor: list, delete, collect garbage, run retention policies and approve jobs through the
janitor's API.

Exit codes: 0 done, 1 the job failed (or the API refused or could not be reached), 2 bad usage (of the
command line, or a request the API calls invalid), 3 the job awaits approval (nothing changed yet), 4 the job
ended without being carried out (rejected, expired or cancelled).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.live import Live

from cli import render
from cli.client import ApiError, Client, Unreachable

OK, FAILED, USAGE, AWAITING, NOT_CARRIED_OUT = 0, 1, 2, 3, 4
EXIT_CODES = {"succeeded": OK, "failed": FAILED, "awaiting_approval": AWAITING, "rejected": NOT_CARRIED_OUT,
              "expired": NOT_CARRIED_OUT, "cancelled": NOT_CARRIED_OUT}


@dataclass
class Ctx:
    client: Client
    json: bool
    out: Console
    err: Console


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--json on every command too, so `registry-janitor repos --json` works as well as `--json repos`."""
    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(Ctx).json = True  # type: ignore[union-attr]
    return click.option("--json", "json_", is_flag=True, expose_value=False, callback=set_json,
                        help="Print JSON for scripts instead of tables.")(f)


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


pass_ctx = click.make_pass_decorator(Ctx)


@cli.command()
@click.option("--sort", type=click.Choice(["name", "size", "tags"]), default="name", show_default=True,
              help="Order by name, or largest / most tags first.")
@_json_option
@pass_ctx
def repos(c: Ctx, sort: str) -> None:
    """Repositories with their tag counts and sizes.

    A repository's size is the bytes of its blobs, each counted once; layers shared with other repositories
    count in each, so deleting one frees at most its size (`GET /v1/usage` tells shared from unique bytes).
    """
    items = c.client.repositories(sort={"name": None, "size": "-size", "tags": "-tags"}[sort])
    if c.json:
        _emit_json(items)
    else:
        c.out.print(render.repositories_table(items))


@cli.command()
@click.argument("repository")
@_json_option
@pass_ctx
def tags(c: Ctx, repository: str) -> None:
    """Tags of REPOSITORY with digest, size, creation time and platforms."""
    items = c.client.tags(repository)
    if c.json:
        _emit_json(items)
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
@click.option("--restore-window", help="How long it can be put back (`registry-janitor restore JOB`), e.g. 7d; 0: off.")
@_json_option
@pass_ctx
def delete(c: Ctx, repository: str, tags_: tuple[str, ...], digests: tuple[str, ...], untagged: bool,
           all_tags: bool, dry_run: bool, yes: bool, force: bool, no_referrers: bool,
           restore_window: str | None) -> None:
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
    if restore_window is not None:
        body["restore_window"] = restore_window

    if not (yes and not dry_run):
        preview = _run_job(c, lambda: c.client.delete({**body, "dry_run": True}), label="planning", quiet=True)
        if preview["status"] != "succeeded":
            _finish(c, preview)
        plan = (preview.get("result") or {}).get("plan") or {}
        if dry_run:
            if c.json:
                _emit_json(preview)
            else:
                c.out.print(render.plan_table(plan, _sizes(c, repository)))
                c.out.print("dry run: nothing was changed")
            sys.exit(OK)
        c.err.print(render.plan_table(plan, _sizes(c, repository)))
        if not plan.get("manifests") and not plan.get("tags"):
            c.err.print("nothing to delete")
            if c.json:
                _emit_json(preview)
            sys.exit(OK)
        if not _confirm(f"Delete this from the registry behind {c.client.url}? GC follows, and the registry "
                        "refuses pushes while it runs (-y/--yes skips this question)"):
            c.err.print("nothing was deleted")
            sys.exit(FAILED)
    _carry_out(c, lambda: c.client.delete(body), label="deleting")


def _confirm(question: str) -> bool:
    """[y/N] on stderr. An answer may come from a pipe; with none to read (no terminal, or stdin at its end) say
    how to confirm instead of a bare "aborted"."""
    try:
        return click.confirm(question, default=False, err=True)
    except click.exceptions.Abort:
        if not sys.stdin.isatty():
            click.echo("\nnot a terminal: pass -y to confirm", err=True)
            sys.exit(FAILED)
        raise


def _carry_out(c: Ctx, submit: Callable[[], dict[str, Any]], label: str) -> None:
    """Submit a real job and follow it to the end, unless it must wait for approval (asked for, or
    JANITOR_REQUIRE_APPROVAL): then say how it gets approved instead of waiting on a person."""
    job = submit()
    if job.get("approval") == "required" and job["status"] in ("queued", "awaiting_approval"):
        if c.json:
            _emit_json(job)
        else:
            c.out.print(f"job {job['id']} needs approval: it is planned in the next window, then waits. "
                        f"See `registry-janitor approvals`; another token approves with "
                        f"`registry-janitor approve {job['id']}`.")
        sys.exit(OK)
    _finish(c, _run_job(c, lambda: job, label=label))


def _sizes(c: Ctx, repository: str) -> dict[str, int]:
    """Manifest digest -> size, from the tag listing (the plan names digests, the listing has sizes)."""
    try:
        return {t["digest"]: t["size"] for t in c.client.tags(repository) if t.get("size") is not None}
    except ApiError:
        return {}


@cli.command()
@_json_option
@pass_ctx
def gc(c: Ctx) -> None:
    """A maintenance window with no deletion: garbage-collect and restart, followed to the end."""
    _finish(c, _run_job(c, c.client.gc, label="gc"))


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
@_json_option
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
            _emit_json(items)
        else:
            c.out.print(render.jobs_table(items))
        return
    if any(filters.values()):
        raise click.UsageError("filters list jobs; they do not go with a JOB_ID")
    if watch:
        _finish(c, _follow(c, c.client.job(job_id)))
    job = c.client.job(job_id)
    if c.json:
        _emit_json(job)
    else:
        c.out.print(render.steps_table(job))
        for line in render.job_summary(job):
            c.out.print(line)
    sys.exit(EXIT_CODES.get(job["status"], OK))  # queued or running: shown, nothing went wrong


@cli.command()
@_json_option
@pass_ctx
def policies(c: Ctx) -> None:
    """Retention policies with their schedule, last and next run (`policy show NAME` for one in full)."""
    items = c.client.policies()
    if c.json:
        _emit_json(items)
    else:
        c.out.print(render.policies_table(items))


@cli.group()
def policy() -> None:
    """One retention policy: show it, preview what a run would delete, or run it."""


@policy.command("show")
@click.argument("name")
@_json_option
@pass_ctx
def policy_show(c: Ctx, name: str) -> None:
    """Every field of policy NAME, its last run and its next one."""
    found = c.client.policy(name)
    if c.json:
        _emit_json(found)
    else:
        c.out.print(render.policy_table(found))


def _policy_preview(c: Ctx, name: str) -> dict[str, Any]:
    """A dry-run run of the policy, followed to its end: its plan, every tag kept or deleted and why."""
    preview = _run_job(c, lambda: c.client.policy_run(name, dry_run=True), label="planning", quiet=True)
    if preview["status"] != "succeeded":
        _finish(c, preview)
    return preview


@policy.command("preview")
@click.argument("name")
@_json_option
@pass_ctx
def policy_preview(c: Ctx, name: str) -> None:
    """What a run of policy NAME would delete now, and every tag it keeps with the reason (changes nothing)."""
    preview = _policy_preview(c, name)
    if c.json:
        _emit_json(preview)
    else:
        c.out.print(render.policy_plan_table((preview.get("result") or {}).get("plan") or {}))
        c.out.print(f"dry run (job {preview['id']}): nothing was changed")


@policy.command("run")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting (and skip the preview).")
@_json_option
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
                _emit_json(preview)
            sys.exit(OK)
        if not _confirm(f"Run policy {name} on the registry behind {c.client.url}? GC follows, and the registry "
                        "refuses pushes while it runs (-y/--yes skips this question)"):
            c.err.print("nothing was deleted")
            sys.exit(FAILED)
    _carry_out(c, lambda: c.client.policy_run(name, dry_run=False), label=f"policy {name}")


@cli.command()
@_json_option
@pass_ctx
def approvals(c: Ctx) -> None:
    """Jobs awaiting approval, with what each would delete and when it expires."""
    items = c.client.jobs(500, status="awaiting_approval")
    if c.json:
        _emit_json(items)
    else:
        c.out.print(render.approvals_table(items))


@cli.command()
@click.argument("job_id")
@click.option("--yes", "-y", is_flag=True, help="Approve without showing the plan and asking.")
@_json_option
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
        if not _confirm(f"Approve job {job_id} ({render.job_target(waiting)}, asked by "
                        f"{waiting.get('requested_by') or 'unknown'})? (-y/--yes skips this question)"):
            c.err.print("not approved")
            sys.exit(FAILED)
    job = c.client.approve(job_id)
    if c.json:
        _emit_json(job)
    else:
        c.out.print(f"job {job['id']}: approved by {job.get('approved_by') or '?'}, {job['status']} for the next "
                    f"window; follow it with `registry-janitor jobs {job['id']} --watch`")


@cli.command()
@click.argument("job_id")
@_json_option
@pass_ctx
def reject(c: Ctx, job_id: str) -> None:
    """Reject JOB_ID, awaiting approval: it ends as `rejected` and changes nothing."""
    job = c.client.reject(job_id)
    if c.json:
        _emit_json(job)
    else:
        by = f" by {job['rejected_by']}" if job.get("rejected_by") else ""
        c.out.print(f"job {job['id']}: {job['status']}{by}; nothing was changed")


def _run_job(c: Ctx, submit: Callable[[], dict[str, Any]], label: str, quiet: bool = False) -> dict[str, Any]:
    job = submit()
    if not c.json and not quiet:
        c.err.print(f"{label}: job {job['id']} queued")
    return _follow(c, job, quiet=quiet)


def _follow(c: Ctx, job: dict[str, Any], quiet: bool = False) -> dict[str, Any]:
    """Live step progress on a terminal; one line per finished step otherwise (logs, CI, pipes)."""
    if c.json or quiet:
        if c.err.is_terminal and not c.json:
            with c.err.status(f"job {job['id']}: working out the plan"):
                return c.client.follow(job["id"], lambda _j: None)
        return c.client.follow(job["id"], lambda _j: None)
    if c.err.is_terminal:
        with Live(render.steps_table(job), console=c.err, refresh_per_second=8) as live:
            return c.client.follow(job["id"], lambda j: live.update(render.steps_table(j)))
    printed: set[tuple[int, str]] = set()

    def show(j: dict[str, Any]) -> None:
        for i, step in enumerate(j["steps"]):
            if step["status"] != "running" and (i, step["name"]) not in printed:
                printed.add((i, step["name"]))
                c.err.print(render.step_line(step))
    return c.client.follow(job["id"], show)


def _finish(c: Ctx, job: dict[str, Any]) -> None:
    """Print the outcome and exit with its code; a job parked or ended unrun says so, and what to do next."""
    if c.json:
        _emit_json(job)
    else:
        for line in render.job_summary(job):
            c.out.print(line)
        hint = render.next_step(job)
        if hint:
            c.err.print(hint)
    sys.exit(EXIT_CODES.get(job["status"], FAILED))


def main() -> None:
    from cli import restore  # noqa: F401  (registers `restore` and `restorable` on the group)
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
