"""The API's side of webhooks: events the API itself causes (rejected, cancelled, expired on a late
approval) go on the same delivery queue as the worker's, by dotted name (the API never imports the worker)."""

from __future__ import annotations

import logging
from typing import Any

from rq import Queue, Retry

from janitor.jobs import webhooks
from service.state import State

log = logging.getLogger(__name__)
DELIVER = "worker.webhooks.deliver"


def announce(st: State, job: dict[str, Any]) -> None:
    """Best effort: the change is already recorded; a delivery that cannot be queued is logged."""
    queue = Queue(st.keys.webhook_queue, connection=st.conn)
    intervals = list(st.settings.webhook_retry_intervals)

    def enqueue(job_id: str, delivery_id: str, url: str, event: str, raw: str) -> None:
        queue.enqueue(DELIVER, st.settings.name, job_id, delivery_id, url, event, raw,
                      retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
                      job_timeout=int(st.settings.webhook_timeout) + 30, result_ttl=3600, failure_ttl=24 * 3600,
                      description=f"{event} -> {url}")
    try:
        webhooks.announce(st.store, st.settings.webhook_urls, job, enqueue)
    except Exception:  # noqa: BLE001
        log.exception("could not queue webhooks for job %s", job.get("id"))
