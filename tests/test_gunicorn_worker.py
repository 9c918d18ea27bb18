"""service/gunicorn_worker.py under a real gunicorn: a connection's next request is served by the same thread
when it comes at once, and a lingering thread never makes another connection's request wait."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.images import wait_until

APP = '''
import threading, time

from service import gunicorn_worker

gunicorn_worker.LINGER = 2.0  # seconds: long enough that neither a slow sender nor a waiting request goes unseen

def app(environ, start_response):
    environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/slow":
        time.sleep(float(environ["QUERY_STRING"] or 1))
    body = str(threading.get_ident()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "tinyapp.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    # -c /dev/null: this worker class alone, without the service's gunicorn.conf.py.
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "/dev/null", "-b", f"127.0.0.1:{port}",
                             "-w", "1", "--threads", "2", "-k", "service.gunicorn_worker.Worker", "tinyapp:app"],
                            cwd=tmp_path, env=env, start_new_session=True, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            return get(http.client.HTTPConnection("127.0.0.1", port, timeout=2), "/")[0] == 200
        except OSError:
            return False
    try:
        assert wait_until(up, 60), "gunicorn did not come up"
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, str]:
    conn.request("POST", path, body=b"{}")
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


def test_requests_in_sequence_on_one_connection_stay_on_one_thread(server: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    threads = [get(conn, "/")[1] for _ in range(60)]
    # Stock gthread hands the connection back to its main thread after each request and the next one goes to
    # whichever pool thread is free; here a sender that answers at once keeps its thread.
    assert len(set(threads)) == 1, threads
    conn.close()


def test_a_lingering_thread_never_keeps_another_request_waiting(server: int) -> None:
    slow = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    slow.request("POST", "/slow", body=b"")  # one of the two threads is busy for a second
    time.sleep(0.2)
    hot = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    other = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    for _ in range(20):
        assert get(hot, "/")[0] == 200  # served by the one free thread, which may not linger on it
        started = time.monotonic()
        assert get(other, "/")[0] == 200
        assert time.monotonic() - started < 0.5, "another connection waited behind a lingering thread"
    assert slow.getresponse().status == 200
    for conn in (slow, hot, other):
        conn.close()


def test_a_quick_stop_never_waits_on_the_pool_lock_its_own_thread_holds() -> None:
    """Ctrl-C sends the worker SIGINT and the arbiter SIGQUIT at once: the second handler may run while the main
    thread holds the thread pool's lock (inside the first handler, or inside `submit`). Stock gthread's handler
    takes that lock again and hangs until SIGKILL; ours leaves the pool alone, and a second signal is a no-op."""
    import concurrent.futures
    import threading
    from types import SimpleNamespace

    from service.gunicorn_worker import Worker

    worker = Worker.__new__(Worker)  # the handler's state only: no arbiter, no sockets
    worker.alive, worker._quitting = True, False
    worker.tpool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    worker.cfg = SimpleNamespace(worker_int=lambda _worker: None)
    outcome: list[object] = []

    def signal_lands_inside_submit() -> None:
        with worker.tpool._shutdown_lock:  # where the main thread is when the signal comes
            try:
                worker.handle_quit(2, None)
            except SystemExit as exc:
                outcome.append(exc.code)
            outcome.append(worker.handle_quit(3, None))  # the arbiter's SIGQUIT right after: nothing more

    thread = threading.Thread(target=signal_lands_inside_submit, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "handle_quit waited on the pool lock its own thread holds"
    assert outcome == [0, None] and worker.alive is False
    worker.tpool.shutdown()
