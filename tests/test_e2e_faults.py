"""Faults while a window runs, on the real stack: the fence defeated behind the janitor's back, a hung
garbage-collect, Redis restarted or paused past the lease's TTL with two workers, the Docker engine away,
the registry container killed during GC.

After each: no GC ran on a writable registry (watched from outside while the window ran), the registry is
writable and healthy, every acknowledged push still pulls complete, every job ended with a clear state, and
the next request succeeds."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest
import redis
import requests

from tests import images
from tests.conftest import (
    ROOT,
    GcExecs,
    Registry,
    Stack,
    free_port,
    job_record,
    pings,
    start_stack,
    wait_http,
)

pytestmark = pytest.mark.e2e
CONFIG_DIR = "/etc/docker/registry"
V2 = "/var/lib/registry/docker/registry/v2"


# -- observing -------------------------------------------------------------------------------------

def write_status(reg: Registry) -> int | None:
    """202 (accepted; the upload is cancelled again), 405 (refused), None while restarting."""
    try:
        resp = requests.post(f"{reg.url}/v2/fault-probe/blobs/uploads/", timeout=5)
    except requests.RequestException:
        return None
    if resp.status_code == 202:
        loc = resp.headers["Location"]
        with contextlib.suppress(requests.RequestException):
            requests.delete(reg.url + loc if loc.startswith("/") else loc, timeout=5)
    return resp.status_code


def writable_and_clean(reg: Registry) -> bool:
    """A real write is accepted, the config is the original, and no backup or holds record is left. What it
    saw is printed (pytest shows it with a failure: ci41 once saw False here, and not again in 15 runs)."""
    status = write_status(reg)
    if status != 202:
        print(f"writable_and_clean: a blob upload got {status}")
        return False
    code, out = reg.container.exec_run(["ls", CONFIG_DIR])
    head = reg.exec("head", "-c", "20", f"{CONFIG_DIR}/config.yml") if code == 0 else ""
    print(f"writable_and_clean: ls {CONFIG_DIR} -> {code} {out.decode().split()}; config starts {head!r}")
    return code == 0 and out.decode().split() == ["config.yml"] and not head.startswith("# registry-janitor")


class GcWatch(threading.Thread):
    """From outside the janitor: whenever a garbage-collect process runs in the container, a blob upload
    must be refused. Any 202 seen then is GC on a writable registry."""

    def __init__(self, reg: Registry, client: docker.DockerClient) -> None:
        super().__init__(daemon=True)
        self.reg = reg
        self.execs = GcExecs(client, reg.name)
        self.stop = threading.Event()
        self.seen_gc = 0
        self.violations: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            with self.execs.changed:
                running = self.execs.changed.wait_for(lambda: self.execs.running or self.stop.is_set(), 0.5)
            if not running or self.stop.is_set():
                continue
            self.seen_gc += 1
            status = write_status(self.reg)
            if status == 202:
                self.violations.append(f"upload accepted while garbage-collect ran ({time.time():.3f})")
            time.sleep(0.02)

    def __enter__(self) -> GcWatch:
        self.execs.__enter__()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(10)
        self.execs.__exit__(*exc)


@dataclass(eq=False)
class Pushes(threading.Thread):
    """A client pushing new tags all through the window; records what the registry acknowledged."""

    base: str
    repo: str = "live/app"
    acknowledged: dict[str, images.Image] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        n = 0
        while not self.done.is_set():
            img, tag = images.image(layers=2, layer_size=3000), f"p{n}"
            n += 1
            deadline = time.time() + 90
            while time.time() < deadline and not self.done.is_set():
                try:
                    p = images.Pusher(self.base)
                    p.image(self.repo, img, tag)
                    self.acknowledged[tag] = img
                    break
                except requests.RequestException:
                    time.sleep(0.3)  # refused (405) or restarting: try again, like a client would

    def finish(self) -> None:
        self.done.set()
        self.join(120)


def assert_after(stack: Stack, reg: Registry, kept: dict[str, images.Image], pushes: Pushes, watch: GcWatch) -> None:
    assert watch.violations == [], watch.violations
    assert images.wait_until(lambda: writable_and_clean(reg), 90), "registry not writable and clean"
    for tag, img in kept.items():
        assert images.pull_verified(reg.url, "team/app", tag) == [], tag
    assert pushes.acknowledged, "no push was acknowledged during the test"
    for tag in pushes.acknowledged:
        assert images.pull_verified(reg.url, pushes.repo, tag) == [], tag
    # The next request runs a whole window and succeeds.
    nxt = stack.wait(stack.post("/v1/gc", {}).json()["id"], timeout=180)
    assert nxt["status"] == "succeeded", nxt
    assert nxt["result"]["integrity"]["broken"] == []


def step_reached(conn: redis.Redis, job_id: str, step: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            raw = job_record(conn, job_id)
            if raw:
                job = json.loads(raw)
                if any(s["name"] == step for s in job["steps"]):
                    return True
                if job["status"] in ("succeeded", "failed"):
                    return False
        time.sleep(0.005)
    return False


def clear_state(job: dict[str, Any], allowed: set[str]) -> None:
    assert job["status"] in ("succeeded", "failed"), job
    if job["status"] == "failed":
        assert job["error"]["code"] in allowed and job["error"]["message"], job["error"]


def seed(reg: Registry) -> dict[str, images.Image]:
    p = images.Pusher(reg.url)
    imgs = {f"t{i}": images.image(layers=2) for i in range(4)}
    for tag, img in imgs.items():
        p.image("team/app", img, tag)
    return imgs


# -- own processes ---------------------------------------------------------------------------------

@pytest.fixture
def own_redis() -> Iterator[Callable[[], tuple[subprocess.Popen, str]]]:
    """A redis-server of this test's own (append-only, so a restart keeps the records), restartable."""
    port, workdir = free_port(), tempfile.mkdtemp(prefix="rj-faults-redis-")
    procs: list[subprocess.Popen] = []

    def start() -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
                                 "--appendfsync", "always", "--save", "", "--dir", workdir], stdout=subprocess.DEVNULL)
        procs.append(proc)
        url = f"redis://127.0.0.1:{port}/0"
        assert images.wait_until(lambda: pings(redis.Redis.from_url(url)), 20)
        return proc, url

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def own_stacks() -> Iterator[list[Stack]]:
    made: list[Stack] = []
    yield made
    for s in made:
        s.kill()


class SocketProxy:
    """A unix socket forwarding to the Docker engine's, which the test can cut: the worker's DOCKER_HOST
    points here, so the engine is unreachable for the worker only (the shared dockerd is never touched)."""

    def __init__(self, target: str = "/var/run/docker.sock") -> None:
        self.target = target
        self.dir = tempfile.mkdtemp(prefix="rj-docker-proxy-")
        self.path = os.path.join(self.dir, "docker.sock")
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.server: socket.socket | None = None
        self.open()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def open(self) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        server.listen(64)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and break every open one."""
        server, self.server = self.server, None
        if server:
            server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with self.lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self.conns.clear()

    def close(self) -> None:
        self.cut()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def start_registry_cmd(client: docker.DockerClient, image: str, entrypoint: list[str] | None = None,
                       command: list[str] | None = None) -> Registry:
    port = free_port()
    name = f"rj-test-{uuid.uuid4().hex[:10]}"
    container = client.containers.run(
        image, name=name, detach=True, network_mode="host",
        environment={"REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}", "REGISTRY_STORAGE_DELETE_ENABLED": "true"},
        **({"entrypoint": entrypoint} if entrypoint else {}), **({"command": command} if command else {}),
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/v2/")
    return Registry(url, name, container)


@pytest.fixture
def own_registries(docker_client: docker.DockerClient) -> Iterator[list[Registry]]:
    made: list[Registry] = []
    yield made
    for reg in made:
        with contextlib.suppress(docker.errors.APIError):
            reg.container.remove(force=True, v=True)


def stuck_manifest(reg: Registry, img: images.Image) -> Callable[[], None]:
    """Turn a stored manifest into a FIFO: garbage-collect's mark phase blocks on it, like GC on storage that
    hangs. Returns the function that puts the real manifest back."""
    hexd = img.digest.split(":")[1]
    path = f"{V2}/blobs/sha256/{hexd[:2]}/{hexd}/data"
    reg.exec("rm", path)
    reg.exec("mkfifo", path)

    def unstick() -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("data")
            info.size = len(img.manifest)
            tar.addfile(info, io.BytesIO(img.manifest))
        # The archive replaces the FIFO (the engine writes into a stopped container's filesystem too).
        assert reg.container.put_archive(path.rsplit("/", 1)[0], buf.getvalue())

    return unstick


# -- the fence defeated behind preflight's back --------------------------------------------------------

def test_fence_defeated_by_an_entrypoint_variable_fails_before_gc(
        docker_client: docker.DockerClient, registry_image: str, own_registries: list[Registry],
        redis_server: str, redis_conn: redis.Redis, own_stacks: list[Stack]) -> None:
    # The variable is exported by the entrypoint's shell: it is not in the container's Config.Env.
    script = ("export REGISTRY_STORAGE_MAINTENANCE='{\"uploadpurging\":{\"enabled\":false}}'; "
              "exec registry serve \"$1\"")
    reg = start_registry_cmd(docker_client, registry_image, entrypoint=["/bin/sh", "-c", script, "sh"],
                             command=[f"{CONFIG_DIR}/config.yml"])
    own_registries.append(reg)
    assert not any(e.startswith("REGISTRY_STORAGE_MAINTENANCE") for e in reg.container.attrs["Config"]["Env"])
    s = start_stack(reg, redis_server, redis_conn)
    own_stacks.append(s)
    kept = seed(reg)
    doomed = kept.pop("t0")
    before = reg.blob_files()
    with GcWatch(reg, docker_client) as watch:
        job = s.wait(s.delete({"repository": "team/app", "tags": ["t0"]})["id"], timeout=180)
    assert job["status"] == "failed" and job["error"]["code"] == "FENCE_NOT_EFFECTIVE", job
    assert job["error"]["step"] == "fence"
    message = job["error"]["message"]
    assert "REGISTRY_STORAGE_MAINTENANCE" in message and "entrypoint" in message and "Fix:" in message
    assert [st["name"] for st in job["steps"]].count("gc") == 0 and watch.seen_gc == 0  # no GC at all
    assert set(doomed.blobs) <= set(reg.blob_files()) and set(before) <= set(reg.blob_files())
    restart = next(st for st in job["steps"] if st["name"] == "restart")
    assert restart["status"] == "succeeded" and restart["outcome"]["write_probe_seconds"] >= 0
    assert images.wait_until(lambda: writable_and_clean(reg), 60)
    for tag in kept:
        assert images.pull_verified(reg.url, "team/app", tag) == [], tag
    # A gc-only request is refused the same way, and still leaves everything pullable.
    again = s.wait(s.post("/v1/gc", {}).json()["id"], timeout=180)
    assert again["status"] == "failed" and again["error"]["code"] == "FENCE_NOT_EFFECTIVE"
    assert writable_and_clean(reg)


# -- bounded windows ---------------------------------------------------------------------------------

@pytest.mark.parametrize("limits,code", [
    ({"JANITOR_GC_TIMEOUT": "4"}, "GC_TIMEOUT"),
    ({"JANITOR_MAX_WINDOW": "25"}, "WINDOW_TIMEOUT"),
])
def test_a_hung_gc_is_stopped_and_the_registry_made_writable(
        registry: Registry, make_stack: Callable[..., Stack], docker_client: docker.DockerClient,
        limits: dict[str, str], code: str) -> None:
    s = make_stack(registry, JANITOR_HTTP_TIMEOUT="5", JANITOR_REGISTRY_RETRY="2", **limits)
    kept = seed(registry)
    stuck = images.image()
    images.Pusher(registry.url).image("team/stuck", stuck, "v1")
    unstick = stuck_manifest(registry, stuck)
    started = time.monotonic()
    with GcWatch(registry, docker_client) as watch:
        job = s.wait(s.post("/v1/gc", {}).json()["id"], timeout=240)
    elapsed = time.monotonic() - started
    assert job["status"] == "failed" and job["error"]["code"] == code and job["error"]["step"] == "gc", job
    assert watch.seen_gc > 0 and watch.violations == []
    gc_step = next(st for st in job["steps"] if st["name"] == "gc")
    gc_seconds = images_seconds(gc_step)
    assert gc_seconds < (12 if code == "GC_TIMEOUT" else 30), gc_seconds  # stopped, not left hanging
    assert elapsed < 200
    top = docker_client.api.top(registry.name)["Processes"] or []
    assert not any("garbage-collect" in " ".join(p) for p in top)  # the exec was stopped, not abandoned
    assert images.wait_until(lambda: writable_and_clean(registry), 60)
    unstick()
    for tag in kept:
        assert images.pull_verified(registry.url, "team/app", tag) == [], tag
    assert images.pull_verified(registry.url, "team/stuck", "v1") == []


def images_seconds(step: dict[str, Any]) -> float:
    from datetime import datetime
    parse = lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()  # noqa: E731
    return parse(step["finished_at"]) - parse(step["started_at"])


# -- faults while a window runs ---------------------------------------------------------------------------

def test_redis_restarted_during_a_window(registry: Registry, docker_client: docker.DockerClient,
                                         own_redis: Callable[[], tuple[subprocess.Popen, str]],
                                         own_stacks: list[Stack]) -> None:
    proc, url = own_redis()
    s = start_stack(registry, url, redis.Redis.from_url(url), JANITOR_UPLOAD_DRAIN="3")
    own_stacks.append(s)
    kept = seed(registry)
    kept.pop("t0")
    pushes = Pushes(registry.url)
    pushes.start()
    with GcWatch(registry, docker_client) as watch:
        job_id = s.delete({"repository": "team/app", "tags": ["t0"]})["id"]
        assert step_reached(redis.Redis.from_url(url), job_id, "fence")
        proc.terminate()
        proc.wait(10)
        time.sleep(2)
        own_redis()
        job = s.wait(job_id, timeout=180)
        pushes.finish()
    clear_state(job, {"LOCK_LOST", "INTERRUPTED"})
    assert_after(s, registry, kept, pushes, watch)


def test_docker_engine_unreachable_during_a_window(registry: Registry, docker_client: docker.DockerClient,
                                                   make_stack: Callable[..., Stack]) -> None:
    proxy = SocketProxy()
    try:
        s = make_stack(registry, DOCKER_HOST=proxy.url, JANITOR_UPLOAD_DRAIN="3")
        kept = seed(registry)
        kept.pop("t0")
        pushes = Pushes(registry.url)
        pushes.start()
        with GcWatch(registry, docker_client) as watch:
            job_id = s.delete({"repository": "team/app", "tags": ["t0"]})["id"]
            assert step_reached(s.redis, job_id, "hold")
            proxy.cut()
            time.sleep(4)
            proxy.open()
            job = s.wait(job_id, timeout=180)
            pushes.finish()
        clear_state(job, {"DOCKER_UNAVAILABLE"})
        restart = next(st for st in job["steps"] if st["name"] == "restart")
        assert restart["status"] == "succeeded", restart  # undoing the fence waited for the engine
        assert_after(s, registry, kept, pushes, watch)
    finally:
        proxy.close()


def test_registry_container_killed_during_gc(registry: Registry, docker_client: docker.DockerClient,
                                             make_stack: Callable[..., Stack]) -> None:
    s = make_stack(registry, JANITOR_UPLOAD_DRAIN="3")
    kept = seed(registry)
    stuck = images.image()
    images.Pusher(registry.url).image("team/stuck", stuck, "v1")
    unstick = stuck_manifest(registry, stuck)  # GC runs until it is killed
    pushes = Pushes(registry.url)
    pushes.start()
    with GcWatch(registry, docker_client) as watch:
        job_id = s.post("/v1/gc", {}).json()["id"]
        assert images.wait_until(lambda: watch.seen_gc > 0, 120), "garbage-collect never ran"
        registry.container.kill()
        unstick()  # into the stopped container's filesystem: the storage is whole again
        job = s.wait(job_id, timeout=180)
        pushes.finish()
    assert job["status"] == "failed" and job["error"]["step"] == "gc", job
    clear_state(job, {"GC_FAILED", "CONTAINER_ERROR", "DOCKER_UNAVAILABLE"})
    restart = next(st for st in job["steps"] if st["name"] == "restart")
    assert restart["status"] == "succeeded", restart
    registry.container.reload()
    assert registry.container.status == "running"
    assert images.pull_verified(registry.url, "team/stuck", "v1") == []
    assert_after(s, registry, kept, pushes, watch)


def test_two_workers_and_redis_paused_past_the_lease(registry: Registry, docker_client: docker.DockerClient,
                                                     own_redis: Callable[[], tuple[subprocess.Popen, str]],
                                                     own_stacks: list[Stack]) -> None:
    proc, url = own_redis()
    conn = redis.Redis.from_url(url)
    s = start_stack(registry, url, conn, JANITOR_LOCK_TTL="3", JANITOR_UPLOAD_DRAIN="3")
    own_stacks.append(s)
    first = s.procs["worker"]
    second = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=s.env, start_new_session=True)
    s.procs["worker-2"] = second
    kept = seed(registry)
    kept.pop("t0")
    kept.pop("t1")
    pushes = Pushes(registry.url)
    pushes.start()
    with GcWatch(registry, docker_client) as watch:
        job_id = s.delete({"repository": "team/app", "tags": ["t0"]})["id"]
        assert step_reached(conn, job_id, "fence")
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(7)  # more than twice the lease's TTL
        os.kill(proc.pid, signal.SIGCONT)
        # Right away a second request, which the idle worker takes: both want the lease now.
        other = s.delete({"repository": "team/app", "tags": ["t1"]})["id"]
        job = s.wait(job_id, timeout=180)
        job2 = s.wait(other, timeout=240)
        pushes.finish()
    assert job["status"] == "failed" and job["error"]["code"] in ("LOCK_LOST", "INTERRUPTED"), job
    assert not [st for st in job["steps"] if st["name"] == "gc" and st["status"] == "succeeded"]
    assert job2["status"] == "succeeded", job2
    assert first.poll() is None and second.poll() is None  # both workers still alive
    assert_after(s, registry, kept, pushes, watch)
    assert watch.seen_gc > 0  # the watch did see GC running (in the second window at least)



# -- integrity ------------------------------------------------------------------------------------------

def test_a_broken_image_found_by_verify_fails_the_job_with_integrity_broken(
        registry: Registry, make_stack: Callable[..., Stack]) -> None:
    s = make_stack(registry)
    kept = seed(registry)
    layer = images.sha256_digest(kept["t1"].layers[-1])
    hexd = layer.split(":")[1]
    registry.exec("rm", "-rf", f"{V2}/blobs/sha256/{hexd[:2]}/{hexd}")  # storage lost a layer behind our back
    # Nothing this window does touches that layer: only the full walk, on request, reads it (the targeted
    # check catching what a window broke: tests/test_e2e_window.py).
    job = s.wait(s.post("/v1/gc", {"verify": "full"}).json()["id"], timeout=180)
    assert job["status"] == "failed", job  # never a plain "succeeded"
    assert job["error"]["code"] == "INTEGRITY_BROKEN" and job["error"]["step"] == "verify", job["error"]
    assert {"repository": "team/app", "tag": "t1", "missing": layer, "kind": "blob"} in \
        job["result"]["integrity"]["broken"]
    assert job["result"]["gc"]["blobs_deleted"] == 0  # GC itself ran and succeeded
    assert writable_and_clean(registry)
    assert images.pull_verified(registry.url, "team/app", "t0") == []


def test_a_bad_holds_record_is_refused_entry_by_entry_and_the_worker_carries_on(
        registry: Registry, make_stack: Callable[..., Stack]) -> None:
    from janitor.registry.container import RegistryContainer
    from janitor.storage.filesystem import FilesystemStorage
    from janitor.window import holds

    kept = seed(registry)
    built = holds.build({"team/app": set(kept["t0"].blobs)})
    holds.place(FilesystemStorage(RegistryContainer(registry.name), "/var/lib/registry"), built)
    hold = built[0][0]
    assert hold.digest in registry.revisions()["team/app"]
    record = {"owner": "window-dead/lease-1", "holds": [
        {"repository": hold.repository, "digest": hold.digest},
        {"repository": "../../../etc", "digest": hold.digest},  # would step outside storage
        {"repository": "team/app", "digest": "sha256:../../../../etc/passwd"},
        "not an entry",
    ]}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = json.dumps(record).encode()
        info = tarfile.TarInfo("config.yml.janitor-holds")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert registry.container.put_archive(CONFIG_DIR, buf.getvalue())

    s = make_stack(registry)  # the worker's start recovers under its lease
    assert images.wait_until(lambda: hold.digest not in registry.revisions().get("team/app", set()), 60)
    # The holds are released first, then the record is set aside (kept for a person to read).
    assert images.wait_until(lambda: registry.exec("ls", CONFIG_DIR).split() == [
        "config.yml", "config.yml.janitor-holds.rejected"], 30), registry.exec("ls", CONFIG_DIR)
    assert s.procs["worker"].poll() is None  # did not crash
    for tag in kept:
        assert images.pull_verified(registry.url, "team/app", tag) == [], tag
    job = s.wait(s.post("/v1/gc", {}).json()["id"], timeout=180)
    assert job["status"] == "succeeded", job
