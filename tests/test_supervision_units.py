"""The waiting-requests list and its flag on a real Redis: nothing claimed is lost, no flag stays forever."""

from __future__ import annotations

import redis

from janitor.jobs import pending
from janitor.jobs.records import JobStore, Keys


def test_the_scheduled_flag_expires_and_a_failed_schedule_clears_it(redis_conn: redis.Redis) -> None:
    keys = Keys("unit-flag")
    calls: list[int] = []
    pending.submit(redis_conn, keys, "a", lambda: calls.append(1))
    pending.submit(redis_conn, keys, "b", lambda: calls.append(2))
    assert calls == [1]  # one window for both
    assert 0 < redis_conn.ttl(keys.scheduled) <= pending.SCHEDULED_TTL

    def broken() -> None:
        raise RuntimeError("queue unreachable")
    redis_conn.delete(keys.scheduled)
    try:
        pending.submit(redis_conn, keys, "c", broken)
    except RuntimeError:
        pass
    assert not redis_conn.exists(keys.scheduled)  # the next request schedules again


def test_peek_then_remove_loses_nothing_and_keeps_later_requests(redis_conn: redis.Redis) -> None:
    keys = Keys("unit-claim")
    store = JobStore(redis_conn, 60, keys)
    jobs = [store.create("gc", {}) for _ in range(3)]
    pending.submit_many(redis_conn, keys, [j["id"] for j in jobs[:2]], lambda: None)
    ids = pending.peek(redis_conn, keys)
    assert ids == [jobs[0]["id"], jobs[1]["id"]] and not redis_conn.exists(keys.scheduled)
    assert pending.waiting(redis_conn, keys) == 2  # still listed until the window has marked them running
    claimed = store.claim(ids)
    pending.submit(redis_conn, keys, jobs[2]["id"], lambda: None)  # arrives meanwhile
    pending.remove(redis_conn, keys, ids)
    assert [j["id"] for j in claimed] == ids
    assert pending.peek(redis_conn, keys) == [jobs[2]["id"]]
    # A window killed between claim and remove: the next claim skips what is no longer queued.
    assert store.claim(ids) == []


def test_reschedule_gives_waiting_requests_a_window_only_when_some_wait(redis_conn: redis.Redis) -> None:
    keys = Keys("unit-resched")
    calls: list[int] = []
    assert not pending.reschedule(redis_conn, keys, lambda: calls.append(1))
    redis_conn.rpush(keys.pending, "x")
    assert pending.reschedule(redis_conn, keys, lambda: calls.append(1))
    assert calls == [1] and 0 < redis_conn.ttl(keys.scheduled) <= pending.SCHEDULED_TTL
