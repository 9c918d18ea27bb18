"""What a window checks after GC (issue 12): the targeted integrity check reads what this window could have
broken, and still catches it; `"verify": "full"` walks everything, with its progress in the job record."""

from __future__ import annotations

from janitor.registry.manifests import OCI_MANIFEST
from tests import images
from tests.conftest import Registry, Stack

V2 = "/var/lib/registry/docker/registry/v2"


def _remove_blob(registry: Registry, digest: str) -> None:
    hexd = digest.split(":")[1]
    if registry.bucket:
        registry.bucket.remove(f"blobs/sha256/{hexd[:2]}/{hexd}/")
    else:
        registry.exec("rm", "-rf", f"{V2}/blobs/sha256/{hexd[:2]}/{hexd}")


def test_targeted_verify_catches_what_the_window_broke_and_full_catches_everything(driver: str,
        registry: Registry, stack: Stack) -> None:
    p = stack.pusher()
    base = images.layer()
    doomed = images.image(shared_layers=[base])
    sibling = images.image(shared_layers=[base])  # shares the base layer with the deleted image
    other = images.image()  # shares nothing with it
    elsewhere = images.image(shared_layers=[base])  # the same layer, another repository
    p.image("team/app", doomed, "old")
    p.image("team/app", sibling, "current")
    p.image("team/app", other, "other")
    p.image("team/web", elsewhere, "latest")
    base_digest = images.sha256_digest(base)
    other_layer = images.sha256_digest(other.layers[-1])
    _remove_blob(registry, base_digest)  # lost behind the janitor's back: every image on it is broken
    _remove_blob(registry, other_layer)  # lost too, on an image this window never touches

    job = stack.wait(stack.delete({"repository": "team/app", "tags": ["old"]})["id"], timeout=180)
    assert job["status"] == "failed" and job["error"]["code"] == "INTEGRITY_BROKEN", job
    assert job["error"]["step"] == "verify"
    report = job["result"]["integrity"]
    assert report["mode"] == "targeted"
    broken = {(b["repository"], b["tag"], b["missing"]) for b in report["broken"]}
    # Both images sharing a blob with the deleted one are read, in either repository; the unrelated one is not.
    assert broken == {("team/app", "current", base_digest), ("team/web", "latest", base_digest)}, report
    assert report["affected_manifests"] == 2 and report["surviving_manifests"] == 3
    assert job["result"]["manifests_deleted"] == [doomed.digest]  # the deletion itself was done
    assert job["result"]["bytes_freed"] == job["result"]["planned"]["bytes"] > 0

    full = stack.post("/v1/gc", {"verify": "full"})
    assert full.status_code == 202, full.text
    job = stack.wait(full.json()["id"], timeout=180)
    assert job["status"] == "failed" and job["error"]["code"] == "INTEGRITY_BROKEN", job
    report = job["result"]["integrity"]
    assert report["mode"] == "full"
    broken = {(b["repository"], b["tag"], b["missing"]) for b in report["broken"]}
    assert broken == {("team/app", "current", base_digest), ("team/web", "latest", base_digest),
                      ("team/app", "other", other_layer)}, report
    outcome = next(s for s in job["steps"] if s["name"] == "verify")["outcome"]
    assert outcome["repositories_checked"] == outcome["repositories_total"] == 2
    assert outcome["manifests_checked"] == 3


def test_a_full_verify_that_finds_nothing_succeeds_and_a_bad_mode_is_refused(stack: Stack) -> None:
    p = stack.pusher()
    for i in range(3):
        p.image(f"team/app{i}", images.image(), "latest")
    bad = stack.post("/v1/gc", {"verify": "everything"})
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_REQUEST", bad.text
    job = stack.wait(stack.post("/v1/gc", {"verify": "full"}).json()["id"], timeout=180)
    assert job["status"] == "succeeded", job
    report = job["result"]["integrity"]
    assert report["mode"] == "full" and report["broken"] == [] and report["manifests_checked"] == 3
    assert report["repositories_checked"] == 3


def test_a_force_deleted_child_is_found_by_the_targeted_check_and_reported_apart(stack: Stack) -> None:
    p = stack.pusher()
    amd = images.image(OCI_MANIFEST, platform=("linux", "amd64"))
    arm = images.image(OCI_MANIFEST, platform=("linux", "arm64"))
    idx = images.index([amd, arm])
    p.index("team/app", idx, "multi")
    for i in range(3):
        p.image(f"team/other{i}", images.image(), "latest")  # unrelated: never read
    job = stack.wait(stack.delete({"repository": "team/app", "digests": [amd.digest], "force": True})["id"],
                     timeout=180)
    assert job["status"] == "succeeded", job
    report = job["result"]["integrity"]
    assert report["mode"] == "targeted" and report["broken"] == []
    assert report["broken_by_request"] == [
        {"repository": "team/app", "tag": "multi", "missing": amd.digest, "kind": "manifest"}], report
    assert report["affected_manifests"] == 1  # the index; not the three other repositories


def test_revisions_listed_again_only_where_changed_equal_a_full_listing(registry: Registry) -> None:
    """storage.revisions_since, from an earlier listing and a mark, against the registry's own files: pushes,
    deletions, a manifest pushed again after its deletion, a repository created since."""
    import time

    import requests

    from janitor.registry.container import RegistryContainer
    from janitor.storage import files as storage

    container, root = RegistryContainer(registry.name), "/var/lib/registry"
    p = images.Pusher(registry.url)
    a, b, c = images.image(), images.image(), images.image()
    p.image("team/app", a, "a")
    p.image("team/app", b, "b")
    p.image("team/web", c, "c")
    read_at, times = storage.revision_times(container, root)
    known = {r: set(t) for r, t in times.items()}
    assert known == registry.revisions()
    time.sleep(1.2)  # past the listing's second: what follows is newer than the mark
    marks = storage.marks(container, "test", {"revisions": read_at - 1})
    assert marks

    def delete(repo: str, digest: str) -> None:
        assert requests.delete(f"{registry.url}/v2/{repo}/manifests/{digest}", timeout=30).status_code == 202

    delete("team/app", a.digest)
    delete("team/web", c.digest)
    p.image("team/web", c, "again")  # pushed again: its link is written into the directory it had
    p.image("team/app", images.image(), "new")
    p.image("team/new", images.image(), "v1")
    _, found = storage.revisions_since(container, root, marks["revisions"], known)
    assert found == registry.revisions()
    assert a.digest not in found["team/app"] and c.digest in found["team/web"]
    storage.drop_marks(container, list(marks.values()))
