"""registry-janitor: list, delete and collect garbage through the janitor's API.

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
    """Safe maintenance of a registry: list, delete, garbage-collect, and follow the jobs."""
    ctx.obj = Ctx(Client(url, token, registry=registry), as_json, Console(), Console(stderr=True))


pass_ctx = click.make_pass_decorator(Ctx)


@cli.command()
@_json_option
@pass_ctx
def repos(c: Ctx) -> None:
    """Repositories and their tag counts."""
    items = c.client.repositories()
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
@_json_option
@pass_ctx
def delete(c: Ctx, repository: str, tags_: tuple[str, ...], digests: tuple[str, ...], untagged: bool,
           all_tags: bool, dry_run: bool, yes: bool, force: bool, no_referrers: bool) -> None:
    """Delete from REPOSITORY: give exactly one of --tag, --digest, --untagged or --all-tags.

    The plan is shown first (from a dry-run job) and you are asked before anything is deleted; then the job
    is followed step by step to the end.
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
        if not click.confirm(f"Delete this from the registry behind {c.client.url}? GC follows, and the "
                             "registry refuses pushes while it runs", default=False, err=True):
            c.err.print("nothing was deleted")
            sys.exit(FAILED)
    _finish(c, _run_job(c, lambda: c.client.delete(body), label="deleting"))


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


@cli.command()
@click.argument("job_id", required=False)
@click.option("--watch", "-w", is_flag=True, help="Follow the job until it finishes.")
@_json_option
@pass_ctx
def jobs(c: Ctx, job_id: str | None, watch: bool) -> None:
    """Show job JOB_ID with its steps (or, without an id, recent jobs where the server lists them)."""
    if job_id is None:
        if watch:
            raise click.UsageError("--watch needs a JOB_ID")
        try:
            items = c.client.jobs()
        except ApiError as exc:
            if exc.status in (404, 405) and exc.code != "REGISTRY_UNKNOWN":
                raise click.UsageError("this server has no job list; give a JOB_ID") from None
            raise
        if c.json:
            _emit_json(items)
        else:
            for job in items:
                c.out.print(f"{job['id']}  {job['kind']:<8} {job['status']:<9} {job.get('created_at', '')}")
        return
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
