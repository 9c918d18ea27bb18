"""The queue of requests waiting for a maintenance window, shared by the API (which adds) and the worker
(which claims). Requests that arrive while a window is queued or running join the next one, so N requests
cost one GC and one restart.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from janitor.jobs.records import Keys


def submit(conn: redis.Redis, keys: Keys, job_id: str, schedule: Callable[[], object]) -> None:
    """Queue a job for the next window; schedule a window only when none is already waiting to start."""
    submit_many(conn, keys, [job_id], schedule)


def claim(conn: redis.Redis, keys: Keys) -> list[str]:
    """Take every waiting job for the window that is starting. The flag goes first: a request that comes
    after it schedules a window of its own, one that comes before it is taken here."""
    conn.delete(keys.scheduled)
    with conn.pipeline(transaction=True) as pipe:
        pipe.lrange(keys.pending, 0, -1)
        pipe.delete(keys.pending)
        ids, _ = pipe.execute()
    return [i.decode() if isinstance(i, bytes) else i for i in ids]


def waiting(conn: redis.Redis, keys: Keys) -> int:
    return int(conn.llen(keys.pending))


def submit_many(conn: redis.Redis, keys: Keys, job_ids: list[str], schedule: Callable[[], object]) -> None:
    """Queue several jobs at once, so a window that starts meanwhile takes all of them or none."""
    if not job_ids:
        return
    conn.rpush(keys.pending, *job_ids)
    if conn.set(keys.scheduled, "1", nx=True):
        try:
            schedule()
        except Exception:
            conn.delete(keys.scheduled)
            raise
