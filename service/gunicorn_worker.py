"""gunicorn's `gthread` worker, made cheaper for a client that sends request after request on one connection.

A registry delivers its notifications that way (one POST per event, in sequence, on one kept-alive
connection), so the time between an answer and the next request decides how many events a second it can
send. Stock `gthread` hands a kept-alive connection back to its main thread after every request: a pipe
write to wake it, a selector register and unregister, a heartbeat write (`os.utime` on its temporary file),
then a thread-pool hand-off for the next request; that cost about as much CPU as the events endpoint itself.

`Worker` (gunicorn.conf.py's `worker_class`) keeps everything gthread does (threads, keep-alive, graceful
stop, HTTP/2, limits) and changes two things:

- After answering a kept-alive request, the thread waits up to LINGER seconds for the next request on the
  same connection and serves it itself, at most TURN requests in a row, and only while another thread of
  the pool is free (so a request waiting for a thread never waits behind a lingering one). Otherwise, and
  for every other connection, the connection goes back to the main thread as before.
- The heartbeat that tells the arbiter the worker lives is written at most every HEARTBEAT seconds (gthread
  writes it on every turn of its loop, twice per request; the arbiter's timeout is 30 s).

And it mends one thing: a quick stop (SIGINT, SIGQUIT) never waits on a lock its own thread holds (`handle_quit`).
"""

from __future__ import annotations

import select
import threading
import time
from typing import Any

from gunicorn.workers import base
from gunicorn.workers.gthread import ThreadWorker

LINGER = 0.02  # seconds a thread waits for the next request on the connection it just answered
TURN = 100  # requests one thread serves in a row on one connection before the main thread gets it back
HEARTBEAT = 1.0  # seconds between two heartbeat writes at most


def _readable(sock: Any, timeout: float) -> bool:
    """Whether the socket has bytes (or its end) within `timeout` seconds."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(timeout * 1000))


class Worker(ThreadWorker):
    """gthread that serves a connection's next request in the same thread when it comes at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._beat = 0.0
        self._quitting = False

    def handle_quit(self, sig: int, frame: Any) -> None:
        """Quick stop, without touching the thread pool from the signal handler.

        Ctrl-C in a terminal reaches a worker twice at once: SIGINT from the terminal, SIGQUIT from the arbiter.
        gthread's handler shuts the pool down inside the handler, which takes the pool's lock; a second signal
        landing while the first holds it (or while the main thread is inside `submit`) waits for a lock its own
        thread holds, and the worker sat there until the arbiter's SIGKILL 30 s later (seen once in CI). Here a
        second quit signal is ignored and the interpreter's exit stops the pool (concurrent.futures joins its
        threads at exit; a lingering thread sees `alive` is false and lets go of its connection).
        """
        if self._quitting:
            return
        self._quitting = True
        base.Worker.handle_quit(self, sig, frame)

    def notify(self) -> None:
        now = time.monotonic()
        if now - self._beat >= HEARTBEAT:
            self._beat = now
            super().notify()

    def handle(self, conn: Any) -> Any:
        with self._busy_lock:
            self._busy += 1
        try:
            for _ in range(TURN):
                result = super().handle(conn)
                if result is not True or getattr(conn, "is_http2", False) or not self.alive \
                        or not self._may_linger(conn):
                    return result
            return result
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _may_linger(self, conn: Any) -> bool:
        """The next request is already read into the parser's buffer or arrives within LINGER, and another
        thread is free for everyone else."""
        if self._busy >= self.cfg.threads:
            return False
        # gunicorn's own objects (pinned to 27.x in pyproject.toml; tests/test_gunicorn_worker.py runs them):
        # should a later version name them otherwise, the connection just goes back to the main thread.
        buffered = getattr(getattr(getattr(conn, "parser", None), "unreader", None), "buf", None)
        if buffered is None:
            return False
        if buffered.getvalue():
            return True
        try:
            return _readable(conn.sock, LINGER)
        except (OSError, ValueError):
            return False
