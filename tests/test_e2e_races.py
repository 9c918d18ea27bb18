"""Deletions planned on the whole request and safe against pushes that land while they run (issue 7)."""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from collections.abc import Callable

import pytest
import requests

from janitor.registry.manifests import ACCEPT, OCI_INDEX, OCI_MANIFEST
from tests import images
from tests.conftest import Registry, Stack

pytestmark = pytest.mark.e2e
REPO = "team/busy"


def _ok(stack: Stack, body: dict, timeout: float | None = None) -> dict:
    job = stack.wait(stack.delete(body)["id"], timeout)
    assert job["status"] == "succeeded", (job["error"], job["steps"][-1])
    return job


def _tag_digest(url: str, repo: str, tag: str) -> str | None:
    resp = requests.head(f"{url}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=30)
    return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None


def test_an_index_tag_with_its_childrens_tags_frees_the_whole_image(stack: Stack) -> None:
    p = stack.pusher()
    amd = images.image(OCI_MANIFEST, platform=("linux", "amd64"), layer_size=20_000)
    arm = images.image(OCI_MANIFEST, platform=("linux", "arm64"), layer_size=20_000)
    idx = images.index([amd, arm], OCI_INDEX)
    p.index(REPO, idx, "multi")
    p.manifest(REPO, "amd64", amd.manifest, amd.media_type)
    p.manifest(REPO, "arm64", arm.manifest, arm.media_type)
    kept = images.image()
    p.image(REPO, kept, "kept")
    before = stack.registry.blob_files()

    job = _ok(stack, {"repository": REPO, "tags": ["multi", "amd64", "arm64"]})

    result = job["result"]
    assert result["manifests_deleted"][0] == idx.digest  # the index before its children
    assert set(result["manifests_deleted"]) == {idx.digest, amd.digest, arm.digest}
    assert result["tags_removed"] == [f"{REPO}:amd64", f"{REPO}:arm64", f"{REPO}:multi"]
    image_blobs = {idx.digest, amd.digest, arm.digest, *amd.blobs, *arm.blobs}
    assert set(result["gc"]["deleted_blobs"]) == image_blobs
    assert result["planned"]["bytes"] == result["bytes_freed"] == sum(before[d] for d in image_blobs)
    assert result["planned"]["blobs"] == len(image_blobs)
    assert set(stack.registry.blob_files()) == set(before) - image_blobs
    assert stack.registry.revisions() == {REPO: {kept.digest}}
    assert images.pull_verified(stack.registry.url, REPO, "kept") == []


def test_untagged_keeps_fresh_pushes_by_default(driver: str, stack: Stack) -> None:
    p = stack.pusher()
    loose = images.image()
    p.image(REPO, loose, None)  # pushed by digest a moment ago: its tag may be on its way
    p.image(REPO, images.image(), "v1")
    job = _ok(stack, {"repository": REPO, "untagged": True})
    assert job["result"]["manifests_deleted"] == []
    plan = next(s for s in job["steps"] if s["name"] == "delete")["outcome"]["plan"]
    assert plan["repositories"][0]["kept_too_young"] == [loose.digest]
    assert images.head_manifest(stack.registry.url, REPO, loose.digest) == 200


def test_a_manifest_tagged_while_untagged_cleanup_runs_is_kept(driver: str, registry: Registry,
                                                                make_stack: Callable[..., Stack]) -> None:
    """The check right before each delete: tags put on untagged manifests after the plan keep them."""
    stack = make_stack(registry, JANITOR_UNTAGGED_MIN_AGE="0")
    p = stack.pusher()
    base = images.image()
    p.image(REPO, base, "keep-0")
    # Every check before a delete reads these again, so the deletions take a while (on S3, where each read
    # is several requests, fewer do).
    for i in range(1, 120 if driver == "filesystem" else 30):
        p.manifest(REPO, f"keep-{i}", base.manifest, base.media_type)
    loose = [images.image(layers=1, layer_size=256) for _ in range(30)]
    for img in loose:
        p.image(REPO, img, None)
    order = _ok(stack, {"repository": REPO, "untagged": True, "dry_run": True})["result"]["plan"]["manifests"]
    assert sorted(order) == sorted(img.digest for img in loose)
    by_digest = {img.digest: img for img in loose}
    rescued = [by_digest[d] for d in order[-3:]]

    job_id = stack.delete({"repository": REPO, "untagged": True})["id"]
    first = order[0]
    assert images.wait_until(lambda: images.head_manifest(stack.registry.url, REPO, first) == 404, 60, 0.01)
    for n, img in enumerate(rescued):  # the first manifest is gone: the plan is made, deletes are under way
        p.manifest(REPO, f"rescued-{n}", img.manifest, img.media_type)
    job = stack.wait(job_id)

    assert job["status"] == "succeeded", job
    skipped = {s["digest"]: s for s in job["result"]["skipped"]}
    assert set(skipped) == {img.digest for img in rescued}, job["result"]["skipped"]
    assert [skipped[img.digest]["tags"] for img in rescued] == [[f"rescued-{n}"] for n in range(3)]
    assert sorted(job["result"]["manifests_deleted"]) == sorted(order[:-3])
    for n, img in enumerate(rescued):
        assert _tag_digest(stack.registry.url, REPO, f"rescued-{n}") == img.digest
        assert images.pull_verified(stack.registry.url, REPO, f"rescued-{n}") == []


def test_untagged_cleanups_never_take_a_push_that_lands_meanwhile(driver: str, registry: Registry,
                                                                    make_stack: Callable[..., Stack]) -> None:
    """Cleanups in a loop while three clients push new tags (and move one tag each, which leaves untagged
    manifests to delete). The minimum age is short (5 s): it covers a manifest PUT in progress, whose
    revision link is written a moment before its tag link, and whose tag is listed before it resolves. The
    read order and the check before each delete keep every older manifest that gets a tag. (Uploads never
    stop here: the drain before the fence is short.)"""
    stack = make_stack(registry, JANITOR_UNTAGGED_MIN_AGE="5", JANITOR_UPLOAD_DRAIN="1")
    seed = stack.pusher()
    base = images.image()
    seed.image(REPO, base, "seed-0")
    # A busy repository: reading its tags takes a while (on S3 every read is several requests already, and
    # the check before each delete reads them all again: fewer keep the windows within the test's time).
    for i in range(1, 100 if driver == "filesystem" else 10):
        seed.manifest(REPO, f"seed-{i}", base.manifest, base.media_type)

    acked: dict[str, str] = {}  # tag -> digest, every push the registry acknowledged
    lock = threading.Lock()
    stop = threading.Event()

    # On S3 each client stops after a bounded number of pushes: every tag makes each delete slower (the
    # registry's own DELETE reads every tag of the repository through the bucket), so an unbounded run grows
    # its own windows; the filesystem runs until the windows stop.
    pushes = None if driver == "filesystem" else 30

    def client(n: int) -> None:
        p = stack.pusher()
        i = done = 0
        while not stop.is_set() and (pushes is None or done < pushes):
            i += 1
            img = images.image(layers=1, layer_size=512)
            tag = f"c{n}-{i}" if i % 2 else f"c{n}-latest"
            try:
                digest = p.image(REPO, img, tag)
            except requests.RequestException:
                time.sleep(0.1)  # refused while the registry is read-only, or restarting: not acknowledged
                continue
            done += 1
            if not tag.endswith("-latest"):
                with lock:
                    acked[tag] = digest

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    jobs = []
    started = time.monotonic()
    deadline = started + (120 if driver == "s3" else 25)  # a window on S3 takes longer

    def more() -> bool:
        """Windows until the deadline (on S3 until the clients are done), and at least two of them, one of which
        deleted something, with 30 pushes acknowledged: on a loaded machine one window can take the whole time
        (never past 240 s)."""
        if len(jobs) < 2 or not any(j["result"]["manifests_deleted"] for j in jobs) or len(acked) < 30:
            return time.monotonic() < started + 240
        return time.monotonic() < deadline and (pushes is None or any(t.is_alive() for t in threads))
    try:
        while more():
            jobs.append(_ok(stack, {"repository": REPO, "untagged": True}))
            time.sleep(random.uniform(0.5, 2.0))
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    deleted = {d for j in jobs for d in j["result"]["manifests_deleted"]}
    timings = [[(s["name"], s["started_at"][11:], s["finished_at"][11:]) for s in j["steps"]] for j in jobs]
    assert len(jobs) >= 2 and deleted, f"the cleanups must have had untagged manifests to delete: {timings}"
    assert len(acked) >= (30 if pushes is None else pushes), f"only {len(acked)} pushes acknowledged"
    taken = deleted & set(acked.values())
    assert not taken, f"cleanups deleted {len(taken)} of {len(acked)} acknowledged pushes"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # every push checked, in parallel to stay quick
        now = dict(zip(acked, pool.map(lambda t: _tag_digest(stack.registry.url, REPO, t), acked), strict=True))
        lost = {t: d for t, d in acked.items() if now[t] != d}
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged pushes lost their tag"
        pulls = dict(zip(acked, pool.map(lambda t: images.pull_verified(stack.registry.url, REPO, t), acked),
                         strict=True))
    assert {t: p for t, p in pulls.items() if p} == {}
