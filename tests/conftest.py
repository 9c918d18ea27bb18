"""Real parts for the tests: a Redis server, a registry container on the Docker engine, the API under
gunicorn and the worker, each on loopback. scripts/test.sh provisions them on a fresh machine."""

from __future__ import annotations

import atexit
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
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
import requests

from tests.images import Pusher, wait_until

ROOT = Path(__file__).resolve().parent.parent


def family(proc: Launched | subprocess.Popen[Any]) -> list[int]:
    """A running process and its descendants; none once it has exited, when its pid may be another process's
    already (pid_max is 32768 here and a run starts more processes than that)."""
    return [] if proc.poll() is not None else [proc.pid, *descendants(proc.pid)]


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


class Launched:
    """A process forked by tests/launcher.py, with the part of `subprocess.Popen` the tests use: it is the
    launcher's child, so its exit code comes from there."""

    def __init__(self, launcher: Launcher, pid: int) -> None:
        self.launcher, self.pid, self.returncode = launcher, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.launcher.ask({"status": self.pid})["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.02)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Launcher:
    """One fork server per test process (tests/launcher.py), started on first use, gone with the process."""

    def __init__(self) -> None:
        self.path = os.path.join(tempfile.mkdtemp(prefix="rj-launcher-"), "socket")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.launcher", self.path], cwd=ROOT)
        if not wait_until(lambda: os.path.exists(self.path) or self.proc.poll() is not None, 60, 0.02) \
                or self.proc.poll() is not None:
            raise RuntimeError("tests/launcher.py did not start")
        atexit.register(self.close)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(self.path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            return dict(json.loads(sock.makefile("rb").readline()))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


_launcher: list[Launcher] = []


def spawn(argv: list[str], env: dict[str, str], stderr: Path | None = None) -> Launched:
    """`subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, stderr=...)` for `python -m` argv,
    forked from a process that has the stack's libraries imported already (tests/launcher.py)."""
    if not _launcher:
        _launcher.append(Launcher())
    launcher = _launcher[0]
    spec = {"argv": argv, "env": env, "cwd": str(ROOT), "stderr": str(stderr) if stderr else None}
    return Launched(launcher, int(launcher.ask({"spawn": spec})["pid"]))


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
class S3Endpoint:
    """A real S3 endpoint on loopback (moto in server mode) and the credentials the tests use with it."""

    url: str
    access_key: str = "janitor-test"
    secret_key: str = "janitor-test-secret"
    region: str = "us-east-1"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(s3={"addressing_style": "path"}))

    def new_bucket(self) -> str:
        name = f"rj-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@dataclass
class Bucket:
    """Where an S3-backed test registry keeps its files: read straight from the bucket, like the tests read a
    filesystem registry's files straight from its container."""

    endpoint: S3Endpoint
    name: str
    rootdirectory: str = ""

    @property
    def v2(self) -> str:
        root = self.rootdirectory.strip("/")
        return (root + "/" if root else "") + "docker/registry/v2/"

    def objects(self, under: str) -> dict[str, dict[str, Any]]:
        """key -> listing entry of every object under v2/<under>."""
        found: dict[str, dict[str, Any]] = {}
        for page in self.endpoint.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=self.v2 + under):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = obj
        return found

    def remove(self, under: str) -> None:
        """Delete every object under v2/<under>, behind the registry's back."""
        keys = list(self.objects(under))
        if keys:
            self.endpoint.client().delete_objects(Bucket=self.name, Delete={"Objects": [{"Key": k} for k in keys]})


def s3_config(bucket: Bucket, **storage: Any) -> str:
    """A registry config whose storage is the bucket; the keys come from the environment (REGISTRY_STORAGE_S3_*),
    as many deployments pass secrets, so both ways of configuring the driver are read."""
    import yaml
    s3 = {"region": bucket.endpoint.region, "bucket": bucket.name, "regionendpoint": bucket.endpoint.url,
          "forcepathstyle": True, "secure": False, "v4auth": True, "rootdirectory": bucket.rootdirectory or "/",
          **storage}
    return yaml.safe_dump({
        "version": 0.1, "log": {"fields": {"service": "registry"}},
        "storage": {"cache": {"blobdescriptor": "inmemory"}, "s3": s3, "redirect": {"disable": True}},
        # Stopped, the registry answers what it has begun before it exits (0): its access log then shows every
        # write, and the fence's reads list again only what changed (janitor/window/journal.py).
        "http": {"addr": ":5000", "headers": {"X-Content-Type-Options": ["nosniff"]}, "draintimeout": "5s"},
    })


@dataclass
class Registry:
    url: str
    name: str
    container: Any
    bucket: Bucket | None = None  # an S3-backed registry's bucket; None: filesystem storage in the container

    @property
    def driver(self) -> str:
        return "s3" if self.bucket else "filesystem"

    def exec(self, *argv: str) -> str:
        code, out = self.container.exec_run(list(argv))
        assert code == 0, out
        return out.decode()

    def blob_files(self) -> dict[str, int]:
        """digest -> size of every blob in storage, read straight from the filesystem (or the bucket)."""
        if self.bucket:
            return {"sha256:" + key.split("/")[-2]: int(obj["Size"])
                    for key, obj in self.bucket.objects("blobs/").items() if key.endswith("/data")}
        out = self.exec("find", "/var/lib/registry/docker/registry/v2/blobs", "-type", "f", "-name", "data",
                        "-exec", "stat", "-c", "%s %n", "{}", "+") if self.has_blobs() else ""
        return {"sha256:" + line.split("/")[-2]: int(line.split()[0]) for line in out.splitlines() if line.strip()}

    def has_blobs(self) -> bool:
        if self.bucket:
            return bool(self.bucket.objects("blobs/"))
        code, _ = self.container.exec_run(["test", "-d", "/var/lib/registry/docker/registry/v2/blobs"])
        return code == 0

    def revisions(self) -> dict[str, set[str]]:
        """Every stored manifest per repository, read straight from the filesystem (or the bucket)."""
        if self.bucket:
            keys = [k[len(self.bucket.v2 + "repositories/"):] for k in self.bucket.objects("repositories/")
                    if "/_manifests/revisions/sha256/" in k and k.endswith("/link")]
            found_s3: dict[str, set[str]] = {}
            for key in keys:
                repo, _, rest = key.partition("/_manifests/revisions/sha256/")
                found_s3.setdefault(repo, set()).add("sha256:" + rest.split("/")[0])
            return found_s3
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


# Without the engine's default seccomp filter, which runc loads again for every exec: an exec costs 33-43 ms of
# the machine's CPU instead of 48-54 (scripts/bench_docker_ops.py), and a run makes about 3,000 (every window
# reads and writes the registry's storage through them). Nothing the janitor does depends on the filter; the
# registries of the compose, run.sh, preflight and fault tests keep it, as users' registries do.
TEST_SECURITY_OPT = ["seccomp=unconfined"]


def start_registry(docker_client: docker.DockerClient, image: str, *,
                   volumes: dict[str, dict[str, str]] | None = None, config: str | None = None,
                   bucket: Bucket | None = None, **env: str) -> Registry:
    """`volumes` is docker-py's bind mapping, {host_path: {"bind": container_path, "mode": "ro"}}. `config`
    replaces the image's /etc/docker/registry/config.yml before the registry starts. Only the environment
    given here reaches the container (never this machine's: an AWS_CA_BUNDLE makes the s3 driver panic)."""
    port = free_port()
    name = f"rj-test-{uuid.uuid4().hex[:10]}"
    container = docker_client.containers.create(
        image, name=name, network_mode="host",
        environment={"REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}", "REGISTRY_STORAGE_DELETE_ENABLED": "true", **env},
        **({"volumes": volumes} if volumes else {}),
        security_opt=TEST_SECURITY_OPT,
    )
    if config is not None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("config.yml")
            info.size, info.mode = len(config.encode()), 0o644
            tar.addfile(info, io.BytesIO(config.encode()))
        container.put_archive("/etc/docker/registry", buf.getvalue())
    container.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/")
    except RuntimeError:
        container.reload()
        raise RuntimeError(f"registry {name} did not come up: {container.logs()[-3000:].decode(errors='replace')}")
    return Registry(url, name, container, bucket)


class GcExecs:
    """Which `garbage-collect` execs run in a container now, from the engine's event stream: no polling
    (`docker top` runs `ps` on the host, about 18 ms of CPU each time). Subscribed on entry, so nothing that
    starts after it is missed."""

    def __init__(self, client: docker.DockerClient, container: str) -> None:
        self.client, self.container = client, container
        self.running: set[str] = set()
        self.started = 0
        self.changed = threading.Condition()

    def __enter__(self) -> GcExecs:
        self._stream = self.client.events(decode=True, filters={"container": self.container, "type": "container"})
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()
        self._thread.join(10)

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # the stream closed
            for event in self._stream:
                action, exec_id = event.get("Action", ""), event.get("Actor", {}).get("Attributes", {}).get("execID")
                with self.changed:
                    if action.startswith("exec_start") and "garbage-collect" in action and exec_id:
                        self.running.add(exec_id)
                        self.started += 1
                    elif action == "exec_die":
                        self.running.discard(exec_id)
                    elif action == "die":  # the container stopped: its execs with it
                        self.running.clear()
                    self.changed.notify_all()

    def wait_running(self, timeout: float) -> bool:
        """True once a garbage-collect exec runs (now or since entry), False after `timeout`."""
        with self.changed:
            return self.changed.wait_for(lambda: self.started > 0, timeout)


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


@contextlib.contextmanager
def moto_server() -> Iterator[S3Endpoint]:
    """moto in server mode on loopback (tests/moto_server.py: moto's ThreadedMotoServer, in a process of its own
    so that the test's own threads, pushing and reading, never compete with the store for one interpreter
    lock)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.moto_server", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        endpoint = S3Endpoint(f"http://127.0.0.1:{port}")
        assert wait_until(lambda: _answers(endpoint), 30), "moto did not start"
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """A real S3 API over HTTP on loopback, for the registry and the janitor alike."""
    with moto_server() as endpoint:
        yield endpoint


def _answers(endpoint: S3Endpoint) -> bool:
    try:
        endpoint.client().list_buckets()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


@pytest.fixture
def make_s3_registry(docker_client: docker.DockerClient, registry_image: str,
                     s3_server: S3Endpoint) -> Iterator[Callable[..., Registry]]:
    """Registries storing into a new bucket each (under `rootdirectory`), removed after the test."""
    made: list[Registry] = []

    def make(rootdirectory: str = "/registry", storage: dict[str, Any] | None = None, **env: str) -> Registry:
        bucket = Bucket(s3_server, s3_server.new_bucket(), rootdirectory)
        keys = {"REGISTRY_STORAGE_S3_ACCESSKEY": s3_server.access_key,
                "REGISTRY_STORAGE_S3_SECRETKEY": s3_server.secret_key}
        made.append(start_registry(docker_client, registry_image, config=s3_config(bucket, **(storage or {})),
                                   bucket=bucket, **{**keys, **env}))
        return made[-1]

    yield make
    for reg in made:
        reg.container.remove(force=True, v=True)


DRIVERS = ("filesystem", "s3")


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    """Run a test once per storage driver: the suites that prove a promise on the filesystem prove it on S3."""
    return str(request.param)


@pytest.fixture
def registry(request: pytest.FixtureRequest, make_registry: Callable[..., Registry]) -> Registry:
    """A filesystem registry, or with the `driver` fixture in the test, one per driver."""
    if "driver" in request.fixturenames and request.getfixturevalue("driver") == "s3":
        return request.getfixturevalue("make_s3_registry")()
    return make_registry()


@dataclass
class Stack:
    """The service as a user runs it: gunicorn API and `python -m worker`, against one registry. Both are
    forked from tests/launcher.py, which has their libraries imported already; `tests/test_e2e_ops.py`,
    run.sh's and compose's tests start them from a fresh interpreter."""

    api: str
    registry: Registry
    redis: redis.Redis
    env: dict[str, str]
    procs: dict[str, subprocess.Popen | Launched] = field(default_factory=dict)
    token: str = "test-token"
    scratch: str | None = None  # gunicorn's log and metrics directory, removed with the stack

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

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """`timeout` defaults to 120 s, 600 s on S3 (every storage read is an HTTP request there)."""
        # On S3 the registry's own garbage-collect walks the bucket through moto: minutes on a loaded machine.
        timeout = timeout or (600.0 if self.registry.bucket else 120.0)
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

    def start_worker(self) -> Launched:
        proc = spawn([sys.executable, "-m", "worker"], self.env)
        self.procs["worker"] = proc
        return proc

    def kill_worker(self) -> None:
        """SIGKILL the worker and its RQ work horse (which runs in a session of its own)."""
        proc = self.procs.pop("worker")
        for pid in family(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)

    def kill(self) -> None:
        """SIGKILL every process of the stack at once: a test's teardown, where nothing after it needs a graceful
        stop (Redis is flushed and the registry removed next), and waiting for one costs seconds per test."""
        for proc in self.procs.values():
            for pid in family(proc):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.procs.clear()
        self.remove_scratch()

    def remove_scratch(self) -> None:
        """A killed gunicorn never runs its on_exit, which would remove the metrics directory it made."""
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def stop(self) -> None:
        for proc in self.procs.values():
            pids = family(proc)
            if pids:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.procs.clear()
        self.remove_scratch()


def start_stack(registry: Registry, redis_url: str, conn: redis.Redis, worker: bool = True, port: int | None = None,
                **extra: str) -> Stack:
    """`port`: the API's, when something must know it beforehand (a registry sending it notifications).
    A port picked here can be taken by another test process before gunicorn binds it: then another is tried."""
    for attempt in range(3):
        api_port = port or free_port()
        scratch = tempfile.mkdtemp(prefix="rj-stack-")
        env = {**os.environ, "REGISTRY_URL": registry.url, "REGISTRY_CONTAINER": registry.name,
               "REDIS_URL": redis_url, "API_TOKENS": "test-token,other-token", "JANITOR_LOCK_TTL": "6",
               "PROMETHEUS_MULTIPROC_DIR": os.path.join(scratch, "metrics"), **extra}
        os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        stack = Stack(f"http://127.0.0.1:{api_port}", registry, conn, env, scratch=scratch)
        log_path = Path(scratch) / "api.log"
        stack.procs["api"] = api = spawn(
            [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{api_port}", "-w", "1", "--threads", "8",
             "service:create_app()"], env, stderr=log_path)

        def up() -> bool:
            try:
                return requests.get(f"{stack.api}/healthz", timeout=1).status_code < 500
            except requests.RequestException:
                return False
        # gunicorn imports the app: slow on a loaded machine; a gunicorn that exited will not come up.
        wait_until(lambda: up() or api.poll() is not None, 90)
        if up():
            break
        text = log_path.read_text(errors="replace")
        stack.stop()
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
        s.kill()


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
                                  "registry", "make_stack", "stack",
                                  "make_s3_registry"})


# Tests that mostly wait (a schedule's period, a fuzzer's time budget) rather than compute: collected first, so
# they run while the others keep both cores busy. Collected in file order they came last and were the run's
# tail: the other processes had finished and the machine sat idle for about a minute.
STARTED_FIRST = ("tests/test_e2e_upcoming.py::test_warning_before_a_scheduled_run_then_the_run_plans_again",
                 "tests/test_e2e_fuzz.py::test_schemathesis_finds_nothing")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: item.nodeid not in STARTED_FIRST)  # stable: everything else keeps its order
