"""A fork server for the processes of a test stack: `python -m gunicorn ...` and `python -m worker`.

Every e2e test starts a stack, and each of its two Python processes used to import the same libraries again
(flask, flask-smorest, redis, rq, docker, the janitor's own modules: about 0.4 s of CPU each, some 190 stacks
a run). This process imports them once; a stack's process is a fork of it that then runs the module as
`python -m` would (`runpy`, its own session, environment, working directory and output files), and exits
through the interpreter's normal shutdown. What is not imported here is what reads the environment when it is
imported: `service` (gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before prometheus_client loads), so the API's
own package is loaded in the child, after its environment is set.

Requests are one JSON line on a Unix socket: {"spawn": {argv, env, cwd, stdout, stderr}} answers {"pid"};
{"status": pid} answers {"returncode"} (None while it runs; -N for a signal, as subprocess says). Children are
reaped here, so their exit codes are known here. Used by tests/conftest.py (`spawn`); run.sh, compose and the
tests that start their own processes still start them with a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import selectors
import socket
import sys
from typing import Any

# Third-party libraries and the janitor's modules that read no environment on import (none start a thread).
PRELOAD = ("gunicorn.app.wsgiapp", "gunicorn.workers.gthread", "flask", "flask_smorest", "marshmallow", "webargs.flaskparser",
           "apispec", "redis", "rq", "rq.worker", "docker", "requests", "yaml", "worker.serving", "worker.supervision",
           "worker.webhooks", "worker.window", "worker.jobs", "janitor.config.registries", "janitor.config.settings")


def serve(path: str) -> dict[str, Any]:
    """Answer requests until one forks: returns only in the child, with what it is to run."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound under another name and renamed once listening: the test process waits for `path` to exist, and a
    # connect between bind and listen is refused (ci41: the first test of a loaded process failed so).
    server.bind(path + ".binding")
    server.listen(64)
    os.rename(path + ".binding", path)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    exited: dict[int, int] = {}
    while True:
        for _key, _ in sel.select(timeout=0.05):
            conn, _ = server.accept()
            # One client gone mid-request (a test interrupted) must not take the server down for every later
            # stack of this test process: its request is dropped, the next one is served.
            with conn, contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                conn.settimeout(30)
                request = json.loads(conn.makefile("rb").readline())
                if "spawn" in request:
                    pid = os.fork()
                    if pid == 0:
                        sel.close()
                        server.close()
                        conn.close()
                        return dict(request["spawn"])
                    # pid_max is 32768 here and a run starts more processes than that (every exec in a
                    # container takes a host pid): an older child of ours may have had this pid, and its exit
                    # code must not be answered for this one.
                    exited.pop(pid, None)
                    answer: dict[str, Any] = {"pid": pid}
                else:
                    answer = {"returncode": _reap(exited).get(int(request["status"]))}
                conn.sendall(json.dumps(answer).encode() + b"\n")
        _reap(exited)
        if os.getppid() == 1:  # the test process is gone
            sys.exit(0)


def _reap(exited: dict[int, int]) -> dict[int, int]:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return exited
        if pid == 0:
            return exited
        exited[pid] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run_child(spec: dict[str, Any]) -> None:
    """As `subprocess.Popen(argv, cwd=, env=, start_new_session=True, stdout=, stderr=)` with argv
    `[python, "-m", module, *args]` would start it."""
    os.setsid()
    os.chdir(spec["cwd"])
    os.environ.clear()
    os.environ.update(spec["env"])
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    for fd, target in ((1, spec.get("stdout")), (2, spec.get("stderr"))):
        if target:
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(out, fd)
            os.close(out)
    os.close(devnull)
    argv = spec["argv"]
    assert argv[1] == "-m", argv
    sys.argv = [argv[2], *argv[3:]]
    runpy.run_module(argv[2], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    for name in PRELOAD:
        __import__(name)
    run_child(serve(sys.argv[1]))
