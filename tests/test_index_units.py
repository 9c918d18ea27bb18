"""The listing index's pure rules (details, usage math, sorting, filtering, events), its race guard on a real
Redis, and the reconciler's wait for a window's lease. Milliseconds each, but that wait (a second)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
import yaml

from janitor import index
from janitor.index import Confirm, TagIndex
from janitor.planning import retention
from janitor.registry.manifests import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    parse,
    sha256_digest,
)
from worker import indexer


def _image(layers: dict[str, int], config: str = "sha256:" + "c" * 64, media_type: str = OCI_MANIFEST):
    raw = json.dumps({"schemaVersion": 2, "mediaType": media_type,
                      "config": {"mediaType": "x", "digest": config, "size": 100},
                      "layers": [{"mediaType": "l", "digest": d, "size": s} for d, s in layers.items()]}).encode()
    return parse(raw, media_type)


def test_entry_of_an_image_and_of_an_index() -> None:
    a = _image({"sha256:" + "1" * 64: 1000, "sha256:" + "2" * 64: 2000}, "sha256:" + "a" * 64)
    b = _image({"sha256:" + "1" * 64: 1000}, "sha256:" + "b" * 64)
    created = {"sha256:" + "a" * 64: "2024-01-01T00:00:00Z", "sha256:" + "b" * 64: "2025-01-01T00:00:00Z"}
    entry = index.tag_entry(a, {}, created)
    assert entry["size"] == 3100 and entry["created"] == "2024-01-01T00:00:00Z" and entry["platforms"] == []
    assert entry["blobs"] == {a.digest: len(a.raw), "sha256:" + "a" * 64: 100, "sha256:" + "1" * 64: 1000,
                              "sha256:" + "2" * 64: 2000}
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": a.digest, "size": len(a.raw), "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": b.digest, "size": len(b.raw), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "9" * 64, "size": 5, "platform": {"os": "unknown", "architecture": "unknown"}},
    ]}).encode()
    idx = parse(raw, OCI_INDEX)
    entry = index.tag_entry(idx, {a.digest: a, b.digest: b}, created)
    assert entry["size"] == 3100 + 1100  # children's sizes; the missing child counts for nothing
    assert entry["created"] == "2025-01-01T00:00:00Z"
    assert entry["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    assert set(entry["blobs"]) == {idx.digest, a.digest, b.digest, "sha256:" + "a" * 64, "sha256:" + "b" * 64,
                                   "sha256:" + "1" * 64, "sha256:" + "2" * 64}


def test_repository_size_counts_each_blob_once_and_usage_splits_shared_from_unique() -> None:
    tags = {"v1": {"blobs": {"m1": 10, "l1": 1000, "l2": 500}}, "v2": {"blobs": {"m2": 10, "l1": 1000}}}
    counts, blobs = index.summary(tags)
    assert counts == {"tag_count": 2, "size": 1520} and blobs == {"m1": 10, "l1": 1000, "l2": 500, "m2": 10}
    rows, total = index.usage({"a": blobs, "b": {"l1": 1000, "l3": 7}, "c": {}})
    by = {r["name"]: r for r in rows}
    assert by["a"] == {"name": "a", "size": 1520, "shared_bytes": 1000, "unique_bytes": 520}
    assert by["b"] == {"name": "b", "size": 1007, "shared_bytes": 1000, "unique_bytes": 7}
    assert by["c"] == {"name": "c", "size": 0, "shared_bytes": 0, "unique_bytes": 0}
    assert total == 10 + 1000 + 500 + 10 + 7  # l1 once


def test_sorting_and_globs() -> None:
    rows = [{"name": "b", "size": 5, "tag_count": 1}, {"name": "a", "size": 5, "tag_count": 3},
            {"name": "c", "size": 9, "tag_count": 0}]
    assert [r["name"] for r in index.sort_repositories(rows, "name")] == ["a", "b", "c"]
    assert [r["name"] for r in index.sort_repositories(rows, "-size")] == ["c", "a", "b"]
    assert [r["name"] for r in index.sort_repositories(rows, "-tags")] == ["a", "b", "c"]
    names = ["team/app", "team/app/sub", "team/web", "other/app", "app"]
    assert index.glob_filter(names, "team/*") == ["team/app", "team/web"]  # * stays within a segment
    assert index.glob_filter(names, "team/**") == ["team/app", "team/app/sub", "team/web"]
    assert index.glob_filter(names, "**/app") == ["team/app", "other/app", "app"]
    assert index.glob_filter(names, None) == names
    with pytest.raises(retention.RuleError):
        index.glob_filter(names, "Team/[a]")


def test_tags_by_creation_time_and_older_than() -> None:
    at = datetime(2026, 1, 31, tzinfo=timezone.utc)
    rows = [{"name": "new", "created": "2026-01-30T00:00:00Z"}, {"name": "old", "created": "2025-06-01T00:00:00.123456789Z"},
            {"name": "none", "created": None}, {"name": "epoch", "created": "1970-01-01T00:00:00Z"},
            {"name": "mid", "created": "2025-12-01T00:00:00+02:00"}]
    assert [r["name"] for r in index.select_tags(rows, "-created", None, at)] == ["new", "mid", "old", "epoch", "none"]
    assert [r["name"] for r in index.select_tags(rows, "created", None, at)] == ["old", "mid", "new", "epoch", "none"]
    assert [r["name"] for r in index.select_tags(rows, "name", None, at)] == ["epoch", "mid", "new", "none", "old"]
    # Older than 30 days: no time (or the epoch, a reproducible build's "no time") is never older.
    assert [r["name"] for r in index.select_tags(rows, "-created", timedelta(days=30), at)] == ["mid", "old"]


def test_events_are_read_as_hints_per_repository() -> None:
    digest = "sha256:" + "a" * 64
    events = [
        {"action": "push", "target": {"mediaType": "application/octet-stream", "digest": digest, "repository": "a"}},
        {"action": "push", "target": {"mediaType": DOCKER_MANIFEST, "digest": digest, "repository": "a", "tag": "v1"}},
        {"action": "push", "target": {"mediaType": OCI_MANIFEST, "digest": digest, "repository": "a"}},  # by digest
        {"action": "pull", "target": {"mediaType": DOCKER_MANIFEST, "digest": digest, "repository": "a", "tag": "v1"}},
        {"action": "mount", "target": {"digest": digest, "repository": "b"}},
        {"action": "delete", "target": {"digest": digest, "repository": "b"}},
        {"action": "delete", "target": {"repository": "b", "tag": "v2"}},
        # The janitor's own delete: checked for the listing, but its pull time is the window's to drop.
        {"action": "delete", "target": {"digest": "sha256:" + "c" * 64, "repository": "c"},
         "request": {"useragent": "registry-janitor (python-requests/2.32.3)"}},
    ]
    found, ignored = index.events_to_check(events)
    assert ignored == 4
    assert found == {"a": Confirm({"v1"}, set(), {"v1": digest}), "b": Confirm({"v2"}, {digest}, forget={digest}),
                     "c": Confirm(set(), {"sha256:" + "c" * 64})}


def test_claims_merge_in_order_and_a_claim_the_index_shows_needs_no_check() -> None:
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    push = lambda tag, d: {"action": "push", "target": {"mediaType": OCI_MANIFEST, "digest": d, "repository": "a", "tag": tag}}  # noqa: E731
    delete_tag = {"action": "delete", "target": {"repository": "a", "tag": "v1"}}
    merged = index.events_to_check([push("v1", d1)])[0]["a"]
    merged.merge(index.events_to_check([delete_tag])[0]["a"])  # pushed, then deleted: the push claim is void
    assert merged == Confirm({"v1"}, set(), {})
    merged.merge(index.events_to_check([push("v1", d2), push("v2", d1)])[0]["a"])
    assert merged == Confirm({"v1", "v2"}, set(), {"v1": d2, "v2": d1})
    current = {"v1": {"digest": d2}, "v2": {"digest": d2}}
    assert merged.already_shown(current) == {"v1"}  # v2 claims d1, the index has d2: checked
    merged.merge(index.events_to_check([{"action": "delete", "target": {"repository": "a", "digest": d2}}])[0]["a"])
    assert merged.already_shown(current) == set()  # its digest was deleted since: checked
    copy = merged.copy()
    copy.tags.add("x")
    assert "x" not in merged.tags


def test_notifications_are_detected_from_the_registry_config() -> None:
    endpoint = "- name: janitor\n  url: http://janitor:8000/v1/events\n  headers: {Authorization: [Bearer x]}\n"
    assert index.notifications_configured({"REGISTRY_NOTIFICATIONS_ENDPOINTS": endpoint}, None)
    assert not index.notifications_configured({"REGISTRY_NOTIFICATIONS_ENDPOINTS": endpoint + "  disabled: true\n"}, None)
    config = {"notifications": {"endpoints": [{"name": "x", "url": "http://elsewhere/hook"},
                                              {"name": "j", "url": "http://j:8000/v1/events/"}]}}
    assert index.notifications_configured({}, config)
    assert not index.notifications_configured({}, {"notifications": {"endpoints": [{"url": "http://x/hook"}]}})
    assert index.notifications_configured({}, {"notifications": {"endpoints": [{"url": "http://j/v1/registries/b/events"}]}})
    assert not index.notifications_configured({}, {"notifications": {"endpoints": [{"url": "http://j/v1/events/x"}]}})
    assert not index.notifications_configured({"REGISTRY_NOTIFICATIONS_ENDPOINTS": "[unclosed"}, None)
    assert not index.notifications_configured({}, None)


def _entry(digest: str, blobs: dict[str, int]) -> dict[str, object]:
    return {"digest": digest, "media_type": OCI_MANIFEST, "size": sum(blobs.values()), "created": None,
            "platforms": [], "blobs": blobs}


def test_a_stale_read_never_overwrites_a_newer_change(redis_conn: redis.Redis) -> None:
    idx = TagIndex(redis_conn, "janitor:test")
    d1, d2 = sha256_digest(b"1"), sha256_digest(b"2")
    assert idx.commit("team/app", 0, lambda tags, indexed: {"v1": _entry(d1, {d1: 5, "l": 100}),
                                                            "v2": _entry(d2, {d2: 5, "l": 100})})
    gen = idx.generation("team/app")
    # A reconcile read the repository (v1 and v2 on it) ...
    stale = {"v1": _entry(d1, {d1: 5, "l": 100}), "v2": _entry(d2, {d2: 5, "l": 100})}
    # ... then the janitor deleted d1: its tag goes at once, unconditionally.
    idx.forget_manifest("team/app", d1)
    assert set(idx.tags("team/app") or {}) == {"v2"}
    # The reconcile's commit, made on the older read, is refused: v1 does not come back.
    assert not idx.commit("team/app", gen, lambda tags, indexed: stale)
    assert set(idx.tags("team/app") or {}) == {"v2"}
    assert idx.summaries()["team/app"]["tag_count"] == 1 and idx.summaries()["team/app"]["size"] == 105
    assert "blobs" not in idx.tags("team/app")["v2"]
    idx.forget_tag("team/app", "v2")
    assert idx.tags("team/app") == {} and idx.summaries()["team/app"]["size"] == 0
    idx.forget_repository("team/app")
    assert idx.tags("team/app") is None and "team/app" not in idx.summaries() and idx.blobs() == {}
    # Deletions of something never indexed leave nothing behind but the generation.
    idx.forget_manifest("never/seen", d1)
    assert idx.tags("never/seen") is None
    assert all(k.decode().startswith("janitor:test:") for k in redis_conn.keys("*"))


def test_compose_sends_the_registrys_events_to_the_api_with_a_token_it_accepts() -> None:
    from tests.test_compose import environment, load_compose
    compose = load_compose()
    registry_env = environment(compose["services"]["registry"])
    endpoints = yaml.safe_load(registry_env["REGISTRY_NOTIFICATIONS_ENDPOINTS"])
    assert index.notifications_configured(registry_env, None)
    (endpoint,) = endpoints
    assert endpoint["url"] == "http://api:8000/v1/events"
    (header,) = endpoint["headers"]["Authorization"]
    token = header.removeprefix("Bearer ").split(":", 1)[0]
    assert token == "${EVENTS_TOKEN"  # the same variable the api takes as EVENTS_TOKENS
    assert environment(compose["services"]["api"])["EVENTS_TOKENS"].startswith("${EVENTS_TOKEN:")


def _paths(messages: Any, prefix: tuple = ()) -> set[tuple]:
    if isinstance(messages, dict):
        return set().union(*(_paths(v, (*prefix, str(k))) for k, v in messages.items())) if messages else {prefix}
    return {prefix}


def test_the_envelope_checked_by_hand_answers_as_its_schema_does() -> None:
    import marshmallow as ma

    from service.events.schemas import EnvelopeSchema

    schema = EnvelopeSchema()
    digest = "sha256:" + "a" * 64
    good = {"action": "pull", "id": "x", "timestamp": "2026-01-01T00:00:00Z",
            "target": {"mediaType": OCI_MANIFEST, "digest": digest, "repository": "team/app", "tag": "v1", "size": 5,
                       "length": 5, "url": "http://r/v2/x", "other": 1},
            "request": {"method": "GET", "useragent": "docker/24", "addr": "1.2.3.4"}, "actor": {}, "source": {}}
    cases: list[Any] = [
        {"events": [good]}, {"events": []}, {"events": [good] * 100}, {"events": [good] * 101}, {"events": "x"},
        {"events": None}, {}, [], "x", None, {"events": [good, "x"]}, {"events": [{"action": "push"}]},
        {"events": [{**good, "request": "x"}]}, {"events": [{**good, "request": {"useragent": 5}}]},
        {"events": [{**good, "request": {"useragent": "u" * 1025}}]}, {"events": [{**good, "timestamp": "t" * 65}]},
        {"events": [{**good, "action": ""}]}, {"events": [{**good, "action": "a" * 33}]}, {"events": [{**good, "action": 5}]},
        {"events": [{**good, "target": "x"}]}, {"events": [{**good, "target": None}]}, {"events": [{**good, "id": 5}]},
        {"events": [{**good, "request": None}]}, {"events": [None]},
    ]
    for key, bad in (("repository", "UP/../x"), ("repository", 5), ("repository", None), ("tag", "v" * 200),
                     ("tag", "-x"), ("digest", "nope"), ("digest", 5), ("mediaType", "m" * 256), ("size", "5"),
                     ("size", 1.5), ("size", True), ("length", None), ("url", 5), ("mediaType", None)):
        cases.append({"events": [{**good, "target": {**good["target"], key: bad}}]})
    cases.append({"events": [{**good, "target": {k: v for k, v in good["target"].items() if k != "repository"}}]})
    cases.append({"events": [{**good, "target": {"repository": "a"}}]})  # mediaType defaults to ""
    for case in cases:
        try:
            expected: Any = ma.Schema.load(schema, case)
        except ma.ValidationError as exc:
            expected = _paths(exc.messages)
        try:
            got: Any = schema.load(case)
        except ma.ValidationError as exc:
            got = _paths(exc.messages)
        assert got == expected, (case, got, expected)


def test_the_confirm_queue_merges_claims_per_repository_and_spaces_its_checks() -> None:
    import threading
    import time as clock

    from janitor.index.confirming import ConfirmQueue
    from tests.images import wait_until

    class Recorder:  # stands in for the index: records each check (the checks themselves are e2e-tested)
        def __init__(self) -> None:
            self.checks: list[tuple[str, set[str], float]] = []
            self.lock = threading.Lock()

        def confirm(self, repo: str, check: Confirm) -> tuple[bool, set[str]]:
            with self.lock:
                self.checks.append((repo, set(check.tags), clock.monotonic()))
            clock.sleep(0.02)
            return True, set()

    index = Recorder()
    queue = ConfirmQueue(workers=1, cooldown=0.2)
    started = clock.monotonic()
    for i in range(200):  # a burst on one repository: a check or two, covering every tag
        assert queue.submit(index, "busy", Confirm({f"t{i % 20}"}, set()))  # type: ignore[arg-type]
    assert wait_until(lambda: queue.pending() == 0, 5, 0.01)
    busy = [c for c in index.checks if c[0] == "busy"]
    assert 1 <= len(busy) <= 2 and set().union(*(c[1] for c in busy)) == {f"t{i}" for i in range(20)}
    # Claims arriving while a repository cools down wait for it; one on another repository does not.
    queue.submit(index, "busy", Confirm({f"t{i}" for i in range(20)}, set()))  # type: ignore[arg-type]
    queue.submit(index, "quiet", Confirm({"v1"}, set()))  # type: ignore[arg-type]
    assert wait_until(lambda: queue.pending() == 0, 5, 0.01)
    quiet = [c for c in index.checks if c[0] == "quiet"]
    again = [c for c in index.checks if c[0] == "busy"][len(busy):]
    assert len(quiet) == 1 and len(again) == 1
    # The cooldown, counted by the queue from when it took the last check: a moment (scheduling, here 1 us
    # once in CI) before the recorder saw that check begin, so the recorder's gap may be that much shorter.
    assert again[0][2] - busy[-1][2] >= 0.2 - 0.01
    assert quiet[0][2] <= again[0][2]  # fewer claims first
    assert quiet[0][2] - started < 2.0


def test_a_reconcile_waits_while_a_window_holds_the_lease(redis_conn: redis.Redis) -> None:
    """The reconciler's pause (worker/indexer.py) returns at once without a lease, waits while one is held, and
    ends the reconcile when the worker stops meanwhile."""
    key, stop = "janitor:pause-test:lock", threading.Event()
    redis_conn.delete(key)
    pause = indexer.window_pause(redis_conn, key, stop)
    started = time.monotonic()
    pause()
    assert time.monotonic() - started < 0.1
    redis_conn.set(key, "a window's token")
    returned: list[float] = []
    waiting = threading.Thread(target=lambda: (pause(), returned.append(time.monotonic())))
    waiting.start()
    time.sleep(1.0)
    assert returned == [] and waiting.is_alive()
    released = time.monotonic()
    redis_conn.delete(key)
    waiting.join(2)
    assert returned and returned[0] - released < indexer.WINDOW_POLL + 0.2
    redis_conn.set(key, "the next window's token")
    failed: list[BaseException] = []

    def wait_then_record() -> None:
        try:
            pause()
        except indexer.Stopping as exc:
            failed.append(exc)
    waiting = threading.Thread(target=wait_then_record)
    waiting.start()
    stop.set()
    waiting.join(2)
    assert len(failed) == 1
    redis_conn.delete(key)
