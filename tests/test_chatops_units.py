"""Rules of the chatops loop, without the stack: token files, scopes, plan intersection, summaries, signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time

import pytest

from janitor.config import tokens
from janitor.config.settings import Settings
from janitor.jobs import webhooks
from janitor.planning import approval
from janitor.planning.rules import Plan, RepoPlan

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_token_file_bad_entries_are_reported_and_skipped_without_leaking_hashes() -> None:
    text = f"""
tokens:
  - name: bot
    token_sha256: {h("bot-secret")}
    scopes: [read, delete]
  - name: no-hash
    scopes: [read]
  - name: weird
    token_sha256: {h("weird")}
    scopes: [read, superuser]
  - "just a string"
  - name: alice
    token_sha256: {h("alice-secret").upper()}
    scopes: [approve]
  - name: bot
    token_sha256: {h("dup")}
    scopes: [read]
"""
    entries, problems = tokens.parse(text)
    assert [e.caller.name for e in entries] == ["bot", "alice"]
    assert len(problems) == 4
    assert "entry 2 ('no-hash'): token_sha256" in problems[0]
    assert "unknown scope(s) superuser" in problems[1]
    assert problems[2].startswith("entry 4:")
    assert "duplicate name" in problems[3]
    assert not any(h(t) in p or h(t).upper() in p for p in problems for t in ("weird", "dup", "bot-secret"))


def test_token_file_that_is_not_yaml_gives_no_tokens() -> None:
    entries, problems = tokens.parse("tokens: [unclosed")
    assert entries == [] and problems and "not valid YAML" in problems[0]
    assert tokens.parse("") == ([], [])
    assert tokens.parse("42")[1] == ["expected a list of tokens (or a mapping with a `tokens` list)"]


def test_lookup_reloads_a_changed_file_and_logs_no_secret(tmp_path, caplog) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(f"- {{name: bot, token_sha256: {h('s1')}, scopes: [read]}}\n")
    caplog.set_level(logging.INFO, logger="janitor.config.tokens")
    reg = tokens.Tokens(("bare",), str(path))
    assert reg.lookup("s1") == tokens.Caller("bot", frozenset({"read"}))
    assert reg.lookup("bare") == tokens.Caller("api-token-1", frozenset({"admin"}))
    assert reg.lookup("nope") is None
    path.write_text(f"- {{name: bot2, token_sha256: {h('s2')}, scopes: [approve]}}\n- {{name: broken}}\n")
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert reg.lookup("s1") is None
    assert reg.lookup("s2") == tokens.Caller("bot2", frozenset({"approve"}))
    text = caplog.text
    assert "entry 2 ('broken')" in text and "skipped" in text
    for secret in ("s1", "s2", "bare"):
        assert h(secret) not in text and secret not in text.split()


def test_scopes() -> None:
    admin = tokens.Caller("root", frozenset({"admin"}))
    bot = tokens.Caller("bot", frozenset({"read", "delete"}))
    assert all(admin.may(s) for s in tokens.SCOPES)
    assert bot.may("delete") and not bot.may("approve") and not bot.may("admin")


def test_approval_needed() -> None:
    assert approval.needed({"approval": "required"}, False) == "required"
    assert approval.needed({}, True) == "required"
    assert approval.needed({"dry_run": True}, True) is None
    assert approval.needed({}, False) is None


def _digests(mapping: dict[tuple[str, str], str]):
    return lambda repo, tag: mapping.get((repo, tag))


def test_intersection_never_goes_beyond_the_approved_plan() -> None:
    approved_plan = Plan([RepoPlan("team/app", untag=["old"], delete=[A], tags_removed={A: ["v1"]})])
    tags_then = _digests({("team/app", "old"): C})
    approved = approval.items(approved_plan, tags_then)
    assert approved == {"tags": ["team/app:old@" + C, "team/app:v1@" + A], "manifests": ["team/app@" + A],
                        "repositories_removed": []}
    # Since then: B became untagged too, and `old` was re-pushed onto another manifest.
    new = Plan([RepoPlan("team/app", untag=["old"], delete=[A, B], tags_removed={A: ["v1"], B: []})])
    carried, skipped, gone = approval.intersect(approved, new, _digests({("team/app", "old"): B}))
    assert carried.repos[0].delete == [A] and carried.repos[0].untag == []
    assert {s.get("manifest") or s.get("tag") for s in skipped} == {"team/app@" + B, "team/app:old"}
    assert gone == ["team/app:old@" + C]


def test_a_new_tag_on_an_approved_manifest_keeps_the_manifest_but_the_approved_tag_goes() -> None:
    approved = {"tags": ["r:v1@" + A], "manifests": ["r@" + A], "repositories_removed": ["r"]}
    new = Plan([RepoPlan("r", delete=[A], tags_removed={A: ["v1", "hotfix"]}, remove_repository=True)])
    carried, skipped, _ = approval.intersect(approved, new, _digests({}))
    assert carried.repos[0].delete == [] and carried.repos[0].untag == ["v1"]
    assert not carried.repos[0].remove_repository
    assert skipped[0]["reason"] == "tags not in the approved plan now point at it: hotfix"
    assert skipped[1]["repository"] == "r"


def test_same_plan_carries_out_everything_and_skips_nothing() -> None:
    plan = Plan([RepoPlan("r", delete=[A, B], tags_removed={A: ["x"], B: []}, remove_repository=True)], {"d": 5})
    carried, skipped, gone = approval.intersect(approval.items(plan, _digests({})), plan, _digests({}))
    assert (carried.repos[0].delete, carried.repos[0].remove_repository, skipped, gone) == ([A, B], True, [], [])
    assert carried.blobs_freed == {"d": 5}


def test_gate_parks_then_intersects() -> None:
    job = {"id": "f" * 32, "approval": "required", "result": {}, "status": "running", "approved_by": None}
    plan = Plan([RepoPlan("r", delete=[A], tags_removed={A: []})])
    assert approval.gate(job, plan, _digests({}), 60) is None
    assert job["status"] == "awaiting_approval" and job["result"]["plan"]["manifests"] == [A]
    assert job["expires_at"].endswith("Z")
    job.update(status="running", approved_by="alice")
    grown = Plan([RepoPlan("r", delete=[A, B], tags_removed={A: [], B: []})])
    carried = approval.gate(job, grown, _digests({}), 60)
    assert carried is not None and carried.repos[0].delete == [A]
    assert job["result"]["skipped"] == [{"manifest": "r@" + B, "tags": [], "reason": "not in the approved plan"}]
    plain = {"approval": None, "result": {}}
    assert approval.gate(plain, grown, _digests({}), 60) is grown


def test_summaries_are_one_line() -> None:
    job = {"id": "3f2a" + "0" * 28, "kind": "deletion", "status": "succeeded", "request": {"repository": "team/app"},
           "result": {"tags_removed": [f"team/app:t{i}" for i in range(12)], "bytes_freed": 1_234_000_000},
           "window": {"write_refused_seconds": 1.94}}
    assert webhooks.summary(job) == "team/app: 12 tags deleted, 1.2 GB freed; writes paused 1.9 s (job 3f2a…)"
    job.update(status="failed", error={"code": "GC_FAILED", "message": "boom\nline two", "step": "gc"})
    assert webhooks.summary(job) == "team/app: failed in step gc: GC_FAILED: boom line two (job 3f2a…)"
    job.update(status="awaiting_approval", requested_by="bot",
               result={"plan": {"tags": ["a", "b"], "manifests": ["m"], "bytes": 2048}})
    assert webhooks.summary(job) == ("team/app: awaiting approval: 2 tags, 1 manifest, 2.0 kB to free, "
                                     "requested by bot (job 3f2a…)")
    job.update(status="rejected", rejected_by="alice")
    assert webhooks.summary(job) == "team/app: rejected by alice, nothing deleted (job 3f2a…)"
    assert "\n" not in webhooks.summary({**job, "status": "expired"})


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    raw = b'{"event": "job.succeeded"}'
    expected = hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert webhooks.signature("s3cret", raw) == "sha256=" + expected
    hdrs = webhooks.headers("job.succeeded", "d1", raw, "s3cret")
    assert hdrs["X-Janitor-Signature-256"] == "sha256=" + expected and hdrs["X-Janitor-Delivery"] == "d1"
    assert "X-Janitor-Signature-256" not in webhooks.headers("job.succeeded", "d1", raw, None)


def test_settings() -> None:
    s = Settings.from_env({"API_TOKENS_FILE": "/etc/t.yaml", "JANITOR_REQUIRE_APPROVAL": "true",
                           "JANITOR_APPROVAL_TTL": "60", "WEBHOOK_URLS": "http://a/x, http://b/y",
                           "WEBHOOK_SECRET": "k", "WEBHOOK_RETRY_INTERVALS": "1,2"})
    assert (s.api_tokens_file, s.require_approval, s.approval_ttl) == ("/etc/t.yaml", True, 60.0)
    assert s.webhook_urls == ("http://a/x", "http://b/y") and s.webhook_secret == "k"
    assert s.webhook_retry_intervals == (1, 2)
    d = Settings.from_env({})
    assert not d.require_approval and d.approval_ttl == 86400 and d.webhook_urls == ()


@pytest.mark.parametrize("n, text", [(999, "999 B"), (1000, "1.0 kB"), (1_234_000_000, "1.2 GB")])
def test_human_bytes(n: int, text: str) -> None:
    assert webhooks.human_bytes(n) == text


def test_job_store_transitions_claims_and_history_on_real_redis(redis_conn) -> None:  # type: ignore[no-untyped-def]
    from janitor.jobs.records import JobStore, Keys

    keys = Keys("reg.example:5000")
    store = JobStore(redis_conn, 60, keys)
    a = store.create("deletion", {"repository": "r", "tags": ["x"]}, requested_by="bot", approval="required")
    time.sleep(0.002)
    b = store.create("gc", {}, requested_by="root")
    time.sleep(0.002)
    c = store.create("deletion", {"repository": "q", "all_tags": True}, requested_by="bot", policy="nightly")
    assert [j["id"] for j in store.history()] == [c["id"], b["id"], a["id"]]
    assert store.get(c["id"])["policy"] == "nightly" and store.get(a["id"])["approval"] == "required"

    def cancel(job: dict) -> None:
        job.update(status="cancelled")
    job, changed = store.transition(b["id"], {"queued", "awaiting_approval"}, cancel)
    assert changed and job["status"] == "cancelled" and redis_conn.ttl(keys.job(b["id"])) > 0
    assert store.transition(b["id"], {"queued"}, cancel) == (store.get(b["id"]), False)  # only once
    assert [j["id"] for j in store.claim([a["id"], b["id"], c["id"], "missing"])] == [a["id"], c["id"]]
    assert store.get(b["id"])["status"] == "cancelled" and store.get(a["id"])["status"] == "running"

    job = store.get(a["id"])
    job.update(status="awaiting_approval", expires_at=approval.expires_at(-1))
    store.save(job)
    assert store.due_for_expiry(time.time()) == [a["id"]]
    job.update(status="queued", expires_at=None)
    store.save(job)
    assert store.due_for_expiry(time.time()) == []

    store.record_webhook(a["id"], "d1", {"url": "u", "queued_at": "1", "attempts": 2})
    assert store.get(a["id"])["webhooks"] == [{"url": "u", "queued_at": "1", "attempts": 2}]
    assert "webhooks" not in json.loads(redis_conn.get(keys.job(a["id"])))  # kept apart from the record

    redis_conn.delete(keys.job(b["id"]))  # its record expired
    assert [j["id"] for j in store.history()] == [c["id"], a["id"]]
    assert redis_conn.zcard(keys.jobs) == 2  # and the index forgot it


def test_an_approved_digest_deletion_is_still_checked_right_before_its_delete() -> None:
    """Never more than approved: the carried-out plan keeps the check before each delete, and what reached
    a forced child when planned (its index's tags) is what the check counts on, nothing more."""
    approved = {"tags": ["r:v1@" + A], "manifests": ["r@" + A], "repositories_removed": []}
    new = Plan([RepoPlan("r", delete=[A], tags_removed={A: ["v1"]}, guarded=[A], forced_pairs={("multi", C)})])
    carried, skipped, _ = approval.intersect(approved, new, _digests({}))
    assert skipped == [] and carried.repos[0].delete == [A]
    assert carried.repos[0].guarded == [A]
    assert carried.repos[0].planned_pairs == {("v1", A), ("multi", C)}
