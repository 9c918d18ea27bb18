"""The deletion rules on hand-built snapshots: every rule, in milliseconds, without Docker."""

from __future__ import annotations

import hashlib
import json

import pytest

from janitor import errors
from janitor.config.settings import Settings
from janitor.planning import rules
from janitor.planning.snapshot import RepoSnapshot, Snapshot
from janitor.registry.manifests import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
)

OLD = 10 * 24 * 3600.0  # ten days, in seconds


def _d(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def image(name: str, layers: int = 2, subject: Manifest | None = None, shared: tuple[str, ...] = ()) -> Manifest:
    """An image manifest whose blobs are named after it (so their digests are unique), sizes 100, 1000, ..."""
    blobs = tuple(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", _d(f"{name}/layer{i}"), 1000 * (i + 1))
                  for i in range(layers))
    blobs += tuple(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", _d(s), 5000) for s in shared)
    raw = json.dumps({"name": name}).encode()
    return Manifest(_d(name), OCI_MANIFEST, raw, config=Descriptor("application/vnd.oci.image.config.v1+json",
                    _d(f"{name}/config"), 100), layers=blobs, subject=subject.digest if subject else None)


def index(name: str, children: list[Manifest]) -> Manifest:
    raw = json.dumps({"name": name}).encode()
    return Manifest(_d(name), OCI_INDEX, raw,
                    children=tuple(Descriptor(c.media_type, c.digest, len(c.raw)) for c in children))


def repo(name: str, tags: dict[str, Manifest], manifests: list[Manifest],
         ages: dict[str, float] | None = None, stored: bool = True) -> RepoSnapshot:
    """Every manifest given is stored; ages default to OLD (pushed long ago)."""
    known = {m.digest: m for m in manifests} | {m.digest: m for m in tags.values()}
    revision_ages = {d: (ages or {}).get(d, OLD) for d in known} if stored else None
    return RepoSnapshot(name, {t: m.digest for t, m in tags.items()}, known, revision_ages)


def snapshot(*repos: RepoSnapshot) -> Snapshot:
    snap = Snapshot({r.name: r for r in repos}, stored={r.name: set(r.manifests) for r in repos})
    for r in repos:
        snap.manifests.update(r.manifests)
    return snap


def test_a_tag_sharing_its_manifest_goes_alone() -> None:
    m = image("m")
    r = repo("app", {"v1": m, "latest": m, "stable": m}, [m])
    plan = rules.plan_repository(r, tags=["v1"])
    assert plan.untag == ["v1"] and plan.delete == [] and plan.tags == ["v1"]
    both = rules.plan_repository(r, tags=["v1", "latest", "stable"])
    assert both.untag == [] and both.delete == [m.digest]
    assert both.tags_removed == {m.digest: ["latest", "stable", "v1"]}


def test_an_index_goes_with_the_children_nothing_else_keeps() -> None:
    amd, arm = image("amd"), image("arm")
    idx = index("idx", [amd, arm])
    r = repo("app", {"multi": idx, "arm-only": arm}, [idx, amd, arm])
    plan = rules.plan_repository(r, tags=["multi"])
    assert plan.delete == [idx.digest, amd.digest] and plan.untag == []
    assert plan.tags_removed == {idx.digest: ["multi"], amd.digest: []}


def test_the_children_of_a_surviving_index_are_only_untagged() -> None:
    amd, arm = image("amd"), image("arm")
    idx = index("idx", [amd, arm])
    r = repo("app", {"multi": idx, "amd64": amd, "arm64": arm}, [idx, amd, arm])
    plan = rules.plan_repository(r, tags=["amd64", "arm64"])
    assert plan.untag == ["amd64", "arm64"] and plan.delete == []


def test_an_index_tag_with_its_childrens_tags_frees_the_whole_image() -> None:
    """Issue 7: judged together, not each tag while the others still exist."""
    amd, arm = image("amd"), image("arm")
    idx = index("idx", [amd, arm])
    r = repo("app", {"multi": idx, "amd64": amd, "arm64": arm}, [idx, amd, arm])
    snap = snapshot(r)
    plan = rules.plan_request(snap, {"repository": "app", "tags": ["multi", "amd64", "arm64"]})
    (rp,) = plan.repos
    assert rp.untag == [] and rp.delete[0] == idx.digest and set(rp.delete) == {idx.digest, amd.digest, arm.digest}
    assert rp.tags_removed == {idx.digest: ["multi"], amd.digest: ["amd64"], arm.digest: ["arm64"]}
    every_blob = {b for m in (idx, amd, arm) for b in m.blob_digests}
    assert plan.blobs_freed is not None and set(plan.blobs_freed) == every_blob
    assert plan.as_dict()["bytes"] == sum(len(m.raw) for m in (idx, amd, arm)) + 2 * (100 + 1000 + 2000)


def test_a_child_another_index_uses_stays() -> None:
    shared, own = image("shared"), image("own")
    old, new = index("old", [shared, own]), index("new", [shared])
    r = repo("app", {"old": old, "new": new}, [old, new, shared, own])
    plan = rules.plan_repository(r, tags=["old"])
    assert plan.delete == [old.digest, own.digest]
    # Even an untagged index naming the child keeps it: deleting it would break that index.
    r2 = repo("app", {"old": old}, [old, new, shared, own])
    assert rules.plan_repository(r2, tags=["old"]).delete == [old.digest, own.digest]


def test_referrers_go_with_their_subject_unless_asked_not_to() -> None:
    signed, kept = image("signed"), image("kept")
    sig, sbom, loose_ref = image("sig", 1, subject=signed), image("sbom", 1, subject=signed), image("ref", 1, subject=signed)
    kept_sig = image("kept-sig", 1, subject=kept)
    hexd = signed.digest.split(":")[1]
    tags = {"v1": signed, "v2": kept, f"sha256-{hexd}.sig": sig, f"sha256-{hexd}": sbom,
            f"sha256-{kept.digest.split(':')[1]}.sig": kept_sig}
    r = repo("app", tags, [signed, kept, sig, sbom, loose_ref, kept_sig])
    plan = rules.plan_repository(r, tags=["v1"])
    assert set(plan.delete) == {signed.digest, sig.digest, sbom.digest, loose_ref.digest}
    assert plan.tags_removed[sig.digest] == [f"sha256-{hexd}.sig"]
    alone = rules.plan_repository(r, tags=["v2"], referrers=False)
    assert alone.delete == [kept.digest]
    # A referrer tag with no subject of its own kind does not match: only sha256-<64 hex>[.suffix].
    assert not rules.REFERRER_TAG.match("sha256-abc.sig") and rules.REFERRER_TAG.match(f"sha256-{hexd}.att")


def test_untagged_removes_only_what_no_tag_reaches() -> None:
    kept, loose, moved = image("kept"), image("loose"), image("moved")
    amd, arm = image("amd"), image("arm")
    idx = index("idx", [amd, arm])
    kept_ref = image("kept-ref", 1, subject=kept)  # untagged referrer of a tagged image: stays
    lost_ref = image("lost-ref", 1, subject=loose)  # referrer of an untagged one: goes with it
    now = image("now")
    r = repo("app", {"kept": kept, "multi": idx, "moving": now},
             [kept, loose, moved, amd, arm, idx, kept_ref, lost_ref, now])
    plan = rules.plan_repository(r, untagged=True, untagged_min_age=3600)
    assert set(plan.delete) == {loose.digest, moved.digest, lost_ref.digest}
    assert set(plan.guarded) == set(plan.delete)  # every one checked again right before its delete
    assert plan.untag == [] and plan.too_young == [] and not plan.remove_repository


def test_untagged_keeps_recent_pushes_and_what_they_use() -> None:
    old_loose, young_loose = image("old-loose"), image("young-loose")
    child = image("child")  # pushed long ago, by digest
    young_idx = index("young-idx", [child])  # just pushed by digest; its tag may be on the way
    r = repo("app", {}, [old_loose, young_loose, child, young_idx],
             ages={young_loose.digest: 5, young_idx.digest: 30})
    plan = rules.plan_repository(r, untagged=True, untagged_min_age=60)
    assert plan.delete == [old_loose.digest]
    assert set(plan.too_young) == {young_loose.digest, young_idx.digest, child.digest}
    everything = rules.plan_repository(r, untagged=True, untagged_min_age=1).delete
    assert everything[0] == young_idx.digest  # the index before its child
    assert set(everything) == {old_loose.digest, young_loose.digest, child.digest, young_idx.digest}


def test_the_minimum_age_is_a_setting_with_a_safe_default() -> None:
    assert Settings.from_env({}).untagged_min_age == 3600.0
    assert Settings.from_env({"JANITOR_UNTAGGED_MIN_AGE": "0"}).untagged_min_age == 0.0


def test_untagged_without_storage_deletes_nothing() -> None:
    loose = image("loose")
    r = repo("app", {}, [loose], stored=False)
    assert rules.plan_repository(r, untagged=True).delete == []


def test_tags_and_untagged_together_judge_the_state_the_request_leaves() -> None:
    """What a retention policy asks: some tags, and whatever is untagged afterwards."""
    old, keep, loose = image("old"), image("keep"), image("loose")
    young = image("young")  # tagged by a requested tag: goes, however recent (it was asked for by name)
    amd = image("amd")
    idx = index("idx", [amd])
    r = repo("app", {"old": old, "fresh": young, "keep": keep, "multi": idx, "amd64": amd},
             [old, keep, loose, young, idx, amd], ages={young.digest: 1})
    plan = rules.plan_repository(r, tags=["old", "fresh", "multi"], untagged=True, untagged_min_age=3600)
    assert set(plan.delete) == {old.digest, young.digest, loose.digest, idx.digest}
    assert plan.delete[0] == idx.digest and amd.digest not in plan.delete  # amd64 still tags it
    assert set(plan.guarded) == set(plan.delete)
    assert plan.tags == ["fresh", "multi", "old"]


def test_all_tags_takes_everything_and_the_repository() -> None:
    a, b, loose = image("a"), image("b"), image("loose")
    r = repo("app", {"a": a, "b": b}, [a, b, loose], ages={loose.digest: 1})
    plan = rules.plan_repository(r, all_tags=True)
    assert set(plan.delete) == {a.digest, b.digest, loose.digest} and plan.remove_repository
    assert plan.guarded == []  # a whole-repository deletion names everything


def test_a_digest_goes_with_its_tags_and_a_child_of_a_tagged_index_needs_force() -> None:
    amd, arm, other = image("amd"), image("arm"), image("other")
    idx = index("idx", [amd, arm])
    r = repo("app", {"multi": idx, "a": other, "b": other}, [idx, amd, arm, other])
    plan = rules.plan_repository(r, digests=[other.digest])
    assert plan.delete == [other.digest] and plan.tags_removed == {other.digest: ["a", "b"]}
    # Named by the request, still checked: a tag put on it since the plan keeps it (never more than planned).
    assert plan.guarded == [other.digest] and plan.planned_pairs == {("a", other.digest), ("b", other.digest)}
    with pytest.raises(errors.ReferencedByIndex) as refused:
        rules.plan_repository(r, digests=[amd.digest])
    assert refused.value.details["indexes"] == [idx.digest] and refused.value.details["tags"] == ["multi"]
    forced = rules.plan_repository(r, digests=[amd.digest], force=True)
    assert forced.delete == [amd.digest]
    assert forced.planned_pairs == {("multi", idx.digest)}  # the index's tag stays, and was counted on
    # The index and its child together: nothing is left to break.
    assert rules.plan_repository(r, digests=[amd.digest, idx.digest]).delete == [idx.digest, amd.digest, arm.digest]


def test_unknown_names_are_refused() -> None:
    m = image("m")
    r = repo("app", {"v1": m}, [m])
    with pytest.raises(errors.TagNotFound) as tag:
        rules.plan_repository(r, tags=["v1", "nope", "gone"])
    assert tag.value.details["tags"] == ["nope", "gone"]
    with pytest.raises(errors.ManifestNotFound):
        rules.plan_repository(r, digests=[_d("nothing")])


def test_nested_indexes_are_deleted_parents_first() -> None:
    leaf = image("leaf")
    inner = index("inner", [leaf])
    outer = index("outer", [inner])
    r = repo("app", {"top": outer}, [outer, inner, leaf])
    plan = rules.plan_repository(r, tags=["top"])
    assert plan.delete == [outer.digest, inner.digest, leaf.digest]


def test_blobs_freed_counts_only_what_no_surviving_manifest_uses() -> None:
    doomed = image("doomed", shared=("base",))
    sibling = image("sibling", shared=("base",))
    cousin = image("cousin", shared=("base",))
    snap = snapshot(repo("app", {"old": doomed, "sib": sibling}, [doomed, sibling]),
                    repo("other", {"v1": cousin}, [cousin]))
    plan = rules.plan_request(snap, {"repository": "app", "tags": ["old"]})
    assert set(plan.blobs_freed or {}) == set(doomed.blob_digests) - {_d("base")}
    everything = rules.plan_request(snap, {"all_repositories": True, "confirm": "reg:5000"}, "reg:5000")
    assert set(everything.blobs_freed or {}) == {b for m in (doomed, sibling, cousin) for b in m.blob_digests}
    with pytest.raises(errors.ConfirmationMismatch):
        rules.plan_request(snap, {"all_repositories": True, "confirm": "elsewhere"}, "reg:5000")


def test_without_storage_the_plan_names_no_blobs() -> None:
    m = image("m")
    snap = Snapshot({"app": repo("app", {"v1": m}, [m], stored=False)})
    plan = rules.plan_request(snap, {"repository": "app", "tags": ["v1"]})
    assert plan.blobs_freed is None and "bytes" not in plan.as_dict()


def test_plan_shape_for_job_records() -> None:
    m, loose = image("m"), image("loose")
    snap = snapshot(repo("team/app", {"v1": m, "v2": m}, [m, loose], ages={loose.digest: 1}))
    plan = rules.plan_request(snap, {"repository": "team/app", "tags": ["v1"]})
    out = plan.as_dict()
    assert set(out) == {"repositories", "tags", "manifests", "blobs", "bytes"}
    assert out["repositories"] == [{"repository": "team/app", "tags": ["v1"], "untagged_only": ["v1"],
                                    "manifests": [], "tags_by_manifest": {}, "remove_repository": False,
                                    "kept_too_young": []}]
    assert out["tags"] == ["team/app:v1"] and out["manifests"] == [] and out["bytes"] == 0
    young = rules.plan_request(snap, {"repository": "team/app", "untagged": True}, untagged_min_age=60).as_dict()
    assert young["repositories"][0]["kept_too_young"] == [loose.digest] and young["manifests"] == []


def test_the_check_before_a_delete_sees_tags_pushed_since_the_plan() -> None:
    child, other = image("child"), image("other")
    r = repo("app", {}, [child, other])
    plan = rules.plan_repository(r, untagged=True)
    assert set(plan.delete) == {child.digest, other.digest}
    # Since the snapshot: an index naming `child` was pushed with a tag, and `other` was tagged directly.
    new_idx = index("new", [child])
    manifests = {**r.manifests, new_idx.digest: new_idx}
    now = {"release": new_idx.digest, "pinned": other.digest}
    assert rules.tags_reaching(manifests, now, child.digest) == ["release"]
    assert rules.tags_reaching(manifests, now, other.digest) == ["pinned"]
    # A tag the plan itself removes, still on its planned manifest, is no reason to keep it.
    assert rules.tags_reaching(manifests, now, other.digest, {("pinned", other.digest)}) == []
    # A referrer is reached through its subject.
    sig = image("sig", 1, subject=other)
    assert rules.tags_reaching({**manifests, sig.digest: sig}, now, sig.digest) == ["pinned"]


def test_docker_media_types_plan_the_same() -> None:
    m = Manifest(_d("docker"), DOCKER_MANIFEST, b"{}", config=Descriptor("x", _d("cfg"), 3))
    r = repo("app", {"v1": m}, [m])
    assert rules.plan_repository(r, tags=["v1"]).delete == [m.digest]
