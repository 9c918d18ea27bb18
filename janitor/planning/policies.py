"""Retention policies: their definition and validation, where they are kept (Redis, or read-only in
POLICIES_FILE), their schedule state, and how a run is recorded and queued for a window.

One validator serves the API and the file, so a policy means the same wherever it was written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import redis

from janitor import errors
from janitor.config.settings import restore_window
from janitor.jobs import pending, webhooks
from janitor.jobs.records import SUCCEEDED, JobStore, Keys, now
from janitor.planning import approval, named, retention

FIELDS = ("name", "repositories", "keep_last", "older_than", "delete_tags", "keep_tags", "keep_pulled_within",
          "keep_last_pulled", "untagged", "schedule", "enabled", "approval", "notify_before", "restore_window")
NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
NAME_MAX = 63
MAX_REPOSITORY_GLOBS = 100
MAX_KEEP_LAST = 100_000
# The worker's job that fires the policies due at one moment, by dotted name (the API never imports it).
TICK_JOB = "worker.jobs.policy_tick"
FIRED_TTL = 7 * 24 * 3600


def _text(value: bytes | str) -> str:
    """redis-py answers bytes unless told to decode."""
    return value.decode() if isinstance(value, bytes) else value


def is_name(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= NAME_MAX and NAME_RE.match(value) is not None


def validate(data: Any, name: str | None = None) -> dict[str, Any]:
    """A policy with every field present (defaults filled in), or InvalidPolicy with each bad field and what
    is wrong with it. `name`, when given, is the name from the path: a body may repeat it but not change it."""
    if not isinstance(data, dict):
        raise errors.InvalidPolicy("a policy is a JSON object", _schema=["a policy is an object of fields"])
    problems = named.check_name_and_repositories(data, name, FIELDS, "policy", is_name, MAX_REPOSITORY_GLOBS)

    given, repos = data.get("name", name), data.get("repositories")

    def bad(field: str, message: str) -> None:
        problems.setdefault(field, []).append(message)

    for field in ("keep_last", "keep_last_pulled"):
        count = data.get(field)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or not 0 <= count <= MAX_KEEP_LAST):
            bad(field, f"a whole number from 0 to {MAX_KEEP_LAST}")
    keep_last = data.get("keep_last")
    for field, check in (("older_than", retention.parse_duration),
                         ("keep_pulled_within", retention.parse_duration), ("delete_tags", retention.compile_regex),
                         ("keep_tags", retention.compile_regex), ("schedule", retention.check_schedule)):
        value = data.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            bad(field, "must be a string")
            continue
        try:
            check(value)
        except retention.RuleError as exc:
            bad(field, str(exc))
    for field in ("untagged", "enabled"):
        if field in data and not isinstance(data[field], bool):
            bad(field, "must be true or false")
    if data.get("restore_window") is not None:
        try:
            restore_window(data["restore_window"], "restore_window")
            if not isinstance(data["restore_window"], str):
                raise ValueError("restore_window must be a string: 0 (off) or a duration such as 7d")
        except ValueError as exc:
            bad("restore_window", str(exc))
    if data.get("approval") not in (None, approval.REQUIRED):
        bad("approval", f"\"{approval.REQUIRED}\" (its scheduled runs wait for approval) or null")
    if data.get("notify_before") is not None and "notify_before" not in problems and "schedule" not in problems:
        message = check_notify_before(data["notify_before"], data.get("schedule"))
        if message:
            bad("notify_before", message)
    if problems:
        raise errors.InvalidPolicy("the policy is not valid: see details", **problems)
    return {
        "name": given,
        "repositories": list(repos or ()),
        "keep_last": keep_last,
        "older_than": data.get("older_than"),
        "delete_tags": data.get("delete_tags"),
        "keep_tags": data.get("keep_tags"),
        "keep_pulled_within": data.get("keep_pulled_within"),
        "keep_last_pulled": data.get("keep_last_pulled"),
        "untagged": bool(data.get("untagged", False)),
        "schedule": data.get("schedule"),
        "enabled": bool(data.get("enabled", True)),
        "approval": data.get("approval"),
        "notify_before": data.get("notify_before"),
        "restore_window": data.get("restore_window"),
    }


def check_notify_before(value: Any, schedule: Any) -> str | None:
    """What is wrong with `notify_before` given the policy's schedule, or None. The warning is for the next
    scheduled run, so it needs a schedule; with an interval it must come after the run before it."""
    if not isinstance(value, str):
        return "must be a string: a duration such as 24h"
    try:
        before = retention.parse_duration(value)
    except retention.RuleError as exc:
        return str(exc)
    if before <= timedelta(0):
        return "must be a positive duration (e.g. 30m, 24h, 2d)"
    if not schedule:
        return "needs a schedule: the warning is sent that long before the next scheduled run"
    if isinstance(schedule, str) and retention.is_interval(schedule):
        period = retention.parse_duration(schedule)
        if before >= period:
            return (f"must be shorter than the schedule's interval ({schedule}): otherwise the warning would come "
                    "before the previous run")
    return None


def rules(policy: dict[str, Any]) -> retention.Rules:
    return retention.Rules(
        keep_last=policy.get("keep_last"),
        older_than=retention.parse_duration(policy["older_than"]) if policy.get("older_than") else None,
        delete_tags=retention.compile_regex(policy["delete_tags"]) if policy.get("delete_tags") is not None else None,
        keep_tags=retention.compile_regex(policy["keep_tags"]) if policy.get("keep_tags") is not None else None,
        keep_pulled_within=(retention.parse_duration(policy["keep_pulled_within"])
                            if policy.get("keep_pulled_within") else None),
        keep_last_pulled=policy.get("keep_last_pulled"),
    )


def select(policy: dict[str, Any], repositories: list[str]) -> list[str]:
    """The repositories a policy's globs name, in order."""
    globs = [retention.compile_glob(g) for g in policy["repositories"]]
    return sorted(r for r in repositories if any(g.match(r) for g in globs))


def tick_id(registry: str, due: datetime) -> str:
    """One RQ job per registry and moment: every policy due then is fired by it, and scheduling it twice
    (two workers starting, the API and a worker) names the same job."""
    return "janitor-policies-" + re.sub(r"[^A-Za-z0-9]", "-", registry) + f"-{int(due.timestamp())}"


def iso(when: datetime | None) -> str | None:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if when else None


KIND = named.Kind(
    short="policy", noun="policy", plural="policies", file_key="policies", file_variable="POLICIES_FILE",
    path="/v1/policies", validate=validate, invalid=errors.InvalidPolicy, not_found=errors.PolicyNotFound,
    exists=errors.PolicyExists, read_only=errors.PolicyReadOnly, is_name=is_name)


def load_file(path: str) -> dict[str, dict[str, Any]]:
    """Policies in a YAML file: a list of policies, or {"policies": [...]}. Any bad entry refuses the file."""
    return named.load_file(path, KIND)


class PolicyStore(named.NamedStore):
    """API policies in one Redis hash; file policies read (and re-read when the file changes) from disk; and
    each policy's schedule state."""

    def __init__(self, conn: redis.Redis, keys: Keys, policies_file: str | None = None) -> None:
        super().__init__(conn, f"{keys.prefix}:policies", policies_file, KIND)
        self.prefix = keys.prefix

    def _state_key(self, name: str) -> str:
        return f"{self.prefix}:policy-state:{name}"

    def create(self, policy: dict[str, Any]) -> None:
        super().create(policy)
        self.conn.delete(self._state_key(policy["name"]))  # a past policy of that name leaves no schedule behind

    def delete(self, name: str) -> None:
        super().delete(name)
        self.conn.delete(self._state_key(name))

    # -- schedule state ------------------------------------------------------------------------

    def state(self, name: str) -> dict[str, str]:
        return {_text(k): _text(v) for k, v in self.conn.hgetall(self._state_key(name)).items()}

    def set_next(self, name: str, when: datetime | None) -> None:
        if when is None:
            self.conn.hdel(self._state_key(name), "next_run")
        else:
            self.conn.hset(self._state_key(name), "next_run", iso(when))  # type: ignore[arg-type]

    def set_upcoming(self, name: str, warning: dict[str, Any]) -> None:
        """The last `policy.upcoming` warning sent (janitor/planning/upcoming.py), for GET to show."""
        self.conn.hset(self._state_key(name), "upcoming", json.dumps(warning))

    def set_last(self, name: str, job_id: str) -> None:
        self.conn.hset(self._state_key(name), "last_run", job_id)

    def claim(self, name: str, due: datetime) -> bool:
        """True once per policy and due time, however many workers see it due."""
        return bool(self.conn.set(f"{self.prefix}:policy-fired:{name}:{int(due.timestamp())}", "1", nx=True,
                                  ex=FIRED_TTL))

    def reschedule(self, policy: dict[str, Any], schedule: Callable[[datetime], object],
                   after: datetime | None = None,
                   warn: Callable[[dict[str, Any], datetime], object] | None = None) -> datetime | None:
        """Record and schedule the policy's next run after `after` (now), or clear it when paused. `warn`
        schedules its `policy.upcoming` warning (janitor/planning/upcoming.py) when it sets `notify_before`."""
        if not policy.get("schedule") or not policy.get("enabled", True):
            self.set_next(policy["name"], None)
            return None
        when = retention.next_run(policy["schedule"], after or datetime.now(timezone.utc))
        self.set_next(policy["name"], when)
        schedule(when)
        if warn is not None and policy.get("notify_before"):
            warn(policy, when)
        return when

    def view(self, policy: dict[str, Any], jobs: JobStore) -> dict[str, Any]:
        """A policy as GET shows it: its fields, where it comes from, its last and next run."""
        state = self.state(policy["name"])
        last = jobs.get(state["last_run"]) if state.get("last_run") else None
        warning = json.loads(state["upcoming"]) if state.get("upcoming") else None
        if warning:
            hooks = self.conn.hgetall(jobs.keys.webhooks(warning.pop("webhooks_id", "")))
            warning["webhooks"] = sorted((json.loads(v) for v in hooks.values()),
                                         key=lambda d: (d["queued_at"], d["url"]))
        return {
            **policy,
            "last_run": {"job_id": last["id"], "status": last["status"], "at": last["created_at"],
                         "finished_at": last["finished_at"]} if last else None,
            "next_run": state.get("next_run") if policy.get("schedule") and policy.get("enabled") else None,
            "last_upcoming": warning,
        }


def submit_runs(conn: redis.Redis, keys: Keys, jobs: JobStore, store: PolicyStore,
                runs: list[tuple[dict[str, Any], dict[str, Any]]], repositories: list[str] | None,
                schedule_window: Callable[[], object], requested_by: str | None = None,
                require_approval: bool = False) -> list[dict[str, Any]]:
    """Record one `policy` job per (policy, request) and queue them for the same window. A policy whose
    globs name no repository is a successful run that changed nothing: it never waits for a window.
    `repositories` None: the registry could not be listed, so every run goes to the window to be planned.
    A run waits for approval when its request says `"approval": "required"` (a scheduled run of a policy that
    sets it), or `require_approval` (JANITOR_REQUIRE_APPROVAL) and it is real; the window plans it, parks it
    awaiting approval, and once approved carries out no more than was approved."""
    made, queued = [], []
    for policy, request in runs:
        request = dict(request)
        definition = {k: policy.get(k) for k in FIELDS}
        needs = approval.needed(request, require_approval)
        request.pop("approval", None)
        job = jobs.create("policy", {**request, "policy": definition}, requested_by=requested_by,
                          approval=needs, policy=policy["name"])
        if repositories is not None and not select(policy, repositories):
            job.update(status=SUCCEEDED, started_at=now(), finished_at=now(), result={
                "plan": {"repositories": [], "tags": [], "manifests": [], "bytes": 0},
                "planned": {"blobs": 0, "bytes": 0}, "changed": False,
                "note": "the policy's globs name no repository: nothing to do, no window"})
            job["summary"] = webhooks.summary(job)
            jobs.save(job)
        else:
            queued.append(job["id"])
        store.set_last(policy["name"], job["id"])
        made.append(job)
    if queued:
        pending.submit_many(conn, keys, queued, schedule_window)
    return made
