"""A window's process killed half-way, on the real stack, and nothing sent after the fault.

The process RQ forks to run a window (its work horse) is SIGKILLed right after the fence, right after the
holds, during garbage-collect and during the restart, the way the OOM killer or a node drain does; the
`python -m worker` that forked it lives on. Within the lease's TTL plus 10 s, with no new request: the
registry takes a blob upload, its config is the original with no backup or holds record, the hold manifests
are gone, the job is failed/INTERRUPTED and its webhook was delivered; the next window succeeds.

Also: a registry left read-only behind the janitor's back shows on /readyz and janitor_registry_read_only."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import docker
import pytest
import redis
import requests
import yaml

from janitor.registry.container import RegistryContainer
from janitor.window import leftovers
from janitor.window.fence import ConfigReads, readonly_config
from tests import images
from tests.conftest import (
    GcExecs,
    Registry,
    Stack,
    descendants,
    job_record,
    start_stack,
)
from tests.test_e2e_chatops import Receiver, receiver  # noqa: F401 - the fixture
from tests.test_e2e_faults import (
    CONFIG_DIR,
    SocketProxy,
    own_redis,  # noqa: F401 - the fixture
    own_stacks,  # noqa: F401 - the fixture
    seed,
    stuck_manifest,
    writable_and_clean,
    write_status,
)

pytestmark = pytest.mark.e2e
TTL = 4


def work_horse(worker_pid: int) -> int | None:
    """The process RQ forked for the job in progress: a descendant leading its own process group (RQ's
    `os.setpgrp()`), not the webhook deliveries' process."""
    for pid in descendants(worker_pid):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if int(stat[2]) == pid and b"worker.webhooks" not in cmdline:
                return pid
    return None


def step_status(stack: Stack, job_id: str, step: str) -> str | None:
    raw = job_record(stack.redis, job_id)
    if not raw:
        return None
    found = [s["status"] for s in json.loads(raw)["steps"] if s["name"] == step]
    return found[-1] if found else None


def fenced(reg: Registry) -> bool | None:
    """Whether the config holds the fence marker; None while the container cannot be asked (restarting)."""
    try:
        code, out = reg.container.exec_run(["head", "-c", "20", f"{CONFIG_DIR}/config.yml"])
    except docker.errors.APIError:
        return None
    return out.decode().startswith("# registry-janitor") if code == 0 else None


def metric(stack: Stack, name: str) -> float | None:
    for line in requests.get(stack.api + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def reached(stack: Stack, reg: Registry, job_id: str, moment: str, gc: GcExecs) -> bool:
    """The moment to kill at: a step done (fence, hold), garbage-collect running, the original config back
    but the restart not over."""
    if moment == "gc":
        return gc.wait_running(120)

    def now() -> bool:
        if moment in ("fence", "hold"):
            return step_status(stack, job_id, moment) == "succeeded"
        return step_status(stack, job_id, "restart") == "running" and fenced(reg) is False
    return bool(images.wait_until(now, 120, 0.005))


@pytest.mark.parametrize("moment", ["fence", "hold", "gc", "restart"])
def test_window_process_killed_is_recovered_with_no_new_request(
        moment: str, registry: Registry, make_stack: Callable[..., Stack], docker_client: docker.DockerClient,
        receiver: Receiver) -> None:  # noqa: F811
    hung = {"JANITOR_HTTP_TIMEOUT": "5", "JANITOR_REGISTRY_RETRY": "2"} if moment == "gc" else {}
    s = make_stack(registry, JANITOR_LOCK_TTL=str(TTL), JANITOR_UPLOAD_DRAIN="1", WEBHOOK_URLS=receiver.url + "/ok",
                   **hung)
    kept = seed(registry)
    before = registry.revisions()
    unstick = None
    if moment == "gc":  # garbage-collect hangs on a FIFO until the container restarts
        stuck = images.image()
        images.Pusher(registry.url).image("team/stuck", stuck, "v1")
        before = registry.revisions()
        unstick = stuck_manifest(registry, stuck)
    worker = s.procs["worker"]
    with GcExecs(docker_client, registry.name) as gc:
        if moment == "gc":  # a GC alone: the stuck manifest is read by nothing but garbage-collect
            job_id = s.post("/v1/gc", {}).json()["id"]
        else:
            job_id = s.delete({"repository": "team/app", "tags": ["t0"]})["id"]
            kept.pop("t0")
        assert reached(s, registry, job_id, moment, gc), s.get(f"/v1/jobs/{job_id}").json()
    horse = work_horse(worker.pid)
    assert horse is not None
    os.kill(horse, signal.SIGKILL)
    killed = time.monotonic()
    if unstick:
        unstick()  # into the storage; the hung garbage-collect itself ends only with the container
    # -- nothing is sent from here on: only reads -------------------------------------------------------
    seen_read_only = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(requests.RequestException):
                if metric(s, "janitor_registry_read_only") == 1:
                    seen_read_only.set()
            time.sleep(0.1)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert images.wait_until(lambda: writable_and_clean(registry), TTL + 10, 0.2), \
            f"not writable and clean {time.monotonic() - killed:.1f}s after the kill: {registry.exec('ls', CONFIG_DIR)}"
    finally:
        stop.set()
        watcher.join(10)
    job = s.wait(job_id, timeout=5)
    assert job["status"] == "failed" and job["error"]["code"] == "INTERRUPTED", job
    assert job["error"]["step"] in ("fence", "hold", "gc", "restart"), job["error"]
    # The hold manifests are gone: every stored manifest is one that was pushed.
    after = registry.revisions()
    assert all(after.get(repo, set()) <= digests for repo, digests in before.items()), (before, after)
    assert set(after) <= set(before)

    def delivered() -> bool:
        return any(json.loads(r["raw"])["event"] == "job.failed" and json.loads(r["raw"])["job"]["id"] == job_id
                   for r in receiver.at("/ok"))
    assert images.wait_until(delivered, 20), receiver.events()
    if moment != "restart":  # the config marker was in place after the kill
        assert seen_read_only.is_set(), "janitor_registry_read_only never showed the fenced registry"
    assert images.wait_until(lambda: metric(s, "janitor_registry_read_only") == 0, 15)
    assert worker.poll() is None  # the worker that forked the window lives on
    for tag in kept:
        assert images.pull_verified(registry.url, "team/app", tag) == [], tag
    # The next window runs whole and succeeds.
    nxt = s.wait(s.delete({"repository": "team/app", "tags": ["t1"]})["id"], timeout=180)
    assert nxt["status"] == "succeeded", nxt
    assert writable_and_clean(registry)


def test_a_stopped_registry_container_is_looked_at_again_within_a_second(stack: Stack) -> None:
    """A look that finds the container not running (mostly: it caught a window's restart) is followed by
    another about a second later, not after the usual 5 s, so /readyz and janitor_worker_up do not show the
    registry down for seconds after every such window."""
    def docker_check() -> dict:  # what /readyz shows as `checks.docker`, read where the worker publishes it
        keys = stack.redis.keys("janitor:*:worker-heartbeat")
        raw = stack.redis.get(keys[0]) if keys else None
        return json.loads(raw) if raw else {}

    def at(check: dict) -> float:
        return datetime.fromisoformat(check["at"]).timestamp()
    assert images.wait_until(lambda: docker_check().get("ok"), 60), docker_check()
    stack.registry.container.stop(timeout=1)
    first = images.wait_until(lambda: (c := docker_check()).get("code") == "REGISTRY_CONTAINER_NOT_RUNNING" and c,
                              30, 0.05)
    assert first, docker_check()
    after = images.wait_until(lambda: (c := docker_check()).get("at") != first["at"] and c, 15, 0.05)
    assert after and at(after) - at(first) < 3.0, (first, after)  # the usual interval is 5 s
    stack.registry.container.start()
    assert images.wait_until(lambda: docker_check().get("ok"), 30, 0.2), docker_check()


def test_a_registry_left_read_only_shows_on_readyz_and_the_metric(
        registry: Registry, make_stack: Callable[..., Stack]) -> None:
    s = make_stack(registry)
    assert images.wait_until(lambda: metric(s, "janitor_registry_read_only") == 0, 30)
    files = RegistryContainer(registry.name)
    original = files.read_file(f"{CONFIG_DIR}/config.yml")
    # Read-only by hand, with no marker: nothing for a recovery to undo, but pushes are refused.
    config = yaml.safe_load(original)
    config["storage"]["maintenance"] = {"readonly": {"enabled": True}}
    files.write_file(f"{CONFIG_DIR}/config.yml", yaml.safe_dump(config).encode())
    registry.container.restart(timeout=10)
    assert images.wait_until(lambda: write_status(registry) == 405, 30)

    def readyz() -> dict:
        return requests.get(s.api + "/readyz", timeout=10).json()
    assert images.wait_until(lambda: metric(s, "janitor_registry_read_only") == 1, 20)
    assert images.wait_until(lambda: readyz()["checks"]["writes"].get("code") == "REGISTRY_READ_ONLY", 20), readyz()
    found = readyz()
    assert found["status"] == "unavailable" and found["checks"]["writes"]["read_only"] is True
    assert requests.get(s.api + "/readyz", timeout=10).status_code == 503
    # Put right by hand: both say so again.
    files.write_file(f"{CONFIG_DIR}/config.yml", original)
    registry.container.restart(timeout=10)
    assert images.wait_until(lambda: metric(s, "janitor_registry_read_only") == 0, 20)
    assert images.wait_until(lambda: readyz()["checks"]["writes"] == {
        **readyz()["checks"]["writes"], "ok": True, "read_only": False}, 20), readyz()


def test_the_look_reads_the_config_again_whenever_it_may_have_changed(registry: Registry) -> None:
    """The look keeps an unfenced config it read and takes it again only while the engine's stat matches and
    no backup is there: a fenced config keeps the original's mode and mtime and can even match its size."""
    files = RegistryContainer(registry.name)
    path = f"{CONFIG_DIR}/config.yml"
    assert files.stat(path)["size"] == len(files.read_file(path)) and files.stat(path + ".nope") is None
    original, meta = files.read_entry(path)
    reads = ConfigReads()
    assert reads.read(files, path, False) == original and reads.read(files, path, False) == original
    for owner in ("window-aaaaaaaa/lease-1", "window-bbbbbbbb/lease-1"):  # equal sizes, equal stats
        files.write_file(path, readonly_config(original, path + ".janitor-original", owner), meta=meta)
        assert leftovers.look(files, reads).fence_owner == owner
    # An original whose comments make it exactly as long as its fenced form (which drops them): kept unfenced,
    # then fenced with the same size, mode and mtime. The backup, written first, makes the look read it.
    fenced = readonly_config(original, path + ".janitor-original", "window-cccccccc/lease-1")
    padded = original + b"#" * (len(fenced) - len(original) - 1) + b"\n"
    assert readonly_config(padded, path + ".janitor-original", "window-cccccccc/lease-1") == fenced
    files.write_file(path, padded, meta=meta)
    assert leftovers.look(files, reads).fence_owner is None
    files.write_file(path + ".janitor-original", padded, meta=meta)
    files.write_file(path, fenced, meta=meta)
    assert files.stat(path) == {**files.stat(path), "size": len(padded)}
    assert leftovers.look(files, reads).fence_owner == "window-cccccccc/lease-1"
    files.write_file(path, original, meta=meta)
    registry.exec("rm", "-f", path + ".janitor-original")
    assert leftovers.look(files, reads).fence_owner is None
    edited = original + b"\n# edited by hand\n"
    files.write_file(path, edited)
    assert reads.read(files, path, False) == edited


# -- the queue never stalls -----------------------------------------------------------------------------

def test_redis_restarted_while_a_window_starts_leaves_nothing_queued(
        registry: Registry, own_redis: Callable[[], tuple[subprocess.Popen, str]], own_stacks: list[Stack]) -> None:  # noqa: F811
    proc, url = own_redis()
    conn = redis.Redis.from_url(url)
    s = start_stack(registry, url, conn, JANITOR_LOCK_TTL=str(TTL), JANITOR_UPLOAD_DRAIN="1")
    own_stacks.append(s)
    seed(registry)
    assert images.wait_until(lambda: conn.keys("janitor:*:worker-heartbeat") and conn.keys("rq:worker:*"), 30)
    job_id = s.delete({"repository": "team/app", "tags": ["t0"]})["id"]
    proc.terminate()  # the window is being queued or starting
    proc.wait(10)
    time.sleep(2)
    own_redis()
    # Nothing is sent: the job ends on its own (or runs later), and nothing stays waiting.
    job = s.wait(job_id, timeout=120)
    assert job["status"] in ("succeeded", "failed"), job
    assert images.wait_until(lambda: not conn.llen(f"janitor:{s.registry.url.split('//')[1]}:pending"), 30)
    assert images.wait_until(lambda: writable_and_clean(registry), 30)
    nxt = s.wait(s.delete({"repository": "team/app", "tags": ["t1"]})["id"], timeout=180)
    assert nxt["status"] == "succeeded", nxt


def test_docker_unreachable_while_a_window_starts_ends_the_jobs(
        registry: Registry, make_stack: Callable[..., Stack]) -> None:
    proxy = SocketProxy()
    try:
        s = make_stack(registry, DOCKER_HOST=proxy.url, JANITOR_LOCK_TTL=str(TTL), JANITOR_UPLOAD_DRAIN="1",
                       JANITOR_DOCKER_GRACE="3")
        seed(registry)
        job_id = s.delete({"repository": "team/app", "tags": ["t0"]})["id"]
        proxy.cut()
        job = s.wait(job_id, timeout=120)
        # Ran before the cut, or ended with the reason: never left queued.
        assert job["status"] == "succeeded" or job["error"]["code"] == "DOCKER_UNAVAILABLE", job
        proxy.open()
        assert images.wait_until(lambda: writable_and_clean(registry), 60)
        nxt = s.wait(s.delete({"repository": "team/app", "tags": ["t1"]})["id"], timeout=180)
        assert nxt["status"] == "succeeded", nxt
    finally:
        proxy.close()
