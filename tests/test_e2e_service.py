"""The service end to end: real registry container, real Redis, gunicorn API and RQ worker, over HTTP."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading
from datetime import datetime

import pytest
import requests

from janitor.registry.manifests import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from tests import images
from tests.conftest import Stack

pytestmark = pytest.mark.e2e


def _t(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_listing_matches_what_the_registry_holds(stack: Stack) -> None:
    p = stack.pusher()
    docker_img = images.image(DOCKER_MANIFEST)
    oci_img = images.image(OCI_MANIFEST, layers=3)
    amd, arm = images.image(OCI_MANIFEST, platform=("linux", "amd64")), images.image(OCI_MANIFEST, platform=("linux", "arm64"))
    multi = images.index([amd, arm], OCI_INDEX)
    assert p.image("team/app", docker_img, "docker") == docker_img.digest
    assert p.image("team/app", oci_img, "oci") == oci_img.digest
    assert p.index("team/app", multi, "multi") == multi.digest
    p.image("solo", images.image(), "latest")

    repos = stack.get("/v1/repositories").json()
    assert repos["total"] == 2
    assert {r["name"]: r["tag_count"] for r in repos["items"]} == {"team/app": 3, "solo": 1}
    page = stack.get("/v1/repositories", params={"page": 2, "page_size": 1}).json()
    assert [r["name"] for r in page["items"]] == ["team/app"]

    tags = {t["name"]: t for t in stack.get("/v1/repositories/team/app/tags").json()["items"]}
    assert tags["docker"]["digest"] == docker_img.digest
    assert tags["docker"]["media_type"] == DOCKER_MANIFEST
    assert tags["docker"]["size"] == docker_img.size
    assert tags["oci"]["digest"] == oci_img.digest and tags["oci"]["size"] == oci_img.size
    assert tags["multi"]["digest"] == multi.digest and tags["multi"]["media_type"] == OCI_INDEX
    assert tags["multi"]["size"] == amd.size + arm.size
    assert tags["multi"]["platforms"] == ["linux/amd64", "linux/arm64"]
    for tag in tags.values():
        assert tag["created"] and _t(tag["created"])
        # The digest we report is the one the registry stores (asked with every manifest type).
        assert images.head_manifest(stack.registry.url, "team/app", tag["digest"]) == 200

    missing = stack.get("/v1/repositories/nope/tags")
    assert missing.status_code == 404 and missing.json()["code"] == "REPOSITORY_UNKNOWN"


def test_delete_tag_frees_its_blobs_and_a_repush_is_complete(stack: Stack) -> None:
    p = stack.pusher()
    doomed = images.image(layers=3, layer_size=50_000)
    keeper = images.image()
    p.image("team/app", doomed, "old")
    p.image("team/app", keeper, "current")
    before = stack.registry.storage_bytes()

    resp = stack.post("/v1/deletions", {"repository": "team/app", "tags": ["old"]})
    assert resp.status_code == 202, resp.text
    assert resp.headers["Location"].endswith(f"/v1/jobs/{resp.json()['id']}")
    job = stack.wait(resp.json()["id"])

    assert job["status"] == "succeeded", job
    assert [s["name"] for s in job["steps"]] == ["preflight", "delete", "drain", "fence", "hold", "gc", "restart",
                                                  "health", "verify"]
    assert all(s["status"] == "succeeded" and s["started_at"] <= s["finished_at"] for s in job["steps"])
    assert job["result"]["manifests_deleted"] == [doomed.digest]
    gc = job["result"]["gc"]
    freed = set(doomed.blobs) | {doomed.digest}
    assert set(gc["deleted_blobs"]) == freed and gc["blobs_deleted"] == len(freed)
    holds = next(s for s in job["steps"] if s["name"] == "hold")["outcome"]["holds"]
    assert gc["blobs_marked"] == 1 + len(keeper.blobs) + holds  # each hold manifest is a blob GC marks
    expected_bytes = doomed.size + len(doomed.manifest)
    assert job["result"]["bytes_freed"] == expected_bytes
    assert stack.registry.storage_bytes() == before - expected_bytes
    assert job["window"]["write_refused_seconds"] > 0
    integrity = job["result"]["integrity"]
    # The targeted check: `current` shares no blob with `old`, so nothing it could have broken needs reading;
    # every swept blob is checked against the surviving manifests (the one left).
    assert integrity["broken"] == [] and integrity["mode"] == "targeted", integrity
    assert integrity["surviving_manifests"] == 1 and integrity["affected_manifests"] == 0
    assert integrity["blobs_swept_checked"] == len(freed)

    assert images.head_manifest(stack.registry.url, "team/app", "old") == 404
    assert images.head_manifest(stack.registry.url, "team/app", doomed.digest) == 404
    assert images.pull_verified(stack.registry.url, "team/app", "current") == []

    # The "Layer already exists" trap: a fresh pusher asks HEAD first and skips what the registry claims.
    again = stack.pusher()
    again.image("team/app", doomed, "old")
    assert again.skipped == [], "the registry claimed blobs that GC deleted"
    assert images.pull_verified(stack.registry.url, "team/app", "old") == []


def test_two_deletions_sent_at_once_never_overlap(stack: Stack) -> None:
    p = stack.pusher()
    imgs = [images.image() for _ in range(2)]
    for i, img in enumerate(imgs):
        p.image("team/app", img, f"t{i}")
    answers: list[requests.Response] = []
    threads = [threading.Thread(target=lambda i=i: answers.append(
        stack.post("/v1/deletions", {"repository": "team/app", "tags": [f"t{i}"]}))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [202, 202]
    jobs = [stack.wait(a.json()["id"]) for a in answers]
    assert all(j["status"] == "succeeded" for j in jobs), jobs
    a, b = (j["window"] for j in jobs)
    # Either one window served both, or one window ended before the other began.
    assert a["id"] == b["id"] or _t(a["finished_at"]) <= _t(b["started_at"]) or _t(b["finished_at"]) <= _t(a["started_at"])
    deletes = [next(s for s in j["steps"] if s["name"] == "delete") for j in jobs]
    x, y = sorted(deletes, key=lambda s: s["started_at"])
    assert x["finished_at"] <= y["started_at"]
    for img in imgs:
        assert images.head_manifest(stack.registry.url, "team/app", img.digest) == 404


def test_gc_without_deletion(stack: Stack) -> None:
    p = stack.pusher()
    img = images.image()
    p.image("team/app", img, "v1")
    resp = stack.post("/v1/gc", {})
    assert resp.status_code == 202
    job = stack.wait(resp.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["gc"]["blobs_deleted"] == 0
    assert "delete" not in [s["name"] for s in job["steps"]]
    assert images.pull_verified(stack.registry.url, "team/app", "v1") == []


def test_unknown_names_answer_404_before_anything_is_queued(stack: Stack) -> None:
    stack.pusher().image("team/app", images.image(), "v1")
    cases = [
        ({"repository": "nope", "tags": ["v1"]}, "REPOSITORY_UNKNOWN"),
        ({"repository": "team/app", "tags": ["v2"]}, "TAG_UNKNOWN"),
        ({"repository": "team/app", "digests": ["sha256:" + "0" * 64]}, "MANIFEST_UNKNOWN"),
    ]
    for body, code in cases:
        resp = stack.post("/v1/deletions", body)
        assert resp.status_code == 404, resp.text
        assert resp.json()["code"] == code
    assert stack.nothing_queued()


BAD_BODIES = [
    ({"repository": "Team/App", "tags": ["v1"]}, 422),
    ({"repository": "../etc", "tags": ["v1"]}, 422),
    ({"repository": "team/../app", "tags": ["v1"]}, 422),
    ({"repository": "team/app", "tags": ["-bad"]}, 422),
    ({"repository": "team/app", "tags": ["a" * 129]}, 422),
    ({"repository": "team/app", "digests": ["sha256:xyz"]}, 422),
    ({"repository": "team/app", "digests": ["md5:" + "0" * 32]}, 422),
    ({"repository": "team/app", "tags": ["v1"], "digests": ["sha256:" + "0" * 64]}, 422),
    ({"repository": "team/app"}, 422),
    ({"repository": "team/app", "tags": []}, 422),
    ({"repository": "team/app", "tags": ["v1"], "surprise": True}, 422),
    ({"repository": "team/app", "tags": "v1"}, 422),
    ({"repository": 42, "tags": ["v1"]}, 422),
    ({"tags": ["v1"]}, 422),
    ({"repository": "team/app", "tags": ["v1"], "pad": "x" * 100_000}, 413),
]


def test_bad_input_gets_a_4xx_with_the_error_shape_and_nothing_is_queued(stack: Stack) -> None:
    stack.pusher().image("team/app", images.image(), "v1")
    for body, status in BAD_BODIES:
        resp = stack.post("/v1/deletions", body)
        assert resp.status_code == status, (body, resp.text)
        err = resp.json()
        assert set(err) == {"code", "message", "status", "details"} and err["status"] == status and err["code"]
    assert stack.nothing_queued()


def test_malformed_requests_and_tokens(stack: Stack) -> None:
    raw = requests.post(stack.api + "/v1/deletions", data=b"{not json", timeout=10,
                        headers={**stack.headers, "Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["code"] == "BAD_REQUEST"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdC10b2tlbjo="}):
        resp = requests.post(stack.api + "/v1/deletions", json={"repository": "a", "tags": ["b"]}, headers=headers,
                             timeout=10)
        assert resp.status_code == 401 and resp.json()["code"] == "UNAUTHORIZED"
        assert requests.get(stack.api + "/v1/repositories", headers=headers, timeout=10).status_code == 401
    other = requests.get(stack.api + "/v1/repositories", headers={"Authorization": "Bearer other-token"}, timeout=10)
    assert other.status_code == 200
    path = stack.get("/v1/repositories/team/../../x/tags")
    assert path.status_code in (404, 422) and path.json()["code"]
    assert stack.get("/v1/jobs/does-not-exist").json()["code"] == "JOB_UNKNOWN"
    assert stack.nothing_queued()
    assert requests.get(stack.api + "/healthz", timeout=10).json() == {"status": "ok"}
    # Docker is reported by the worker's heartbeat, which starts with it.
    assert images.wait_until(lambda: requests.get(stack.api + "/readyz", timeout=10).status_code == 200, 30)
    ready = requests.get(stack.api + "/readyz", timeout=10).json()
    assert set(ready["checks"]) == {"redis", "registry", "docker", "storage", "index", "writes"}
    # The worker's look at the config (every 5 s) says the registry takes writes.
    assert images.wait_until(lambda: requests.get(stack.api + "/readyz", timeout=10).json()["checks"]["writes"]
                             .get("read_only") is False, 20)
    assert ready["checks"]["index"]["mode"] == "polling"  # this registry sends no notifications
    assert all(c["ok"] for c in ready["checks"].values())
    assert ready["checks"]["storage"]["driver"] == "filesystem" and ready["checks"]["storage"]["protections_off"] == []
    assert requests.get(stack.api + "/openapi.json", timeout=10).json()["paths"]["/v1/deletions"]
    assert requests.get(stack.api + "/docs", timeout=10).status_code == 200


def test_delete_disabled_in_the_registry_fails_with_how_to_enable_it(make_registry, make_stack) -> None:  # type: ignore[no-untyped-def]
    reg = make_registry(REGISTRY_STORAGE_DELETE_ENABLED="false")
    s = make_stack(reg)
    img = images.image()
    s.pusher().image("team/app", img, "v1")
    job = s.wait(s.delete({"repository": "team/app", "tags": ["v1"]})["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "REGISTRY_DELETE_DISABLED" and job["error"]["step"] == "delete"
    assert "storage.delete.enabled" in job["error"]["message"]
    assert images.pull_verified(reg.url, "team/app", "v1") == []


def test_container_not_found_fails_before_anything_is_deleted(registry, make_stack) -> None:  # type: ignore[no-untyped-def]
    s = make_stack(registry, REGISTRY_CONTAINER="no-such-registry")
    img = images.image()
    s.pusher().image("team/app", img, "v1")
    job = s.wait(s.delete({"repository": "team/app", "tags": ["v1"]})["id"])
    assert job["status"] == "failed"
    assert job["error"] == {**job["error"], "code": "REGISTRY_CONTAINER_NOT_FOUND", "step": "preflight"}
    assert "REGISTRY_CONTAINER" in job["error"]["message"]
    assert images.pull_verified(registry.url, "team/app", "v1") == []


def test_gc_failure_is_reported_with_its_stderr_and_the_registry_comes_back(stack: Stack) -> None:
    p = stack.pusher()
    broken, fine = images.image(), images.image()
    p.image("team/app", broken, "broken")
    p.image("team/app", fine, "fine")
    hexd = broken.digest.split(":")[1]
    # A manifest that is no longer valid JSON in storage makes garbage-collect's mark phase fail.
    stack.registry.exec("truncate", "-s", "10", f"/var/lib/registry/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data")
    # A manifest gone bad before the janitor read it: the worker's first index fill, racing the pushes above, may
    # have cached its good bytes by digest, and a cached manifest is not read again (its digest names its bytes).
    # Nothing caches it from now on: the stored bytes no longer hash to their digest, and the registry answers 500.
    for key in stack.redis.scan_iter(f"*:content:manifest:{broken.digest}"):
        stack.redis.delete(key)
    resp = stack.post("/v1/gc", {})
    job = stack.wait(resp.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "GC_FAILED" and job["error"]["step"] == "gc"
    assert "exited" in job["error"]["message"] and hexd in job["error"]["message"]
    assert next(s for s in job["steps"] if s["name"] == "restart")["status"] == "succeeded"
    verify = next(s for s in job["steps"] if s["name"] == "verify")
    assert {"repository": "team/app", "tag": "broken", "missing": "broken", "kind": "unreadable manifest"} in \
        verify["outcome"]["broken"], verify
    assert images.pull_verified(stack.registry.url, "team/app", "fine") == []
    again = stack.pusher()
    again.image("team/other", images.image(), "v1")  # writable again


def test_docker_cli_repush_after_deletion_uploads_every_layer_again(stack: Stack) -> None:
    """The manual script's trap, with the real docker CLI: after delete + GC, `docker push` of the same
    image must upload its layer again (not "Layer already exists"), and `docker pull` must get it back."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(64 * 1024)
        info = tarfile.TarInfo("payload.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    ref = f"{stack.registry.url.removeprefix('http://')}/team/cli:v1"
    subprocess.run(["docker", "import", "-", ref], input=buf.getvalue(), check=True, capture_output=True)
    try:
        first = subprocess.run(["docker", "push", ref], check=True, capture_output=True, text=True).stdout
        assert "Pushed" in first
        job = stack.wait(stack.delete({"repository": "team/cli", "tags": ["v1"]})["id"])
        assert job["status"] == "succeeded", job
        again = subprocess.run(["docker", "push", ref], check=True, capture_output=True, text=True).stdout
        assert "Layer already exists" not in again and "Pushed" in again, again
        subprocess.run(["docker", "rmi", ref], check=True, capture_output=True)
        subprocess.run(["docker", "pull", ref], check=True, capture_output=True)
        assert images.pull_verified(stack.registry.url, "team/cli", "v1") == []
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)
