"""RQ job functions: plain, importable, taking only primitives. The API enqueues them by dotted name."""

from __future__ import annotations

import redis

from janitor.settings import Settings
from worker import schedules, window
from worker.context import Context


def run_window(registry: str) -> None:
    """Run every request waiting for `registry` in one maintenance window."""
    settings = Settings.from_env()
    if registry != settings.registry_host:
        raise ValueError(f"this worker maintains {settings.registry_host}, not {registry}")
    window.run(Context.build(settings))


def policy_tick(registry: str) -> list[str]:
    """Fire the retention policies due now (scheduled by RQ's enqueue_at); returns the job ids it queued."""
    settings = Settings.from_env()
    if registry != settings.registry_host:
        raise ValueError(f"this worker maintains {settings.registry_host}, not {registry}")
    return schedules.tick(settings, redis.Redis.from_url(settings.redis_url))
