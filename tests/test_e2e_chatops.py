"""The chatops loop on the real stack: named tokens with scopes, plan → approve, signed webhooks, job history."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests import images
from tests.conftest import ROOT, Registry, Stack, free_port, wait_http
from tests.images import wait_until

pytestmark = pytest.mark.e2e

SCOPES = {"reader": ["read"], "bot": ["read", "delete"], "bot2": ["read", "delete"],
          "alice": ["read", "approve"], "approve-only": ["approve"], "root": ["admin"]}
SECRET = "webhook-secret"


def secret(name: str) -> str:
    return f"secret-of-{name}"


def write_tokens(path: Path, scopes: dict[str, list[str]], extra: list[Any] | None = None) -> None:
    entries: list[Any] = [{"name": n, "token_sha256": hashlib.sha256(secret(n).encode()).hexdigest(), "scopes": s}
                          for n, s in scopes.items()]
    path.write_text(yaml.safe_dump({"tokens": entries + (extra or [])}))
    later = time.time_ns() + 2 * 10**9  # a different mtime even on a coarse clock
    os.utime(path, ns=(later, later))


class Client:
    def __init__(self, api: str) -> None:
        self.api = api

    def call(self, method: str, path: str, who: str | None, body: Any = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {secret(who)}"} if who else {}
        return requests.request(method, self.api + path, json=body, headers=headers, timeout=60, **kw)

    def get(self, path: str, who: str = "root", **kw: Any) -> requests.Response:
        return self.call("GET", path, who, **kw)

    def post(self, path: str, who: str, body: Any = None) -> requests.Response:
        return self.call("POST", path, who, body)

    def submit(self, who: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.post("/v1/deletions", who, body)
        assert resp.status_code == 202, resp.text
        return resp.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"/v1/jobs/{job_id}").json()

    def wait(self, job_id: str, *statuses: str, timeout: float = 150.0) -> dict[str, Any]:
        job = wait_until(lambda: (j if (j := self.job(job_id))["status"] in statuses else None), timeout, 0.2)
        assert job, f"job {job_id} not {statuses} within {timeout}s: {self.job(job_id)}"
        return job


def forbidden(resp: requests.Response, scope: str) -> None:
    assert resp.status_code == 403, resp.text
    body = resp.json()
    assert body["code"] == "FORBIDDEN" and body["details"]["scope"] == scope and repr(scope) in body["message"]


# -- a webhook receiver: a real HTTP server on loopback ----------------------------------------------------

class Receiver:
    """Records every POST. Paths: /ok answers 200; /flaky answers 500 to the first two attempts of a
    delivery, then 200; /hang answers only after `hang` seconds."""

    def __init__(self, hang: float = 40.0) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append({"path": self.path, "headers": dict(self.headers), "raw": raw,
                                              "at": time.monotonic()})
                    attempts = sum(1 for r in receiver.received if r["path"] == self.path and
                                   r["headers"].get("X-Janitor-Delivery") == self.headers.get("X-Janitor-Delivery"))
                if self.path == "/hang":
                    time.sleep(hang)
                status = 500 if self.path == "/flaky" and attempts <= 2 else 200
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["path"] == path]

    def events(self, path: str = "/ok") -> list[str]:
        return [json.loads(r["raw"])["event"] for r in self.at(path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def verify(delivery: dict[str, Any]) -> dict[str, Any]:
    """The signature is HMAC-SHA256 of the raw body; the event header matches the body."""
    raw, hdrs = delivery["raw"], delivery["headers"]
    expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hdrs["X-Janitor-Signature-256"], expected)
    body = json.loads(raw)
    assert hdrs["X-Janitor-Event"] == body["event"] and hdrs["X-Janitor-Delivery"]
    assert set(body) == {"event", "delivered_at", "job", "summary", "registry"} and body["summary"] == body["job"]["summary"]
    assert body["registry"] == body["job"]["registry"] == "default"
    return body


@pytest.fixture
def chatops(tmp_path: Path, make_stack: Callable[..., Stack]) -> Callable[..., tuple[Stack, Client, Path]]:
    def make(registry: Registry, **env: Any) -> tuple[Stack, Client, Path]:
        path = tmp_path / "tokens.yaml"
        write_tokens(path, SCOPES)
        stack = make_stack(registry, API_TOKENS_FILE=str(path), WEBHOOK_SECRET=SECRET,
                           WEBHOOK_RETRY_INTERVALS="1,1,1", WEBHOOK_TIMEOUT="5", **env)
        return stack, Client(stack.api), path
    return make


# -- tokens and scopes -------------------------------------------------------------------------------------

def test_each_endpoint_needs_its_scope_and_a_changed_token_file_applies_without_restart(
        registry: Registry, chatops: Callable[..., tuple[Stack, Client, Path]]) -> None:
    stack, c, path = chatops(registry, worker=False)  # jobs stay queued: nothing runs until asked
    images.Pusher(registry.url).image("team/app", images.image(), "v1")
    deletion = {"repository": "team/app", "tags": ["v1"]}

    assert c.call("GET", "/v1/repositories", None).status_code == 401
    assert c.call("GET", "/v1/repositories", "stranger").status_code == 401
    for path_ in ("/v1/repositories", "/v1/repositories/team/app/tags", "/v1/jobs"):
        assert c.get(path_, "reader").status_code == 200
        forbidden(c.get(path_, "approve-only"), "read")
    forbidden(c.post("/v1/deletions", "reader", deletion), "delete")
    forbidden(c.post("/v1/gc", "alice"), "delete")
    forbidden(c.post("/v1/deletions", "bot", {"all_repositories": True, "confirm": stack.registry.url[7:]}), "admin")

    mine = c.submit("bot", deletion)
    assert mine["requested_by"] == "bot" and mine["approval"] is None and mine["status"] == "queued"
    gc = c.post("/v1/gc", "bot2")
    assert gc.status_code == 202 and gc.json()["requested_by"] == "bot2"
    assert c.get(f"/v1/jobs/{mine['id']}", "reader").json()["requested_by"] == "bot"
    forbidden(c.get(f"/v1/jobs/{mine['id']}", "approve-only"), "read")

    for action in ("approve", "reject"):
        forbidden(c.post(f"/v1/jobs/{mine['id']}/{action}", "bot"), "approve")
        resp = c.post(f"/v1/jobs/{mine['id']}/{action}", "alice")  # has the scope, but nothing to approve
        assert resp.status_code == 409 and resp.json()["code"] == "JOB_NOT_AWAITING_APPROVAL"
    forbidden(c.post(f"/v1/jobs/{mine['id']}/cancel", "alice"), "delete")
    forbidden(c.post(f"/v1/jobs/{mine['id']}/cancel", "bot2"), "admin")  # not its job
    cancelled = c.post(f"/v1/jobs/{mine['id']}/cancel", "bot")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancelled_by"] == "bot"
    assert c.post(f"/v1/jobs/{mine['id']}/cancel", "bot").json()["code"] == "JOB_NOT_CANCELLABLE"
    assert c.post(f"/v1/jobs/{gc.json()['id']}/cancel", "root").json()["status"] == "cancelled"  # admin: anyone's
    forbidden(c.post("/v1/jobs/" + "0" * 32 + "/approve", "reader"), "approve")
    assert c.post("/v1/jobs/" + "0" * 32 + "/approve", "alice").status_code == 404

    # Revoke bot, give reader delete: both apply at once, on every gunicorn worker, without a restart.
    write_tokens(path, {**SCOPES, "reader": ["read", "delete"], "bot": ["read"]})
    for _ in range(4):  # two gunicorn workers; each reloads on its own
        forbidden(c.post("/v1/deletions", "bot", deletion), "delete")
        assert c.post("/v1/deletions", "reader", {**deletion, "dry_run": True}).status_code == 202
    write_tokens(path, {k: v for k, v in SCOPES.items() if k != "bot"})
    assert c.get("/v1/jobs", "bot").status_code == 401
    assert c.call("GET", "/v1/jobs", None).status_code == 401

    # A cancelled job stays cancelled when a worker comes: the window takes only the dry runs.
    stack.start_worker()
    dry = c.get("/v1/jobs?requested_by=reader", "root").json()["items"]
    assert len(dry) == 4
    for job in dry:
        assert c.wait(job["id"], "succeeded", "failed")["status"] == "succeeded"
    assert c.job(mine["id"])["status"] == "cancelled" and c.job(mine["id"])["steps"] == []
    assert images.head_manifest(registry.url, "team/app", "v1") == 200


def test_job_history_newest_first_filtered_and_paginated(
        registry: Registry, chatops: Callable[..., tuple[Stack, Client, Path]]) -> None:
    stack, c, _ = chatops(registry, worker=False, JANITOR_REQUIRE_APPROVAL="true")
    p = images.Pusher(registry.url)
    p.image("team/app", images.image(), "v1")
    p.image("team/web", images.image(), "v1")
    start = datetime.now(timezone.utc)
    ids = [c.submit("bot", {"repository": "team/app", "tags": ["v1"]})["id"],
           c.submit("bot2", {"repository": "team/web", "tags": ["v1"], "approval": "required"})["id"],
           c.post("/v1/gc", "root").json()["id"]]
    c.post(f"/v1/jobs/{ids[0]}/cancel", "bot")

    page = c.get("/v1/jobs", "reader").json()
    assert [j["id"] for j in page["items"]] == ids[::-1] and page["total"] == 3
    assert page["items"][1]["approval"] == "required" and "approval" not in page["items"][1]["request"]
    # JANITOR_REQUIRE_APPROVAL: every real deletion waits for approval; GC and dry runs do not.
    assert [j["approval"] for j in page["items"]] == [None, "required", "required"]

    def listed(query: str) -> list[str]:
        resp = c.get("/v1/jobs?" + query, "reader")
        assert resp.status_code == 200, resp.text
        return [j["id"] for j in resp.json()["items"]]
    assert listed("status=cancelled") == [ids[0]]
    assert listed("status=queued") == [ids[2], ids[1]]
    assert listed("kind=gc") == [ids[2]]
    assert listed("requested_by=bot2") == [ids[1]]
    assert listed("repository=team/app") == [ids[0]]
    assert listed("policy=nightly") == []
    assert listed("since=" + (start - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")) == ids[::-1]
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert listed("since=" + later.isoformat().replace("+00:00", "Z")) == []
    second = c.get("/v1/jobs?page=2&page_size=2", "reader").json()
    assert [j["id"] for j in second["items"]] == [ids[0]] and second["total"] == 3 and second["page_size"] == 2
    bad = c.get("/v1/jobs?status=done", "reader")
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_REQUEST" and "status" in bad.json()["details"]
    # The index is a sorted set per registry, not a scan of job keys.
    assert stack.redis.zcard(f"janitor:{registry.url[7:]}:jobs") == 3
    assert c.submit("bot", {"repository": "team/app", "tags": ["v1"], "dry_run": True})["approval"] is None


# -- plan -> approve -----------------------------------------------------------------------------------------

def test_approval_waits_changes_nothing_then_runs_once_another_token_approves(
        registry: Registry, chatops: Callable[..., tuple[Stack, Client, Path]], receiver: Receiver) -> None:
    stack, c, _ = chatops(registry, WEBHOOK_URLS=receiver.url + "/ok")
    p = images.Pusher(registry.url)
    doomed, kept = images.image(), images.image()
    p.image("team/app", doomed, "old")
    p.image("team/app", kept, "new")
    p.image("team/own", images.image(), "x")
    before = (registry.revisions(), registry.blob_files())

    forbidden(c.post("/v1/deletions", "alice", {"repository": "team/app", "tags": ["old"], "approval": "required"}),
              "delete")
    dry = c.post("/v1/deletions", "bot", {"repository": "team/app", "tags": ["old"], "approval": "required",
                                          "dry_run": True})
    assert dry.status_code == 422 and "approval" in dry.json()["details"]
    job = c.submit("bot", {"repository": "team/app", "tags": ["old"], "approval": "required"})
    own = c.submit("root", {"repository": "team/own", "all_tags": True, "approval": "required"})
    assert job["approval"] == "required" and job["requested_by"] == "bot"

    waiting = c.wait(job["id"], "awaiting_approval")
    c.wait(own["id"], "awaiting_approval")
    plan = waiting["result"]["plan"]
    assert plan["tags"] == ["team/app:old"] and plan["manifests"] == [doomed.digest]
    assert set(plan["blobs"]) == set(doomed.blobs) | {doomed.digest} and plan["bytes"] > 0
    assert [s["name"] for s in waiting["steps"]] == ["preflight", "delete"]
    assert waiting["expires_at"] and waiting["summary"].startswith("team/app: awaiting approval: 1 tag, 1 manifest")
    time.sleep(2)  # a window would have had time to run: none does
    assert c.job(job["id"])["status"] == "awaiting_approval"
    assert (registry.revisions(), registry.blob_files()) == before

    forbidden(c.post(f"/v1/jobs/{job['id']}/approve", "bot"), "approve")
    write_tokens(_tokens_path(stack), {**SCOPES, "bot": ["read", "delete", "approve"]})
    forbidden(c.post(f"/v1/jobs/{job['id']}/approve", "bot"), "admin")  # its own request: needs admin
    approved = c.post(f"/v1/jobs/{job['id']}/approve", "alice")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "queued" and approved.json()["approved_by"] == "alice"
    assert c.post(f"/v1/jobs/{job['id']}/approve", "alice").status_code == 409  # once
    assert c.post(f"/v1/jobs/{own['id']}/approve", "root").json()["approved_by"] == "root"  # admin approves own

    done = c.wait(job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert done["result"]["tags_removed"] == ["team/app:old"] and done["result"]["skipped"] == []
    assert "gc" in [s["name"] for s in done["steps"]] and done["approved_by"] == "alice"
    assert images.head_manifest(registry.url, "team/app", doomed.digest) == 404
    assert images.pull_verified(registry.url, "team/app", "new") == []
    assert c.wait(own["id"], "succeeded", "failed")["status"] == "succeeded"
    assert "team/own" not in registry.catalog()
    assert done["summary"].startswith("team/app: 1 tag deleted, 1 manifest deleted, ")
    assert "writes paused" in done["summary"]

    # Webhooks: each event once per job, signed; the job records the deliveries.
    def delivered() -> bool:
        return all(d["state"] == "delivered" for d in c.job(job["id"])["webhooks"]) and \
            len(c.job(job["id"])["webhooks"]) == 2
    assert wait_until(delivered, 60), c.job(job["id"])["webhooks"]
    bodies = [verify(d) for d in receiver.at("/ok")]
    mine = [b for b in bodies if b["job"]["id"] == job["id"]]
    assert [b["event"] for b in mine] == ["job.awaiting_approval", "job.succeeded"]
    assert mine[0]["job"]["status"] == "awaiting_approval" and mine[0]["job"]["result"]["plan"] == plan
    assert mine[1]["summary"] == done["summary"] and mine[1]["job"]["approved_by"] == "alice"
    assert len({d["headers"]["X-Janitor-Delivery"] for d in receiver.at("/ok")}) == len(receiver.at("/ok"))
    records = c.job(job["id"])["webhooks"]
    assert {(r["event"], r["url"], r["attempts"], r["last_status"]) for r in records} == {
        ("job.awaiting_approval", receiver.url + "/ok", 1, 200), ("job.succeeded", receiver.url + "/ok", 1, 200)}


def test_approval_during_the_rest_of_its_planning_window_is_not_undone(
        registry: Registry, chatops: Callable[..., tuple[Stack, Client, Path]], receiver: Receiver) -> None:
    stack, c, _ = chatops(registry, worker=False, WEBHOOK_URLS=receiver.url + "/ok")
    p = images.Pusher(registry.url)
    p.image("team/app", images.image(), "old")
    p.image("team/app", images.image(), "new")
    p.image("team/other", images.image(), "spare")
    p.image("team/other", images.image(), "keep")
    job = c.submit("bot", {"repository": "team/app", "tags": ["old"], "approval": "required"})
    other = c.submit("bot", {"repository": "team/other", "tags": ["spare"]})
    stack.start_worker()  # one window for both: this job is planned and parked, the other goes on to GC

    c.wait(job["id"], "awaiting_approval")
    # The bot hears at once, while the window is still busy with the other job's GC and restarts.
    assert wait_until(lambda: receiver.events() == ["job.awaiting_approval"], 30), receiver.events()
    assert c.job(other["id"])["status"] == "running"
    assert c.post(f"/v1/jobs/{job['id']}/approve", "alice").status_code == 200
    assert c.job(other["id"])["status"] == "running"  # approved before that window ended

    assert c.wait(other["id"], "succeeded", "failed")["status"] == "succeeded"
    assert c.job(job["id"])["status"] != "awaiting_approval"  # the window's last save did not undo it
    done = c.wait(job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded" and done["approved_by"] == "alice", done
    assert done["window"]["id"] != c.job(other["id"])["window"]["id"]
    assert images.head_manifest(registry.url, "team/app", "old") == 404
    assert images.pull_verified(registry.url, "team/app", "new") == []


def _tokens_path(stack: Stack) -> Path:
    return Path(stack.env["API_TOKENS_FILE"])


def test_reject_expire_and_cancel_end_as_named_and_change_nothing(
        registry: Registry, chatops: Callable[..., tuple[Stack, Client, Path]], receiver: Receiver) -> None:
    stack, c, _ = chatops(registry, WEBHOOK_URLS=receiver.url + "/ok", JANITOR_APPROVAL_TTL="20")
    p = images.Pusher(registry.url)
    for tag in ("a", "b", "c"):
        p.image("team/app", images.image(), tag)
    before = (registry.revisions(), registry.blob_files())
    jobs = {tag: c.submit("bot", {"repository": "team/app", "tags": [tag], "approval": "required"})["id"]
            for tag in ("a", "b", "c")}
    for job_id in jobs.values():
        c.wait(job_id, "awaiting_approval")

    rejected = c.post(f"/v1/jobs/{jobs['a']}/reject", "alice").json()
    assert (rejected["status"], rejected["rejected_by"]) == ("rejected", "alice")
    assert rejected["summary"].startswith("team/app: rejected by alice")
    forbidden(c.post(f"/v1/jobs/{jobs['b']}/cancel", "bot2"), "admin")
    cancelled = c.post(f"/v1/jobs/{jobs['b']}/cancel", "bot").json()
    assert (cancelled["status"], cancelled["cancelled_by"]) == ("cancelled", "bot")
    assert c.post(f"/v1/jobs/{jobs['a']}/approve", "alice").json()["code"] == "JOB_NOT_AWAITING_APPROVAL"

    expired = c.wait(jobs["c"], "expired", timeout=90)
    assert expired["finished_at"] and "expired" in expired["summary"]
    late = c.post(f"/v1/jobs/{jobs['c']}/approve", "alice")
    assert late.status_code == 409 and late.json()["code"] == "APPROVAL_EXPIRED"
    time.sleep(2)
    assert (registry.revisions(), registry.blob_files()) == before
    for job_id in jobs.values():
        assert [s["name"] for s in c.job(job_id)["steps"]] == ["preflight", "delete"]

    events = {"job.rejected": jobs["a"], "job.cancelled": jobs["b"], "job.expired": jobs["c"]}
    assert wait_until(lambda: set(receiver.events()) >= set(events), 60), receiver.events()
    bodies = [verify(d) for d in receiver.at("/ok")]
    for event, job_id in events.items():
        assert [b["job"]["id"] for b in bodies if b["event"] == event] == [job_id]
    assert sorted(b["event"] for b in bodies) == sorted(["job.awaiting_approval"] * 3 + list(events))
    assert c.get("/v1/jobs?status=expired").json()["items"][0]["id"] == jobs["c"]


def test_plan_drift_new_untagged_manifest_is_skipped_not_deleted(
        registry: Registry, chatops: Callable[..., tuple[Stack, Client, Path]]) -> None:
    stack, c, _ = chatops(registry, JANITOR_UNTAGGED_MIN_AGE="0")  # the drift is a push made seconds ago
    p = images.Pusher(registry.url)
    first, second, third = images.image(), images.image(), images.image()
    p.image("team/app", first, "latest")
    p.image("team/app", second, "latest")  # `first` is now untagged
    job = c.submit("bot", {"repository": "team/app", "untagged": True, "approval": "required"})
    waiting = c.wait(job["id"], "awaiting_approval")
    assert waiting["result"]["plan"]["manifests"] == [first.digest]

    p.image("team/app", third, "latest")  # drift: `second` is untagged now too, and the policy would match it
    assert c.post(f"/v1/jobs/{job['id']}/approve", "alice").status_code == 200
    done = c.wait(job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert done["result"]["manifests_deleted"] == [first.digest]
    assert done["result"]["skipped"] == [{"manifest": f"team/app@{second.digest}", "tags": [],
                                          "reason": "not in the approved plan"}]
    assert done["result"]["plan"]["manifests"] == [first.digest]  # the plan that was approved, unchanged
    assert images.head_manifest(registry.url, "team/app", first.digest) == 404
    assert images.pull_verified(registry.url, "team/app", second.digest) == []
    assert images.pull_verified(registry.url, "team/app", "latest") == []
    assert registry.revisions() == {"team/app": {second.digest, third.digest}}
    assert "1 skipped" in done["summary"]


# -- webhooks ------------------------------------------------------------------------------------------------

def test_webhook_retries_until_the_third_attempt_and_dead_receivers_never_delay_the_window(
        registry: Registry, chatops: Callable[..., tuple[Stack, Client, Path]], receiver: Receiver) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    urls = [receiver.url + "/flaky", dead, receiver.url + "/hang"]
    stack, c, _ = chatops(registry, WEBHOOK_URLS=",".join(urls))
    p = images.Pusher(registry.url)
    p.image("team/app", images.image(), "old")
    p.image("team/app", images.image(), "new")

    started = time.monotonic()
    job = c.submit("bot", {"repository": "team/app", "tags": ["old"]})
    done = c.wait(job["id"], "succeeded", "failed")
    took = time.monotonic() - started
    assert done["status"] == "succeeded", done
    # The job was done (and the next window free to start) while the hanging receiver still held its first
    # delivery attempt (5 s timeout) and the dead one had retries to go: nothing waited for them.
    records = wait_until(lambda: {r["url"]: r for r in c.job(job["id"])["webhooks"]} if
                         len(c.job(job["id"])["webhooks"]) == 3 else None, 3, 0.05)
    assert records and set(records) == set(urls)
    assert (records[urls[2]]["state"], records[urls[2]]["attempts"]) == ("queued", 0), records
    assert records[urls[1]]["attempts"] < 4 and records[urls[1]]["state"] != "failed", records
    follow = c.post("/v1/gc", "bot").json()
    assert c.wait(follow["id"], "succeeded", "failed", timeout=120)["status"] == "succeeded"

    def settled() -> bool:
        r = {x["url"]: x for x in c.job(job["id"])["webhooks"]}
        return r[urls[0]]["state"] == "delivered" and r[urls[1]]["state"] == "failed"
    assert wait_until(settled, 120, 0.5), c.job(job["id"])["webhooks"]
    records = {r["url"]: r for r in c.job(job["id"])["webhooks"]}
    assert (records[urls[0]]["attempts"], records[urls[0]]["last_status"]) == (3, 200)
    assert records[urls[1]]["attempts"] == 4 and records[urls[1]]["last_status"] is None
    assert "ConnectionError" in records[urls[1]]["last_error"]
    flaky = [d for d in receiver.at("/flaky") if json.loads(d["raw"])["job"]["id"] == job["id"]]
    assert len(flaky) == 3 and len({d["raw"] for d in flaky}) == 1  # the same signed bytes each time
    assert len({d["headers"]["X-Janitor-Delivery"] for d in flaky}) == 1
    assert verify(flaky[0])["event"] == "job.succeeded"
    assert took < 120


# -- bad token file lines, and the audit log ----------------------------------------------------------------

def test_bad_token_file_lines_are_reported_at_start_and_skipped(registry: Registry, redis_server: str,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    bad_hash = hashlib.sha256(b"secret-of-ghost").hexdigest()
    write_tokens(path, {"bot": ["read", "delete"]}, extra=[
        {"name": "ghost", "token_sha256": bad_hash, "scopes": ["read", "sudo"]},
        {"name": "nohash", "scopes": ["read"]},
        "not a mapping",
    ])
    log_path = tmp_path / "api.log"
    port = free_port()
    env = {**os.environ, "REGISTRY_URL": registry.url, "REGISTRY_CONTAINER": registry.name, "REDIS_URL": redis_server,
           "API_TOKENS_FILE": str(path)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1",
                                 "service:create_app()"], cwd=ROOT, env=env, stderr=log, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        c = Client(f"http://127.0.0.1:{port}")
        assert c.get("/v1/repositories", "bot").status_code == 200
        assert c.get("/v1/repositories", "ghost").status_code == 401
        job = c.post("/v1/gc", "bot").json()
        forbidden(c.post(f"/v1/jobs/{job['id']}/approve", "bot"), "approve")
        assert wait_until(lambda: "janitor.audit" in log_path.read_text(), 10)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
    text = log_path.read_text()
    assert "entry 2 ('ghost'): unknown scope(s) sudo" in text and "entry 3 ('nohash')" in text
    assert "entry 4: not a mapping" in text and text.count("skipped") >= 3
    assert "1 token(s) loaded: bot" in text
    audit = [json.loads(line.split("janitor.audit: ", 1)[1]) for line in text.splitlines() if "janitor.audit: " in line]
    assert {"who": "bot", "what": "POST /v1/gc", "job_id": job["id"], "status": 202, "outcome": "queued"}.items() \
        <= audit[0].items()
    assert audit[1]["outcome"] == "FORBIDDEN" and audit[1]["job_id"] == job["id"]
    for secret_text in (bad_hash, secret("bot"), hashlib.sha256(secret("bot").encode()).hexdigest(), secret("ghost")):
        assert secret_text not in text
