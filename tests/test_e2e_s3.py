"""The registry on S3 (moto in server mode on loopback): pushes and pulls land in the bucket under distribution's
layout, and a window deletes, fences, garbage-collects and restarts it there."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
import requests

from janitor.registry.container import RegistryContainer
from janitor.window import gc
from tests import images
from tests.conftest import Registry, Stack, free_port, wait_http

pytestmark = pytest.mark.e2e

CONFIG = "/etc/docker/registry/config.yml"


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
    assert steps_by_name["drain"]["storage_requests"] >= 2  # multipart uploads in progress listed; blob sizes listed
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


def test_the_next_window_starts_from_the_view_the_last_fence_read_and_lists_only_what_the_log_says_changed(
        make_s3_registry: Callable[..., Registry], make_stack: Callable[..., Stack]) -> None:
    """An incremental window carries what its fence read, less what it swept, to the next one, true at the start
    of the run its restart began. The next window reads that run's log and lists again only the repositories
    it wrote to: its delete step, mark and fence do not list the bucket whole, and it sweeps exactly as a
    window that listed everything would. A registry restarted by someone else in between: listed whole."""
    reg = make_s3_registry()
    stack = make_stack(reg, JANITOR_GC_MODE="incremental")
    p = stack.pusher()
    first, second, kept = images.image(), images.image(), images.image()
    for n in range(3):
        p.image(f"team/app{n}", images.image(), "v1")
    p.image("team/app", first, "first")
    p.image("team/app", second, "second")
    p.image("team/app", kept, "kept")

    one = stack.wait(stack.delete({"repository": "team/app", "tags": ["first"]})["id"])
    assert one["status"] == "succeeded", one
    steps = {s["name"]: s["outcome"] for s in one["steps"]}
    assert steps["preflight"]["carried_view"]["used"] is False
    carried = steps["restart"]["carried_view"]
    assert carried["kept"] is True and carried["verify"]["used"] is True, carried

    # Between the windows: a new repository, a new tag, and an image whose layer another already has.
    later, shared = images.image(), images.image()
    p.image("team/new", later, "v1")
    p.image("team/app0", shared, "v2")
    p.image("team/app1", images.image(shared_layers=[shared.layers[0]]), "v3")
    two = stack.wait(stack.delete({"repository": "team/app", "tags": ["second"]})["id"])
    assert two["status"] == "succeeded", two
    steps = {s["name"]: s["outcome"] for s in two["steps"]}
    assert steps["preflight"]["carried_view"]["used"] is True, steps["preflight"]
    assert steps["preflight"]["carried_view"]["write_requests"] > 0
    drain = steps["drain"]["carried_view"]
    assert drain["used"] is True and drain["repositories"] >= 3, drain  # team/new, team/app0, team/app1
    assert steps["fence"]["fenced_listing"]["whole"] is False, steps["fence"]
    unique = set(second.blobs) - set(kept.blobs)
    assert two["result"]["bytes_freed"] == sum(len(second.blobs[d]) for d in unique) + len(second.manifest)
    assert not unique & set(reg.blob_files())
    for repo, tag in (("team/app", "kept"), ("team/new", "v1"), ("team/app0", "v2"), ("team/app1", "v3")):
        assert images.pull_verified(reg.url, repo, tag) == [], (repo, tag)
    # What the registry's own GC would still find to sweep now: nothing.
    assert gc.run(RegistryContainer(reg.container.name), CONFIG, dry_run=True).deleted_blobs == []

    reg.container.restart(timeout=10)
    wait_http(f"{reg.url}/v2/")
    three = stack.wait(stack.delete({"repository": "team/new", "tags": ["v1"]})["id"])
    assert three["status"] == "succeeded", three
    steps = {s["name"]: s["outcome"] for s in three["steps"]}
    assert steps["preflight"]["carried_view"] == {
        "used": False, "why": "the registry was restarted since the view was carried: the log of the run in "
                              "between may not say everything it wrote"}, steps["preflight"]
    assert "carried_view" not in steps["drain"]
    assert not set(later.blobs) & set(reg.blob_files())


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
