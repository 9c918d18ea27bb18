"""Webhook deliveries on their own RQ queue, with RQ's Retry and backoff, served by a worker process of their
own (started by `python -m worker`), so a slow or dead receiver never delays a window."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

import redis
import requests
from rq import Queue, Retry, get_current_job

from janitor import logs
from janitor.config import registries
from janitor.config.settings import Settings
from janitor.jobs import webhooks
from janitor.jobs.records import JobStore, Keys, now
from worker.rqworkers import SimpleWorker

log = logging.getLogger("worker.webhooks")
DELIVER = "worker.webhooks.deliver"


def enqueuer(conn: redis.Redis, settings: Settings) -> webhooks.Enqueue:
    """The function that puts one delivery on the webhook queue; used by the worker and the API alike."""
    queue = Queue(Keys.of(settings).webhook_queue, connection=conn)
    intervals = list(settings.webhook_retry_intervals)

    def enqueue(job_id: str, delivery_id: str, url: str, event: str, raw: str) -> None:
        queue.enqueue(DELIVER, settings.name, job_id, delivery_id, url, event, raw,
                      retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
                      job_timeout=int(settings.webhook_timeout) + 30, result_ttl=3600, failure_ttl=24 * 3600,
                      description=f"{event} -> {url}")
    return enqueue


class DeliveryFailed(Exception):
    """The receiver did not answer 2xx: RQ retries the delivery after the next interval."""


def deliver(registry: str, job_id: str, delivery_id: str, url: str, event: str, raw: str) -> int:
    """One attempt. Records it on the job, then raises on anything but 2xx so RQ's Retry applies."""
    found = registries.load(Settings.from_env()).find(registry)
    if found is None:
        raise ValueError(f"this worker does not know a registry named {registry!r}")
    settings = found  # its own secret and timeout
    conn = redis.Redis.from_url(settings.redis_url)
    store = JobStore(conn, settings.job_ttl, Keys.of(settings))
    record: dict[str, Any] = store.webhook(job_id, delivery_id) or {
        "url": url, "event": event, "delivery_id": delivery_id, "attempts": 0, "queued_at": now()}
    status: int | None = None
    error: str | None = None
    try:
        status = webhooks.send(url, event, delivery_id, raw, settings.webhook_secret, settings.webhook_timeout)
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: no answer"
    current = get_current_job()
    retries_left = current.retries_left if current and current.retries_left is not None else 0
    record.update(attempts=int(record.get("attempts", 0)) + 1, last_status=status, last_error=error,
                  updated_at=now(), state="delivered" if error is None else ("retrying" if retries_left else "failed"))
    store.record_webhook(job_id, delivery_id, record)
    if error:
        log.warning("webhook %s %s to %s: attempt %d failed (%s)", event, delivery_id, url, record["attempts"], error)
        raise DeliveryFailed(error)
    return status or 0


def serve(settings: Settings, served: list[Settings] | None = None) -> None:
    """The webhook queues' own worker (with RQ's scheduler, which brings retries back when they are due), for
    every registry `python -m worker` serves. It stops when its parent is gone."""
    conn = redis.Redis.from_url(settings.redis_url)
    parent = os.getppid()

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)
    threading.Thread(target=orphaned, name="parent-watch", daemon=True).start()
    queues = [Queue(Keys.of(s).webhook_queue, connection=conn) for s in served or [settings]]
    SimpleWorker(queues, connection=conn).work(with_scheduler=True)


def start_process(names: list[str] | None = None) -> BaseProcess:
    """`names`: the registries whose deliveries this process sends (default: WORKER_REGISTRIES, else all).
    Forked from the worker, which has imported all it needs: a new interpreter would import it all again
    (about 0.2 s of CPU). Start it before any thread or signal handler of the worker's own."""
    proc = multiprocessing.get_context("fork").Process(target=main, args=(names or [],), name="webhooks")
    proc.start()
    return proc


def stop_process(proc: BaseProcess, timeout: float = 15.0) -> None:
    """Stop the deliveries process and wait for it: the worker must not exit (and let whoever started it stop
    Redis) while that process still talks to Redis. A delivery in progress finishes first (RQ's warm shutdown)."""
    if proc.is_alive():
        proc.terminate()
    proc.join(timeout)
    if proc.exitcode is None:
        log.warning("the webhook deliveries process did not stop within %.0fs; killing it", timeout)
        proc.kill()
        proc.join()


def main(names: list[str] | None = None) -> None:
    """`python -m worker.webhooks [name ...]`, or forked by the worker with the names it serves."""
    settings = Settings.from_env()
    logs.configure(settings.log_format)  # the same format as the worker that started this process
    known = registries.load(settings)
    serve(settings, known.select(sys.argv[1:] if names is None else names))


if __name__ == "__main__":
    main()
