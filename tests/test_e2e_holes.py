"""Smaller holes found by reading (issue 17): each proven on the real registry, Redis and Docker."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests

from janitor.registry import manifests as mf
from janitor.registry.client import RegistryClient
from janitor.registry.container import RegistryContainer
from janitor.registry.manifests import sha256_digest
from janitor.registry.untag import THROWAWAY_CONFIG_TYPE, untag
from janitor.storage.contents import ContentCache
from janitor.storage.layout import Layout
from janitor.window import heartbeat, probe
from janitor.window.fence import BACKUP_SUFFIX, WriteFence
from janitor.window.probe import PROBE_REPOSITORY
from tests import images
from tests.conftest import Registry, Stack
from tests.test_e2e_ops import cli

pytestmark = pytest.mark.e2e
REPO = "team/app"


class PushAfterThrowaway(RegistryClient):
    """A real client whose throwaway PUT is followed at once by someone else's push of the same tag: the
    interleaving a busy registry produces now and then, made certain."""

    def __init__(self, url: str, other: images.Image) -> None:
        super().__init__(url, timeout=10, retry_seconds=0)
        self.other = other
        self.pushed: str | None = None

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        digest = super().put_manifest(repository, reference, body, media_type)
        if json.loads(body).get("config", {}).get("mediaType") == THROWAWAY_CONFIG_TYPE and self.pushed is None:
            self.pushed = images.Pusher(self.base_url).image(repository, self.other, reference)
        return digest


def test_a_push_landing_after_the_throwaway_is_kept_and_reported(registry: Registry) -> None:
    p = images.Pusher(registry.url)
    img, other = images.image(), images.image()
    p.image(REPO, img, "v1")
    p.manifest(REPO, "latest", img.manifest, img.media_type)  # v1 goes alone: the 2.x throwaway path
    client = PushAfterThrowaway(registry.url, other)

    done = untag(client, REPO, "v1", img.digest)

    assert client.pushed == other.digest
    assert not done.done and done.moved_to == other.digest
    assert images.head_manifest(registry.url, REPO, "v1") == 200
    assert client.manifest_digest(REPO, "v1") == other.digest  # their push stands
    assert images.pull_verified(registry.url, REPO, "v1") == []
    assert registry.revisions()[REPO] == {img.digest, other.digest}  # the throwaway itself is gone


def test_an_untag_without_a_race_still_untags(registry: Registry) -> None:
    p = images.Pusher(registry.url)
    img = images.image()
    p.image(REPO, img, "v1")
    p.manifest(REPO, "latest", img.manifest, img.media_type)
    client = RegistryClient(registry.url, timeout=10, retry_seconds=0)
    done = untag(client, REPO, "v1", img.digest)
    assert done.done and len(done.blobs) == 2
    assert images.head_manifest(registry.url, REPO, "v1") == 404
    assert registry.revisions()[REPO] == {img.digest}


def test_a_tag_put_on_a_named_digest_after_the_plan_keeps_it(registry: Registry,
                                                            make_stack: Callable[..., Stack]) -> None:
    """Never more than planned: a `digests` deletion checks the tags again right before each delete."""
    stack = make_stack(registry)
    p = stack.pusher()
    base = images.image()
    p.image(REPO, base, "keep-0")
    for i in range(1, 120):  # every check before a delete reads these again: the deletions take a while
        p.manifest(REPO, f"keep-{i}", base.manifest, base.media_type)
    named = [images.image(layers=1, layer_size=256) for _ in range(30)]
    for n, img in enumerate(named):
        p.image(REPO, img, f"old-{n}")  # its own tag, planned to go with it
    digests = [img.digest for img in named]
    order = sorted(digests)  # the plan deletes by digest order (no index among them)
    by_digest = {img.digest: img for img in named}
    rescued = [by_digest[d] for d in order[-3:]]

    job_id = stack.delete({"repository": REPO, "digests": digests})["id"]
    assert images.wait_until(lambda: images.head_manifest(registry.url, REPO, order[0]) == 404, 60, 0.01)
    for n, img in enumerate(rescued):  # deletes are under way: these tags come after the plan
        p.manifest(REPO, f"new-{n}", img.manifest, img.media_type)
    job = stack.wait(job_id)

    assert job["status"] == "succeeded", job
    skipped = {s["digest"]: s for s in job["result"]["skipped"]}
    assert set(skipped) == {img.digest for img in rescued}, job["result"]["skipped"]
    assert [skipped[img.digest]["tags"] for img in rescued] == [[f"new-{n}"] for n in range(3)]
    assert sorted(job["result"]["manifests_deleted"]) == order[:-3]
    for n, img in enumerate(rescued):
        assert images.pull_verified(registry.url, REPO, f"new-{n}") == []


CONFIG = "/etc/docker/registry/config.yml"


def _stat(registry: Registry, path: str) -> str:
    """Owner, mode and mtime. `stat -c` always prints them when it exits 0, yet once (ci49, right after a
    restart, a loaded engine) the exec's output came back empty with exit code 0: the engine lost the
    stream, so that is read again."""
    for _ in range(3):
        found = registry.exec("stat", "-c", "%u:%g %a %Y", path).strip()
        if found:
            return found
        time.sleep(0.2)
    return found


def _private_config(registry: Registry) -> str:
    """The config as an operator holding secrets in it sets it: their owner, 0600, an old mtime."""
    registry.exec("chown", "1000:1000", CONFIG)
    registry.exec("chmod", "600", CONFIG)
    registry.exec("touch", "-d", "2020-01-02 03:04:05", CONFIG)
    before = _stat(registry, CONFIG)
    assert before.startswith("1000:1000 600 ")
    return before


def test_a_window_keeps_the_configs_owner_mode_and_mtime(registry: Registry, stack: Stack) -> None:
    stack.pusher().image(REPO, images.image(), "v1")  # GC needs a storage to walk
    before = _private_config(registry)
    content = registry.exec("cat", CONFIG)
    job = stack.wait(stack.post("/v1/gc", {}).json()["id"], timeout=180)
    assert job["status"] == "succeeded", (job["error"], job["steps"][-1])
    assert _stat(registry, CONFIG) == before
    assert registry.exec("cat", CONFIG) == content


def test_the_fenced_config_and_its_backup_are_as_private_as_the_original(registry: Registry) -> None:
    before = _private_config(registry)
    fence = WriteFence(RegistryContainer(registry.name), registry.url, stop_timeout=5, ready_timeout=30)
    fence.close(CONFIG, "test")
    try:
        assert _stat(registry, CONFIG) == before
        assert _stat(registry, CONFIG + BACKUP_SUFFIX) == before
    finally:
        fence.put_back(CONFIG)
        fence.restart()
    assert _stat(registry, CONFIG) == before
    crashed = WriteFence(RegistryContainer(registry.name), registry.url, stop_timeout=5, ready_timeout=30)
    fence.close(CONFIG, "test-2")  # and put back by another worker, from the backup alone (after a crash)
    crashed.put_back(CONFIG)
    crashed.restart()
    assert _stat(registry, CONFIG) == before


def test_the_cli_stops_waiting_on_a_parked_or_unrun_job(registry: Registry,
                                                        make_stack: Callable[..., Stack]) -> None:
    """awaiting_approval ends the wait with 3 and what to do; rejected, expired, cancelled with 4."""
    stack = make_stack(registry, JANITOR_REQUIRE_APPROVAL="true")
    stack.pusher().image(REPO, images.image(), "v1")
    out = cli(stack, "delete", REPO, "--tag", "v1", "--yes", timeout=60)
    assert out.returncode == 3, out.stdout + out.stderr
    # A real delete that needs approval is not followed: its id and how to approve it, then 3.
    job_id = re.search(r"job (\S+) needs approval", out.stdout).group(1)  # type: ignore[union-attr]
    assert f"registry-janitor approve {job_id}" in " ".join(out.stdout.split())  # rich wraps long lines

    watched = cli(stack, "jobs", job_id, "--watch", timeout=60)  # the wait ends where the job parks
    assert watched.returncode == 3, watched.stdout + watched.stderr
    assert "nothing was changed yet" in watched.stderr and f"jobs --watch {job_id}" in watched.stderr
    assert stack.get(f"/v1/jobs/{job_id}").json()["status"] == "awaiting_approval"
    rejected = requests.post(f"{stack.api}/v1/jobs/{job_id}/reject", timeout=30,
                             headers={"Authorization": "Bearer other-token"})
    assert rejected.status_code == 200, rejected.text
    watched = cli(stack, "jobs", job_id, "--watch", timeout=60)
    assert watched.returncode == 4, watched.stdout + watched.stderr
    assert f"job {job_id} was rejected" in watched.stderr and "nothing was changed" in watched.stderr
    assert cli(stack, "jobs", job_id, timeout=60).returncode == 4
    assert images.head_manifest(registry.url, REPO, "v1") == 200


def _messages(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [m for k, v in value.items() for m in ([v] if k == "message" and isinstance(v, str) else _messages(v))]
    if isinstance(value, list):
        return [m for v in value for m in _messages(v)]
    return []


def test_readyz_shows_codes_and_messages_but_no_value_of_the_containers_environment(
        make_registry: Callable[..., Registry], make_stack: Callable[..., Stack]) -> None:
    registry = make_registry(REGISTRY_STORAGE="filesystem", REGISTRY_HTTP_SECRET="s3cr3t-http-secret-value")
    stack = make_stack(registry)

    def storage_reported() -> dict[str, Any] | None:
        body = requests.get(f"{stack.api}/readyz", timeout=30).json()  # no token: anyone may ask
        return body if "storage" in body["checks"] else None
    body = images.wait_until(storage_reported, 60)
    assert body, "the worker never reported the storage check"
    storage = body["checks"]["storage"]
    assert storage["code"] == "REGISTRY_ENV_OVERRIDES_STORAGE" and storage["driver"] == "filesystem", storage
    assert "REGISTRY_STORAGE" in storage["message"]  # the variable is named: that is the fix to make
    env = RegistryContainer(registry.name).env()
    # Flags, numbers and distribution's driver names are no secrets (heartbeat._PLAIN): /readyz names the driver.
    values = {v for v in env.values() if len(v) >= 4 and not heartbeat._PLAIN.match(v)}
    leaked = {v for v in values for m in _messages(body) if v in m}
    assert not leaked, (leaked, _messages(body))


def test_content_cache_entries_expire_unless_used_or_seen(redis_conn: redis.Redis) -> None:
    """Bounded: an entry lives `ttl` after its last use, so manifests no longer stored stop taking keys."""
    cache = ContentCache(redis_conn, "janitor:ttl-test", ttl=3)
    used, seen, dropped = (images.image() for _ in range(3))
    cache.put_manifests(mf.parse(i.manifest, i.media_type, i.digest) for i in (used, seen, dropped))
    configs = {sha256_digest(i.config): f"2024-0{n + 1}-01T00:00:00Z" for n, i in enumerate((used, seen, dropped))}
    cache.put_created(configs)
    keys = redis_conn.keys("janitor:ttl-test:content:*")
    assert len(keys) == 6 and all(0 < redis_conn.ttl(k) <= 3 for k in keys)

    time.sleep(2)
    assert set(cache.manifests([used.digest])) == {used.digest}  # read: kept for another ttl
    assert cache.cached_manifests([seen.digest, "sha256:" + "0" * 64]) == {seen.digest}  # seen by a prefill
    assert set(cache.created([sha256_digest(used.config)])) == {sha256_digest(used.config)}
    time.sleep(1.8)
    assert set(cache.manifests([used.digest, seen.digest, dropped.digest])) == {used.digest, seen.digest}
    assert set(cache.created(configs)) == {sha256_digest(used.config)}
    assert not redis_conn.exists(f"janitor:ttl-test:content:manifest:{dropped.digest}")


def _probe_uploads(registry: Registry) -> list[str]:
    uploads = Layout("/var/lib/registry").uploads(PROBE_REPOSITORY)
    code, out = registry.container.exec_run(["find", uploads, "-mindepth", "1"])
    return out.decode().split() if code == 0 else []


def test_a_window_leaves_no_probe_uploads_behind(registry: Registry, stack: Stack) -> None:
    """A cancelled upload leaves `_uploads/<id>/hashstates`; with upload purging off they would pile up."""
    stack.pusher().image(REPO, images.image(), "v1")  # GC needs a storage to walk
    probe.write_status(RegistryClient(registry.url, timeout=10, retry_seconds=0))  # as an earlier window's
    assert any(p.endswith("/hashstates") for p in _probe_uploads(registry)), _probe_uploads(registry)

    job = stack.wait(stack.post("/v1/gc", {}).json()["id"], timeout=180)

    assert job["status"] == "succeeded", (job["error"], job["steps"][-1])
    assert _probe_uploads(registry) == []
    restart = next(s for s in job["steps"] if s["name"] == "restart")["outcome"]
    # The earlier one and the restart's own, once writes are accepted again (not while they are refused).
    assert restart["probe_uploads_removed"] == 2, restart
    assert PROBE_REPOSITORY not in registry.catalog()
