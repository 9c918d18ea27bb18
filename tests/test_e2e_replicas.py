"""Several registry replicas on one storage, on the real stack: two registry containers on one Docker volume,
named as `replicas` of one registry in REGISTRIES_FILE. Clients push to either while maintenance windows run:
every replica is fenced read-only (and probed at its own address) before GC, nothing a client pushed is lost,
and what GC swept is gone from both (each was restarted, so neither remembers a swept blob)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
import requests
import yaml

from tests import images
from tests.conftest import Registry, Stack, start_registry, start_stack
from tests.test_e2e_safety import Push, _overlaps, _push_until_acknowledged, _ts

pytestmark = pytest.mark.e2e


@pytest.fixture
def replicas(docker_client: docker.DockerClient, registry_image: str) -> Iterator[list[Registry]]:
    """Two registry containers on one named volume, each on its own loopback port."""
    volume = docker_client.volumes.create(f"rj-test-shared-{uuid.uuid4().hex[:10]}")
    made: list[Registry] = []
    try:
        for _ in range(2):
            made.append(start_registry(docker_client, registry_image,
                                       volumes={volume.name: {"bind": "/var/lib/registry", "mode": "rw"}}))
        yield made
    finally:
        for reg in made:
            reg.container.remove(force=True, v=True)
        volume.remove(force=True)


@pytest.fixture
def replica_stack(replicas: list[Registry], redis_server: str, redis_conn: redis.Redis,
                  tmp_path: Path) -> Iterator[Stack]:
    path = tmp_path / "registries.yml"
    path.write_text(yaml.safe_dump({"registries": [{
        "name": "shared", "url": replicas[0].url,
        "replicas": [{"container": r.name, "url": r.url} for r in replicas]}]}))
    s = start_stack(replicas[0], redis_server, redis_conn, REGISTRIES_FILE=str(path), JANITOR_UPLOAD_DRAIN="1",
                    JANITOR_RESTART_STOP_TIMEOUT="5")
    try:
        yield s
    finally:
        s.kill()


def _fenced_both(job: dict[str, Any], names: list[str]) -> bool:
    steps = {st["name"]: st for st in job["steps"]}
    fence = steps["fence"]["outcome"]
    restart = steps["restart"]["outcome"]
    return ([r["container"] for r in fence["replicas"]] == names
            and all(r["write_probe"] == 405 for r in fence["replicas"])
            and [r["container"] for r in restart["replicas"]] == names
            and [r["container"] for r in steps["preflight"]["outcome"]["replicas"]] == names)


def test_pushes_to_either_replica_during_windows_lose_nothing(replicas: list[Registry], replica_stack: Stack) -> None:
    s, names = replica_stack, [r.name for r in replicas]
    rng = random.Random(17)
    pushes: list[tuple[Registry, Push]] = []
    victims: list[tuple[Registry, images.Image]] = []
    windows: list[dict[str, Any]] = []
    done = threading.Event()
    deadline = time.time() + 150

    def gc_spans() -> list[tuple[float, float]]:
        return [(_ts(st["started_at"]), _ts(st["finished_at"])) for j in list(windows) for st in j["steps"]
                if st["name"] == "gc" and st["finished_at"]]

    def exercised() -> bool:
        """Clients of each replica refused, and GC inside some push's gap: chance decides whether three windows
        see both, so windows go on (up to eight) until they have."""
        spans, seen = gc_spans(), list(pushes)
        return (all(any(r.startswith("405") for rg, p in seen if rg is reg for r in p.refusals) for reg in replicas)
                and any(_overlaps(pause, g) for _, p in seen for pause in p.pauses for g in spans))

    def maintain() -> None:
        try:
            n = 0
            while n < 3 or (n < 8 and not exercised() and time.time() < deadline):
                # A victim pushed through each replica in turn, deleted through the registry's URL (the first).
                via = replicas[n % 2]
                victim = images.image(layers=1)
                push = Push("victims", f"v{n}", victim)
                _push_until_acknowledged(via.url, push, random.Random(n), deadline)
                assert push.acknowledged == victim.digest, push
                victims.append((via, victim))
                windows.append(s.wait(s.delete({"repository": "victims", "tags": [f"v{n}"]})["id"], timeout=90))
                n += 1
        finally:
            done.set()

    def pusher(n: int) -> None:
        reg = replicas[n % 2]  # two clients per replica, each sticking to its replica like a client behind it
        i = 0
        while not done.is_set() and time.time() < deadline:
            push = Push(f"push/r{n % 2}-c{n}", f"t{i}", images.image(layers=rng.randint(1, 2),
                                                                      layer_size=rng.randint(2_000, 20_000)))
            pushes.append((reg, push))
            _push_until_acknowledged(reg.url, push, random.Random(n * 1000 + i), deadline)
            i += 1

    threads = [threading.Thread(target=maintain), *(threading.Thread(target=pusher, args=(n,)) for n in range(4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(windows) >= 3, "the maintenance windows did not all run in time"
    for job in windows:
        assert job["status"] == "succeeded", job
        assert job["result"]["integrity"]["broken"] == []
        assert _fenced_both(job, names), job["steps"]  # each replica fenced and refusing at its own address
    # Clients of each replica were refused while its fence stood, and GC landed inside a push's gap.
    for reg in replicas:
        assert any(r.startswith("405") for rg, p in pushes if rg is reg for r in p.refusals), reg.name
    assert sum(_overlaps(pause, g) for _, p in pushes for pause in p.pauses for g in gc_spans()) > 0
    # Every push was acknowledged, never told its blobs were gone, and pulls complete from both replicas.
    assert len(pushes) >= 8
    for _, push in pushes:
        assert push.acknowledged == push.image.digest, push
        assert not [r for r in push.refusals if "BLOB_UNKNOWN" in r], push.refusals
        for reg in replicas:
            assert images.pull_verified(reg.url, push.repo, push.tag) == [], (reg.name, push.tag)
    # What GC swept (the victims, pushed through either replica) is gone as seen from both.
    assert sum(j["result"]["gc"]["blobs_deleted"] for j in windows) >= 2 * len(victims)
    for _, victim in victims:
        for reg in replicas:
            assert images.head_manifest(reg.url, "victims", victim.digest) == 404
            for blob in victim.blobs:
                assert images.head_blob(reg.url, "victims", blob) == 404, (reg.name, blob)
    for reg in replicas:  # both writable again, with their original configs and no backups
        assert reg.exec("ls", "/etc/docker/registry").split() == ["config.yml"]
        assert requests.post(f"{reg.url}/v2/probe/blobs/uploads/", timeout=10).status_code == 202


def test_replicas_on_separate_storage_fail_preflight_before_anything_changes(
        make_registry, redis_server: str, redis_conn: redis.Redis, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = make_registry(), make_registry()  # each with its own storage
    img = images.image()
    images.Pusher(a.url).image("team/app", img, "v1")
    path = tmp_path / "registries.yml"
    path.write_text(yaml.safe_dump({"registries": [{
        "name": "shared", "url": a.url, "replicas": [{"container": r.name, "url": r.url} for r in (a, b)]}]}))
    s = start_stack(a, redis_server, redis_conn, REGISTRIES_FILE=str(path))
    try:
        listed = s.get("/v1/registries").json()["items"][0]
        assert listed["replicas"] == [{"container": a.name, "url": a.url}, {"container": b.name, "url": b.url}]
        job = s.wait(s.delete({"repository": "team/app", "tags": ["v1"]})["id"])
    finally:
        s.stop()
    assert job["status"] == "failed" and job["error"]["step"] == "preflight", job
    assert job["error"]["code"] == "REGISTRY_REPLICA_STORAGE_MISMATCH" and b.name in job["error"]["message"]
    assert images.pull_verified(a.url, "team/app", "v1") == []  # nothing deleted
    for reg in (a, b):  # neither was fenced
        assert reg.exec("ls", "/etc/docker/registry").split() == ["config.yml"]
