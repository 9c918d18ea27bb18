"""The maintenance lock: a lease with a fencing token, one window per registry.

The lease lives in Redis for `ttl` seconds unless renewed; a worker killed with -9 stops renewing and the
lease frees itself. Each acquisition takes the next number of a counter kept next to the lock (INCR), so a
later owner always holds a larger fencing token than an earlier one. The fence marker and the holds record
name that token, so a window can tell its own changes from another's.

Renewal rides out short Redis outages: a failed renewal is retried until the lease would have expired
(judged on this machine's monotonic clock, from the last successful renewal). Only then, or when Redis
says the lease belongs to someone else, is the lease lost, and it stays lost.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import redis

from janitor import errors

log = logging.getLogger(__name__)

# KEYS: lock, counter. ARGV: owner id, ttl ms. Returns the fencing number, or nil when the lock is taken.
# A lease already this owner's (its reply was lost to a timeout, or the owner gave it up for lost while
# Redis still kept it) is taken as it is: nobody else can have held it in between.
_ACQUIRE = """
local held = redis.call('get', KEYS[1])
if held then
  local n, owner = string.match(held, '^(%d+):(.+)$')
  if owner == ARGV[1] then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return tonumber(n)
  end
  return nil
end
local n = redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], n .. ':' .. ARGV[1], 'PX', ARGV[2])
return n
"""
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# Renewal stops this long before the lease would expire, so a paused clock cannot make it overlap.
SAFETY_MARGIN = 0.1


def token_number(token: str | None) -> int | None:
    """The fencing number in a token `<n>:<id>`, or None for anything else."""
    if not token:
        return None
    head, _, rest = token.partition(":")
    return int(head) if head.isdigit() and rest else None


class MaintenanceLock:
    """A lease: acquire, keep renewed in a thread, check before every change, release."""

    def __init__(self, conn: redis.Redis, key: str, ttl: float) -> None:
        self.conn = conn
        self.key = key
        self.counter_key = key + ":fencing"
        self.ttl = ttl
        self.ttl_ms = int(ttl * 1000)
        self.owner_id = uuid.uuid4().hex
        self.token = ""  # "<fencing number>:<owner id>" once acquired: the value stored in the lock
        self.fencing = 0
        self.lost = threading.Event()
        self._valid_until = 0.0  # monotonic: the lease cannot outlive this without a renewal
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -- taking and giving back ----------------------------------------------------------------

    def acquire(self, wait: float, poll: float = 0.2) -> bool:
        """Take the lease within `wait` seconds; Redis errors count as "not yet" until the wait is over."""
        deadline = time.monotonic() + wait
        warned = False
        while True:
            started = time.monotonic()
            try:
                number = self.conn.eval(_ACQUIRE, 2, self.key, self.counter_key, self.owner_id, self.ttl_ms)
            except redis.RedisError as exc:
                if not warned:
                    log.warning("cannot reach Redis for the maintenance lock (%s); retrying", exc)
                    warned = True
                number = None
            if number is not None:
                self.fencing = int(number)
                self.token = f"{self.fencing}:{self.owner_id}"
                self._valid_until = started + self.ttl - SAFETY_MARGIN
                self.lost.clear()
                self._start_renewal()
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def release(self) -> None:
        self._stop.set()
        if self._renewer and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=5)
        if not self.token:
            return
        try:
            self.conn.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError:
            pass  # it expires on its own

    # -- keeping it ---------------------------------------------------------------------------------

    def renew(self) -> bool:
        """One renewal attempt. False when it failed; the lease is lost only once it cannot be valid any more
        (past its TTL) or Redis names another owner."""
        if self.lost.is_set():
            return False
        started = time.monotonic()
        try:
            ok = bool(self.conn.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))
        except redis.RedisError as exc:
            if time.monotonic() >= self._valid_until:
                self._lose(f"Redis unreachable past the lease's TTL ({exc})")
            return False
        if ok and started < self._valid_until:
            self._valid_until = started + self.ttl - SAFETY_MARGIN
            return True
        self._lose("the lease expired or another owner holds it")
        return False

    def valid(self) -> bool:
        """What this process can tell without Redis: not lost, and renewed within the TTL."""
        if not self.lost.is_set() and time.monotonic() >= self._valid_until:
            self._lose("no renewal within the lease's TTL")
        return not self.lost.is_set()

    def owned(self) -> bool:
        """Ask Redis, not memory: a change must never start on a lease that quietly expired. The answer is
        a renewal, so a True comes with a full TTL of exclusivity for the change that follows. While Redis
        is away, keep asking until the lease would have expired."""
        while self.valid():
            if self.renew():
                return True
            if not self.lost.is_set():
                time.sleep(0.2)
        return False

    def check(self, action: str) -> None:
        """Raise LockLost unless this lease is still owned: called before every change to the registry."""
        if not self.owned():
            raise errors.LockLost(f"the maintenance lock was lost before {action}; {action} did not happen",
                                  lease=self.fencing)

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            log.error("maintenance lease %s lost: %s", self.token, why)
        self.lost.set()

    def _start_renewal(self) -> None:
        self._stop.clear()
        interval = self.ttl / 3

        def loop() -> None:
            wait = interval
            while not self._stop.wait(wait):
                if self.renew():
                    wait = interval
                elif self.lost.is_set():
                    return
                else:
                    wait = min(0.25, interval)  # Redis is away: try again soon, within the TTL

        self._renewer = threading.Thread(target=loop, name="lock-renewal", daemon=True)
        self._renewer.start()

    def holder(self) -> str | None:
        """Who holds the lock now (its token), None when nobody does; raises RedisError when unreachable."""
        raw = self.conn.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw
