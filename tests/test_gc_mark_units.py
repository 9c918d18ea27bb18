"""The incremental GC's rules (janitor/window/mark.py), without any server: distribution 2.8's dispatch of a
manifest's references, and the mark taken in two steps (before the fence, then the change) against the mark
taken at once and against a plain restatement of garbagecollect.go."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janitor.registry.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    sha256_digest,
)
from janitor.window import mark as rules


def d(n: int | str) -> str:
    return sha256_digest(str(n).encode())


def image(config: str, layers: list[str], media_type: str | None = OCI_MANIFEST, **extra: object) -> bytes:
    body: dict[str, object] = {"schemaVersion": 2, "config": {"mediaType": "x", "digest": config, "size": 1},
                               "layers": [{"mediaType": "y", "digest": x, "size": 1} for x in layers], **extra}
    if media_type is not None:
        body["mediaType"] = media_type
    return json.dumps(body).encode()


def index(children: list[str], media_type: str | None = OCI_INDEX) -> bytes:
    body: dict[str, object] = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": c, "size": 1}
                                                                  for c in children]}
    if media_type is not None:
        body["mediaType"] = media_type
    return json.dumps(body).encode()


# -- references: distribution's dispatch ------------------------------------------------------------

@pytest.mark.parametrize("media_type", [DOCKER_MANIFEST, OCI_MANIFEST, None])
def test_an_image_references_its_config_and_layers(media_type: str | None) -> None:
    assert rules.references(image(d(1), [d(2), d(3)], media_type)) == {d(1), d(2), d(3)}


@pytest.mark.parametrize("media_type", [DOCKER_LIST, OCI_INDEX, None])
def test_an_index_references_its_children_only(media_type: str | None) -> None:
    assert rules.references(index([d(4), d(5)], media_type)) == {d(4), d(5)}


def test_a_referrer_marks_no_subject() -> None:
    """2.8 knows nothing of `subject`: the manifest it names is kept only by its own revision."""
    raw = image(d(1), [d(2)], subject={"mediaType": OCI_MANIFEST, "digest": d(9), "size": 1})
    assert d(9) not in rules.references(raw)


def test_an_empty_untyped_index_reads_as_an_image_like_distribution() -> None:
    assert rules.references(json.dumps({"schemaVersion": 2, "manifests": []}).encode()) == {""}


@pytest.mark.parametrize("raw", [b"not json", b"[]", json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(),
                                 image(d(1), [], "application/vnd.example+json"),
                                 json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [{}]}).encode()])
def test_what_distribution_would_not_read_is_unreadable(raw: bytes) -> None:
    with pytest.raises(rules.Unreadable):
        rules.references(raw)


# -- the mark and the sweep ---------------------------------------------------------------------------

def refs_of(manifests: dict[str, bytes]) -> dict[str, frozenset[str]]:
    return {k: rules.own_refs(k, v) for k, v in manifests.items()}


def test_untagged_revisions_keep_their_blobs_and_unreferenced_blobs_go() -> None:
    m = image(d(1), [d(2)])
    dm = sha256_digest(m)
    mark = rules.take({"a": {dm}}, {"a"}, {dm, d(1), d(2), d(3)}, refs_of({dm: m}))
    assert rules.sweep(mark) == {d(3)}
    assert mark.marked == {dm, d(1), d(2)}


def test_a_child_deleted_by_digest_keeps_its_manifest_blob_but_not_its_layers() -> None:
    child = image(d(1), [d(2)])
    dc = sha256_digest(child)
    idx = index([dc])
    di = sha256_digest(idx)
    blobs = {dc, di, d(1), d(2)}
    mark = rules.take({"a": {di}}, {"a"}, blobs, refs_of({di: idx, dc: child}))
    assert rules.sweep(mark) == {d(1), d(2)}


def test_a_repository_without_layers_is_not_enumerated() -> None:
    m = image(d(1), [])
    dm = sha256_digest(m)
    assert rules.sweep(rules.take({"a": {dm}}, set(), {dm, d(1)}, {})) == {dm, d(1)}


def test_a_revision_whose_manifest_blob_is_gone_marks_nothing() -> None:
    m = image(d(1), [])
    dm = sha256_digest(m)
    mark = rules.take({"a": {dm}}, {"a"}, {d(1)}, {})
    assert rules.sweep(mark) == {d(1)} and mark.marked == set()


def test_a_counted_revision_without_its_manifest_is_refused() -> None:
    with pytest.raises(rules.Unreadable, match="could not be read"):
        rules.take({"a": {d(1)}}, {"a"}, {d(1)}, {})


def test_advance_counts_pushes_and_deletions_since_the_mark() -> None:
    old, new = image(d(1), [d(2)]), image(d(3), [d(2)])
    do, dn = sha256_digest(old), sha256_digest(new)
    mark = rules.take({"a": {do}}, {"a"}, {do, d(1), d(2)}, refs_of({do: old}))
    rules.advance(mark, {"b": {dn}}, {dn, d(3)}, {"b"}, refs_of({dn: new}))
    assert rules.sweep(mark) == {do, d(1)}
    assert rules.sweep(mark, keep={d(1)}) == {do}


# -- property: two steps equal one, and one equals garbagecollect.go ----------------------------------

BLOBS = [d(f"blob{i}") for i in range(8)]


@st.composite
def states(draw: st.DrawFn) -> tuple[dict[str, set[str]], set[str], set[str], dict[str, bytes]]:
    """A registry as the rules see it: revisions per repository, repositories with _layers, blobs with data,
    and the manifests (images over a small blob pool, indexes over some of those images)."""
    images = [image(draw(st.sampled_from(BLOBS)), draw(st.lists(st.sampled_from(BLOBS), max_size=3)),
                    draw(st.sampled_from([DOCKER_MANIFEST, OCI_MANIFEST, None])))
              for _ in range(draw(st.integers(1, 5)))]
    image_digests = [sha256_digest(m) for m in images]
    indexes = [index(draw(st.lists(st.sampled_from(image_digests), min_size=1, max_size=3)))
               for _ in range(draw(st.integers(0, 2)))]
    manifests = {sha256_digest(m): m for m in images + indexes}
    repos = ["a", "b", "c/d"]
    revisions = {r: draw(st.sets(st.sampled_from(sorted(manifests)), max_size=4)) for r in repos}
    layered = draw(st.sets(st.sampled_from(repos)))
    blobs = draw(st.sets(st.sampled_from(BLOBS + sorted(manifests))))
    return {r: ds for r, ds in revisions.items() if ds}, layered, blobs, manifests


def plain_gc(revisions: dict[str, set[str]], layered: set[str], blobs: set[str],
             manifests: dict[str, bytes]) -> set[str]:
    """garbagecollect.go's MarkAndSweep restated as loops, the oracle of the rules."""
    marked: set[str] = set()
    for repo in sorted(layered):
        for digest in sorted(revisions.get(repo, ())):
            if digest not in blobs:
                continue  # linkedblobstore.Enumerate: Stat says unknown, skipped
            marked.add(digest)
            marked |= rules.references(manifests[digest])
    return {b for b in blobs if b not in marked}


@settings(max_examples=300, deadline=None)
@given(states(), states(), st.data())
def test_a_mark_advanced_equals_a_mark_taken_at_once(first, second, data) -> None:  # type: ignore[no-untyped-def]
    rev1, lay1, blobs1, man1 = first
    rev2, lay2, blobs2, man2 = second
    # Between a mark and the fence a registry changes a little: the second listing keeps some of the first's
    # revisions, and a manifest of the first that had no data may get it (a revision then starts to count).
    for repo, digest in data.draw(st.sets(st.sampled_from(sorted(rules.pairs(rev1))))) if rev1 else ():
        rev2.setdefault(repo, set()).add(digest)
    blobs2 |= data.draw(st.sets(st.sampled_from(sorted(man1))))
    blobs2 |= blobs1  # only GC removes a blob
    manifests = {**man1, **man2}
    mark = rules.take(rev1, lay1, blobs1, refs_of(manifests))
    assert rules.sweep(mark) == plain_gc(rev1, lay1, blobs1, manifests)
    rules.advance(mark, rev2, blobs2 - blobs1, lay2 | lay1, refs_of(man2))
    assert rules.sweep(mark) == plain_gc(rev2, lay1 | lay2, blobs2, manifests)
    once = rules.take(rev2, lay1 | lay2, blobs2, refs_of(manifests))
    assert mark.counts == once.counts and mark.counted == once.counted
    # What the sweep and the next advance read without a scan: kept as a whole mark would have them.
    assert mark.unmarked == once.unmarked == plain_gc(rev2, lay1 | lay2, blobs2, manifests)
    assert mark.waiting == once.waiting == rules.pairs(rev2) - once.counted


# -- the setting --------------------------------------------------------------------------------------

def test_the_mode_is_registry_unless_set_and_a_bad_one_stops_the_start() -> None:
    from janitor.config.registries import RegistriesFileError, parse
    from janitor.config.settings import Settings

    assert Settings.from_env({}).gc_mode == "registry"
    assert Settings.from_env({"JANITOR_GC_MODE": " Incremental "}).gc_mode == "incremental"
    with pytest.raises(ValueError, match="JANITOR_GC_MODE must be registry or incremental"):
        Settings.from_env({"JANITOR_GC_MODE": "fast"})
    text = ("registries:\n- {name: a, url: 'http://127.0.0.1:5001', container: ra, gc_mode: incremental}\n"
            "- {name: b, url: 'http://127.0.0.1:5002', container: rb}\n")
    known = parse(text, Settings(gc_mode="registry"))
    assert (known.get("a").gc_mode, known.get("b").gc_mode) == ("incremental", "registry")
    with pytest.raises(RegistriesFileError, match="gc_mode must be registry or incremental"):
        parse(text.replace("gc_mode: incremental", "gc_mode: 1"), Settings())


def test_after_an_incremental_sweep_only_parents_no_known_blob_lives_in_are_left_to_rmdir() -> None:
    """The sweep removes each blob's own directory; its two-hex-digit parent is tried only when no blob the mark
    knows is left there. The registry's GC leaves the own directories: all of them are tried."""
    from worker.incremental_gc import dirs_maybe_left
    from janitor.window.incremental import Premark

    blobs = [d(n) for n in range(600)]
    by_parent: dict[str, list[str]] = {}
    for b in blobs:
        by_parent.setdefault(b[7:9], []).append(b)
    alone = next(group for group in by_parent.values() if len(group) == 1)[0]
    crowded = next(group for group in by_parent.values() if len(group) > 2)
    hold = next(b for b in blobs if b not in (alone, *crowded) and len(by_parent[b[7:9]]) == 2)
    partner = next(b for b in by_parent[hold[7:9]] if b != hold)
    found = Premark(rules.take({}, set(), blobs, {}), since="/tmp/mark")
    swept = [alone, crowded[0], partner]
    assert dirs_maybe_left({"mode": "incremental"}, found, swept, [hold]) == [alone, partner, hold]
    assert dirs_maybe_left({"mode": "registry"}, found, swept, [hold]) == [*swept, hold]
    assert dirs_maybe_left({"mode": "incremental"}, None, swept, []) == swept
