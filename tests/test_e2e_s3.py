"""The registry on S3 (moto in server mode on loopback): pushes and pulls land in the bucket under distribution's
layout, and a window deletes, fences, garbage-collects and restarts it there."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests import images
from tests.conftest import Registry, Stack

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
    assert f"some/root/docker/registry/v2/repositories/team/app/_manifests/tags/v1/current/link" in keys
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
