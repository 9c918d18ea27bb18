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
    """Size is the bytes of each repository's blobs counted once; blobs shared between repositories count in
    each, so the column does not add up to the registry's storage."""
    table = Table("Repository", "Tags", "Size", title=f"{len(items)} repositories")
    table.columns[1].justify = table.columns[2].justify = "right"
    for item in items:
        table.add_row(item["name"], str(item.get("tag_count", "")), size(item.get("size")))
    return table


def is_dry_run(job: dict[str, Any]) -> bool:
    return bool((job.get("request") or {}).get("dry_run"))


def job_target(job: dict[str, Any]) -> str:
    """What a job is about, in a few words: the policy, the repository, or the whole registry."""
    request = job.get("request") or {}
    if job.get("policy"):
        return f"policy {job['policy']}"
    if request.get("all_repositories"):
        return "every repository"
    if request.get("repository"):
        return str(request["repository"])
    return "registry" if job.get("kind") == "gc" else ""


def jobs_table(items: list[dict[str, Any]], title: str | None = None) -> Table:
    """Recent jobs; a dry run is marked so a preview is never mistaken for the deletion it previewed."""
    table = Table("Job", "Kind", "Status", "Dry run", "Target", "By", "Created", title=title or f"{len(items)} jobs")
    for job in items:
        table.add_row(job["id"], job["kind"], Text(job["status"], style=STYLES.get(job["status"], "")),
                      Text("dry run", style="cyan") if is_dry_run(job) else "", job_target(job),
                      job.get("requested_by") or "", (job.get("created_at") or "")[:19])
    return table


def approvals_table(items: list[dict[str, Any]]) -> Table:
    """Jobs awaiting approval with what each would delete and when it expires."""
    table = Table("Job", "Kind", "Target", "Plan", "Requested by", "Expires",
                  title=f"{len(items)} job{'s' * (len(items) != 1)} awaiting approval")
    for job in items:
        plan = (job.get("result") or {}).get("plan")
        table.add_row(job["id"], job["kind"], job_target(job), plan_summary(plan) if plan else "(being planned)",
                      job.get("requested_by") or "", (job.get("expires_at") or "")[:19])
    return table


def policies_table(items: list[dict[str, Any]]) -> Table:
    table = Table("Policy", "Repositories", "Schedule", "Approval", "Last run", "Next run", "Source",
                  title=f"{len(items)} polic{'ies' if len(items) != 1 else 'y'}")
    for p in items:
        last = p.get("last_run") or {}
        schedule = p.get("schedule") or "on demand"
        if p.get("schedule") and p.get("enabled") is False:
            schedule += " (paused)"
        table.add_row(p["name"], ", ".join(p.get("repositories") or []), schedule, p.get("approval") or "",
                      f"{last['status']} {last.get('at', '')[:19]}" if last else "",
                      (p.get("next_run") or "")[:19], p.get("source", ""))
    return table


POLICY_FIELDS = ("repositories", "delete_tags", "keep_tags", "keep_last", "older_than", "keep_pulled_within",
                 "keep_last_pulled", "untagged", "schedule", "notify_before", "enabled", "approval", "source",
                 "next_run")


def policy_table(policy: dict[str, Any]) -> Table:
    """One policy, field by field, unset fields included so a person sees what the policy does not limit."""
    table = Table("Field", "Value", title=f"policy {policy['name']}", show_header=False)
    for name in POLICY_FIELDS:
        value = policy.get(name)
        table.add_row(name, ", ".join(value) if isinstance(value, list) else "-" if value is None else str(value))
    last = policy.get("last_run")
    if last:
        table.add_row("last_run", f"{last['status']} at {last['at'][:19]} (job {last['job_id']})")
    warning = policy.get("last_upcoming")
    if warning:
        table.add_row("last_warning", f"{warning['summary']} (sent {warning['sent_at'][:19]})")
    return table


def policy_plan_table(plan: dict[str, Any]) -> Table:
    """A policy run's plan: every tag of every matched repository, deleted or kept and why (the policy's
    `delete`/`keep` lists), and manifests no tag reaches that go with `untagged`."""
    table = Table("Repository", "Tag", "Decision", "Created", title="Policy plan", caption=plan_summary(plan))
    for repo in plan.get("repositories", []):
        name = repo["repository"]
        for t in repo.get("delete", []):
            table.add_row(name, t["tag"], Text("delete", style="red"), (t.get("created") or "")[:19])
        for t in repo.get("keep", []):
            table.add_row(name, t["tag"], f"keep: {'; '.join(t.get('reasons') or [t.get('reason', '')])}",
                          (t.get("created") or "")[:19])
        reached = {d for d, tags in (repo.get("tags_by_manifest") or {}).items() if tags}
        for digest in repo.get("manifests", []):
            if digest not in reached:
                table.add_row(name, f"(untagged) {short(digest)}", Text("delete", style="red"), "")
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
    dry = ", dry run" if is_dry_run(job) else ""
    table = Table("", "Step", "Status", "Seconds", title=f"job {job['id']} ({job['kind']}{dry}): {job['status']}")
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
