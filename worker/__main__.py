"""`python -m worker`: serve every registry of REGISTRIES_FILE (or those WORKER_REGISTRIES names).

One registry is served in this process (worker/serving.py). Several are served by one child process each
(`python -m worker --registry <name>`), started and restarted by this one: a single RQ worker runs one job at a
time, so windows of different registries run in parallel only in different processes, and a registry whose
Docker host is out of reach never holds up another's. The webhook deliveries of every served registry go
through one process of their own (worker/webhooks.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from janitor import logs
from janitor.config import registries
from janitor.config.settings import Settings
from worker import serving, webhooks
from worker.serving import recover_on_start  # noqa: F401  (kept importable where it always was)

log = logging.getLogger("worker")
RESTART_DELAY = 2.0


def _exit_with_parent() -> None:
    """A child serving one registry stops (RQ's warm shutdown: its window ends first) when its parent is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def supervise(names: list[str]) -> None:
    """One child per registry, restarted when it ends (e.g. it stopped listening because its Docker host went
    away, or it crashed); SIGTERM/SIGINT stop them all the way RQ stops (windows in progress end first)."""
    deliveries = webhooks.start_process(names)  # forked first: before this process's handlers and threads
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        started: dict[str, float] = {}
        ended: set[str] = set()
        while not stopping.is_set():
            for name in names:
                child = children.get(name)
                if child is not None and child.poll() is None:
                    continue
                if child is not None and name not in ended:
                    log.warning("worker for registry %s ended (exit %s); starting another", name, child.returncode)
                    ended.add(name)
                if time.monotonic() - started.get(name, -RESTART_DELAY) < RESTART_DELAY:
                    continue
                ended.discard(name)
                children[name] = subprocess.Popen([sys.executable, "-m", "worker", "--registry", name])
                started[name] = time.monotonic()
                log.info("serving registry %s in process %d", name, children[name].pid)
            stopping.wait(0.5)
        for child in children.values():
            child.wait()
    finally:
        webhooks.stop_process(deliveries)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", help="serve only this registry, in this process (used by the parent)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logs.configure(settings.log_format)
    known = registries.load(settings)  # a bad REGISTRIES_FILE stops here, with the reason
    if args.registry:
        _exit_with_parent()
        serving.serve(known.get(args.registry))
        return
    served = known.select(settings.worker_registries)
    log.info("serving registries %s", ", ".join(s.name for s in served))
    if len(served) > 1:
        supervise([s.name for s in served])
        return
    deliveries = webhooks.start_process([served[0].name])  # served apart so no delivery waits on a window
    try:
        serving.serve(served[0])
    finally:
        webhooks.stop_process(deliveries)


if __name__ == "__main__":
    main()
