"""The restore window, proven on the real registry: delete → GC → restore → every restored image pulls complete with
identical digests; a tag pushed anew is left alone; after the window a GC frees exactly what the plan promised."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from janitor.registry.manifests import OCI_INDEX, OCI_MANIFEST
from tests import images
from tests.conftest import Registry, Stack

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).parent / "registry-janitor")


def _cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--url", stack.api, "--token", stack.token, *argv], capture_output=True, text=True,
                          timeout=180, check=False)


def _ok(stack: Stack, job_id: str) -> dict:
    job = stack.wait(job_id, timeout=180)
    assert job["status"] == "succeeded", job
    return job


def test_delete_gc_restore_pulls_identical_and_a_new_push_is_left_alone(stack: Stack) -> None:
    url = stack.registry.url
    p = stack.pusher()
    app, other, kept = images.image(), images.image(), images.image()
    amd = images.image(OCI_MANIFEST, platform=("linux", "amd64"))
    arm = images.image(OCI_MANIFEST, platform=("linux", "arm64"))
    idx = images.index([amd, arm], OCI_INDEX)
    p.image("team/app", app, "v1")
    p.image("team/app", app, "v1-alias")
    p.image("team/app", other, "v2")
    p.image("team/app", kept, "keep")
    p.index("team/multi", idx, "latest")
    p.image("team/gone", images.image(), "only")

    by_tag = _ok(stack, stack.delete({"repository": "team/app", "tags": ["v1", "v1-alias", "v2"],
                                      "restore_window": "10m"})["id"])
    by_digest = _ok(stack, stack.delete({"repository": "team/multi", "digests": [idx.digest, amd.digest, arm.digest],
                                         "force": True, "restore_window": "10m"})["id"])
    whole = _ok(stack, stack.delete({"repository": "team/gone", "all_tags": True, "restore_window": "10m"})["id"])
    for job in (by_tag, by_digest, whole):
        assert job["result"]["restorable_until"] and job["result"]["bytes_held"] == job["result"]["planned"]["bytes"]
        assert job["result"]["bytes_freed"] == 0, job["result"]  # GC ran and kept every blob
    assert "team/gone" in whole["result"]["repositories_removed"]
    assert images.head_manifest(url, "team/app", "v1") == 404 and images.head_manifest(url, "team/multi", "latest") == 404

    # GC alone, again: the blobs stay held.
    gc = _ok(stack, stack.post("/v1/gc", {}).json()["id"])
    assert gc["result"]["bytes_freed"] == 0, gc["result"]
    listed = stack.get("/v1/restorable").json()
    assert [r["job"] for r in listed["items"]] == [whole["id"], by_digest["id"], by_tag["id"]]  # newest first
    assert listed["items"][2]["bytes_held"] == by_tag["result"]["bytes_held"] > 0

    # v2 is pushed anew meanwhile: the restore leaves it alone.
    newer = images.image()
    p.image("team/app", newer, "v2")

    bad = stack.post(f"/v1/jobs/{by_tag['id']}/restore", {"tags": ["team/app:keep"]})
    assert bad.status_code == 422, bad.text
    assert stack.post("/v1/jobs/" + "0" * 32 + "/restore", {}).status_code == 404

    restored = _ok(stack, stack.post(f"/v1/jobs/{by_tag['id']}/restore").json()["id"])
    assert restored["kind"] == "restore"
    assert sorted(restored["result"]["tags_restored"]) == ["team/app:v1", "team/app:v1-alias"]
    assert restored["result"]["skipped"] == [{"repository": "team/app", "tag": "v2", "now_at": newer.digest,
                                              "reason": "the tag was pushed anew since the deletion; left alone"}]
    assert images.head_manifest(url, "team/app", "v2") == 200
    assert images.pull_verified(url, "team/app", "v2") == [] and \
        stack.get("/v1/repositories/team/app/tags").status_code == 200
    for ref, img in (("v1", app), ("v1-alias", app), (other.digest, other)):
        assert images.pull_verified(url, "team/app", ref) == []
        resp = p.session.get(f"{url}/v2/team/app/manifests/{ref}", headers={"Accept": images.ACCEPT}, timeout=30)
        assert resp.content == img.manifest and resp.headers["Docker-Content-Digest"] == img.digest

    _ok(stack, stack.post(f"/v1/jobs/{by_digest['id']}/restore").json()["id"])
    listed = json.loads(_cli(stack, "restorable", "--json").stdout)
    assert [r["restored_by"] != [] for r in listed] == [False, True, True]
    done = _cli(stack, "restore", whole["id"])  # the CLI follows it to the end
    assert done.returncode == 0 and "manifests restored: 1, tags restored: 1" in done.stdout, done
    resp = p.session.get(f"{url}/v2/team/multi/manifests/latest", headers={"Accept": images.ACCEPT}, timeout=30)
    assert resp.content == idx.manifest and resp.headers["Docker-Content-Digest"] == idx.digest
    assert images.pull_verified(url, "team/multi", "latest") == []
    assert images.pull_verified(url, "team/gone", "only") == []  # its repository was removed, links and all

    # And it all survives the next GC: the restored manifests keep their blobs themselves.
    _ok(stack, stack.post("/v1/gc", {}).json()["id"])
    for repo, ref in (("team/app", "v1"), ("team/multi", "latest"), ("team/gone", "only"), ("team/app", "keep")):
        assert images.pull_verified(url, repo, ref) == [], (repo, ref)


def test_on_s3_the_holds_keep_restorable_blobs_and_restores_pull_identical(make_s3_registry, make_stack) -> None:  # type: ignore[no-untyped-def]
    """Delete → GC (incremental: the registry's own walks the bucket for minutes through moto) → restore on S3:
    the holds keep every blob a restore needs, and each restored image pulls byte for byte."""
    reg: Registry = make_s3_registry()
    stack: Stack = make_stack(reg, JANITOR_GC_MODE="incremental")
    url, p = reg.url, stack.pusher()
    app, kept = images.image(layer_size=2000), images.image(layer_size=2000)
    child = images.image(OCI_MANIFEST, layers=1, layer_size=2000, platform=("linux", "amd64"))
    idx = images.index([child], OCI_INDEX)
    p.image("team/app", app, "v1")
    p.image("team/app", kept, "keep")
    p.index("team/multi", idx, "latest")
    p.image("team/gone", gone := images.image(layers=1, layer_size=2000), "only")
    before = reg.blob_files()

    requests_ = [{"repository": "team/app", "tags": ["v1"], "restore_window": "10m"},
                 {"repository": "team/multi", "digests": [idx.digest, child.digest], "force": True,
                  "restore_window": "10m"},
                 {"repository": "team/gone", "all_tags": True, "restore_window": "10m"}]
    jobs = [_ok(stack, j["id"]) for j in [stack.delete(r) for r in requests_]]  # one window, or a few
    for job in jobs:
        assert job["result"]["gc"]["mode"] == "incremental" and job["result"]["bytes_freed"] == 0, job["result"]
        held = next(s for s in job["steps"] if s["name"] == "hold")["outcome"]["restorable"]
        assert held["blobs_held"] > 0 and "blobs_not_held" not in held, held
        assert next(s for s in job["steps"] if s["name"] == "gc")["outcome"]["storage_requests"] > 0
    assert "team/gone" in jobs[2]["result"]["repositories_removed"]
    assert set(before) <= set(reg.blob_files())  # GC ran and kept every blob (the holds' own came and went)

    restores = [_ok(stack, stack.post(f"/v1/jobs/{job['id']}/restore").json()["id"]) for job in jobs]
    assert [r["result"]["failed"] for r in restores] == [[], [], []]
    _ok(stack, stack.post("/v1/gc", {}).json()["id"])  # the restored manifests keep their blobs themselves
    for repo, ref, img in (("team/app", "v1", app), ("team/multi", "latest", idx), ("team/gone", "only", gone),
                           ("team/app", "keep", kept)):
        resp = p.session.get(f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": images.ACCEPT}, timeout=30)
        assert resp.content == img.manifest and resp.headers["Docker-Content-Digest"] == img.digest, (repo, ref)
        assert images.pull_verified(url, repo, ref) == [], (repo, ref)


def test_after_the_window_gc_frees_exactly_what_the_plan_promised(stack: Stack) -> None:
    p = stack.pusher()
    p.image("team/app", images.image(layer_size=20000), "old")
    p.image("team/app", images.image(), "keep")
    dry = _ok(stack, stack.delete({"repository": "team/app", "tags": ["old"], "dry_run": True})["id"])
    before = stack.registry.storage_bytes()

    job = _ok(stack, stack.delete({"repository": "team/app", "tags": ["old"], "restore_window": "40s"})["id"])
    promised = job["result"]["planned"]["bytes"]
    assert promised == dry["result"]["planned"]["bytes"] > 20000
    assert job["result"]["bytes_freed"] == 0 and stack.registry.storage_bytes() == before

    until = time.time() + 45
    refused = stack.post("/v1/jobs/" + dry["id"] + "/restore")
    assert refused.status_code == 409 and refused.json()["code"] == "NOT_RESTORABLE"
    time.sleep(max(0.0, until - time.time()))
    assert stack.get("/v1/restorable").json()["items"] == []
    ended = stack.post(f"/v1/jobs/{job['id']}/restore")
    assert ended.status_code == 409 and ended.json()["code"] == "RESTORE_WINDOW_ENDED", ended.text

    gc = _ok(stack, stack.post("/v1/gc", {}).json()["id"])
    assert gc["result"]["bytes_freed"] == promised, (gc["result"], job["result"], stack.registry.blob_files())
    assert stack.registry.storage_bytes() == before - promised
    assert images.pull_verified(stack.registry.url, "team/app", "keep") == []


def test_restore_window_is_validated(stack: Stack) -> None:
    stack.pusher().image("team/app", images.image(), "v1")
    for bad in ("7", "1x", "-1d", "400d", 5):
        resp = stack.post("/v1/deletions", {"repository": "team/app", "tags": ["v1"], "restore_window": bad})
        assert resp.status_code == 422, (bad, resp.text)
    resp = stack.post("/v1/policies", {"name": "p", "repositories": ["team/*"], "keep_last": 1,
                                       "restore_window": "nope"})
    assert resp.status_code == 422 and "restore_window" in resp.json()["details"], resp.text
    assert stack.nothing_queued()
