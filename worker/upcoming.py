"""The `policy.upcoming` warning: plan a scheduled policy now, with no window (reads only: the registry's API
and, with filesystem access, a listing of its stored revisions), and queue the signed webhook deliveries.

No lease is taken and nothing is fenced or changed, so a warning never waits for, or delays, a window. The
run at the due time plans again on the registry as it is then."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import redis

from janitor import errors
from janitor.config.settings import Settings
from janitor.jobs.records import QUEUED, RUNNING, JobStore, Keys, now
from janitor.planning import policy_plan, upcoming
from janitor.planning.policies import PolicyStore
from janitor.planning.protections import ProtectionStore
from janitor.planning.pulls import PullBook
from janitor.registry.client import RegistryClient
from janitor.registry.container import RegistryContainer
from janitor.storage.contents import ContentCache
from janitor.window import preflight
from worker.webhooks import enqueuer

log = logging.getLogger("worker.upcoming")
LATER = "later"  # warn() could not warn yet: the policy's previous run has not ended
RETRY_SECONDS = 2


def plan(settings: Settings, conn: redis.Redis, policy: dict[str, Any]) -> dict[str, Any]:
    """The policy's plan on the registry as it is now, read the way a dry run reads it, outside any window.
    Without storage access (or the container unreachable) the stored revisions are not read: the plan
    then has no `bytes` and no untagged manifests."""
    keys = Keys.of(settings)
    client = RegistryClient.from_settings(settings)
    stored: Callable[[], tuple[float, dict[str, dict[str, float]]]] | None = None
    try:
        container = RegistryContainer(settings.registry_container, docker_host=settings.docker_host)
        store = preflight.inspect(container, s3=settings.s3).store
        if store is not None:  # read by the snapshot, first; through the Storage interface, whatever the driver
            stored = store.revision_times
    except (errors.JanitorError, OSError) as exc:
        log.warning("warning for policy %s planned without storage: %s", policy["name"], getattr(exc, "message", exc))
    times = policy_plan.CreationTimes(client, settings.policy_read_concurrency, conn, keys.prefix)
    with policy_plan.PolicyReader(client, {}, settings.policy_read_concurrency, times,
                                  contents=ContentCache(conn, keys.prefix)) as reader:
        snap = policy_plan.read(reader, policy, stored)
        # What the run would keep at its due time as things stand: protection rules and pull times included.
        rules = ProtectionStore(conn, keys, settings.protections_file).all()
        pulled, heard_since = policy_plan.read_pulls(PullBook(conn, keys.prefix), policy, snap)
        planned = policy_plan.plan(snap, policy, datetime.now(timezone.utc), times, settings.untagged_min_age,
                                   protections=rules, pulled=pulled, pulls_heard_since=heard_since)
    return planned.as_dict()


def warn(settings: Settings, conn: redis.Redis, name: str, due_at: str) -> str | None:
    """Send policy `name`'s warning for its run due at `due_at`, once. Nothing is sent when the policy is
    gone, paused, no longer warns, or is now due at another time (a warning scheduled before it changed).
    While the policy's previous run is still queued or running (its warning falls due right after it), the
    answer is LATER: the plan then would count what that run is about to delete. Returns the summary sent,
    LATER, or None."""
    keys = Keys.of(settings)
    store = PolicyStore(conn, keys, settings.policies_file)
    due = datetime.fromisoformat(due_at.replace("Z", "+00:00"))
    try:
        policy = store.get(name)
    except errors.PolicyNotFound:
        return None
    if not policy.get("schedule") or not policy.get("enabled") or not policy.get("notify_before"):
        return None
    if store.state(name).get("next_run") != upcoming.iso(due):
        log.info("warning for policy %s at %s dropped: its next run is now %s", name, due_at,
                 store.state(name).get("next_run"))
        return None
    if upcoming.sent(conn, keys.prefix, name, due):
        return None
    jobs = JobStore(conn, settings.job_ttl, keys)
    last_id = store.state(name).get("last_run")
    last = jobs.get(last_id) if last_id else None
    if last and last["status"] in (QUEUED, RUNNING) and datetime.now(timezone.utc) < due:
        return LATER
    found: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    try:
        found = plan(settings, conn, policy)
    except errors.JanitorError as exc:
        error = {"code": exc.code, "message": exc.message}
    if not upcoming.claim(conn, keys.prefix, name, due, policy["notify_before"]):
        return None  # another worker sent it meanwhile
    line = upcoming.summary(name, due, datetime.now(timezone.utc), found, error)
    definition = {k: v for k, v in policy.items() if k != "source"}
    raw = upcoming.body(settings.name, definition, due, found, line, error)
    record = upcoming.record_id(name, due)
    send = enqueuer(conn, settings)
    ids = []
    for url in settings.webhook_urls:
        delivery_id = uuid.uuid4().hex
        jobs.record_webhook(record, delivery_id, {
            "url": url, "event": upcoming.EVENT, "delivery_id": delivery_id, "state": "queued", "attempts": 0,
            "last_status": None, "last_error": None, "queued_at": now(), "updated_at": now()})
        ids.append((delivery_id, url))
    for delivery_id, url in ids:
        send(record, delivery_id, url, upcoming.EVENT, raw)
    store.set_upcoming(name, {"due_at": upcoming.iso(due), "sent_at": now(), "summary": line,
                              "webhooks_id": record})
    log.info("%s", line)
    return line

