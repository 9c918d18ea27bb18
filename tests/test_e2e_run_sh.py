"""README command 1 for a newcomer: scripts/run.sh with no REGISTRY_URL starts a local registry too, so one
can push, list, dry-run and delete at once; Ctrl-C stops everything it started. With REGISTRY_URL set it
starts no registry."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
import requests

from tests import images
from tests.conftest import ROOT, Registry, free_port
from tests.images import wait_until

pytestmark = pytest.mark.e2e


def _default_sigint() -> None:
    """A suite started in the background by a non-interactive shell (nohup, cron, some CI runners) inherits SIGINT
    ignored, and bash cannot trap a signal ignored at its start: Ctrl-C is given back its default here."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_sh(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(["bash", str(ROOT / "scripts/run.sh")], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_default_sigint)


def ctrl_c(proc: subprocess.Popen[bytes], timeout: float = 120) -> int:
    """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout)


@contextlib.contextmanager
def stopped_at_end(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def wait_up(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 240) -> None:
    """run.sh's API answering `url`; fails at once, with run.sh's output, if run.sh exits first (a first run may
    install the project into .venv, hence the long timeout)."""
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"run.sh exited ({proc.returncode}) before {url} answered:\n{log.read_text()}")
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False
    assert wait_until(up, timeout), f"{url} did not come up:\n{log.read_text()}"


def base_env(redis_server: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_URL", "REGISTRY_CONTAINER")}
    return {**env, "PORT": str(free_port()), "REGISTRY_JANITOR_STATE": str(tmp_path / "state"),
            "REDIS_URL": redis_server, "API_TOKENS": "run-token", **extra}


def test_without_registry_url_it_runs_a_registry_one_can_use_at_once(
        redis_server: str, redis_conn: redis.Redis, docker_client: docker.DockerClient, tmp_path: Path) -> None:
    name = f"rj-test-{uuid.uuid4().hex[:10]}"
    registry_port = free_port()
    env = base_env(redis_server, tmp_path, REGISTRY_CONTAINER=name, REGISTRY_PORT=str(registry_port))
    api = f"http://127.0.0.1:{env['PORT']}"
    headers = {"Authorization": "Bearer run-token"}
    log = tmp_path / "run.log"
    proc = run_sh(env, log)
    try:
        with stopped_at_end(proc):
            wait_up(proc, f"{api}/healthz", log)
            text = log.read_text()
            assert f"starting a local registry container {name} on 127.0.0.1:{registry_port}" in text, text
            container = docker_client.containers.get(name)
            assert container.labels.get("registry-janitor.local-registry") == "1"

            p = images.Pusher(f"http://127.0.0.1:{registry_port}")
            img = images.image()
            p.image("demo/app", img, "v1")
            p.image("demo/app", images.image(), "v2")

            def listed() -> dict[str, int]:
                repos = requests.get(f"{api}/v1/repositories", headers=headers, timeout=30).json()
                return {r["name"]: r["tag_count"] for r in repos["items"]}
            # Polling mode (this registry sends no notifications): a push shows within about a second (a read
            # of the repository begun less than RECENTLY_READ before is served as is; the worker's first
            # reconcile may be reading it right now). The bound is 2 s; room is left for a loaded machine.
            assert wait_until(lambda: listed() == {"demo/app": 2}, 5, 0.1), listed()

            def finished(job_id: str) -> dict[str, Any]:
                def done() -> dict[str, Any] | None:
                    job = requests.get(f"{api}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
                    return job if job["status"] in ("succeeded", "failed") else None
                job = wait_until(done, 120)
                assert job, f"job {job_id} did not finish"
                return job

            body = {"repository": "demo/app", "tags": ["v1"]}
            dry = requests.post(f"{api}/v1/deletions", json={**body, "dry_run": True}, headers=headers, timeout=30)
            assert dry.status_code == 202, dry.text
            dry_job = finished(dry.json()["id"])
            assert dry_job["status"] == "succeeded" and dry_job["result"]["plan"]["tags"] == ["demo/app:v1"]
            real = requests.post(f"{api}/v1/deletions", json=body, headers=headers, timeout=30)
            job = finished(real.json()["id"])
            assert job["status"] == "succeeded", job
            assert images.head_manifest(f"http://127.0.0.1:{registry_port}", "demo/app", "v1") == 404
            assert images.head_manifest(f"http://127.0.0.1:{registry_port}", "demo/app", "v2") == 200

            assert ctrl_c(proc) == 130
            container.reload()
            assert container.status == "exited"  # stopped, kept with what was pushed
            assert "stopping the local registry container" in log.read_text()
            with pytest.raises(requests.RequestException):
                requests.get(f"{api}/healthz", timeout=2)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(name).remove(force=True, v=True)


def test_with_registry_url_it_starts_no_registry(redis_server: str, redis_conn: redis.Redis,
                                                 docker_client: docker.DockerClient, tmp_path: Path) -> None:
    name = f"rj-test-{uuid.uuid4().hex[:10]}"
    env = base_env(redis_server, tmp_path, REGISTRY_URL=f"http://127.0.0.1:{free_port()}", REGISTRY_CONTAINER=name)
    log = tmp_path / "run.log"
    proc = run_sh(env, log)
    with stopped_at_end(proc):
        wait_up(proc, f"http://127.0.0.1:{env['PORT']}/healthz", log)
        assert ctrl_c(proc) == 130
    text = log.read_text()
    assert "local registry" not in text and "not usable" in text, text  # the hint about REGISTRY_CONTAINER
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(name)


def test_ctrl_c_stops_the_private_redis_last(registry: Registry, tmp_path: Path) -> None:
    """Without REDIS_URL run.sh runs its own Redis: on Ctrl-C it stops only after the worker and its webhook
    deliveries process, so nothing is left talking to a Redis that is gone (no tracebacks on the way out)."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(PORT=str(free_port()), REGISTRY_JANITOR_STATE=str(tmp_path / "state"), REGISTRY_URL=registry.url,
               REGISTRY_CONTAINER=registry.name, API_TOKENS="run-token")
    log = tmp_path / "run.log"
    proc = run_sh(env, log)
    with stopped_at_end(proc):
        wait_up(proc, f"http://127.0.0.1:{env['PORT']}/healthz", log)
        assert wait_until(lambda: "Listening on janitor-webhooks" in log.read_text(), 30), log.read_text()
        before = len(log.read_text())
        assert ctrl_c(proc, timeout=45) == 130  # RQ's own 60 s pubsub read no longer holds a stop up
    text = log.read_text()
    assert "starting a private redis-server" in text, text
    stopping = text[before:]
    assert "stopping redis-server" in stopping, stopping
    assert "Traceback" not in stopping and "Error" not in stopping, stopping
    assert "did not stop" not in stopping, stopping
