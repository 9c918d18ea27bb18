"""Retention policies in the chatops loop, on the real stack: the scopes policy endpoints need, who asked for
each run, `GET /v1/jobs?policy=`, runs that wait for approval (asked for, set on the policy for its scheduled
runs, or JANITOR_REQUIRE_APPROVAL), and plan drift: a tag the policy would match, pushed while its run waits,
is still there after approval and is listed as skipped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from tests import images
from tests.conftest import Registry, Stack
from tests.images import wait_until
from tests.test_e2e_chatops import Client, chatops, forbidden  # noqa: F401 - `chatops` is a fixture

pytestmark = pytest.mark.e2e
Chatops = Callable[..., tuple[Stack, Client, Any]]


def tags_of(registry: Registry, repo: str) -> set[str]:
    resp = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=30)
    return set(resp.json().get("tags") or []) if resp.status_code == 200 else set()


def old_image(days: float) -> images.Image:
    return images.image(layers=1, layer_size=512, created=datetime.now(timezone.utc) - timedelta(days=days))


def run(c: Client, who: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = c.post(f"/v1/policies/{name}/runs", who, body)
    assert resp.status_code == 202, resp.text
    return resp.json()


def test_policy_endpoints_need_their_scopes_and_job_history_lists_a_policys_runs(
        registry: Registry, chatops: Chatops) -> None:  # noqa: F811
    stack, c, _ = chatops(registry)
    p = images.Pusher(registry.url)
    for tag in ("dev-1", "keep"):
        p.image("hist/app", old_image(3), tag)
    body = {"name": "dev-cleanup", "repositories": ["hist/*"], "delete_tags": "^dev-"}

    # Reading needs `read`; creating, replacing and deleting a policy need `admin`; a run needs `delete`.
    forbidden(c.post("/v1/policies", "bot", body), "admin")
    forbidden(c.post("/v1/policies", "alice", body), "admin")
    resp = c.post("/v1/policies", "root", body)
    assert resp.status_code == 201, resp.text
    assert c.post("/v1/policies", "root", {**body, "name": "other"}).status_code == 201
    assert c.get("/v1/policies", "reader").status_code == 200
    assert c.get("/v1/policies/dev-cleanup", "reader").json()["name"] == "dev-cleanup"
    forbidden(c.get("/v1/policies", "approve-only"), "read")
    forbidden(c.call("PUT", "/v1/policies/dev-cleanup", "bot", body), "admin")
    forbidden(c.call("DELETE", "/v1/policies/dev-cleanup", "bot"), "admin")
    forbidden(c.post("/v1/policies/dev-cleanup/runs", "reader", {"dry_run": True}), "delete")
    forbidden(c.post("/v1/policies/dev-cleanup/runs", "alice", {"dry_run": True}), "delete")
    assert c.call("PUT", "/v1/policies/other", "root", {**body, "name": "other", "keep_last": 1}).status_code == 200

    # Runs record who asked for them; the history of one policy lists exactly its runs, newest first.
    first = run(c, "bot", "dev-cleanup", {"dry_run": True})
    second = run(c, "bot2", "dev-cleanup", {"dry_run": True})
    another = run(c, "bot", "other", {"dry_run": True})
    deletion = c.submit("bot", {"repository": "hist/app", "tags": ["keep"], "dry_run": True})
    assert first["requested_by"] == "bot" and second["requested_by"] == "bot2" and first["approval"] is None
    for job in (first, second, another, deletion):
        assert c.wait(job["id"], "succeeded", "failed")["status"] == "succeeded"
    listed = c.get("/v1/jobs?policy=dev-cleanup", "reader").json()
    assert [j["id"] for j in listed["items"]] == [second["id"], first["id"]] and listed["total"] == 2
    assert all(j["kind"] == "policy" and j["policy"] == "dev-cleanup" for j in listed["items"])
    assert [j["id"] for j in c.get("/v1/jobs?policy=other&requested_by=bot").json()["items"]] == [another["id"]]
    assert [j["id"] for j in c.get("/v1/jobs?kind=policy&requested_by=bot2").json()["items"]] == [second["id"]]
    assert c.get("/v1/jobs?policy=nobody").json()["items"] == []
    assert tags_of(registry, "hist/app") == {"dev-1", "keep"}  # dry runs only
    assert c.call("DELETE", "/v1/policies/other", "root").status_code == 204


def test_plan_drift_a_matching_tag_pushed_while_awaiting_approval_stays_and_is_skipped(
        registry: Registry, chatops: Chatops) -> None:  # noqa: F811
    stack, c, _ = chatops(registry, JANITOR_UNTAGGED_MIN_AGE="0")
    p = images.Pusher(registry.url)
    digests = {tag: p.image("drift/app", old_image(days), tag) for tag, days in
               (("dev-1", 9), ("dev-2", 8), ("latest", 1))}
    assert c.post("/v1/policies", "root", {"name": "drop-dev", "repositories": ["drift/*"],
                                           "delete_tags": "^dev-"}).status_code == 201

    job = run(c, "bot", "drop-dev", {"dry_run": False, "approval": "required"})
    assert job["approval"] == "required" and job["requested_by"] == "bot" and "approval" not in job["request"]
    waiting = c.wait(job["id"], "awaiting_approval", "failed")
    assert waiting["status"] == "awaiting_approval", waiting
    # The full plan, for a bot to post: the tags the policy deletes, the ones it keeps and why, bytes to free.
    plan = waiting["result"]["plan"]
    [repo_plan] = plan["repositories"]
    assert {d["tag"] for d in repo_plan["delete"]} == {"dev-1", "dev-2"}
    assert [(k["tag"], k["reason"]) for k in repo_plan["keep"]] == [("latest", "not_matched")]
    assert plan["tags"] == ["drift/app:dev-1", "drift/app:dev-2"]
    assert sorted(plan["manifests"]) == sorted([digests["dev-1"], digests["dev-2"]]) and plan["bytes"] > 0
    assert waiting["expires_at"] and "awaiting approval" in waiting["summary"]
    assert tags_of(registry, "drift/app") == {"dev-1", "dev-2", "latest"}  # nothing changed yet
    assert [s["name"] for s in waiting["steps"]] == ["preflight", "delete"]  # no fence, no GC

    new = p.image("drift/app", old_image(7), "dev-3")  # drift: the policy would delete this one too
    forbidden(c.post(f"/v1/jobs/{job['id']}/approve", "bot"), "approve")  # a requester without approve
    assert c.post(f"/v1/jobs/{job['id']}/approve", "alice").status_code == 200
    done = c.wait(job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert done["approved_by"] == "alice" and done["requested_by"] == "bot"
    assert tags_of(registry, "drift/app") == {"dev-3", "latest"}
    assert sorted(done["result"]["manifests_deleted"]) == sorted([digests["dev-1"], digests["dev-2"]])
    assert done["result"]["tags_removed"] == ["drift/app:dev-1", "drift/app:dev-2"]
    assert done["result"]["skipped"] == [{"manifest": f"drift/app@{new}", "tags": ["drift/app:dev-3"],
                                          "reason": "not in the approved plan"}]
    assert done["result"]["plan"] == plan  # the plan that was approved, unchanged
    assert "gc" in done["result"] and "1 skipped" in done["summary"]
    for tag in ("dev-3", "latest"):
        assert images.pull_verified(registry.url, "drift/app", tag) == []


def test_scheduled_runs_wait_when_the_policy_asks_and_every_real_run_waits_under_require_approval(
        registry: Registry, chatops: Chatops) -> None:  # noqa: F811
    stack, c, _ = chatops(registry, JANITOR_REQUIRE_APPROVAL="true")
    p = images.Pusher(registry.url)
    for tag in ("pr-1", "pr-2", "main"):
        p.image("sched/app", old_image(5), tag)
    # The policy sets approval for its scheduled runs: they are asked for by "schedule" and wait.
    resp = c.post("/v1/policies", "root", {"name": "prs", "repositories": ["sched/*"], "delete_tags": "^pr-",
                                           "schedule": "2s", "approval": "required"})
    assert resp.status_code == 201 and resp.json()["approval"] == "required", resp.text

    def parked() -> list[dict[str, Any]]:
        return list(c.get("/v1/jobs?policy=prs&status=awaiting_approval").json()["items"])

    found = wait_until(parked, 90, 0.5)
    assert found, c.get("/v1/jobs?policy=prs").json()
    scheduled = found[0]
    assert scheduled["requested_by"] == "schedule" and scheduled["approval"] == "required"
    assert scheduled["request"]["trigger"] == "schedule" and scheduled["result"]["plan"]["tags"] == [
        "sched/app:pr-1", "sched/app:pr-2"]
    assert c.call("PUT", "/v1/policies/prs", "root", {"repositories": ["sched/*"], "delete_tags": "^pr-",
                                                       "schedule": "2s", "enabled": False}).status_code == 200

    # JANITOR_REQUIRE_APPROVAL: a real run from the API waits too, a dry run does not.
    real = run(c, "bot", "prs", {"dry_run": False})
    dry = run(c, "bot", "prs", {"dry_run": True})
    assert real["approval"] == "required" and dry["approval"] is None
    assert c.wait(dry["id"], "succeeded", "failed")["status"] == "succeeded"
    assert c.wait(real["id"], "awaiting_approval", "failed")["status"] == "awaiting_approval"
    assert c.post(f"/v1/jobs/{real['id']}/reject", "alice").json()["status"] == "rejected"
    # Scheduled runs fired before the pause may still be on their way: let them park, then reject them all.
    assert wait_until(lambda: all(j["status"] not in ("queued", "running")
                                  for j in c.get("/v1/jobs?policy=prs&page_size=100").json()["items"]), 90, 0.5)
    for job in c.get("/v1/jobs?policy=prs&status=awaiting_approval&page_size=100").json()["items"]:
        assert c.post(f"/v1/jobs/{job['id']}/reject", "alice").status_code == 200
    assert c.get("/v1/jobs?policy=prs&status=awaiting_approval").json()["items"] == []
    assert tags_of(registry, "sched/app") == {"pr-1", "pr-2", "main"}  # nothing approved, nothing changed
