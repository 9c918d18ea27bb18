"""The queue of requests waiting for a maintenance window, shared by the API (which adds) and the worker
(which claims). Requests that arrive while a window is queued or running join the next one, so N requests
cost one GC and one restart.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from janitor.jobs.records import Keys

# The "a window is queued" flag expires on its own: a window that never starts (its job lost, its process
# killed before it claimed) must not keep every later request from scheduling one. A second window queued
# after the flag expired only finds nothing left to claim.
SCHEDULED_TTL = 300


def submit(conn: redis.Redis, keys: Keys, job_id: str, schedule: Callable[[], object]) -> None:
    """Queue a job for the next window; schedule a window only when none is already waiting to start."""
    submit_many(conn, keys, [job_id], schedule)


def claim(conn: redis.Redis, keys: Keys) -> list[str]:
    """Take every waiting job for the window that is starting. The flag goes first: a request that comes
    after it schedules a window of its own, one that comes before it is taken here."""
    ids = peek(conn, keys)
    remove(conn, keys, ids)
    return ids


def peek(conn: redis.Redis, keys: Keys) -> list[str]:
    """The waiting jobs, left in the list: a window marks them running first and `remove`s them after, so a
    window killed in between loses none (the next claim skips what is no longer queued). The flag goes
    first: a request that comes after it schedules a window of its own, one that comes before it is seen."""
    conn.delete(keys.scheduled)
    return [i.decode() if isinstance(i, bytes) else i for i in conn.lrange(keys.pending, 0, -1)]


def remove(conn: redis.Redis, keys: Keys, ids: list[str]) -> None:
    """Drop exactly these ids (requests queued meanwhile stay for the next window)."""
    if not ids:
        return
    with conn.pipeline(transaction=True) as pipe:
        for job_id in ids:
            pipe.lrem(keys.pending, 1, job_id)
        pipe.execute()


def reschedule(conn: redis.Redis, keys: Keys, schedule: Callable[[], object]) -> bool:
    """Give the waiting requests a window when nothing else will (a window that died, a lost queue entry).
    True when one was scheduled."""
    if not waiting(conn, keys):
        return False
    conn.set(keys.scheduled, "1", ex=SCHEDULED_TTL)
    try:
        schedule()
    except Exception:
        conn.delete(keys.scheduled)
        raise
    return True


def waiting(conn: redis.Redis, keys: Keys) -> int:
    return int(conn.llen(keys.pending))


def submit_many(conn: redis.Redis, keys: Keys, job_ids: list[str], schedule: Callable[[], object]) -> None:
    """Queue several jobs at once, so a window that starts meanwhile takes all of them or none."""
    if not job_ids:
        return
    conn.rpush(keys.pending, *job_ids)
    if conn.set(keys.scheduled, "1", nx=True, ex=SCHEDULED_TTL):
        try:
            schedule()
        except Exception:
            conn.delete(keys.scheduled)
            raise
