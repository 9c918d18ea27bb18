"""The maintenance lock: one window per registry, owned by a token, expiring unless renewed.

A worker killed with -9 stops renewing, so the lock frees itself after its TTL.
"""

from __future__ import annotations

import threading
import time
import uuid

import redis

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class MaintenanceLock:
    def __init__(self, conn: redis.Redis, key: str, ttl: float) -> None:
        self.conn = conn
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        self.token = uuid.uuid4().hex
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self, wait: float, poll: float = 0.2) -> bool:
        deadline = time.monotonic() + wait
        while True:
            if self.conn.set(self.key, self.token, nx=True, px=self.ttl_ms):
                self.lost.clear()
                self._start_renewal()
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def owned(self) -> bool:
        """Ask Redis, not memory: GC must never start on a lock that quietly expired."""
        try:
            return self.conn.get(self.key) == self.token.encode() and not self.lost.is_set()
        except redis.RedisError:
            return False

    def renew(self) -> bool:
        try:
            ok = bool(self.conn.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))
        except redis.RedisError:
            ok = False
        if not ok:
            self.lost.set()
        return ok

    def release(self) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join(timeout=5)
        try:
            self.conn.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError:
            pass  # it expires on its own

    def _start_renewal(self) -> None:
        self._stop.clear()
        interval = self.ttl_ms / 3000

        def loop() -> None:
            while not self._stop.wait(interval):
                if not self.renew():
                    return

        self._renewer = threading.Thread(target=loop, name="lock-renewal", daemon=True)
        self._renewer.start()
