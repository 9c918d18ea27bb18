"""Many registries on the real stack: two registry containers, one Redis, one API and two `python -m worker`
processes. Windows of both registries at the same time, each with its own jobs and lock; a worker killed
mid-window leaves the other registry's window and jobs alone and is recovered by the next start of a worker
serving its registry; a worker that cannot reach a registry's Docker host leaves its windows to one that can."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import yaml

from tests import images
from tests.conftest import ROOT, Registry, Stack, descendants, family, free_port, start_stack

pytestmark = pytest.mark.e2e


def _t(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def write_file(path: Path, regs: dict[str, Registry], **per_registry: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump({"registries": [
        {"name": name, "url": reg.url, "container": reg.name, **per_registry.get(name, {})}
        for name, reg in regs.items()]}))
    return str(path)


def start_worker(stack: Stack, key: str, **env: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env={**stack.env, **env},
                            start_new_session=True)
    stack.procs[key] = proc
    return proc


def kill(stack: Stack, key: str) -> None:
    """SIGKILL a worker and everything it started (its registries' RQ workers and their work horses)."""
    proc = stack.procs.pop(key)
    for pid in family(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(10)


def job(stack: Stack, name: str, job_id: str) -> dict[str, Any]:
    resp = stack.get(f"/v1/registries/{name}/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_job(stack: Stack, name: str, job_id: str, timeout: float = 180) -> dict[str, Any]:
    done = images.wait_until(lambda: (j := job(stack, name, job_id))["status"] in ("succeeded", "failed") and j,
                             timeout, 0.2)
    assert done, f"{name} job {job_id} did not finish: {job(stack, name, job_id)}"
    return done


def delete(stack: Stack, name: str, tag: str) -> str:
    resp = stack.post(f"/v1/registries/{name}/deletions", {"repository": "team/app", "tags": [tag]})
    assert resp.status_code == 202, resp.text
    assert resp.headers["Location"].endswith(f"/v1/registries/{name}/jobs/{resp.json()['id']}")
    return resp.json()["id"]


def workers_ready(stack: Stack, *names: str, timeout: float = 90) -> None:
    def ready() -> bool:
        items = {r["name"]: r for r in stack.get("/v1/registries").json()["items"]}
        return all(items[n]["checks"]["docker"]["ok"] for n in names)
    assert images.wait_until(ready, timeout, 0.5), stack.get("/v1/registries").json()


def seed(reg: Registry) -> None:
    pusher = images.Pusher(reg.url)
    for tag in ("t0", "t1", "t2"):
        pusher.image("team/app", images.image(layers=1), tag)


def tags(reg: Registry) -> set[str]:
    return set(requests.get(f"{reg.url}/v2/team/app/tags/list", timeout=30).json().get("tags") or [])


@pytest.fixture
def pair(make_registry) -> dict[str, Registry]:  # type: ignore[no-untyped-def]
    regs = {"a": make_registry(), "b": make_registry()}
    for reg in regs.values():
        seed(reg)
    return regs


@pytest.fixture
def stacks(redis_server: str, redis_conn: redis.Redis):  # type: ignore[no-untyped-def]
    made: list[Stack] = []

    def make(reg: Registry, **env: str) -> Stack:
        made.append(start_stack(reg, redis_server, redis_conn, worker=False, **env))
        return made[-1]
    yield make
    for s in made:
        s.kill()


class LockWatch(threading.Thread):
    """Samples both registries' locks: whether they were ever held at the same moment."""

    def __init__(self, conn: redis.Redis, keys: list[str]) -> None:
        super().__init__(daemon=True)
        self.conn, self.keys, self.both, self.stop = conn, keys, False, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if all(self.conn.exists(k) for k in self.keys):
                self.both = True
            time.sleep(0.02)


def test_windows_of_two_registries_run_at_once_each_with_its_own_jobs_and_lock(  # type: ignore[no-untyped-def]
        pair, stacks, redis_conn: redis.Redis, tmp_path: Path) -> None:
    path = write_file(tmp_path / "registries.yaml", pair)
    stack = stacks(pair["a"], REGISTRIES_FILE=path)
    # Two workers, each serving both registries (one RQ worker process per registry each).
    start_worker(stack, "worker-1")
    start_worker(stack, "worker-2")
    workers_ready(stack, "a", "b")
    watch = LockWatch(redis_conn, ["janitor:a:lock", "janitor:b:lock"])
    watch.start()
    ids = {"a": delete(stack, "a", "t0"), "b": delete(stack, "b", "t1")}
    done = {name: wait_job(stack, name, job_id) for name, job_id in ids.items()}
    watch.stop.set()
    for name, found in done.items():
        assert found["status"] == "succeeded", found
        assert found["registry"] == name
    a, b = done["a"]["window"], done["b"]["window"]
    assert a["id"] != b["id"] and a["jobs"] == [ids["a"]] and b["jobs"] == [ids["b"]]
    # Both windows were open at once: their time ranges overlap, and both locks were held together.
    assert max(_t(a["started_at"]), _t(b["started_at"])) < min(_t(a["finished_at"]), _t(b["finished_at"])), (a, b)
    assert watch.both
    # Each registry lost its own tag only.
    assert tags(pair["a"]) == {"t1", "t2"} and tags(pair["b"]) == {"t0", "t2"}
    # Each registry's job list, lock and queue are its own; the unprefixed paths are the default (a) registry's.
    assert [j["id"] for j in stack.get("/v1/registries/b/jobs").json()["items"]] == [ids["b"]]
    assert [j["id"] for j in stack.get("/v1/jobs").json()["items"]] == [ids["a"]]
    assert stack.get(f"/v1/jobs/{ids['b']}").status_code == 404
    assert images.wait_until(lambda: not redis_conn.exists("janitor:a:lock", "janitor:b:lock"), 60, 0.1)
    assert not redis_conn.exists("rq:queue:janitor")  # the old shared queue is gone
    from prometheus_client.parser import text_string_to_metric_families
    metrics = {(m.name, tuple(sorted(m.labels.items()))): m.value for fam in text_string_to_metric_families(
        requests.get(f"{stack.api}/metrics", timeout=30).text) for m in fam.samples}
    for name in ("a", "b"):
        assert metrics[("janitor_jobs_total", (("kind", "deletion"), ("outcome", "succeeded"), ("registry", name)))] == 1
        assert metrics[("janitor_windows_total", (("outcome", "succeeded"), ("registry", name)))] >= 1
    # The CLI acts on one registry with --registry (or JANITOR_REGISTRY).
    cli = [str(Path(sys.executable).parent / "registry-janitor"), "--url", stack.api, "--token", stack.token]
    out = subprocess.run([*cli, "--registry", "b", "--json", "jobs"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [j["id"] for j in json.loads(out.stdout)] == [ids["b"]]
    out = subprocess.run([*cli, "--registry", "mars", "jobs"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "REGISTRY_UNKNOWN" in out.stdout + out.stderr
    def listed() -> dict[str, dict]:
        return {r["name"]: r for r in stack.get("/v1/registries").json()["items"]}
    # b's checks include its worker's heartbeat, which a loaded machine can delay: readiness converges.
    images.wait_until(lambda: listed()["b"]["status"] == "ready", 30, 0.5)
    found = listed()
    assert found["a"]["default"] and not found["b"]["default"] and found["b"]["status"] == "ready", found["b"]


def test_killing_one_registrys_worker_mid_window_leaves_the_other_alone(  # type: ignore[no-untyped-def]
        pair, stacks, redis_conn: redis.Redis, tmp_path: Path) -> None:
    path = write_file(tmp_path / "registries.yaml", pair)
    stack = stacks(pair["a"], REGISTRIES_FILE=path)
    start_worker(stack, "worker-a", WORKER_REGISTRIES="a")
    start_worker(stack, "worker-b", WORKER_REGISTRIES="b")
    workers_ready(stack, "a", "b")
    ids = {"a": delete(stack, "a", "t0"), "b": delete(stack, "b", "t1")}

    def fenced() -> bool:
        raw = redis_conn.get(f"janitor:a:job:{ids['a']}")
        return bool(raw) and any(s["name"] == "fence" for s in json.loads(raw)["steps"])
    assert images.wait_until(fenced, 120, 0.01), job(stack, "a", ids["a"])
    b_running = job(stack, "b", ids["b"])["status"] == "running"
    killed_at = datetime.now().astimezone()
    kill(stack, "worker-a")

    other = wait_job(stack, "b", ids["b"])
    assert other["status"] == "succeeded", other
    assert tags(pair["b"]) == {"t0", "t2"}
    if b_running:  # b's window was open when a's worker died
        assert _t(other["window"]["started_at"]) < killed_at < _t(other["window"]["finished_at"])
    left = job(stack, "a", ids["a"])
    assert left["status"] == "running", left  # nobody but a worker serving `a` may end it

    # A new worker for b recovers b only: a's running job and lock are not its business.
    stack.procs["worker-b"].send_signal(signal.SIGTERM)
    stack.procs["worker-b"].wait(60)
    start_worker(stack, "worker-b2", WORKER_REGISTRIES="b")
    gc = stack.post("/v1/registries/b/gc", {}).json()["id"]
    assert wait_job(stack, "b", gc)["status"] == "succeeded"  # so worker-b2 has recovered and listens
    assert job(stack, "a", ids["a"])["status"] == "running"
    assert job(stack, "b", ids["b"])["status"] == "succeeded"

    # The next worker serving a recovers a: its job ends as interrupted and the registry takes writes again.
    start_worker(stack, "worker-a2", WORKER_REGISTRIES="a")
    ended = wait_job(stack, "a", ids["a"], timeout=120)
    assert ended["status"] == "failed" and ended["error"]["code"] == "INTERRUPTED", ended
    images.Pusher(pair["a"].url).image("team/app", images.image(layers=1), "after")
    assert "after" in tags(pair["a"])
    assert job(stack, "b", ids["b"])["status"] == "succeeded" and job(stack, "b", gc)["status"] == "succeeded"


def test_a_worker_that_cannot_reach_the_docker_host_leaves_the_windows_to_one_that_can(  # type: ignore[no-untyped-def]
        make_registry, stacks, redis_conn: redis.Redis, tmp_path: Path) -> None:
    reg = make_registry()
    seed(reg)
    good = write_file(tmp_path / "good.yaml", {"a": reg})
    # The same registry, as seen by a worker whose Docker host (a closed loopback port) does not answer.
    bad = write_file(tmp_path / "bad.yaml", {"a": reg}, a={"docker_host": f"tcp://127.0.0.1:{free_port()}"})
    stack = stacks(reg, REGISTRIES_FILE=good)
    start_worker(stack, "worker-bad", REGISTRIES_FILE=bad, JANITOR_DOCKER_GRACE="600")

    def says_unreachable() -> bool:
        return stack.get("/v1/registries/a").json()["checks"]["docker"].get("code") == "DOCKER_UNAVAILABLE"
    assert images.wait_until(says_unreachable, 60, 0.5), stack.get("/v1/registries/a").json()
    assert stack.get("/readyz").status_code == 503
    job_id = delete(stack, "a", "t0")
    time.sleep(8)
    assert job(stack, "a", job_id)["status"] == "queued"  # not taken: the worker does not listen on a's queue
    assert redis_conn.llen("rq:queue:janitor:a") == 1

    start_worker(stack, "worker-good")
    done = wait_job(stack, "a", job_id)
    assert done["status"] == "succeeded", done
    assert tags(reg) == {"t1", "t2"}
    workers_ready(stack, "a")  # the heartbeat of the worker that reaches Docker wins /readyz
    assert stack.get("/readyz").status_code == 200


def test_a_worker_stops_listening_while_the_docker_host_is_away_and_comes_back(  # type: ignore[no-untyped-def]
        make_registry, stacks, redis_conn: redis.Redis, tmp_path: Path) -> None:
    from rq import Queue, Worker

    from tests.test_e2e_faults import SocketProxy

    reg = make_registry()
    seed(reg)
    proxy = SocketProxy()
    try:
        path = write_file(tmp_path / "registries.yaml", {"a": reg}, a={"docker_host": proxy.url})
        stack = stacks(reg, REGISTRIES_FILE=path)
        start_worker(stack, "worker", JANITOR_DOCKER_GRACE="600")
        workers_ready(stack, "a")
        queue = Queue("janitor:a", connection=redis_conn)
        assert images.wait_until(lambda: len(Worker.all(queue=queue)) == 1, 30, 0.2)
        proxy.cut()
        # Three failed looks, 5 s apart: the RQ worker stops listening on a's queue; /readyz says why.
        assert images.wait_until(lambda: not Worker.all(queue=queue), 90, 0.5), Worker.all(queue=queue)
        assert images.wait_until(lambda: stack.get("/v1/registries/a").json()["checks"]["docker"].get("code")
                                 == "DOCKER_UNAVAILABLE", 60, 0.5), stack.get("/v1/registries/a").json()
        job_id = delete(stack, "a", "t0")
        time.sleep(6)
        assert job(stack, "a", job_id)["status"] == "queued"  # nobody took a window it could not run
        proxy.open()
        done = wait_job(stack, "a", job_id, timeout=180)
        assert done["status"] == "succeeded", done
        assert tags(reg) == {"t1", "t2"}
        assert stack.procs["worker"].poll() is None  # the same worker process, listening again
    finally:
        proxy.close()


def test_the_supervisor_starts_a_registrys_worker_again_when_it_dies(  # type: ignore[no-untyped-def]
        pair, stacks, tmp_path: Path) -> None:
    """One child process per registry: one that dies (here SIGKILL) is started again; the other is untouched."""
    stack = stacks(pair["a"], REGISTRIES_FILE=write_file(tmp_path / "registries.yaml", pair))
    parent = start_worker(stack, "worker")

    def child(name: str) -> int | None:
        for pid in descendants(parent.pid):
            with contextlib.suppress(OSError, ValueError, IndexError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if argv[argv.index(b"--registry") + 1] == name.encode():
                    return pid
        return None
    assert images.wait_until(lambda: child("a") and child("b"), 60)
    first, other = child("a"), child("b")
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert images.wait_until(lambda: child("a") not in (None, first), 30)
    assert child("b") == other
    workers_ready(stack, "a", "b")
    job_id = delete(stack, "a", "t0")
    assert wait_job(stack, "a", job_id)["status"] == "succeeded"
    assert tags(pair["a"]) == {"t1", "t2"}
