"""RQ job functions: plain, importable, taking only primitives. The API enqueues them by dotted name."""

from __future__ import annotations

from datetime import timedelta

import redis
from rq import Queue

from janitor.config import registries
from janitor.config.settings import Settings
from janitor.jobs.records import Keys
from worker import schedules, upcoming, window
from worker.context import Context


def settings_of(registry: str) -> Settings:
    """The settings of the registry named `registry` (REGISTRIES_FILE, or the one of REGISTRY_URL).
    A job for a registry this deployment does not know fails instead of touching another registry."""
    found = registries.load(Settings.from_env()).find(registry)
    if found is None:
        raise ValueError(f"this worker does not know a registry named {registry!r}")
    return found


def run_window(registry: str) -> None:
    """Run every request waiting for `registry` in one maintenance window."""
    window.run(Context.build(settings_of(registry)))


def policy_tick(registry: str) -> list[str]:
    """Fire the retention policies due now (scheduled by RQ's enqueue_at); returns the job ids it queued."""
    settings = settings_of(registry)
    return schedules.tick(settings, redis.Redis.from_url(settings.redis_url))


def policy_upcoming(registry: str, name: str, due_at: str) -> str | None:
    """Warn before policy `name`'s run due at `due_at` (`notify_before`): plan it now, with no window, and send
    `policy.upcoming`. Returns the summary sent, or None when there was nothing to send."""
    settings = settings_of(registry)
    conn = redis.Redis.from_url(settings.redis_url)
    sent = upcoming.warn(settings, conn, name, due_at)
    if sent == upcoming.LATER:  # the policy's previous run has not ended: look again shortly
        Queue(Keys.of(settings).queue_name, connection=conn).enqueue_in(
            timedelta(seconds=upcoming.RETRY_SECONDS), policy_upcoming, registry, name, due_at,
            job_timeout=900, result_ttl=600, failure_ttl=7 * 24 * 3600)
        return None
    return sent
