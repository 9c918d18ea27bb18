"""Deletions do exactly what was asked, proven on the real registry with GC and restart through the API."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable

import pytest

from janitor.registry.manifests import OCI_INDEX, OCI_MANIFEST, sha256_digest
from tests import images
from tests.conftest import Registry, Stack

pytestmark = pytest.mark.e2e


def _ok(stack: Stack, body: dict) -> dict:
    job = stack.wait(stack.delete(body)["id"])
    assert job["status"] == "succeeded", job
    return job


def _multi(p: images.Pusher, repo: str, tag: str) -> tuple[images.Index, images.Image, images.Image]:
    amd = images.image(OCI_MANIFEST, platform=("linux", "amd64"))
    arm = images.image(OCI_MANIFEST, platform=("linux", "arm64"))
    idx = images.index([amd, arm], OCI_INDEX)
    p.index(repo, idx, tag)
    return idx, amd, arm


def _gone(stack: Stack, repo: str, img: images.Image) -> None:
    url = stack.registry.url
    assert images.head_manifest(url, repo, img.digest) == 404
    for blob in img.blobs:
        assert images.head_blob(url, repo, blob) == 404, blob
    assert not set(img.blobs) & set(stack.registry.blob_files())


def test_one_tag_of_several_sharing_a_digest_goes_alone(stack: Stack) -> None:
    p = stack.pusher()
    img = images.image()
    for tag in ("v1", "latest", "stable"):
        p.image("team/app", img, tag)
    before = stack.registry.blob_files()

    job = _ok(stack, {"repository": "team/app", "tags": ["v1"]})

    assert job["result"]["tags_removed"] == ["team/app:v1"] and job["result"]["manifests_deleted"] == []
    assert images.head_manifest(stack.registry.url, "team/app", "v1") == 404
    assert sorted(stack.get("/v1/repositories/team/app/tags").json()["items"], key=lambda t: t["name"])[0]["name"] == "latest"
    assert [t["name"] for t in stack.get("/v1/repositories/team/app/tags").json()["items"]] == ["latest", "stable"]
    for tag in ("latest", "stable"):
        assert images.pull_verified(stack.registry.url, "team/app", tag) == []
    with tempfile.TemporaryDirectory() as out:  # and a real client agrees
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                        f"docker://{stack.registry.url.removeprefix('http://')}/team/app:stable", f"dir:{out}"], check=True)
    # The throwaway manifest and its config blob did not outlive the job.
    assert stack.registry.revisions() == {"team/app": {img.digest}}
    assert stack.registry.blob_files().keys() == before.keys()
    assert job["result"]["gc"]["blobs_deleted"] == 2


def test_delete_by_digest_reports_every_tag_that_pointed_at_it(stack: Stack) -> None:
    p = stack.pusher()
    img, other = images.image(), images.image()
    p.image("team/app", img, "a")
    p.image("team/app", img, "b")
    p.image("team/app", other, "c")
    job = _ok(stack, {"repository": "team/app", "digests": [img.digest]})
    assert job["result"]["manifests_deleted"] == [img.digest]
    assert job["result"]["tags_removed"] == ["team/app:a", "team/app:b"]
    _gone(stack, "team/app", img)
    assert images.pull_verified(stack.registry.url, "team/app", "c") == []


def test_deleting_an_index_removes_the_children_nothing_else_references(stack: Stack) -> None:
    p = stack.pusher()
    idx, amd, arm = _multi(p, "team/app", "multi")
    p.manifest("team/app", "arm-only", arm.manifest, arm.media_type)
    job = _ok(stack, {"repository": "team/app", "tags": ["multi"]})
    assert job["result"]["manifests_deleted"] == [idx.digest, amd.digest]
    assert images.head_manifest(stack.registry.url, "team/app", idx.digest) == 404
    _gone(stack, "team/app", amd)
    assert images.pull_verified(stack.registry.url, "team/app", "arm-only") == []


def test_a_child_of_a_tagged_index_is_refused_unless_forced(stack: Stack) -> None:
    p = stack.pusher()
    idx, amd, _ = _multi(p, "team/app", "multi")
    resp = stack.post("/v1/deletions", {"repository": "team/app", "digests": [amd.digest]})
    assert resp.status_code == 409
    err = resp.json()
    assert err["code"] == "REFERENCED_BY_INDEX" and err["details"]["indexes"] == [idx.digest]
    assert err["details"]["tags"] == ["multi"]
    assert stack.nothing_queued()
    assert images.pull_verified(stack.registry.url, "team/app", "multi") == []

    job = _ok(stack, {"repository": "team/app", "digests": [amd.digest], "force": True})
    assert job["result"]["manifests_deleted"] == [amd.digest]
    assert images.head_manifest(stack.registry.url, "team/app", amd.digest) == 404


def test_untagging_the_children_of_a_tagged_index_never_breaks_it(stack: Stack) -> None:
    p = stack.pusher()
    idx, amd, arm = _multi(p, "team/app", "multi")
    p.manifest("team/app", "amd64", amd.manifest, amd.media_type)
    p.manifest("team/app", "arm64", arm.manifest, arm.media_type)
    job = _ok(stack, {"repository": "team/app", "tags": ["amd64", "arm64"]})
    assert job["result"]["manifests_deleted"] == []
    assert job["result"]["tags_removed"] == ["team/app:amd64", "team/app:arm64"]
    assert images.head_manifest(stack.registry.url, "team/app", "amd64") == 404
    assert images.pull_verified(stack.registry.url, "team/app", "multi") == []
    assert stack.registry.revisions()["team/app"] == {idx.digest, amd.digest, arm.digest}


def test_untagged_removes_only_what_no_tag_reaches(driver: str, registry: Registry,
                                                   make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(registry, JANITOR_UNTAGGED_MIN_AGE="0")  # everything here was pushed a moment ago
    p = stack.pusher()
    kept = images.image()
    p.image("team/app", kept, "kept")
    idx, amd, arm = _multi(p, "team/app", "multi")
    loose = images.image()
    p.image("team/app", loose, None)  # pushed by digest, never tagged
    moved = images.image()
    p.image("team/app", moved, "moving")
    p.image("team/app", images.image(), "moving")  # the tag moves on; `moved` is left untagged
    job = _ok(stack, {"repository": "team/app", "untagged": True})
    assert sorted(job["result"]["manifests_deleted"]) == sorted([loose.digest, moved.digest])
    _gone(stack, "team/app", loose)
    _gone(stack, "team/app", moved)
    for tag in ("kept", "multi", "moving"):
        assert images.pull_verified(stack.registry.url, "team/app", tag) == []
    assert {idx.digest, amd.digest, arm.digest, kept.digest} <= stack.registry.revisions()["team/app"]


def test_whole_repository_goes_from_the_catalog_and_nested_ones_stay(driver: str, stack: Stack) -> None:
    p = stack.pusher()
    a, b, loose, nested = images.image(), images.image(), images.image(), images.image()
    p.image("team/gone", a, "a")
    p.image("team/gone", b, "b")
    p.image("team/gone", loose, None)
    p.image("team/gone/sub", nested, "v1")
    job = _ok(stack, {"repository": "team/gone", "all_tags": True})
    assert sorted(job["result"]["manifests_deleted"]) == sorted([a.digest, b.digest, loose.digest])
    assert job["result"]["repositories_removed"] == ["team/gone"]
    assert stack.registry.catalog() == ["team/gone/sub"]
    assert [r["name"] for r in stack.get("/v1/repositories").json()["items"]] == ["team/gone/sub"]
    for img in (a, b, loose):
        _gone(stack, "team/gone", img)
    assert images.pull_verified(stack.registry.url, "team/gone/sub", "v1") == []


def test_every_repository_needs_the_registry_host_confirmed(stack: Stack) -> None:
    p = stack.pusher()
    one, two = images.image(), images.image()
    p.image("one", one, "v1")
    p.image("two/deep", two, "v1")
    host = stack.registry.url.removeprefix("http://")
    wrong = stack.post("/v1/deletions", {"all_repositories": True, "confirm": "registry.example"})
    assert wrong.status_code == 422 and wrong.json()["code"] == "CONFIRMATION_MISMATCH"
    assert stack.post("/v1/deletions", {"all_repositories": True}).status_code == 422
    assert stack.nothing_queued()
    job = _ok(stack, {"all_repositories": True, "confirm": host})
    assert sorted(job["result"]["repositories_removed"]) == ["one", "two/deep"]
    assert stack.registry.catalog() == []
    assert stack.registry.blob_files() == {}


def test_dry_run_changes_nothing_and_the_real_run_frees_what_it_planned(driver: str, stack: Stack) -> None:
    p = stack.pusher()
    base = images.layer(30_000)
    doomed = images.image(layers=2, shared_layers=[base])
    sibling = images.image(layers=1, shared_layers=[base])  # shares `base` from another repository
    p.image("team/app", doomed, "old")
    p.image("team/app", images.image(), "untagged-soon")
    p.image("team/app", images.image(), "untagged-soon")
    p.image("other", sibling, "v1")
    host = stack.registry.url.removeprefix("http://")
    bodies = [
        {"repository": "team/app", "tags": ["old"]},
        {"repository": "team/app", "digests": [doomed.digest]},
        {"repository": "team/app", "all_tags": True},
        {"repository": "team/app", "untagged": True},
        {"all_repositories": True, "confirm": host},
    ]
    revisions, blobs = stack.registry.revisions(), stack.registry.blob_files()
    plans = []
    for body in bodies:
        job = _ok(stack, {**body, "dry_run": True})
        assert [s["name"] for s in job["steps"]] == ["preflight", "delete"], job["steps"]
        plans.append(job["result"]["plan"])
    assert stack.registry.revisions() == revisions and stack.registry.blob_files() == blobs

    tag_plan = plans[0]
    expected = {sha256_digest(b) for b in doomed.layers[1:]} | {sha256_digest(doomed.config), doomed.digest}
    assert set(tag_plan["blobs"]) == expected  # `base` is still used by other:v1
    assert tag_plan["bytes"] == sum(blobs[d] for d in expected)
    assert tag_plan["tags"] == ["team/app:old"] and tag_plan["manifests"] == [doomed.digest]
    assert plans[4]["bytes"] == sum(blobs.values())

    job = _ok(stack, {"repository": "team/app", "tags": ["old"]})
    assert job["result"]["planned"] == {"blobs": len(expected), "bytes": tag_plan["bytes"]}
    assert job["result"]["bytes_freed"] == tag_plan["bytes"]
    assert set(job["result"]["gc"]["deleted_blobs"]) == expected
    assert images.pull_verified(stack.registry.url, "other", "v1") == []


def _referrer(p: images.Pusher, repo: str, subject: images.Image, tag: str | None) -> str:
    blob = json.dumps({"signature": tag}).encode()
    p.blob(repo, blob)
    empty = b"{}"
    p.blob(repo, empty)
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256_digest(empty), "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": sha256_digest(blob),
                    "size": len(blob)}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": len(subject.manifest)},
    }).encode()
    return p.manifest(repo, tag or sha256_digest(body), body, OCI_MANIFEST)


def test_referrers_go_with_their_subject_unless_asked_not_to(stack: Stack) -> None:
    p = stack.pusher()
    signed, kept = images.image(), images.image()
    p.image("team/app", signed, "v1")
    p.image("team/app", kept, "v2")
    hexd = signed.digest.split(":")[1]
    sig = _referrer(p, "team/app", signed, f"sha256-{hexd}.sig")
    sbom = _referrer(p, "team/app", signed, f"sha256-{hexd}")
    untagged_ref = _referrer(p, "team/app", signed, None)
    kept_sig = _referrer(p, "team/app", kept, f"sha256-{kept.digest.split(':')[1]}.sig")

    job = _ok(stack, {"repository": "team/app", "tags": ["v1"]})
    assert sorted(job["result"]["manifests_deleted"]) == sorted([signed.digest, sig, sbom, untagged_ref])
    for digest in (sig, sbom, untagged_ref):
        assert images.head_manifest(stack.registry.url, "team/app", digest) == 404
    assert images.head_manifest(stack.registry.url, "team/app", kept_sig) == 200

    job = _ok(stack, {"repository": "team/app", "tags": ["v2"], "referrers": False})
    assert job["result"]["manifests_deleted"] == [kept.digest]
    assert images.head_manifest(stack.registry.url, "team/app", kept_sig) == 200


def test_gc_leaves_no_empty_blob_directories(stack: Stack) -> None:
    p = stack.pusher()
    p.image("team/app", images.image(layers=4), "v1")
    p.image("team/app", images.image(), "v2")
    _ok(stack, {"repository": "team/app", "tags": ["v1"]})
    empty = stack.registry.exec("find", "/var/lib/registry/docker/registry/v2/blobs", "-type", "d", "-empty")
    assert empty.strip() == ""


def test_registry_unreachable_answers_503(stack: Stack) -> None:
    stack.pusher().image("team/app", images.image(), "v1")
    stack.registry.container.stop(timeout=1)
    resp = stack.post("/v1/deletions", {"repository": "team/app", "tags": ["v1"]})
    assert resp.status_code == 503 and resp.json()["code"] == "REGISTRY_UNAVAILABLE"
    assert stack.get("/v1/repositories").status_code == 503
    assert stack.nothing_queued()
