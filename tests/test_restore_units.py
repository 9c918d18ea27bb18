"""The restore window's pure rules (janitor/planning/restore.py) and its duration, in milliseconds."""

from __future__ import annotations

import pytest

from janitor import errors
from janitor.config.settings import restore_window
from janitor.planning import restore
from janitor.registry import manifests as mf
from tests import images


def _deleted(repo: str, body: bytes, media_type: str) -> restore.Deleted:
    return restore.Deleted(repo, mf.parse(body, media_type))


@pytest.mark.parametrize("raw,seconds", [("0", 0), ("", 0), ("3s", 3), ("90m", 5400), ("7d", 604800), ("2w", 1209600),
                                         (30, 30.0)])
def test_the_window_reads_seconds_and_units(raw: object, seconds: float) -> None:
    assert restore_window(raw) == seconds


@pytest.mark.parametrize("raw", ["7", "1x", "-1d", "0s", "367d", "1.5h", True, None, [], -1])
def test_a_bad_window_is_refused(raw: object) -> None:
    with pytest.raises(ValueError):
        restore_window(raw)


def _record() -> tuple[dict, images.Index, images.Image, images.Image, images.Image]:
    amd = images.image(mf.OCI_MANIFEST, platform=("linux", "amd64"))
    arm = images.image(mf.OCI_MANIFEST, platform=("linux", "arm64"))
    idx = images.index([amd, arm], mf.OCI_INDEX)
    app = images.image()
    deleted = [_deleted("team/multi", idx.manifest, idx.media_type), _deleted("team/multi", amd.manifest, amd.media_type),
               _deleted("team/multi", arm.manifest, arm.media_type), _deleted("team/app", app.manifest, app.media_type)]
    sizes = {d: len(b) for d, b in app.blobs.items()}
    rec = restore.record({"id": "j1", "kind": "deletion"}, deleted,
                         [("team/multi", "latest", idx.digest), ("team/app", "v1", app.digest),
                          ("team/app", "alias", app.digest)],
                         sizes, {d: 7 for d in app.blobs}, 60.0, at=1000.0)
    assert rec is not None
    return rec, idx, amd, arm, app


def test_a_record_keeps_bytes_tags_and_blobs() -> None:
    rec, idx, amd, _, app = _record()
    assert rec["restorable_until"] == 1060.0 and rec["deleted_at"] == 1000.0
    assert restore.manifest_of(rec["manifests"][0]).raw == idx.manifest
    assert rec["bytes_held"] == 7 * len(app.blobs)
    assert set(app.blobs) | {app.digest} <= set(rec["blobs"]) and amd.digest in rec["blobs"]
    held = restore.held([rec])
    assert held["team/app"] == {app.digest, *app.blobs} and idx.digest in held["team/multi"]
    assert restore.record({"id": "j"}, [], [], {}, None, 60.0) is None


def test_everything_comes_back_children_before_their_index() -> None:
    rec, idx, amd, arm, app = _record()
    plan = restore.plan(rec)
    order = [m["digest"] for m in plan.manifests]
    assert order.index(amd.digest) < order.index(idx.digest) and order.index(arm.digest) < order.index(idx.digest)
    assert set(order) == {idx.digest, amd.digest, arm.digest, app.digest}
    assert [(t["repository"], t["tag"]) for t in plan.tags] == [("team/app", "alias"), ("team/app", "v1"),
                                                               ("team/multi", "latest")]


def test_a_subset_brings_what_it_needs_along() -> None:
    rec, idx, _, _, app = _record()
    plan = restore.plan(rec, {"tags": ["team/multi:latest"]})
    assert [m["digest"] for m in plan.manifests][-1] == idx.digest and len(plan.manifests) == 3
    assert [t["tag"] for t in plan.tags] == ["latest"]
    plan = restore.plan(rec, {"manifests": [f"team/app@{app.digest}"]})
    assert [m["digest"] for m in plan.manifests] == [app.digest] and plan.tags == []


@pytest.mark.parametrize("subset,field", [
    ({"tags": ["team/app:never"]}, "tags"),
    ({"manifests": ["sha256:" + "1" * 64]}, "manifests"),
    ({"tags": ["no tag here"]}, "tags"),
    ({"manifests": "sha256:abc"}, "manifests"),
    ({"repositories": ["team/app"]}, "repositories"),
])
def test_a_subset_naming_what_the_job_did_not_delete_is_refused(subset: dict, field: str) -> None:
    rec = _record()[0]
    with pytest.raises(errors.InvalidRestore) as caught:
        restore.plan(rec, subset)
    assert field in caught.value.details


def test_the_listing_says_what_and_until_when() -> None:
    rec, idx, _, _, _ = _record()
    item = restore.summary(rec)
    assert item["restorable_until"] == "1970-01-01T00:17:40.000Z" and item["repositories"] == ["team/app", "team/multi"]
    assert f"team/multi@{idx.digest}" in item["manifests"] and "team/app:v1" in item["tags"]
    assert item["bytes_held"] == rec["bytes_held"] and item["blobs_held"] == len(rec["blobs"])


def test_a_policy_run_takes_its_policys_window() -> None:
    assert restore.window_of({"policy": {"restore_window": "3s"}}, 99.0, restore_window) == 3
    assert restore.window_of({"policy": {"restore_window": None}}, 99.0, restore_window) == 99.0
    assert restore.window_of({"restore_window": "0"}, 99.0, restore_window) == 0
    assert restore.window_of({}, 99.0, restore_window) == 99.0
