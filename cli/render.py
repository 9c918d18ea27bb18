"""How the CLI shows things: tables, sizes, step progress. Pure functions of API data, so they are tested
without a server."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.filesize import decimal
from rich.table import Table
from rich.text import Text

MARKS = {"succeeded": "✓", "failed": "✗", "running": "…", "queued": "·"}
STYLES = {"succeeded": "green", "failed": "red", "running": "yellow", "queued": "dim"}


def size(n: int | None) -> str:
    """Bytes for people: 1.5 MB (decimal units, as registries and Docker show them)."""
    return "-" if n is None else decimal(int(n))


def short(digest: str, n: int = 12) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:n]}" if hexpart else digest


def seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = lambda ts: datetime.fromisoformat(ts.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def repositories_table(items: list[dict[str, Any]]) -> Table:
    table = Table("Repository", "Tags", title=f"{len(items)} repositories")
    for item in items:
        table.add_row(item["name"], str(item.get("tag_count", "")))
    return table


def tags_table(repository: str, items: list[dict[str, Any]]) -> Table:
    table = Table("Tag", "Digest", "Size", "Created", "Platforms", title=f"{repository}: {len(items)} tags")
    for t in items:
        table.add_row(t["name"], short(t["digest"]), size(t.get("size")), (t.get("created") or "")[:19],
                      ", ".join(t.get("platforms") or []))
    return table


def plan_rows(plan: dict[str, Any], sizes: dict[str, int]) -> list[tuple[str, str, str, str]]:
    """(repository, what goes, tags, size) for every manifest the plan deletes and every tag removed alone."""
    rows = []
    for repo in plan.get("repositories", []):
        name = repo["repository"]
        by_manifest = repo.get("tags_by_manifest") or {}
        for digest in repo.get("manifests", []):
            rows.append((name, f"manifest {short(digest)}", ", ".join(by_manifest.get(digest, [])) or "(untagged)",
                         size(sizes.get(digest))))
        for tag in repo.get("untagged_only", []):
            rows.append((name, "tag only (manifest stays)", tag, "-"))
        if repo.get("remove_repository"):
            rows.append((name, "the repository itself", "", ""))
    return rows


def plan_summary(plan: dict[str, Any]) -> str:
    manifests, tags = len(plan.get("manifests", [])), len(plan.get("tags", []))
    text = f"{manifests} manifest{'s' * (manifests != 1)} and {tags} tag{'s' * (tags != 1)} to delete"
    if "bytes" in plan:
        blobs = len(plan.get("blobs", []))
        text += f"; GC will free {blobs} blob{'s' * (blobs != 1)}, {size(plan['bytes'])}"
    return text


def plan_table(plan: dict[str, Any], sizes: dict[str, int]) -> Table:
    table = Table("Repository", "Deletes", "Tags", "Size", title="Plan", caption=plan_summary(plan))
    for row in plan_rows(plan, sizes):
        table.add_row(*row)
    return table


def step_line(step: dict[str, Any]) -> Text:
    took = seconds(step.get("started_at"), step.get("finished_at"))
    line = Text(f"{MARKS.get(step['status'], '?')} {step['name']:<20}", style=STYLES.get(step["status"], ""))
    if took is not None:
        line.append(f" {took:6.2f}s")
    if step.get("error"):
        line.append(f"  {step['error'].get('code')}: {step['error'].get('message')}", style="red")
    return line


def steps_table(job: dict[str, Any]) -> Table:
    table = Table("", "Step", "Status", "Seconds", title=f"job {job['id']} ({job['kind']}): {job['status']}")
    for s in job["steps"]:
        took = seconds(s.get("started_at"), s.get("finished_at"))
        table.add_row(MARKS.get(s["status"], "?"), s["name"], Text(s["status"], style=STYLES.get(s["status"], "")),
                      "" if took is None else f"{took:.2f}")
    return table


def job_summary(job: dict[str, Any]) -> list[str]:
    """The lines a person wants at the end: what was done, how long writes were refused, or why it failed."""
    result, lines = job.get("result") or {}, []
    if job["status"] == "failed" and job.get("error"):
        err = job["error"]
        lines.append(f"failed in step {err.get('step')}: {err.get('code')}: {err.get('message')}")
    if result.get("manifests_deleted") is not None:
        lines.append(f"manifests deleted: {len(result['manifests_deleted'])}, tags removed: "
                     f"{len(result.get('tags_removed') or [])}")
    if result.get("repositories_removed"):
        lines.append(f"repositories removed: {', '.join(result['repositories_removed'])}")
    if result.get("gc"):
        lines.append(f"GC freed {result['gc'].get('blobs_deleted', 0)} blobs, {size(result.get('bytes_freed'))}")
    refused = (job.get("window") or {}).get("write_refused_seconds")
    if refused is not None:
        lines.append(f"writes were refused for {refused:.1f}s")
    lines.append(f"job {job['id']}: {job['status']}")
    return lines


def next_step(job: dict[str, Any]) -> str | None:
    """What a person does about a job that stopped short of running: parked for approval, or ended unrun."""
    status, jid = job["status"], job["id"]
    if status == "awaiting_approval":
        until = f" until {job['expires_at']}" if job.get("expires_at") else ""
        return (f"job {jid} awaits approval{until}: nothing was changed yet. Another token with scope `approve` "
                f"can approve it (POST /v1/jobs/{jid}/approve); then follow it with "
                f"`registry-janitor jobs --watch {jid}`")
    if status == "rejected":
        return f"job {jid} was rejected{_by(job, 'rejected_by')}: nothing was changed"
    if status == "expired":
        return f"job {jid} expired before anyone approved it: nothing was changed; ask again"
    if status == "cancelled":
        return f"job {jid} was cancelled{_by(job, 'cancelled_by')}: nothing was changed"
    return None


def _by(job: dict[str, Any], field: str) -> str:
    return f" by {job[field]}" if job.get(field) else ""
