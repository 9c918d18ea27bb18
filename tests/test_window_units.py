"""Pure rules of the window's cost (issue 12): the targeted integrity scope and the byte accounting."""

from __future__ import annotations

import json

from janitor.registry import integrity
from janitor.registry.manifests import (
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    parse,
    sha256_digest,
)
from janitor.storage import freed


def blob(name: str) -> str:
    return sha256_digest(name.encode())


def image(*layers: str, config: str = "") -> Manifest:
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config or repr(layers)),
                   "size": 7},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(layer),
                    "size": 100 + len(layer)} for layer in layers],
    }).encode()
    return parse(body)


def index(*children: Manifest) -> Manifest:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": c.digest, "size": len(c.raw)} for c in children]}).encode()
    return parse(body)


def by_digest(*manifests: Manifest) -> dict[str, Manifest]:
    return {m.digest: m for m in manifests}


# -- which surviving manifests the targeted check reads -----------------------------------------------------

def test_only_manifests_sharing_a_touched_blob_are_affected_in_any_repository() -> None:
    doomed = image("base", "own-a")
    sibling = image("base", "own-b")  # shares the base layer
    stranger = image("other", "own-c")
    elsewhere = image("base", "own-d")  # same base layer, another repository
    surviving = {"team/app": by_digest(sibling, stranger), "team/web": by_digest(elsewhere)}
    hit = integrity.affected(surviving, doomed.blob_digests, {doomed.digest})
    assert hit == {"team/app": {sibling.digest}, "team/web": {elsewhere.digest}}


def test_an_index_naming_a_deleted_child_and_the_indexes_above_are_affected() -> None:
    amd, arm = image("amd"), image("arm")
    idx = index(amd, arm)
    outer = index(idx)  # an index of indexes: a pull of it reaches the broken child too
    surviving = {"team/app": by_digest(idx, outer, amd)}
    hit = integrity.affected(surviving, (), {arm.digest})
    assert hit == {"team/app": {idx.digest, outer.digest}}


def test_an_index_above_an_affected_image_is_affected_too() -> None:
    shared = image("base", "x")
    idx = index(shared)
    hit = integrity.affected({"team/app": by_digest(shared, idx)}, {blob("base")}, set())
    assert hit == {"team/app": {shared.digest, idx.digest}}


def test_nothing_touched_means_nothing_to_check() -> None:
    surviving = {"team/app": by_digest(image("a"), image("b"))}
    assert integrity.affected(surviving, (), ()) == {}


def test_a_swept_blob_still_used_by_a_surviving_manifest_is_broken() -> None:
    keeper = image("base", "keep")
    amd = image("amd")
    idx = index(amd)
    surviving = {"team/app": by_digest(keeper, idx)}
    found = integrity.swept_still_used(surviving, {blob("keep"), amd.digest, blob("unrelated")})
    assert {"repository": "team/app", "manifest": keeper.digest, "missing": blob("keep"), "kind": "blob"} in found
    assert {"repository": "team/app", "manifest": idx.digest, "missing": amd.digest, "kind": "manifest"} in found
    assert len(found) == 2
    assert integrity.swept_still_used(surviving, {blob("unrelated")}) == []


def test_targets_read_tags_on_affected_manifests_and_untagged_ones_by_digest() -> None:
    a, b, c = image("base", "a"), image("base", "b"), image("base", "c")
    idx = index(c)
    surviving = {"team/app": by_digest(a, b, c, idx)}
    hit = {"team/app": {a.digest, b.digest, c.digest, idx.digest}}
    tags: dict[str, dict[str, str | None]] = {"team/app": {
        "v1": a.digest, "latest": a.digest, "multi": idx.digest, "other": "sha256:" + "0" * 64, "odd": None}}
    wanted = integrity.targets(hit, tags, surviving)
    # a by its two tags, c through the tagged index, b (untagged) by digest, `odd` (HEAD failed) read anyway
    assert wanted == {"team/app": [("latest", "latest"), ("multi", "multi"), ("odd", "odd"), ("v1", "v1"),
                                   (b.digest, None)]}


# -- bytes freed -----------------------------------------------------------------------------------------

def test_known_sizes_come_from_descriptors_and_the_manifest_json() -> None:
    m = image("base", "own")
    sizes = freed.known_sizes([m])
    assert sizes[m.digest] == len(m.raw)
    assert sizes[blob("base")] == 104 and sizes[blob("own")] == 103
    assert sizes[m.config.digest] == 7  # type: ignore[union-attr]


def test_count_adds_known_sizes_and_names_unknown_blobs() -> None:
    assert freed.count(["sha256:a", "sha256:b"], {"sha256:a": 10, "sha256:b": 5}) == (15, [])
    assert freed.count(["sha256:a", "sha256:c"], {"sha256:a": 10}) == (10, ["sha256:c"])


def test_blob_files_are_stat_ed_back_to_the_last_gc_less_the_grace() -> None:
    assert freed.stat_since(None, 10_000.0, 3600) is None  # no GC on record: every blob
    assert freed.stat_since(20_000.0, 10_000.0, 3600) is None  # a clock gone backwards: every blob
    assert freed.stat_since(9_400.0, 10_000.0, 3600) == 9_400.0 - 3600 - freed.MARGIN_SECONDS
