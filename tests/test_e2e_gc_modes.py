"""The GC mode in real windows: JANITOR_GC_MODE=incremental marks before the fence and sweeps what
distribution's garbage-collect would; a request overrides it for its window; requests that disagree share
`registry`; a bad mode is a 422 in the one error shape."""

from __future__ import annotations

import pytest

from janitor.window import gc
from tests import images
from tests.conftest import Registry, Stack

pytestmark = pytest.mark.e2e
CONFIG = "/etc/docker/registry/config.yml"


def _step(job: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(s for s in job["steps"] if s["name"] == name)


def _nothing_left_for_gc(reg: Registry) -> None:
    out = reg.exec("registry", "garbage-collect", "--dry-run", CONFIG)
    assert gc.parse_output(out).deleted_blobs == [], "garbage-collect would still sweep blobs"


def test_an_incremental_window_frees_what_was_planned_and_leaves_nothing_for_gc(driver: str, registry: Registry,
                                                                               make_stack) -> None:  # type: ignore[no-untyped-def]
    s: Stack = make_stack(registry, JANITOR_GC_MODE="incremental")
    p = s.pusher()
    shared = images.layer(3000)
    old, kept = images.image(shared_layers=[shared]), images.image(shared_layers=[shared])
    p.image("team/app", old, "old")
    p.image("team/app", kept, "kept")
    child = images.image(images.OCI_MANIFEST)
    p.index("team/multi", images.index([child]), "v1")
    job = s.wait(s.delete({"repository": "team/app", "tags": ["old"]})["id"])
    assert job["status"] == "succeeded", job
    done = job["result"]["gc"]
    assert done["mode"] == "incremental"
    assert _step(job, "drain")["outcome"]["gc_mark"]["revisions_counted"] >= 3
    assert sorted(done["deleted_blobs"]) == sorted([old.digest, *(set(old.blobs) - {images.sha256_digest(shared)})])
    assert job["result"]["bytes_freed"] == job["result"]["planned"]["bytes"] > 0
    assert job["result"]["integrity"]["broken"] == []
    if driver == "s3":  # the store's requests are counted where they are made: the mark, and under the fence
        assert _step(job, "drain")["outcome"]["storage_requests"] > 0 < _step(job, "gc")["outcome"]["storage_requests"]
        # Under the fence the sweep lists nothing: it takes what the hold step's listing found (one DeleteObjects
        # is its only request; listing repositories and blobs again made it three).
        assert _step(job, "gc")["outcome"]["storage_requests"] < 3, _step(job, "gc")["outcome"]
        assert not any(d.split(":")[1] in k for d in done["deleted_blobs"] for k in registry.bucket.objects("blobs/"))
    assert images.pull_verified(registry.url, "team/app", "kept") == []
    assert images.pull_verified(registry.url, "team/multi", "v1") == []
    _nothing_left_for_gc(registry)


def test_a_request_overrides_the_mode_and_disagreeing_requests_share_registry(registry: Registry,
                                                                              make_stack) -> None:  # type: ignore[no-untyped-def]
    s: Stack = make_stack(registry, JANITOR_GC_MODE="incremental")
    p = s.pusher()
    p.image("team/app", images.image(), "a")
    p.image("team/app", images.image(), "b")
    alone = s.wait(s.post("/v1/gc", {"gc_mode": "registry"}).json()["id"])
    assert alone["status"] == "succeeded" and alone["result"]["gc"]["mode"] == "registry", alone
    assert "gc_mark" not in _step(alone, "drain")["outcome"]

    s.kill_worker()  # both wait, then share one window
    first = s.delete({"repository": "team/app", "tags": ["a"], "gc_mode": "incremental"})["id"]
    second = s.post("/v1/gc", {}).json()["id"]  # the registry's setting: incremental
    s.start_worker()
    jobs = [s.wait(first), s.wait(second)]
    assert len({j["window"]["id"] for j in jobs}) == 1
    assert all(j["status"] == "succeeded" and j["result"]["gc"]["mode"] == "incremental" for j in jobs), jobs
    assert set(jobs[0]["result"]["gc"]["seconds"]) == {"change_and_sweep", "delete"}, jobs[0]["result"]["gc"]

    s.kill_worker()
    first = s.delete({"repository": "team/app", "tags": ["b"]})["id"]
    second = s.post("/v1/gc", {"gc_mode": "registry"}).json()["id"]
    s.start_worker()
    jobs = [s.wait(first), s.wait(second)]
    assert len({j["window"]["id"] for j in jobs}) == 1
    assert all(j["result"]["gc"]["mode"] == "registry" for j in jobs), jobs  # the stricter one
    _nothing_left_for_gc(registry)


def test_a_bad_mode_is_refused_with_the_one_error_shape(stack: Stack) -> None:
    for path, body in [("/v1/gc", {"gc_mode": "fast"}),
                       ("/v1/deletions", {"repository": "team/app", "tags": ["x"], "gc_mode": "fast"})]:
        resp = stack.post(path, body)
        assert resp.status_code == 422, resp.text
        error = resp.json()
        assert set(error) == {"code", "message", "status", "details"} and "gc_mode" in error["details"], error
    assert stack.nothing_queued()
