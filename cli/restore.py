"""`registry-janitor restore JOB` and `registry-janitor restorable`: the restore window from the command line
(POST /v1/jobs/{id}/restore, GET /v1/restorable). Registered on the main group by cli/main.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from cli import render
from cli.common import Ctx, emit_json, finish, json_option, pass_ctx, run_job


def restore_job(c: Ctx, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return c.client._call("POST", f"/v1/jobs/{quote(job_id, safe='')}/restore", json=body)


def restore_lines(job: dict[str, Any]) -> list[str]:
    """What a restore put back, what it left alone and what it could not."""
    result = job.get("result") or {}
    lines = [(f"manifests restored: {len(result.get('manifests_restored') or [])}, tags restored: "
              f"{len(result.get('tags_restored') or [])}")]
    for s in result.get("skipped") or []:
        lines.append(f"left alone: {s['repository']}:{s['tag']} (now at {s.get('now_at')}): {s['reason']}")
    for f in result.get("failed") or []:
        what = f"{f['repository']}:{f['tag']}" if f.get("tag") else f"{f['repository']}@{f['digest']}"
        lines.append(f"not restored: {what}: {f['reason']}")
    return lines


@click.command()
@click.argument("job_id")
@click.option("--tag", "tags_", multiple=True, help="Only this tag, as repository:tag (repeatable).")
@click.option("--manifest", "manifests", multiple=True,
              help="Only this manifest, as sha256:... or repository@sha256:... (repeatable).")
@json_option
@pass_ctx
def restore(c: Ctx, job_id: str, tags_: tuple[str, ...], manifests: tuple[str, ...]) -> None:
    """Put back what JOB_ID deleted, while its restore window runs, and follow the restore to the end.

    Manifests come back byte for byte and tags where they pointed; a tag pushed anew since is left alone."""
    body: dict[str, Any] = {}
    if tags_:
        body["tags"] = list(tags_)
    if manifests:
        body["manifests"] = list(manifests)
    job = run_job(c, lambda: restore_job(c, job_id, body), label="restoring")
    if not c.json:
        for line in restore_lines(job):
            c.out.print(line)
    finish(c, job)


@click.command()
@json_option
@pass_ctx
def restorable(c: Ctx) -> None:
    """Deletions that can still be put back, newest first, with the bytes GC keeps for them."""
    items = c.client._pages("/v1/restorable")
    if c.json:
        emit_json(items)
        return
    table = Table("Job", "Deleted", "Restorable until", "Manifests", "Tags", "Held", title="restorable")
    for item in items:
        table.add_row(item["job"], item["deleted_at"], item["restorable_until"], str(len(item["manifests"])),
                      str(len(item["tags"])), render.size(item.get("bytes_held")))
    c.out.print(table)


COMMANDS = (restore, restorable)
