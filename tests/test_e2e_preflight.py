"""Deployments the fence cannot work around, on real registry containers started with those variables,
commands and mounts: each window either runs a real fenced GC on the right file or fails before deleting
anything, with its code; the registry stays writable and every image pullable."""

from __future__ import annotations

import io
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from janitor import errors
from janitor.registry.container import RegistryContainer
from janitor.storage import files as storage
from janitor.window.fence import MARKER, readonly_config
from tests import images
from tests.conftest import Registry, Stack, free_port, wait_http
from tests.images import wait_until

pytestmark = pytest.mark.e2e
IMAGE_CONFIG = "/etc/docker/registry/config.yml"
CONFIG = b"""version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
"""


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def custom_registry(docker_client: docker.DockerClient, registry_image: str) -> Iterator[Callable[..., Registry]]:
    """Registries started with a given command, environment, mounts and files, removed after the test."""
    made: list[Any] = []

    def make(command: list[str] | None = None, volumes: dict[str, dict[str, str]] | None = None,
             files: dict[str, bytes] | None = None, **env: str) -> Registry:
        port = free_port()
        name = f"rj-test-{uuid.uuid4().hex[:10]}"
        container = docker_client.containers.create(
            registry_image, command=command, name=name, network_mode="host", volumes=volumes or {},
            environment={"REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}", "REGISTRY_STORAGE_DELETE_ENABLED": "true", **env})
        made.append(container)
        if files:
            assert container.put_archive("/", _tar(files))
        container.start()
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v2/")
        return Registry(url, name, container)

    yield make
    for container in made:
        container.remove(force=True, v=True)


def _writable(url: str) -> bool:
    """A real write: a blob upload is accepted (and then cancelled)."""
    resp = requests.post(f"{url}/v2/probe/blobs/uploads/", timeout=10)
    if resp.status_code != 202:
        return False
    loc = resp.headers["Location"]
    requests.delete(loc if loc.startswith("http") else url + loc, timeout=10)
    return True


def _read(reg: Registry, path: str) -> bytes:
    stream, _ = reg.container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        assert member is not None
        extracted = tar.extractfile(member)
        assert extracted is not None
        return extracted.read()


def _exists(reg: Registry, path: str) -> bool:
    try:
        reg.container.get_archive(path)
    except docker.errors.NotFound:
        return False
    return True


def _two_images(stack: Stack) -> tuple[images.Image, images.Image]:
    p = stack.pusher()
    keep, drop = images.image(), images.image()
    p.image("team/app", keep, "keep")
    p.image("team/app", drop, "drop")
    return keep, drop


def _failed_before_deleting(stack: Stack, code: str, *names: str) -> dict[str, Any]:
    """A tag deletion: the job fails in preflight with `code`, nothing is deleted, the registry stays writable."""
    keep, drop = _two_images(stack)
    job = stack.wait(stack.delete({"repository": "team/app", "tags": ["drop"]})["id"])
    assert job["status"] == "failed", job
    assert job["error"]["code"] == code and job["error"]["step"] == "preflight", job["error"]
    for name in names:
        assert name in job["error"]["message"], job["error"]["message"]
    assert [s["name"] for s in job["steps"]] == ["preflight"]
    assert job["result"].get("manifests_deleted") is None
    url = stack.registry.url
    assert _writable(url)
    assert images.pull_verified(url, "team/app", "keep") == [] and images.pull_verified(url, "team/app", "drop") == []
    assert images.head_manifest(url, "team/app", drop.digest) == 200
    return job


@pytest.mark.parametrize("variable,value,code", [
    ("REGISTRY_STORAGE_MAINTENANCE", '{"uploadpurging": {"enabled": false}}', "REGISTRY_ENV_OVERRIDES_MAINTENANCE"),
    ("REGISTRY_STORAGE", "filesystem", "REGISTRY_ENV_OVERRIDES_STORAGE"),
])
def test_an_environment_override_fails_the_job_before_any_deletion(
        custom_registry: Callable[..., Registry], make_stack: Callable[..., Stack], variable: str, value: str,
        code: str) -> None:
    reg = custom_registry(**{variable: value})
    # The trap is real: with the fence's read-only config in place, this registry still takes writes.
    config = _read(reg, IMAGE_CONFIG)
    reg.container.put_archive("/", _tar({IMAGE_CONFIG: readonly_config(config, IMAGE_CONFIG + ".bak")}))
    reg.container.restart(timeout=5)
    wait_http(f"{reg.url}/v2/")
    assert _writable(reg.url)
    reg.container.put_archive("/", _tar({IMAGE_CONFIG: config}))
    reg.container.restart(timeout=5)
    wait_http(f"{reg.url}/v2/")

    stack = make_stack(reg)
    job = _failed_before_deleting(stack, code, variable, IMAGE_CONFIG)
    assert "Nothing was deleted" in job["error"]["message"]
    ready = wait_until(lambda: stack.get("/readyz").json()["checks"].get("storage"), 30)
    assert ready and not ready["ok"] and ready["code"] == code, ready


def test_config_on_a_read_only_mount_fails_fast(custom_registry: Callable[..., Registry],
                                                make_stack: Callable[..., Stack]) -> None:
    with tempfile.TemporaryDirectory(prefix="rj-cfg-") as d:
        (Path(d) / "config.yml").write_bytes(CONFIG)
        reg = custom_registry(volumes={d: {"bind": "/etc/docker/registry", "mode": "ro"}})
        _failed_before_deleting(make_stack(reg), "REGISTRY_CONFIG_READ_ONLY", IMAGE_CONFIG, "read-only")
        assert (Path(d) / "config.yml").read_bytes() == CONFIG


def test_config_mounted_as_a_single_file_fails_fast(custom_registry: Callable[..., Registry],
                                                    make_stack: Callable[..., Stack]) -> None:
    with tempfile.TemporaryDirectory(prefix="rj-cfg-") as d:
        (Path(d) / "config.yml").write_bytes(CONFIG)
        reg = custom_registry(volumes={f"{d}/config.yml": {"bind": IMAGE_CONFIG, "mode": "rw"}})
        _failed_before_deleting(make_stack(reg), "REGISTRY_CONFIG_FILE_MOUNT", IMAGE_CONFIG, d)
        assert (Path(d) / "config.yml").read_bytes() == CONFIG
        assert sorted(p.name for p in Path(d).iterdir()) == ["config.yml"]


def test_serve_with_registry_configuration_path_fences_the_file_it_reads(
        custom_registry: Callable[..., Registry], make_stack: Callable[..., Stack]) -> None:
    """`registry serve` with no path argument reads REGISTRY_CONFIGURATION_PATH: that file is fenced and restored,
    the image's default config (which this registry never reads) is left alone."""
    config_path = "/cfg/registry.yml"
    reg = custom_registry(command=["serve"], files={config_path: CONFIG},
                          REGISTRY_CONFIGURATION_PATH=config_path)
    default = _read(reg, IMAGE_CONFIG)
    stack = make_stack(reg)
    keep, drop = _two_images(stack)

    seen: dict[str, list[int]] = {"marker": [], "probes": []}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                fenced = _read(reg, config_path).startswith(MARKER)
            except (docker.errors.APIError, tarfile.TarError):
                fenced = False
            if fenced:
                seen["marker"].append(1)
                try:
                    seen["probes"].append(requests.post(f"{reg.url}/v2/probe/blobs/uploads/", timeout=5).status_code)
                except requests.RequestException:
                    pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        job = stack.wait(stack.delete({"repository": "team/app", "tags": ["drop"]})["id"])
    finally:
        stop.set()
        watcher.join(10)
    assert job["status"] == "succeeded", job
    preflight_out = job["steps"][0]["outcome"]
    assert preflight_out["config_path"] == config_path and preflight_out["storage"]["driver"] == "filesystem"
    assert [s["name"] for s in job["steps"]][:6] == ["preflight", "delete", "drain", "fence", "hold", "gc"]
    assert job["result"]["gc"]["blobs_deleted"] >= len(drop.blobs)
    assert job["result"]["bytes_freed"] == job["result"]["planned"]["bytes"] > 0
    # The file the registry reads was fenced (writes got 405 meanwhile), then restored byte for byte.
    assert seen["marker"], "the config at REGISTRY_CONFIGURATION_PATH was never rewritten"
    assert 405 in seen["probes"], seen["probes"]
    assert _read(reg, config_path) == CONFIG
    assert not _exists(reg, config_path + ".janitor-original")
    assert _read(reg, IMAGE_CONFIG) == default and not _exists(reg, IMAGE_CONFIG + ".janitor-original")
    assert _writable(reg.url)
    assert images.pull_verified(reg.url, "team/app", "keep") == []
    assert images.head_manifest(reg.url, "team/app", "drop") == 404
    assert all(images.head_blob(reg.url, "team/app", d) == 404 for d in drop.blobs if d not in keep.blobs)


def test_inmemory_storage_says_which_protections_are_off(custom_registry: Callable[..., Registry],
                                                         make_stack: Callable[..., Stack]) -> None:
    reg = custom_registry(REGISTRY_STORAGE="inmemory")
    stack = make_stack(reg)
    keep, drop = _two_images(stack)
    found = wait_until(lambda: stack.get("/readyz").json()["checks"].get("storage"), 30)
    assert found, stack.get("/readyz").json()
    assert found["ok"] and found["driver"] == "inmemory" and not found["filesystem"] and not found["gc_runs"]
    assert set(found["protections_off"]) == {"holds", "untagged_listing", "repository_removal", "exact_bytes",
                                             "garbage_collection"}
    assert "inmemory" in found["message"] and "untagged" in found["message"]

    for body in ({"repository": "team/app", "untagged": True}, {"repository": "team/app", "all_tags": True},
                 {"all_repositories": True, "confirm": stack.registry.url.split("//")[1]}):
        resp = stack.post("/v1/deletions", body)
        assert resp.status_code == 409, resp.text
        err = resp.json()
        assert err["code"] == "STORAGE_ACCESS_REQUIRED" and "inmemory" in err["message"], err
        assert "tags or digests" in err["message"]
    assert stack.nothing_queued()

    job = stack.wait(stack.delete({"repository": "team/app", "tags": ["drop"]})["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["manifests_deleted"] == [drop.digest]
    assert set(job["result"]["storage"]["protections_off"]) == set(found["protections_off"])
    assert "planned" not in job["result"] and "bytes_freed" not in job["result"], job["result"]
    assert "bytes" not in job["steps"][1]["outcome"]["plan"]
    gc_step = next(s for s in job["steps"] if s["name"] == "gc")
    assert gc_step["outcome"]["skipped"] and "inmemory" in gc_step["outcome"]["reason"]
    assert "fence" not in [s["name"] for s in job["steps"]]  # a restart would erase an inmemory registry
    assert images.head_manifest(reg.url, "team/app", "drop") == 404
    assert images.pull_verified(reg.url, "team/app", "keep") == []
    assert _writable(reg.url)


def test_a_queued_request_that_needs_storage_fails_in_the_window(
        custom_registry: Callable[..., Registry], make_stack: Callable[..., Stack]) -> None:
    """Before the worker has reported the driver, the API cannot know: the window refuses it, with the code."""
    reg = custom_registry(REGISTRY_STORAGE="inmemory")
    stack = make_stack(reg, )
    stack.kill_worker()
    stack.redis.delete(*stack.redis.keys("janitor:*:worker-heartbeat") or ["none"])
    p = stack.pusher()
    p.image("team/app", images.image(), "t")
    untagged = stack.delete({"repository": "team/app", "untagged": True})["id"]
    stack.start_worker()
    job = stack.wait(untagged)
    assert job["status"] == "failed" and job["error"]["code"] == "STORAGE_ACCESS_REQUIRED", job
    assert job["error"]["step"] == "preflight" and "delete" not in [s["name"] for s in job["steps"]]
    assert images.pull_verified(reg.url, "team/app", "t") == []


def test_holds_are_scoped_to_their_repository(registry: Registry, make_stack: Callable[..., Stack]) -> None:
    """A blob released by a deletion in one repository keeps its hold in another where a push is in flight:
    the push's manifest still lands after GC, and the image pulls."""
    stack = make_stack(registry)
    p = stack.pusher()
    img = images.image()
    p.image("one", img, "t")
    for data in img.blobs.values():  # the same blobs, uploaded into another repository: its manifest comes later
        p.blob("two", data)
    job = stack.wait(stack.delete({"repository": "one", "tags": ["t"]})["id"])
    assert job["status"] == "succeeded", job
    hold = next(s for s in job["steps"] if s["name"] == "hold")
    assert hold["outcome"]["holds"] == 1 and hold["outcome"]["blobs_held"] == len(img.blobs), hold
    assert p.manifest("two", "t", img.manifest, img.media_type) == img.digest
    assert images.pull_verified(registry.url, "two", "t") == []


def test_a_storage_command_that_fails_is_an_error_not_an_empty_answer(registry: Registry) -> None:
    container = RegistryContainer(registry.name)
    assert storage.revisions(container, "/nonexistent") == {}  # nothing pushed there yet: nothing to list
    with pytest.raises(errors.StorageCommandFailed) as caught:
        storage.revisions(container, "/etc/passwd")  # under a file: find fails, and must say so
    assert "Not a directory" in caught.value.message
    with pytest.raises(errors.StorageCommandFailed):
        storage.active_uploads(container, "/etc/passwd", within=60, now=time.time())
