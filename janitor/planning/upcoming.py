"""Warnings before a scheduled run (`notify_before`): when the warning is due, its RQ job, the Redis marker that
sends it once per (policy, due time), and the `policy.upcoming` webhook body with its one-line summary.

The warning is a plan read on the registry as it is then, with no window: it changes nothing. The run itself
plans again at its due time, so whatever a bot protects (or a policy change puts out of reach) meanwhile stays.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import redis

from janitor.jobs.records import now
from janitor.jobs.webhooks import human_bytes
from janitor.planning import retention

EVENT = "policy.upcoming"
# The worker's job that plans a policy and sends its warning, by dotted name (the API never imports it).
JOB = "worker.jobs.policy_upcoming"
MARKER_TTL = 7 * 24 * 3600  # beyond the due time: a late duplicate of the job still finds the marker


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def short_time(when: datetime) -> str:
    """2026-12-07T03:00Z, with seconds only when there are some."""
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ" if when.second else "%Y-%m-%dT%H:%MZ")


def warn_at(due: datetime, notify_before: str) -> datetime:
    return due - retention.parse_duration(notify_before)


def job_id(namespace: str, name: str, due: datetime) -> str:
    """One RQ job per registry, policy and due time: scheduling the warning again names the same job."""
    return f"janitor-upcoming-{re.sub(r'[^A-Za-z0-9]', '-', namespace)}-{name}-{int(due.timestamp())}"


def record_id(name: str, due: datetime) -> str:
    """Where the warning's delivery records are kept (as a job's are, under `webhooks:<id>`)."""
    return f"upcoming-{name}-{int(due.timestamp())}"


def _marker(prefix: str, name: str, due: datetime) -> str:
    return f"{prefix}:policy-upcoming:{name}:{int(due.timestamp())}"


def sent(conn: redis.Redis, prefix: str, name: str, due: datetime) -> bool:
    return bool(conn.exists(_marker(prefix, name, due)))


def claim(conn: redis.Redis, prefix: str, name: str, due: datetime, notify_before: str) -> bool:
    """True once per policy and due time, however many times the warning is scheduled or run."""
    ttl = int(retention.parse_duration(notify_before).total_seconds()) + MARKER_TTL
    return bool(conn.set(_marker(prefix, name, due), now(), nx=True, ex=ttl))


def scheduler(queue: Any, registry: str, namespace: str) -> Any:
    """What schedules a policy's warning for its next due time, on an RQ queue (duck-typed: janitor imports no
    RQ): at due - notify_before, or at once when that is past already. Sending twice for one due time is
    prevented by the marker, not here."""
    def warn(policy: dict[str, Any], due: datetime) -> None:
        if not policy.get("notify_before"):
            return
        at = warn_at(due, policy["notify_before"])
        args = (JOB, registry, policy["name"], iso(due))
        options = {"job_id": job_id(namespace, policy["name"], due), "job_timeout": 900, "result_ttl": 3600,
                   "failure_ttl": 7 * 24 * 3600}
        if at <= datetime.now(timezone.utc):
            queue.enqueue(*args, **options)
        else:
            queue.enqueue_at(at, *args, **options)
    return warn


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def time_left(delta: timedelta) -> str:
    """45s, 90m, 24h, 3d: rounded in a unit that keeps two digits or so, so a warning sent a few seconds late
    still reads `in 24h`."""
    seconds = max(0, round(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 120 * 60:
        return f"{round(seconds / 60)}m"
    if seconds < 72 * 3600:
        return f"{round(seconds / 3600)}h"
    return f"{round(seconds / 86400)}d"


def summary(name: str, due: datetime, at: datetime, plan: dict[str, Any] | None,
            error: dict[str, Any] | None = None) -> str:
    """One line for chat, e.g. `policy app-builds will delete 12 tags (9 manifests, 3.4 GB) in 24h at
    2026-12-07T03:00Z`: what its plan deletes if nothing changes before it is due."""
    when = f"in {time_left(due - at)} at {short_time(due)}"
    if plan is None:
        message = " ".join(str((error or {}).get("message", "")).split())
        if len(message) > 200:
            message = message[:199] + "…"
        return f"policy {name} runs {when}; its plan could not be read now: {(error or {}).get('code', 'ERROR')}: " \
               f"{message}"
    tags, manifests = len(plan.get("tags", [])), len(plan.get("manifests", []))
    if not tags and not manifests:
        return f"policy {name} runs {when} and would delete nothing now"
    what = _count(tags, "tag") if tags else _count(manifests, "manifest")
    details = [_count(manifests, "manifest")] if tags and manifests else []
    if "bytes" in plan:
        details.append(human_bytes(plan["bytes"]))
    size = f" ({', '.join(details)})" if details else ""
    return f"policy {name} will delete {what}{size} {when}"


def body(registry: str, policy: dict[str, Any], due: datetime, plan: dict[str, Any] | None, line: str,
         error: dict[str, Any] | None = None) -> str:
    """The `policy.upcoming` webhook body, fixed once so every retry sends (and signs) the same bytes."""
    return json.dumps({
        "event": EVENT, "delivered_at": now(), "registry": registry, "policy": policy["name"],
        "definition": policy, "due_at": iso(due), "notify_before": policy.get("notify_before"),
        "plan": plan, "error": error, "summary": line}, sort_keys=True)
