"""Real parts for the tests: a Redis server, a registry container on the Docker engine, the API under
gunicorn and the worker, each on loopback. scripts/test.sh provisions them on a fresh machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
import requests

from tests.images import Pusher, wait_until

ROOT = Path(__file__).resolve().parent.parent


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    def up() -> bool:
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False
    if not wait_until(up, timeout):
        raise RuntimeError(f"{url} did not come up")


@pytest.fixture(scope="session")
def registry_image() -> str:
    image = os.environ.get("TEST_REGISTRY_IMAGE")
    if not image:
        out = subprocess.run([str(ROOT / "scripts/provision.sh")], check=True, capture_output=True, text=True)
        image = out.stdout.strip().splitlines()[-1]
    return image


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="rj-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    conn = redis.Redis.from_url(url)
    assert wait_until(lambda: pings(conn), 20), "redis-server did not start"
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_conn(redis_server: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_server)
    conn.flushdb()
    yield conn
    conn.flushdb()


@dataclass
class Registry:
    url: str
    name: str
    container: Any

    def exec(self, *argv: str) -> str:
        code, out = self.container.exec_run(list(argv))
        assert code == 0, out
        return out.decode()

    def blob_files(self) -> dict[str, int]:
        """digest -> size of every blob in storage, read straight from the filesystem."""
        out = self.exec("find", "/var/lib/registry/docker/registry/v2/blobs", "-type", "f", "-name", "data",
                        "-exec", "stat", "-c", "%s %n", "{}", "+") if self.has_blobs() else ""
        return {"sha256:" + line.split("/")[-2]: int(line.split()[0]) for line in out.splitlines() if line.strip()}

    def has_blobs(self) -> bool:
        code, _ = self.container.exec_run(["test", "-d", "/var/lib/registry/docker/registry/v2/blobs"])
        return code == 0

    def revisions(self) -> dict[str, set[str]]:
        """Every stored manifest per repository, read straight from the filesystem."""
        out = self.exec("find", "/var/lib/registry/docker/registry/v2/repositories", "-type", "f", "-path",
                        "*/_manifests/revisions/sha256/*/link") if self.has_blobs() else ""
        found: dict[str, set[str]] = {}
        for line in out.split():
            repo, _, rest = line.partition("/docker/registry/v2/repositories/")[2].partition("/_manifests/")
            found.setdefault(repo, set()).add("sha256:" + rest.split("/")[2])
        return found

    def catalog(self) -> list[str]:
        return requests.get(f"{self.url}/v2/_catalog", timeout=30).json()["repositories"]

    def storage_bytes(self) -> int:
        return sum(self.blob_files().values())


def start_registry(docker_client: docker.DockerClient, image: str, *,
                   volumes: dict[str, dict[str, str]] | None = None, **env: str) -> Registry:
    """`volumes` is docker-py's bind mapping, {host_path: {"bind": container_path, "mode": "ro"}}."""
    port = free_port()
    name = f"rj-test-{uuid.uuid4().hex[:10]}"
    container = docker_client.containers.run(
        image, name=name, detach=True, network_mode="host",
        environment={"REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}", "REGISTRY_STORAGE_DELETE_ENABLED": "true", **env},
        **({"volumes": volumes} if volumes else {}),
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/v2/")
    return Registry(url, name, container)


@pytest.fixture
def make_registry(docker_client: docker.DockerClient, registry_image: str) -> Iterator[Callable[..., Registry]]:
    """Registries with extra environment, removed (with their storage) after the test."""
    made: list[Registry] = []

    def make(**env: str) -> Registry:
        made.append(start_registry(docker_client, registry_image, **env))
        return made[-1]

    yield make
    for reg in made:
        reg.container.remove(force=True, v=True)


@pytest.fixture
def registry(make_registry: Callable[..., Registry]) -> Registry:
    return make_registry()


@dataclass
class Stack:
    """The service as a user runs it: gunicorn API and `python -m worker`, against one registry."""

    api: str
    registry: Registry
    redis: redis.Redis
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    token: str = "test-token"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.api + path, headers=self.headers, timeout=60, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return requests.post(self.api + path, json=body, headers=self.headers, timeout=60, **kw)

    def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.post("/v1/deletions", body)
        assert resp.status_code == 202, resp.text
        return resp.json()

    def wait(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = self.get(f"/v1/jobs/{job_id}").json()
            return job if job["status"] in ("succeeded", "failed") else None
        job = wait_until(finished, timeout, 0.2)
        assert job, f"job {job_id} did not finish within {timeout}s: {self.get(f'/v1/jobs/{job_id}').json()}"
        return job

    def nothing_queued(self) -> bool:
        """No job record, no waiting request, no RQ job: what a refused request must leave behind."""
        return not self.redis.keys("janitor:*:job:*") and not self.redis.keys("janitor:*:pending") \
            and not any(self.redis.llen(q) for q in self.redis.keys("rq:queue:janitor*"))

    def pusher(self) -> Pusher:
        return Pusher(self.registry.url)

    def start_worker(self) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=self.env, start_new_session=True)
        self.procs["worker"] = proc
        return proc

    def kill_worker(self) -> None:
        """SIGKILL the worker and its RQ work horse (which runs in a session of its own)."""
        proc = self.procs.pop("worker")
        for pid in [proc.pid, *descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            family = [proc.pid, *descendants(proc.pid)]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for pid in family:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.procs.clear()


def start_stack(registry: Registry, redis_url: str, conn: redis.Redis, worker: bool = True, port: int | None = None,
                **extra: str) -> Stack:
    """`port`: the API's, when something must know it beforehand (a registry sending it notifications).
    A port picked here can be taken by another test process before gunicorn binds it: then another is tried."""
    for attempt in range(3):
        api_port = port or free_port()
        env = {**os.environ, "REGISTRY_URL": registry.url, "REGISTRY_CONTAINER": registry.name,
               "REDIS_URL": redis_url, "API_TOKENS": "test-token,other-token", "JANITOR_LOCK_TTL": "6", **extra}
        stack = Stack(f"http://127.0.0.1:{api_port}", registry, conn, env)
        log = tempfile.NamedTemporaryFile(prefix="rj-api-", suffix=".log", delete=False)  # noqa: SIM115
        stack.procs["api"] = api = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{api_port}", "-w", "2", "--threads", "4",
             "service:create_app()"], cwd=ROOT, env=env, start_new_session=True, stderr=log)

        def up() -> bool:
            try:
                return requests.get(f"{stack.api}/healthz", timeout=1).status_code < 500
            except requests.RequestException:
                return False
        # gunicorn imports the app: slow on a loaded machine; a gunicorn that exited will not come up.
        wait_until(lambda: up() or api.poll() is not None, 90)
        if up():
            break
        stack.stop()
        text = Path(log.name).read_text(errors="replace")
        if port is None and attempt < 2 and "Address already in use" in text:
            continue
        raise RuntimeError(f"{stack.api}/healthz did not come up; gunicorn said:\n{text[-3000:]}")
    if worker:
        stack.start_worker()
    return stack


@pytest.fixture
def make_stack(redis_server: str, redis_conn: redis.Redis) -> Iterator[Callable[..., Stack]]:
    """API and worker with extra environment against a given registry, stopped after the test."""
    made: list[Stack] = []

    def make(registry: Registry, **env: str) -> Stack:
        made.append(start_stack(registry, redis_server, redis_conn, **env))
        return made[-1]

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def stack(registry: Registry, make_stack: Callable[..., Stack]) -> Stack:
    return make_stack(registry)


def job_key(conn: redis.Redis, job_id: str) -> str | None:
    """Where a job's record is: `janitor:<registry namespace>:job:<id>` (records are namespaced by registry)."""
    found = conn.keys(f"janitor:*:job:{job_id}")
    return found[0].decode() if found else None


def job_record(conn: redis.Redis, job_id: str) -> bytes | None:
    key = job_key(conn, job_id)
    return conn.get(key) if key else None


# Fixtures that start or reach a real server: a test using any of them is end-to-end, whatever its file says, so
# the fast tier (`pytest -m "not e2e"`, scripts/test-fast.sh) never needs a Docker engine or a Redis server.
REAL_SERVER_FIXTURES = frozenset({"docker_client", "redis_server", "redis_conn", "registry_image", "make_registry",
                                  "registry", "make_stack", "stack"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
