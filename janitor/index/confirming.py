"""Events' claims checked in the background: POST /v1/events answers at once and the registry sends its next
event, while a few threads per process check what the events named (IndexReader.confirm).

Distribution delivers one event per POST, in sequence, per endpoint, so the janitor's answer time caps how
many events a second a registry can send. Checking a claim costs registry requests; queueing it costs a dict
update. Claims on the same repository merge while they wait (one check covers every tag named meanwhile), and
a repository is checked again at most every COOLDOWN seconds, so a burst of pushes costs checks per repository,
not per event, and a push still shows within COOLDOWN plus one check (the test asserts under 2 s).

Merging is safe because a check reads what the registry holds now: a claim is a hint of where to look, and
the order of hints does not matter. Lost on a crash like any in-memory work: the reconcile repairs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

import redis

from janitor import errors
from janitor.index.events import Confirm
from janitor.index.reading import IndexReader

log = logging.getLogger("janitor.index")

WORKERS = 2
COOLDOWN = 0.5  # seconds between two checks of one repository
STARVING = 1.0  # seconds: a repository waiting this long is checked next, however many claims it has
MAX_WAITING = 10_000  # repositories waiting; beyond, the claim is dropped and a reconcile asked for


class ConfirmQueue:
    """Per process: repositories with claims waiting, merged, checked by WORKERS threads made on first use
    (after gunicorn forks)."""

    def __init__(self, workers: int = WORKERS, cooldown: float = COOLDOWN) -> None:
        self.workers = workers
        self.cooldown = cooldown
        self._cond = threading.Condition()
        self._waiting: OrderedDict[tuple[int, str], tuple[IndexReader, Confirm]] = OrderedDict()
        self._busy: set[tuple[int, str]] = set()
        self._last: dict[tuple[int, str], float] = {}  # when each repository's last check began (monotonic)
        self._since: dict[tuple[int, str], float] = {}  # when each waiting repository's first claim came
        self._threads: list[threading.Thread] = []

    def submit(self, index: IndexReader, repo: str, check: Confirm) -> bool:
        """Queue the claims; False when too many repositories wait (then a reconcile is asked for)."""
        key = (id(index), repo)
        with self._cond:
            if key in self._waiting:
                self._waiting[key][1].merge(check)
            elif len(self._waiting) < MAX_WAITING:
                self._waiting[key] = (index, check.copy())
                self._since[key] = time.monotonic()
            full = key not in self._waiting
            if not self._threads:
                self._start()
            self._cond.notify()
        if full:
            try:
                index.request_reconcile()
            except redis.RedisError:
                pass
            return False
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._waiting) + len(self._busy)

    def _start(self) -> None:
        for n in range(self.workers):
            thread = threading.Thread(target=self._run, name=f"janitor-confirm-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _take(self) -> tuple[tuple[int, str], IndexReader, Confirm]:
        """A repository not being checked and not checked within the cooldown: the one with the fewest claims
        first (a check costs a HEAD per claimed tag, so the quick ones do not wait behind a busy repository's
        long one), but one waiting longer than STARVING first of all (the longest waiting)."""
        with self._cond:
            while True:
                now = time.monotonic()
                wake, best, fewest = None, None, 0
                for key, (_, check) in self._waiting.items():
                    if key in self._busy:
                        continue
                    ready = self._last.get(key, 0.0) + self.cooldown
                    if ready > now:
                        wake = ready if wake is None else min(wake, ready)
                        continue
                    claims = len(check.tags) + len(check.digests)
                    if now - self._since[key] > STARVING:
                        best = key  # insertion order: the first one found has waited longest
                        break
                    if best is None or claims < fewest:
                        best, fewest = key, claims
                if best is not None:
                    index, check = self._waiting.pop(best)
                    del self._since[best]
                    self._busy.add(best)
                    self._last[best] = now
                    if len(self._last) > MAX_WAITING:
                        self._last = {k: t for k, t in self._last.items() if t > now - self.cooldown}
                    return best, index, check
                self._cond.wait(None if wake is None else max(wake - now, 0.001))

    def _run(self) -> None:
        while True:
            key, index, check = self._take()
            try:
                _, missing = index.confirm(key[1], check)
                if missing:
                    index.confirm_later(key[1], missing)
            except (errors.JanitorError, redis.RedisError) as exc:
                log.info("check of events on %s failed (%s); the reconcile catches up", key[1], exc)
            except Exception:  # a thread that dies would stop every later check in this process
                log.exception("check of events on %s failed; the reconcile catches up", key[1])
            finally:
                with self._cond:
                    self._busy.discard(key)
                    self._cond.notify_all()


_queue: ConfirmQueue | None = None
_queue_lock = threading.Lock()


def queue() -> ConfirmQueue:
    """This process's queue."""
    global _queue
    with _queue_lock:
        if _queue is None:
            _queue = ConfirmQueue()
        return _queue
