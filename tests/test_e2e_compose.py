"""docker-compose.yml started for real: `docker compose up` with the local stand-in images
(scripts/build-compose-images.sh) and tests/compose/host-network.yml, then a push to the compose registry, a
deletion through the API, GC freeing the bytes, the registry taking pushes again, and `down -v`.

Nothing is skipped: without a Docker engine, debootstrap, Debian's mirror or PyPI the image build fails and so
does the test. The first build (debootstrap and pip) takes minutes; later runs reuse the images."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import free_port
from tests.images import Pusher, image, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
OVERRIDE = ROOT / "tests" / "compose" / "host-network.yml"
BUILD_TIMEOUT = 1800  # the first build: debootstrap, Debian packages and the janitor's dependencies from PyPI
UP_TIMEOUT = 300
TOKEN = "compose-token"


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) if the CLI has it, else Debian's `docker-compose` (v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    assert found, "neither `docker compose` nor `docker-compose` is installed (scripts/provision.sh installs it)"
    return [found]


def build_images() -> dict[str, str]:
    # The janitor image is tagged per checkout: the engine is shared, and a test elsewhere must not swap the
    # code under this one between the build and `up`.
    tag = "registry-janitor/janitor:compose-" + hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
    proc = subprocess.run([str(ROOT / "scripts" / "build-compose-images.sh")], cwd=ROOT, capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT, env={**os.environ, "JANITOR_IMAGE": tag})
    assert proc.returncode == 0, f"building the compose images failed:\n{proc.stderr[-5000:]}"
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


class Compose:
    def __init__(self, images: dict[str, str], workdir: Path) -> None:
        self.project = f"rjcompose{uuid.uuid4().hex[:10]}"
        self.ports = {"registry": free_port(), "redis": free_port(), "api": free_port()}
        self.container = f"{self.project}-registry"
        self.env = {
            **os.environ,
            "API_TOKENS": TOKEN,
            "EVENTS_TOKEN": uuid.uuid4().hex,
            "COMPOSE_REGISTRY_PORT": str(self.ports["registry"]),
            "COMPOSE_REDIS_PORT": str(self.ports["redis"]),
            "COMPOSE_API_PORT": str(self.ports["api"]),
            "COMPOSE_REGISTRY_CONTAINER": self.container,
            "REGISTRY_IMAGE": images["REGISTRY_IMAGE"],
            "REDIS_IMAGE": images["REDIS_IMAGE"],
            "JANITOR_IMAGE": images["JANITOR_IMAGE"],
        }
        self.command = compose_command()
        self.base = [*self.command, "-p", self.project, "--project-directory", str(ROOT), "-f",
                     str(self.merged(workdir))]
        self.api = f"http://127.0.0.1:{self.ports['api']}"
        self.registry = f"http://127.0.0.1:{self.ports['registry']}"

    def merged(self, workdir: Path) -> Path:
        """docker-compose.yml with the override, as compose itself merges them, less every `ports:`: the host
        network refuses port bindings, and an override file can add ports but not remove them (`!reset` needs
        compose 2.24; Debian ships 1.29)."""
        proc = subprocess.run([*self.command, "-p", self.project, "-f", str(ROOT / "docker-compose.yml"),
                               "-f", str(OVERRIDE), "config"], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, f"compose config failed:\n{proc.stderr}"
        config = yaml.safe_load(proc.stdout)
        for name, service in config["services"].items():
            assert service.get("network_mode") == "host", f"{name} is not on the host network"
            service.pop("ports", None)
        path = workdir / "docker-compose.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def run(self, *args: str, timeout: float = UP_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.base, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "60", check=False, timeout=60).stdout

    def http(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, self.api + path, headers={"Authorization": f"Bearer {TOKEN}"},
                                timeout=30, **kw)


def registry_bytes(container: str) -> int:
    """Bytes of blob data in the registry's storage, read inside its container."""
    out = subprocess.run(["docker", "exec", container, "du", "-sk", "/var/lib/registry"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return int(out.split()[0]) * 1024


def test_compose_up_delete_gc_push_down(tmp_path: Path) -> None:
    started = time.monotonic()
    images = build_images()
    built = time.monotonic()
    stack = Compose(images, tmp_path)
    try:
        stack.run("up", "-d", "--no-build")

        def ready() -> bool:
            try:
                return stack.http("GET", "/readyz").status_code == 200
            except requests.RequestException:
                return False
        assert wait_until(ready, 180, 1), f"/readyz never answered 200:\n{stack.logs()}"

        pusher = Pusher(stack.registry)
        img = image(layers=2, layer_size=256 * 1024)
        pusher.image("compose/app", img, "v1")
        keep = image(layers=1)
        pusher.image("compose/keep", keep, "v1")
        before = registry_bytes(stack.container)

        resp = stack.http("POST", "/v1/deletions", json={"repository": "compose/app", "tags": ["v1"]})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]

        def finished() -> dict | None:
            job = stack.http("GET", f"/v1/jobs/{job_id}").json()
            return job if job["status"] in ("succeeded", "failed") else None
        job = wait_until(finished, 240, 1)
        assert job, f"job {job_id} did not finish:\n{stack.logs()}"
        assert job["status"] == "succeeded", f"{json.dumps(job, indent=1)}\n{stack.logs()}"
        assert job["result"]["bytes_freed"] > 0, job["result"]
        after = registry_bytes(stack.container)
        assert after < before - 256 * 1024, f"storage went from {before} to {after} bytes only"

        # Writable again after the maintenance window: the registry takes a new push, and serves it.
        def pushes() -> bool:
            try:
                Pusher(stack.registry).image("compose/app", image(layers=1), "v2")
                return True
            except requests.RequestException:
                return False
        assert wait_until(pushes, 60, 1), f"the registry refused pushes after GC:\n{stack.logs()}"
        tags = requests.get(f"{stack.registry}/v2/compose/app/tags/list", timeout=30).json()["tags"]
        assert tags == ["v2"]
        assert requests.get(f"{stack.registry}/v2/compose/keep/manifests/v1", timeout=30,
                            headers={"Accept": img.media_type}).status_code == 200
    finally:
        down = stack.run("down", "-v", "--remove-orphans", check=False, timeout=180)
        print(f"compose images built in {built - started:.0f}s; stack run in {time.monotonic() - built:.0f}s")
    assert down.returncode == 0, down.stderr
    leftover = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}"],
                              capture_output=True, text=True, timeout=60).stdout.strip()
    assert not leftover, f"down -v left containers: {leftover}"
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                              f"label=com.docker.compose.project={stack.project}"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    assert not volumes, f"down -v left volumes: {volumes}"
