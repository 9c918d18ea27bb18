"""The registry on S3 (moto in server mode on loopback): pushes and pulls land in the bucket under distribution's
layout, and a window deletes, fences, garbage-collects and restarts it there."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
import requests

from tests import images
from tests.conftest import Registry, Stack, free_port

pytestmark = pytest.mark.e2e


def test_push_and_pull_go_through_the_bucket(make_s3_registry: Callable[..., Registry]) -> None:
    reg = make_s3_registry(rootdirectory="/some/root")
    assert reg.bucket is not None
    img = images.image()
    digest = images.Pusher(reg.url).image("team/app", img, "v1")

    assert images.pull_verified(reg.url, "team/app", "v1") == []
    assert reg.blob_files() == {d: len(b) for d, b in img.blobs.items()} | {digest: len(img.manifest)}
    assert reg.revisions() == {"team/app": {digest}}
    keys = reg.bucket.objects("repositories/team/app/")
    assert "some/root/docker/registry/v2/repositories/team/app/_manifests/tags/v1/current/link" in keys
    assert all(k.startswith("some/root/docker/registry/v2/") for k in reg.bucket.objects(""))


def test_a_tag_deletion_and_gc_sweep_the_bucket(make_s3_registry: Callable[..., Registry],
                                                 make_stack: Callable[..., Stack]) -> None:
    reg = make_s3_registry()
    stack = make_stack(reg)
    p = stack.pusher()
    old, kept = images.image(), images.image()
    p.image("team/app", old, "old")
    p.image("team/app", kept, "kept")

    job = stack.wait(stack.delete({"repository": "team/app", "tags": ["old"]})["id"])

    assert job["status"] == "succeeded", job
    steps = [s["name"] for s in job["steps"]]
    assert "gc" in steps and "restart" in steps, steps
    assert job["result"]["manifests_deleted"] == [old.digest]
    stored = reg.blob_files()
    assert not set(old.blobs) & set(stored), "GC swept the old image's blobs from the bucket"
    assert set(kept.blobs) <= set(stored)
    assert images.pull_verified(reg.url, "team/app", "kept") == []
    assert images.head_manifest(reg.url, "team/app", "old") == 404
    # Every protection ran on the bucket: uploads drained, sizes read, pushes in flight held; each step says
    # what it cost, and the window the sum.
    steps_by_name = {s["name"]: s["outcome"] for s in job["steps"]}
    assert job["result"]["bytes_freed"] == sum(len(b) for b in old.blobs.values()) + len(old.manifest)
    assert steps_by_name["hold"]["holds"] == 1  # both images were pushed within the upload grace
    assert all(isinstance(steps_by_name[n].get("storage_requests"), int) for n in ("preflight", "drain", "hold"))
    assert steps_by_name["drain"]["storage_requests"] >= 3  # uploads listed; blob sizes listed
    assert job["window"]["storage_requests"] == sum(o.get("storage_requests", 0) for o in steps_by_name.values())
    # Of those, the listing pages that waited for one another: never more than the requests, at least one page
    # for each listing (the drain's of uploads and of blob sizes).
    assert all(0 <= o["storage_requests_in_a_row"] <= o["storage_requests"] for o in steps_by_name.values()
               if "storage_requests" in o)
    assert steps_by_name["drain"]["storage_requests_in_a_row"] >= 2


def test_under_the_fence_an_incremental_window_reads_only_what_the_registrys_log_says_changed(
        make_s3_registry: Callable[..., Registry], make_stack: Callable[..., Stack]) -> None:
    """The registry drains on SIGTERM (http.draintimeout in its config): its access log then shows every write
    until the fence stopped it, and under the fence the bucket is not listed again. A registry stopped
    without draining is listed whole, and says why."""
    for env, whole in (({}, False), ({"REGISTRY_HTTP_DRAINTIMEOUT": "0s"}, True)):
        reg = make_s3_registry(**env)
        stack = make_stack(reg, JANITOR_GC_MODE="incremental")
        p = stack.pusher()
        old, kept = images.image(), images.image()
        for n in range(4):
            p.image(f"team/app{n}", images.image(), "v1")
        p.image("team/app", old, "old")
        p.image("team/app", kept, "kept")

        job = stack.wait(stack.delete({"repository": "team/app", "tags": ["old"]})["id"])

        assert job["status"] == "succeeded", job
        steps = {s["name"]: s["outcome"] for s in job["steps"]}
        assert job["result"]["gc"]["mode"] == "incremental"
        assert job["result"]["bytes_freed"] == sum(len(b) for b in old.blobs.values()) + len(old.manifest)
        assert not set(old.blobs) & set(reg.blob_files())
        assert images.pull_verified(reg.url, "team/app", "kept") == []
        listing = steps["fence"]["fenced_listing"]
        if not whole:
            # Nothing was written between the mark and the fence: nothing is listed or looked up under it, and
            # the sweep is one DeleteObjects.
            assert listing == {"whole": False, "repositories": 0, "blobs_named": 0, "write_requests": 0}, listing
            assert steps["hold"]["storage_requests"] == 0, steps["hold"]
            assert steps["gc"]["storage_requests"] == 1, steps["gc"]
        else:
            # 2.8 exits 2 on SIGTERM without a drain timeout, 3.1 143: not 0, so its log may miss a request.
            assert listing["whole"] is True and re.search(r"exit code (?!0,)\d+", listing["why"]), listing
            assert steps["hold"]["storage_requests"] >= 2, steps["hold"]  # repositories/ and blobs/, whole


def test_the_index_reconciles_from_the_janitors_own_listing_not_the_registrys_catalog_walk(
        make_s3_registry: Callable[..., Registry], make_stack: Callable[..., Stack]) -> None:
    """On S3 the registry's `_catalog` is one request walking the whole bucket: in flight at a fence, it holds
    up the registry's drain and is cut, and the window then lists the bucket whole. The index takes its
    repositories from the janitor's own listing instead, and still lists what the registry's API shows."""
    from tests.test_e2e_index import _reconciled_after, listing, truth

    reg = make_s3_registry()
    p = images.Pusher(reg.url)
    for repo in ("team/app", "team/app/sub", "other"):
        p.image(repo, images.image(), "v1")
    since = int(time.time()) - 1
    stack = make_stack(reg)
    expected = truth(reg)
    assert images.wait_until(lambda: _reconciled_after(stack, since), 60)
    # What the worker read from the registry (the API, in polling mode, reads the catalog for each listing: a
    # user's request, after this).
    janitors = [line for line in reg.container.logs(stdout=True, stderr=False, since=since).decode().splitlines()
                if "registry-janitor" in line]
    assert [line for line in janitors if "/tags/list" in line], "\n".join(janitors)
    assert not [line for line in janitors if "/v2/_catalog" in line], "\n".join(janitors)
    assert listing(stack) == expected


def _ready(stack: Stack) -> dict:
    def storage_seen() -> dict | None:
        found = requests.get(stack.api + "/readyz", timeout=10).json()
        return found if "storage" in found["checks"] else None
    found = images.wait_until(storage_seen, 30)
    assert found, requests.get(stack.api + "/readyz", timeout=10).json()
    return found


def test_readyz_says_every_protection_is_on_and_untagged_is_accepted(make_s3_registry: Callable[..., Registry],
                                                                    make_stack: Callable[..., Stack]) -> None:
    reg = make_s3_registry()
    stack = make_stack(reg)
    ready = _ready(stack)

    storage = ready["checks"]["storage"]
    assert ready["status"] == "ready", ready
    assert storage["driver"] == "s3" and storage["readable"] and storage["protections_off"] == []
    assert storage["message"] == "s3 storage: every protection is on"
    images.Pusher(reg.url).image("team/app", images.image(), "v1")
    resp = stack.post("/v1/deletions", {"repository": "team/app", "untagged": True, "dry_run": True})
    assert resp.status_code == 202, resp.text  # 409 STORAGE_ACCESS_REQUIRED before


def test_a_bucket_the_janitor_cannot_list_fails_preflight_with_its_own_code(
        make_s3_registry: Callable[..., Registry], make_stack: Callable[..., Stack]) -> None:
    reg = make_s3_registry()
    closed = f"http://127.0.0.1:{free_port()}"
    stack = make_stack(reg, JANITOR_S3_ENDPOINT=closed)  # the janitor's own way to the bucket: nobody there
    img = images.image()
    stack.pusher().image("team/app", img, "v1")

    ready = _ready(stack)
    storage = ready["checks"]["storage"]
    assert ready["status"] == "unavailable" and not storage["ok"], ready
    assert storage["code"] == "STORAGE_UNREACHABLE" and closed in storage["message"], storage
    assert "protections" not in storage["message"]  # never a quiet fall back to "protections off"

    job = stack.wait(stack.delete({"repository": "team/app", "tags": ["v1"]})["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "STORAGE_UNREACHABLE", job["error"]
    assert job["error"]["step"] == "preflight"
    assert images.pull_verified(reg.url, "team/app", "v1") == []  # nothing was deleted
