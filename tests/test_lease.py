"""The maintenance lease against a real redis-server: fencing tokens, renewal through short outages, loss
past the TTL, and the holds record read back like any other input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

from janitor import errors
from janitor.window import fence, holds
from janitor.window.lease import MaintenanceLock, token_number
from tests.conftest import free_port, pings
from tests.images import wait_until

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def own_redis() -> Iterator[tuple[subprocess.Popen, str]]:
    """A redis-server this test may pause and restart."""
    port, workdir = free_port(), tempfile.mkdtemp(prefix="rj-lease-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    assert wait_until(lambda: pings(redis.Redis.from_url(url)), 20)
    yield proc, url
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def _conn(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=0.3, socket_connect_timeout=0.3)


def test_each_acquisition_gets_a_larger_fencing_token(redis_conn: redis.Redis) -> None:
    a = MaintenanceLock(redis_conn, "janitor:t:lock", ttl=5)
    b = MaintenanceLock(redis_conn, "janitor:t:lock", ttl=5)
    assert a.acquire(0) and token_number(a.token) == a.fencing
    assert redis_conn.get("janitor:t:lock") == a.token.encode()
    assert not b.acquire(0.3)  # taken: polling for it does not move the counter
    a.release()
    assert b.acquire(0) and b.fencing == a.fencing + 1
    b.release()
    assert redis_conn.get("janitor:t:lock") is None
    assert token_number("thief") is None and token_number("12:abc") == 12


def test_renewal_rides_out_a_short_redis_pause(own_redis: tuple[subprocess.Popen, str]) -> None:
    proc, url = own_redis
    lease = MaintenanceLock(_conn(url), "janitor:t:lock", ttl=3)
    assert lease.acquire(0)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGSTOP)  # renewals time out for a while ...
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGCONT)  # ... but Redis is back before the lease could have expired
    time.sleep(3.5)  # longer than the TTL: only renewals after the pause keep it
    assert not lease.lost.is_set() and lease.owned()
    lease.check("GC")
    lease.release()


def test_owned_waits_for_redis_within_the_ttl(own_redis: tuple[subprocess.Popen, str]) -> None:
    proc, url = own_redis
    lease = MaintenanceLock(_conn(url), "janitor:t:lock", ttl=4)
    assert lease.acquire(0)
    os.kill(proc.pid, signal.SIGSTOP)
    subprocess.Popen(["sh", "-c", f"sleep 1; kill -CONT {proc.pid}"])
    started = time.monotonic()
    assert lease.owned()  # asked while Redis was paused: the answer waited for it, not "lost"
    assert 0.5 < time.monotonic() - started < 3.5
    lease.release()


def test_paused_past_the_ttl_the_lease_is_lost_for_good(own_redis: tuple[subprocess.Popen, str]) -> None:
    proc, url = own_redis
    a = MaintenanceLock(_conn(url), "janitor:t:lock", ttl=1.5)
    b = MaintenanceLock(_conn(url), "janitor:t:lock", ttl=5)
    assert a.acquire(0)
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(2.5)  # past the TTL: the key expires as soon as Redis runs again
    assert not a.owned()  # decided without Redis: renewal is impossible past the TTL
    with pytest.raises(errors.LockLost):
        a.check("GC")
    os.kill(proc.pid, signal.SIGCONT)
    assert b.acquire(5) and b.fencing > a.fencing
    assert not a.renew() and not a.owned()  # lost stays lost, even with Redis back
    a.release()
    assert _conn(url).get("janitor:t:lock") == b.token.encode()  # never frees the new owner's lease
    b.release()


def test_a_lease_taken_over_is_lost_at_the_next_renewal(redis_conn: redis.Redis) -> None:
    a = MaintenanceLock(redis_conn, "janitor:t:lock", ttl=0.9)
    assert a.acquire(0)
    redis_conn.set("janitor:t:lock", "99:someone-else", px=5000)
    assert wait_until(lambda: a.lost.is_set(), 3)  # the renewal thread noticed
    with pytest.raises(errors.LockLost):
        a.check("placing holds")
    a.release()
    assert redis_conn.get("janitor:t:lock") == b"99:someone-else"


def test_holds_record_round_trip_and_owner() -> None:
    h = holds.Hold("team/app", DIGEST, ("sha256:" + "cd" * 32,))
    record = holds.decode_record(holds.encode_record("window-x/lease-3", [h]))
    assert record.owner == "window-x/lease-3" and record.rejected == ()
    assert record.holds == (holds.Hold("team/app", DIGEST, ()),)
    older = holds.decode_record(json.dumps([{"repository": "team/app", "digest": DIGEST}]).encode())
    assert older.owner == "" and len(older.holds) == 1


@pytest.mark.parametrize("raw,reason", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'{"owner": 3, "holds": []}', "not a holds record"),
    (b'"a string"', "not a holds record"),
    (b'{"owner": "w", "holds": {"repository": "a"}}', "not a holds record"),
])
def test_a_bad_holds_record_is_refused_whole(raw: bytes, reason: str) -> None:
    record = holds.decode_record(raw)
    assert record.holds == () and reason in record.rejected[0]


def test_bad_holds_entries_are_refused_and_the_good_ones_kept() -> None:
    entries = [
        {"repository": "team/app", "digest": DIGEST},
        {"repository": "../../etc", "digest": DIGEST},
        {"repository": "team/app", "digest": "sha256:../../x"},
        {"repository": "Team/App", "digest": DIGEST},
        {"repository": "team/app", "digest": DIGEST, "extra": 1},
        ["team/app", DIGEST],
        {"repository": 5, "digest": DIGEST},
    ]
    record = holds.decode_record(json.dumps({"owner": "window-a/lease-1", "holds": entries}).encode())
    assert record.holds == (holds.Hold("team/app", DIGEST, ()),)
    assert len(record.rejected) == 6 and "../../etc" in record.rejected[0]


def test_fence_marker_names_its_owner() -> None:
    fenced = fence.readonly_config(b"version: 0.1\n", "/etc/c.yml.janitor-original", "window-ab/lease-7")
    assert fence.marker_owner(fenced) == "window-ab/lease-7"
    assert fence.marker_owner(fence.readonly_config(b"version: 0.1\n", "/b")) == ""
    old = b"# registry-janitor: read-only for maintenance; the original is in /etc/x\nversion: 0.1\n"
    assert fence.marker_owner(old) == ""  # a fence set by an older version is still recognised
    assert fence.marker_owner(b"version: 0.1\n") is None


def test_a_lease_whose_reply_was_lost_is_taken_as_it_is(redis_conn: redis.Redis) -> None:
    a = MaintenanceLock(redis_conn, "janitor:t:lock", ttl=5)
    # As if the acquisition ran in Redis but its reply timed out: the lock already names this owner.
    redis_conn.set("janitor:t:lock", f"41:{a.owner_id}", px=5000)
    assert a.acquire(0) and a.fencing == 41 and a.token == f"41:{a.owner_id}"
    assert redis_conn.pttl("janitor:t:lock") > 4000
    other = MaintenanceLock(redis_conn, "janitor:t:lock", ttl=5)
    assert not other.acquire(0)
    a.release()
    assert redis_conn.get("janitor:t:lock") is None


def test_window_limits_are_settings() -> None:
    from janitor.config.settings import Settings
    s = Settings.from_env({"JANITOR_MAX_WINDOW": "600", "JANITOR_GC_TIMEOUT": "120"})
    assert s.max_window == 600.0 and s.gc_timeout == 120.0
    d = Settings.from_env({})
    assert d.max_window == 4 * 3600.0 and d.gc_timeout == 2 * 3600.0
