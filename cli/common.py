"""What every command shares: the context, JSON output, the [y/N] question, and following a job to its end
(exit codes: 0 done, 1 failed or refused, 2 bad usage, 3 awaiting approval, 4 ended without being carried out)."""

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
from cli.client import Client

OK, FAILED, USAGE, AWAITING, NOT_CARRIED_OUT = 0, 1, 2, 3, 4
EXIT_CODES = {"succeeded": OK, "failed": FAILED, "awaiting_approval": AWAITING, "rejected": NOT_CARRIED_OUT,
              "expired": NOT_CARRIED_OUT, "cancelled": NOT_CARRIED_OUT}


@dataclass
class Ctx:
    client: Client
    json: bool
    out: Console
    err: Console


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--json on every command too, so `registry-janitor repos --json` works as well as `--json repos`."""
    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(Ctx).json = True  # type: ignore[union-attr]
    return click.option("--json", "json_", is_flag=True, expose_value=False, callback=set_json,
                        help="Print JSON for scripts instead of tables.")(f)


pass_ctx = click.make_pass_decorator(Ctx)


def confirm(question: str) -> bool:
    """[y/N] on stderr. An answer may come from a pipe; with none to read (no terminal, or stdin at its end) say
    how to confirm instead of a bare "aborted"."""
    try:
        return click.confirm(question, default=False, err=True)
    except click.exceptions.Abort:
        if not sys.stdin.isatty():
            click.echo("\nnot a terminal: pass -y to confirm", err=True)
            sys.exit(FAILED)
        raise


def carry_out(c: Ctx, submit: Callable[[], dict[str, Any]], label: str) -> None:
    """Submit a real job and follow it to the end, unless it must wait for approval (asked for, or
    JANITOR_REQUIRE_APPROVAL): then say how it gets approved instead of waiting on a person."""
    job = submit()
    if job.get("approval") == "required" and job["status"] in ("queued", "awaiting_approval"):
        if c.json:
            emit_json(job)
        else:
            c.out.print(f"job {job['id']} needs approval: it is planned in the next window, then waits. "
                        f"See `registry-janitor approvals`; another token approves with "
                        f"`registry-janitor approve {job['id']}`.")
        sys.exit(AWAITING)  # nothing changed yet: the same code as a wait that ends on awaiting_approval
    finish(c, run_job(c, lambda: job, label=label))


def run_job(c: Ctx, submit: Callable[[], dict[str, Any]], label: str, quiet: bool = False) -> dict[str, Any]:
    job = submit()
    if not c.json and not quiet:
        c.err.print(f"{label}: job {job['id']} queued")
    return follow(c, job, quiet=quiet)


def follow(c: Ctx, job: dict[str, Any], quiet: bool = False) -> dict[str, Any]:
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


def finish(c: Ctx, job: dict[str, Any]) -> None:
    """Print the outcome and exit with its code; a job parked or ended unrun says so, and what to do next."""
    if c.json:
        emit_json(job)
    else:
        for line in render.job_summary(job):
            c.out.print(line)
        hint = render.next_step(job)
        if hint:
            c.err.print(hint)
    sys.exit(EXIT_CODES.get(job["status"], FAILED))
