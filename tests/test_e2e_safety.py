"""Maintenance never overlaps a push, nothing a client pushed is lost, and a crash leaves no wreck."""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import docker.errors
import pytest
import redis
import requests

from janitor.errors import JanitorError
from janitor.registry.container import RegistryContainer
from janitor.window.lease import MaintenanceLock
from tests import images
from tests.conftest import (
    Registry,
    Stack,
    free_port,
    job_record,
    pings,
    start_stack,
    wait_http,
)
from tests.images import Pusher

pytestmark = pytest.mark.e2e
CONFIG = "/etc/docker/registry/config.yml"


def _writable(reg: Registry) -> bool:
    """A real write: a blob upload is accepted (not 405) and the config is the original one."""
    try:
        resp = requests.post(f"{reg.url}/v2/probe/blobs/uploads/", timeout=10)
    except requests.RequestException:
        return False  # restarting
    if resp.status_code != 202:
        return False
    requests.delete(reg.url + resp.headers["Location"] if resp.headers["Location"].startswith("/")
                    else resp.headers["Location"], timeout=10)
    return not reg.exec("cat", CONFIG).startswith("# registry-janitor")


def _job(conn: redis.Redis, job_id: str) -> dict:
    return json.loads(job_record(conn, job_id))


def test_requests_that_wait_share_one_window(stack: Stack) -> None:
    stack.kill_worker()
    p = stack.pusher()
    imgs = [images.image() for _ in range(5)]
    for i, img in enumerate(imgs):
        p.image("team/app", img, f"t{i}")
    ids = [stack.delete({"repository": "team/app", "tags": [f"t{i}"]})["id"] for i in range(5)]
    stack.start_worker()
    jobs = [stack.wait(i) for i in ids]
    assert all(j["status"] == "succeeded" for j in jobs), jobs
    assert len({j["window"]["id"] for j in jobs}) == 1
    assert sorted(j["window"]["jobs"] for j in jobs)[0] == ids
    for job, img in zip(jobs, imgs, strict=True):
        assert job["result"]["manifests_deleted"] == [img.digest]  # each its own outcome
        assert [s["name"] for s in job["steps"]].count("gc") == 1
        assert job["window"]["write_refused_seconds"] > 0
    # One GC and one restart served all five: the very same step records.
    assert len({json.dumps(next(s for s in j["steps"] if s["name"] == "gc")) for j in jobs}) == 1
    assert jobs[0]["result"]["gc"]["blobs_deleted"] == sum(len(i.blobs) + 1 for i in imgs)


def test_the_lock_has_one_owner_expires_and_renews(redis_conn: redis.Redis) -> None:
    a = MaintenanceLock(redis_conn, "janitor:test:lock", ttl=0.6)
    b = MaintenanceLock(redis_conn, "janitor:test:lock", ttl=0.6)
    assert a.acquire(0)
    assert not b.acquire(0.3)
    time.sleep(1.0)  # longer than the TTL: renewal keeps it
    assert a.owned() and not b.acquire(0)
    redis_conn.set("janitor:test:lock", "someone else")  # taken from under it
    assert not a.renew() and not a.owned()
    a.release()
    assert redis_conn.get("janitor:test:lock") == b"someone else"  # release never frees another's lock
    redis_conn.delete("janitor:test:lock")
    c = MaintenanceLock(redis_conn, "janitor:test:lock", ttl=0.5)
    assert c.acquire(0)
    c._stop.set()  # a dead owner stops renewing ...
    assert b.acquire(2.0)  # ... and the lock frees itself
    b.release()


def _wait_step(conn: redis.Redis, job_id: str, step: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = job_record(conn, job_id)
        if raw:
            job = json.loads(raw)
            if job["steps"] and job["steps"][-1]["name"] == step:
                return True
            if job["status"] in ("succeeded", "failed"):
                return False
        time.sleep(0.002)
    return False


def test_a_window_that_loses_its_lock_never_runs_gc(stack: Stack) -> None:
    p = stack.pusher()
    lock_key = stack.env["REGISTRY_URL"].replace("http://", "janitor:") + ":lock"
    unfenced = _config_size(stack.registry)
    for attempt in range(3):
        doomed = images.image()
        p.image("team/app", doomed, f"v{attempt}")
        job_id = stack.delete({"repository": "team/app", "tags": [f"v{attempt}"]})["id"]
        assert _wait_step(stack.redis, job_id, "fence")
        # Wait for the fence itself (the read-only config in place): a lease lost before it would leave this
        # window nothing to undo, and the point here is a fenced registry whose window lost its lease.
        assert images.wait_until(lambda: _fenced(stack.registry, unfenced), 30, 0.02)
        # Another owner's lease (it lives 15 s): this window must neither run GC nor touch the fence any more.
        stack.redis.set(lock_key, "999999:thief", px=15000)
        if "gc" not in [s["name"] for s in _job(stack.redis, job_id)["steps"]]:
            break
        # On a loaded machine the window can reach its gc step before the theft: GC may then rightly run.
        # Let that window end, free the lease and try another.
        stack.wait(job_id)
        stack.redis.delete(lock_key)
        assert images.wait_until(lambda: _writable(stack.registry), 60)
    else:
        pytest.fail("the lease was never taken before the window reached its gc step")
    job = stack.wait(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "LOCK_LOST", job
    assert job["error"]["step"] in ("fence", "hold", "gc")
    assert set(doomed.blobs) <= set(stack.registry.blob_files())  # GC did not run
    restart = next(s for s in job["steps"] if s["name"] == "restart")
    assert restart["status"] == "failed" and restart["error"]["code"] == "LOCK_LOST"
    # The next owner (a recovery window queued by the loser) takes the fence down once the lease is free.
    assert images.wait_until(lambda: _writable(stack.registry), 60)
    # The backup goes last, once a write was accepted.
    assert images.wait_until(lambda: stack.registry.exec("ls", "/etc/docker/registry").split() == ["config.yml"], 30)
    assert stack.wait(stack.post("/v1/gc", {}).json()["id"])["status"] == "succeeded"  # the next one works


@pytest.mark.parametrize("step", ["delete", "fence", "hold", "gc", "restart"])
def test_worker_killed_inside_the_window_leaves_no_wreck(driver: str, stack: Stack, step: str) -> None:
    p = stack.pusher()
    imgs = [images.image(layers=3) for _ in range(4)]
    for i, img in enumerate(imgs):
        p.image("team/app", img, f"t{i}")
    job_id = stack.delete({"repository": "team/app", "tags": ["t0", "t1", "t2"]})["id"]
    assert _wait_step(stack.redis, job_id, step), _job(stack.redis, job_id)
    stack.kill_worker()
    reached = _job(stack.redis, job_id)["steps"][-1]["name"]

    stack.start_worker()  # the next worker start brings the registry back
    job = stack.wait(job_id, timeout=90)
    assert job["status"] == "failed" and job["error"]["code"] == "INTERRUPTED", job
    assert job["error"]["step"] == reached
    assert images.wait_until(lambda: _writable(stack.registry), 30)
    assert stack.registry.exec("ls", "/etc/docker/registry") .split() == ["config.yml"]  # no backup, no holds
    assert images.wait_until(lambda: not stack.redis.exists(
        stack.env["REGISTRY_URL"].replace("http://", "janitor:") + ":lock"), 30)
    assert images.pull_verified(stack.registry.url, "team/app", "t3") == []

    after = stack.wait(stack.delete({"repository": "team/app", "tags": ["t3"]})["id"])
    assert after["status"] == "succeeded", after
    assert stack.registry.revisions().get("team/app", set()) <= {i.digest for i in imgs[:3]}


def test_stopped_registry_container_fails_the_job_and_stays_stopped(stack: Stack) -> None:
    stack.registry.container.stop(timeout=1)
    resp = stack.post("/v1/gc", {})
    assert resp.status_code == 202
    job = stack.wait(resp.json()["id"])
    assert job["status"] == "failed" and job["error"]["step"] == "preflight"
    assert "exited" in job["error"]["message"] and "start it" in job["error"]["message"]
    stack.registry.container.reload()
    assert stack.registry.container.status == "exited"  # we never start what a person stopped


def test_unreachable_docker_engine_fails_before_anything_changes(registry, make_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(registry, DOCKER_HOST="unix:///nonexistent/docker.sock")
    img = images.image()
    s.pusher().image("team/app", img, "v1")
    job = s.wait(s.delete({"repository": "team/app", "tags": ["v1"]})["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "DOCKER_UNAVAILABLE", job
    assert job["error"]["step"] == "preflight"
    assert images.pull_verified(registry.url, "team/app", "v1") == []
    ready = images.wait_until(lambda: requests.get(s.api + "/readyz", timeout=10).json()["checks"]["docker"].get(
        "code") == "DOCKER_UNAVAILABLE", 30)
    assert ready
    assert requests.get(s.api + "/readyz", timeout=10).status_code == 503


@pytest.fixture
def private_redis() -> Iterator[tuple[int, str]]:
    port, workdir = free_port(), tempfile.mkdtemp(prefix="rj-redis-")
    yield port, workdir
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
    shutil.rmtree(workdir, ignore_errors=True)


def _redis(port: int, workdir: str) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
                             "--dir", workdir], stdout=subprocess.DEVNULL)
    conn = redis.Redis(port=port)
    assert images.wait_until(lambda: pings(conn), 20)
    return proc


def test_redis_restarted_answers_503_then_recovers(registry: Registry, private_redis: tuple[int, str]) -> None:
    port, workdir = private_redis
    proc = _redis(port, workdir)
    url = f"redis://127.0.0.1:{port}/0"
    s = start_stack(registry, url, redis.Redis(port=port))
    try:
        p = s.pusher()
        imgs = [images.image() for _ in range(3)]
        for i, img in enumerate(imgs):
            p.image("team/app", img, f"t{i}")
        assert s.wait(s.delete({"repository": "team/app", "tags": ["t0"]})["id"])["status"] == "succeeded"

        # Redis restarts in the middle of a window: the window still ends with the registry writable.
        job_id = s.delete({"repository": "team/app", "tags": ["t1"]})["id"]
        assert _wait_step(redis.Redis(port=port), job_id, "fence")
        proc.terminate()
        proc.wait(10)
        resp = s.post("/v1/deletions", {"repository": "team/app", "tags": ["t2"]})
        assert resp.status_code == 503 and resp.json()["code"] == "QUEUE_UNAVAILABLE"
        time.sleep(1)
        proc = _redis(port, workdir)
        job = s.wait(job_id, timeout=90)
        assert job["status"] in ("succeeded", "failed"), job
        if job["status"] == "failed":
            assert job["error"]["code"] in ("LOCK_LOST", "INTERRUPTED") and job["error"]["message"]
        assert images.wait_until(lambda: _writable(registry), 30)
        last = s.wait(s.delete({"repository": "team/app", "tags": ["t2"]})["id"], timeout=90)
        assert last["status"] == "succeeded", last
        assert images.head_manifest(registry.url, "team/app", imgs[2].digest) == 404
    finally:
        s.kill()
        proc.terminate()


def test_redis_blob_descriptor_cache_forgets_swept_blobs(make_registry, make_stack, redis_server) -> None:  # type: ignore[no-untyped-def]
    cache_db = 7
    cache = redis.Redis.from_url(redis_server.rsplit("/", 1)[0] + f"/{cache_db}")
    cache.flushdb()
    reg = make_registry(REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR="redis",
                        REGISTRY_REDIS_ADDR=redis_server.split("//")[1].split("/")[0], REGISTRY_REDIS_DB=str(cache_db))
    s = make_stack(reg)
    img = images.image()
    s.pusher().image("team/app", img, "v1")
    s.pusher().image("team/app", images.image(), "v2")
    assert cache.exists(f"blobs::{images.sha256_digest(img.layers[0])}")
    job = s.wait(s.delete({"repository": "team/app", "tags": ["v1"]})["id"])
    assert job["status"] == "succeeded", job
    assert next(x for x in job["steps"] if x["name"] == "gc")["outcome"]["cache_keys_removed"] > 0
    for blob in img.blobs:
        assert not cache.exists(f"blobs::{blob}")
        assert not cache.exists(f"repository::team/app::blobs::{blob}")
    again = s.pusher()
    again.image("team/app", img, "v1")
    assert again.skipped == []
    assert images.pull_verified(reg.url, "team/app", "v1") == []


DISTRIBUTION_3_CONFIG = "/etc/distribution/config.yml"


def _cache_registry(docker_client, registry_image: str, cache_port: int, cache_db: int) -> Registry:  # type: ignore[no-untyped-def]
    """A registry laid out as distribution 3.x is: config in /etc/distribution/config.yml, started as `registry
    serve <path>`, its Redis blob cache named `redis.addrs` (3.x) beside `redis.addr` (what the 2.8 binary the
    tests run reads). The cache's name, `rj-cache`, resolves inside the container only, as a compose service
    name does: the worker cannot reach the cache at the address the registry's config gives."""
    port = free_port()
    config = (f"version: 0.1\nstorage:\n  cache:\n    blobdescriptor: redis\n  filesystem:\n"
              f"    rootdirectory: /var/lib/registry\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
              f"redis:\n  addr: rj-cache:{cache_port}\n  addrs: [rj-cache:{cache_port}]\n  db: {cache_db}\n").encode()
    container = docker_client.containers.create(
        registry_image, command=["serve", DISTRIBUTION_3_CONFIG], name=f"rj-test-{uuid.uuid4().hex[:10]}",
        network_mode="host", extra_hosts={"rj-cache": "127.0.0.1"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(DISTRIBUTION_3_CONFIG.lstrip("/"))
        info.size, info.mode = len(config), 0o644
        tar.addfile(info, io.BytesIO(config))
    assert container.put_archive("/", buf.getvalue())
    container.start()
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/v2/")
    return Registry(url, container.name, container)


def test_a_redis_blob_cache_the_worker_cannot_reach_fails_preflight_then_its_url_makes_repushes_upload(  # type: ignore[no-untyped-def]
        docker_client, registry_image, make_stack, redis_server) -> None:
    cache_db = 6
    cache_port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    cache = redis.Redis(port=cache_port, db=cache_db)
    cache.flushdb()
    reg = _cache_registry(docker_client, registry_image, cache_port, cache_db)
    try:
        img, other = images.image(), images.image()
        p = Pusher(reg.url)
        p.image("team/app", img, "v1")
        p.image("team/app", other, "v2")
        layer = images.sha256_digest(img.layers[0])
        assert cache.exists(f"blobs::{layer}")  # the registry uses the cache
        before = reg.blob_files()

        # The config names rj-cache, which the worker cannot resolve: the window fails before deleting anything.
        s = make_stack(reg)
        job = s.wait(s.delete({"repository": "team/app", "tags": ["v1"]})["id"])
        assert job["status"] == "failed" and job["error"]["code"] == "REGISTRY_CACHE_UNREACHABLE", job
        assert job["error"]["step"] == "preflight" and "JANITOR_REGISTRY_CACHE_URL" in job["error"]["message"]
        assert f"rj-cache:{cache_port}" in job["error"]["message"] and "redis.addrs" in job["error"]["message"]
        assert [x["name"] for x in job["steps"]] == ["preflight"]
        assert images.head_manifest(reg.url, "team/app", "v1") == 200 and reg.blob_files() == before
        assert cache.exists(f"blobs::{layer}") and images.pull_verified(reg.url, "team/app", "v1") == []
        s.stop()

        # Given as the worker sees it, the cache is reached in preflight and cleaned after the sweep.
        s = make_stack(reg, JANITOR_REGISTRY_CACHE_URL=f"redis://127.0.0.1:{cache_port}/{cache_db}")
        job = s.wait(s.delete({"repository": "team/app", "tags": ["v1"]})["id"])
        assert job["status"] == "succeeded", job
        preflight_out = next(x for x in job["steps"] if x["name"] == "preflight")["outcome"]
        assert preflight_out["config_path"] == DISTRIBUTION_3_CONFIG
        assert preflight_out["blob_cache"]["address"] == f"redis://127.0.0.1:{cache_port}/{cache_db}"
        assert preflight_out["blob_cache"]["registry_addresses"] == [f"rj-cache:{cache_port}"]
        assert next(x for x in job["steps"] if x["name"] == "gc")["outcome"]["cache_keys_removed"] > 0
        assert not set(img.blobs) & set(reg.blob_files())  # swept from storage
        for blob in img.blobs:
            assert not cache.exists(f"blobs::{blob}")
            assert images.head_blob(reg.url, "team/app", blob) == 404  # swept: never "already exists"
        again = Pusher(reg.url)
        again.image("team/app", img, "v1")
        assert again.skipped == []  # every swept blob uploaded again
        assert images.pull_verified(reg.url, "team/app", "v1") == []
        assert images.pull_verified(reg.url, "team/app", "v2") == []
    finally:
        reg.container.remove(force=True, v=True)


def test_a_blob_cache_lost_after_the_sweep_is_cleaned_by_the_next_window(  # type: ignore[no-untyped-def]
        make_registry, make_stack, private_redis) -> None:
    port, workdir = private_redis
    proc = _redis(port, workdir)  # the registry's cache, kept on disk across its restart
    cache = redis.Redis(port=port)
    reg = make_registry(REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR="redis", REGISTRY_REDIS_ADDR=f"127.0.0.1:{port}")
    s = make_stack(reg)
    try:
        img = images.image()
        s.pusher().image("team/app", img, "v1")
        s.pusher().image("team/app", images.image(), "v2")
        layer = images.sha256_digest(img.layers[0])
        assert cache.exists(f"blobs::{layer}")

        # Reached in preflight, gone before GC's sweep: the removal is retried, then the jobs say which blobs.
        job_id = s.delete({"repository": "team/app", "tags": ["v1"]})["id"]
        assert _wait_step(s.redis, job_id, "fence")
        proc.terminate()
        proc.wait(10)
        job = s.wait(job_id, timeout=150)
        assert job["status"] == "failed" and job["error"]["code"] == "REGISTRY_CACHE_NOT_CLEANED", job
        assert job["error"]["step"] == "gc" and layer in job["error"]["details"]["digests"]
        assert images.wait_until(lambda: _writable(reg), 30)

        proc = _redis(port, workdir)
        assert cache.exists(f"blobs::{layer}")  # stale: the registry would say the swept layer exists
        resp = s.post("/v1/gc", {})
        assert resp.status_code == 202, resp.text
        gc = s.wait(resp.json()["id"])
        assert gc["status"] == "succeeded", gc
        assert next(x for x in gc["steps"] if x["name"] == "preflight")["outcome"]["blob_cache_left_over_removed"] > 0
        for blob in img.blobs:
            assert not cache.exists(f"blobs::{blob}")
            assert images.head_blob(reg.url, "team/app", blob) == 404
        again = s.pusher()
        again.image("team/app", img, "v1")
        assert again.skipped == [] and images.pull_verified(reg.url, "team/app", "v1") == []
    finally:
        proc.terminate()


@dataclass
class Push:
    repo: str
    tag: str
    image: images.Image
    acknowledged: str | None = None
    refusals: list[str] = field(default_factory=list)
    pauses: list[tuple[float, float]] = field(default_factory=list)  # blobs done -> manifest sent


def _push_until_acknowledged(base: str, push: Push, rng: random.Random, deadline: float) -> None:
    """Like `docker push`: HEAD each blob, upload what is missing, PUT the manifest; on refusal start over."""
    while time.time() < deadline:
        p = images.Pusher(base)
        try:
            for data in push.image.blobs.values():
                p.blob(push.repo, data)
            done = time.time()
            time.sleep(rng.uniform(0, 1.2))  # the gap GC must never fall into unnoticed
            sent = time.time()
            push.pauses.append((done, sent))
            push.acknowledged = p.manifest(push.repo, push.tag, push.image.manifest, push.image.media_type)
            return
        except requests.HTTPError as exc:
            body = exc.response.text if exc.response is not None else ""
            push.refusals.append(f"{exc.response.status_code if exc.response is not None else '?'} {body[:80]}")
        except requests.RequestException as exc:
            push.refusals.append(f"unreachable: {type(exc).__name__}")
        time.sleep(0.2)


def _overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.parametrize("gc_mode", ["registry", "incremental"])
def test_pushes_during_maintenance_windows_lose_nothing(driver: str, registry, make_stack, gc_mode) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(registry, JANITOR_UPLOAD_DRAIN="2", JANITOR_GC_MODE=gc_mode)
    rng = random.Random(4)
    # Per pusher; on S3 (every request through moto) fewer: pushers go on past them until `exercised()`.
    each = 12 if driver == "filesystem" else 6
    pushes = [Push(f"push/p{n}", f"t{i}", images.image(layers=rng.randint(1, 3), layer_size=rng.randint(2_000, 30_000)))
              for n in range(4) for i in range(each)]
    deadline = time.time() + 240
    done = threading.Event()
    windows: list[dict] = []

    def maintain() -> None:
        victim = 0
        while not done.is_set():
            _push_until_acknowledged(registry.url, Push("victims", f"v{victim}", images.image()),
                                     random.Random(victim), time.time() + 60)
            job = s.wait(s.delete({"repository": "victims", "tags": [f"v{victim}"]})["id"], timeout=120)
            windows.append(job)
            victim += 1

    def gc_spans() -> list[tuple[float, float]]:
        return [(_ts(st["started_at"]), _ts(st["finished_at"]))
                for j in list(windows) for st in j["steps"] if st["name"] == "gc" and st["finished_at"]]

    def exercised() -> bool:
        """Three windows ran, GC fell between some push's blob uploads and its manifest PUT, and a push was refused:
        whether that happens within a fixed number of pushes is chance, so pushers go on until it has."""
        spans = gc_spans()
        return (len(windows) >= 3
                and any(_overlaps(pause, g) for p in list(pushes) for pause in p.pauses for g in spans)
                and any(r.startswith("405") for p in list(pushes) for r in p.refusals))

    def pusher(n: int) -> None:
        for push in pushes[n * each:(n + 1) * each]:
            _push_until_acknowledged(registry.url, push, random.Random(rng.random()), deadline)
        extra = 0
        while not exercised() and time.time() < deadline:
            push = Push(f"push/p{n}", f"x{extra}", images.image(layers=1, layer_size=rng.randint(2_000, 30_000)))
            pushes.append(push)
            _push_until_acknowledged(registry.url, push, random.Random(rng.random()), deadline)
            extra += 1

    maintainer = threading.Thread(target=maintain)
    maintainer.start()
    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    maintainer.join()

    assert len(windows) >= 3, "too few maintenance windows ran during the pushes"
    for job in windows:
        assert job["status"] == "succeeded", (job["error"], [(s["name"], s["status"]) for s in job["steps"]])
        assert job["result"]["integrity"]["broken"] == []
        assert job["result"]["gc"]["mode"] == gc_mode
    refused = [(_ts(st["started_at"]), _ts(j["window"]["finished_at"])) for j in windows for st in j["steps"]
               if st["name"] == "fence"]
    # GC really landed between pushes' blob uploads and their manifest PUT, and writes were really refused mid-push.
    assert sum(_overlaps(pause, g) for p in pushes for pause in p.pauses for g in gc_spans()) > 0
    assert any(r.startswith("405") for p in pushes for r in p.refusals)
    assert refused
    if driver == "s3" and gc_mode == "incremental":
        # Under the fences the bucket was read as the registry's access log said it changed since the mark (not
        # listed whole again), and in some window pushes had written in between: those were listed again.
        listings = [st["outcome"].get("fenced_listing") for j in windows for st in j["steps"] if st["name"] == "fence"]
        followed = [found for found in listings if found and found["whole"] is False]
        assert any(found["write_requests"] > 0 for found in followed), listings
        # A window that could not follow it says why; here only a request outliving the registry's drain can
        # be the cause (moto under a loaded machine), which makes the registry exit 1.
        assert all(found and (found["whole"] is False or "exit code 1," in found["why"]) for found in listings), \
            listings
        # And windows after the first started from the view the last fence read, with the pushes the registry
        # logged since: the bucket was not listed whole before their fences either.
        carried = [st["outcome"].get("carried_view") for j in windows for st in j["steps"] if st["name"] == "drain"]
        assert any(found and found["used"] and found["write_requests"] > 0 for found in carried), carried
    # Every push was acknowledged; none was ever told its blobs were gone; every one pulls complete.
    for push in pushes:
        assert push.acknowledged == push.image.digest, push
        assert not [r for r in push.refusals if "BLOB_UNKNOWN" in r], push.refusals
        assert images.pull_verified(registry.url, push.repo, push.tag) == [], push.tag


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_the_drain_waits_for_an_upload_left_open_and_says_so(driver: str, registry, make_stack) -> None:  # type: ignore[no-untyped-def]
    """With no upload open the drain step does not wait. A push's blob upload started and written to, not
    finished: the drain step sees it in progress (on S3 by the multipart upload distribution opens for its
    data, then that repository's `_uploads` only) and waits JANITOR_UPLOAD_DRAIN before fencing."""
    s = make_stack(registry, JANITOR_UPLOAD_DRAIN="3")
    p = s.pusher()
    for tag in ("first", "second", "kept"):
        p.image("team/app", images.image(), tag)

    def drain_of(tag: str) -> dict:
        job = s.wait(s.delete({"repository": "team/app", "tags": [tag]})["id"])
        assert job["status"] == "succeeded", job
        return {st["name"]: st["outcome"] for st in job["steps"]}["drain"]

    drain = drain_of("first")
    assert drain["uploads_still_active"] == 0 and drain["waited_seconds"] < 3, drain

    started = requests.post(f"{registry.url}/v2/team/pushing/blobs/uploads/", timeout=10)
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    patched = requests.patch(location if location.startswith("http") else registry.url + location,
                             data=b"x" * 1000, headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert patched.status_code == 202, patched.text
    drain = drain_of("second")
    assert drain["uploads_still_active"] == 1 and drain["waited_seconds"] >= 3, drain


def test_while_gc_runs_writes_are_refused_and_pulls_still_work(stack: Stack) -> None:
    """Caught inside real windows: the registry is fenced (read-only config in place and serving) and
    stays fenced across the checks, else the next window is tried."""
    p = stack.pusher()
    img = images.image()
    p.image("team/app", img, "v1")
    observed = 0
    unfenced = _config_size(stack.registry)
    for _ in range(10):
        job_id = stack.post("/v1/gc", {}).json()["id"]

        if images.wait_until(lambda: _fenced(stack.registry, unfenced) and _answers(stack.registry), 30, 0.01):
            try:
                pulled = images.pull_verified(stack.registry.url, "team/app", "v1")
                upload = requests.post(f"{stack.registry.url}/v2/team/app/blobs/uploads/", timeout=10).status_code
            except requests.RequestException:
                pulled, upload = None, None  # the window's closing restart came first: try the next one
            if pulled is not None and _fenced(stack.registry, unfenced):
                assert pulled == [] and upload == 405
                observed += 1
        assert stack.wait(job_id)["status"] == "succeeded"
        if observed >= 2:
            break
    assert observed >= 2, "never caught the registry inside its write fence"
    assert _writable(stack.registry)


def _config_size(reg: Registry) -> int:
    stat = RegistryContainer(reg.name).stat(CONFIG)
    assert stat is not None
    return int(stat["size"])


def _fenced(reg: Registry, unfenced_size: int) -> bool:
    """The read-only config is in place (the registry may be restarting). Polled every few milliseconds, so
    the engine's stat comes first (1 ms of its CPU, against 50 for an exec): only a config whose size is no
    longer the original's (the fence adds its marker) is read."""
    try:
        stat = RegistryContainer(reg.name).stat(CONFIG)
        if stat is None or stat.get("size") == unfenced_size:
            return False
        code, out = reg.container.exec_run(["cat", CONFIG])
    except (docker.errors.APIError, JanitorError):
        return False  # restarting
    return code == 0 and out.startswith(b"# registry-janitor")


def _answers(reg: Registry) -> bool:
    try:
        return requests.get(f"{reg.url}/v2/", timeout=2).status_code == 200
    except requests.RequestException:
        return False
