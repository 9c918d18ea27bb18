"""Warnings before a scheduled run (`notify_before`), on the real stack: the signed `policy.upcoming` webhook
with the plan and its one-line summary arrives before the run, with no job and no window; a tag a bot puts out
of the policy's reach meanwhile stays, because the run plans again when due; the warning is sent once per due
time; bad `notify_before` values answer 422 in the error shape with nothing stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from janitor.jobs.webhooks import human_bytes
from tests import images
from tests.conftest import Registry, Stack
from tests.images import wait_until
from tests.test_e2e_chatops import SECRET, Client, Receiver, chatops, receiver  # noqa: F401 - fixtures
from tests.test_e2e_chatops import secret as token_of

pytestmark = pytest.mark.e2e
Chatops = Callable[..., tuple[Stack, Client, Any]]
CLI = str(Path(sys.executable).parent / "registry-janitor")
PERIOD = 30  # the policy's interval schedule, in seconds (aligned on the epoch)


def tags_of(registry: Registry, repo: str) -> set[str]:
    resp = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=30)
    return set(resp.json().get("tags") or []) if resp.status_code == 200 else set()


def signed(delivery: dict[str, Any]) -> dict[str, Any]:
    """Signed like every event: HMAC-SHA256 of the raw body with WEBHOOK_SECRET."""
    raw, hdrs = delivery["raw"], delivery["headers"]
    expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hdrs["X-Janitor-Signature-256"], expected)
    body = json.loads(raw)
    assert hdrs["X-Janitor-Event"] == body["event"] and hdrs["X-Janitor-Delivery"]
    return body


def warnings(got: Receiver) -> list[dict[str, Any]]:
    return [signed(d) for d in got.at("/ok") if json.loads(d["raw"])["event"] == "policy.upcoming"]


def test_warning_before_a_scheduled_run_then_the_run_plans_again(
        registry: Registry, chatops: Chatops, receiver: Receiver) -> None:  # noqa: F811
    stack, c, _ = chatops(registry, WEBHOOK_URLS=receiver.url + "/ok")
    p = images.Pusher(registry.url)
    old = datetime.now(timezone.utc) - timedelta(days=3)
    for tag in ("dev-1", "dev-2", "dev-3", "stable"):
        p.image("warn/app", images.image(layers=1, layer_size=4096, created=old), tag)
    policy = {"name": "warn-builds", "repositories": ["warn/*"], "delete_tags": "^dev-",
              "schedule": f"{PERIOD}s", "notify_before": f"{PERIOD - 1}s"}
    # Created just after an interval boundary: the run is due ~28 s later, so its warning is due at once and a
    # bot has time to act before the run.
    assert wait_until(lambda: 1 <= time.time() % PERIOD <= 3, PERIOD + 5, 0.1)
    resp = c.post("/v1/policies", "root", policy)
    assert resp.status_code == 201, resp.text
    view = resp.json()
    assert view["notify_before"] == f"{PERIOD - 1}s" and view["last_upcoming"] is None
    due_at = view["next_run"]
    due = datetime.fromisoformat(due_at.replace("Z", "+00:00"))
    assert timedelta(seconds=20) < due - datetime.now(timezone.utc) <= timedelta(seconds=PERIOD)

    # The warning: the plan as it is now, the due time, one line for chat, no job and no window.
    assert wait_until(lambda: warnings(receiver), 20, 0.2), receiver.received
    [first] = warnings(receiver)
    assert datetime.now(timezone.utc) < due - timedelta(seconds=10), "the warning came too late to act on"
    assert set(first) == {"event", "delivered_at", "registry", "policy", "definition", "due_at", "notify_before",
                          "plan", "error", "summary"}
    assert first["policy"] == "warn-builds" and first["due_at"] == due_at and first["registry"] == "default"
    assert first["notify_before"] == f"{PERIOD - 1}s" and first["error"] is None
    assert first["definition"]["delete_tags"] == "^dev-" and "source" not in first["definition"]
    plan = first["plan"]
    assert plan["tags"] == ["warn/app:dev-1", "warn/app:dev-2", "warn/app:dev-3"]
    assert len(plan["manifests"]) == 3 and plan["bytes"] > 3 * 4096
    [repo] = plan["repositories"]
    assert {k["tag"]: k["reason"] for k in repo["keep"]} == {"stable": "not_matched"}
    short_due = due.strftime("%Y-%m-%dT%H:%M:%SZ" if due.second else "%Y-%m-%dT%H:%MZ")
    assert first["summary"].startswith(f"policy warn-builds will delete 3 tags (3 manifests, "
                                       f"{human_bytes(plan['bytes'])}) in ")
    assert first["summary"].endswith(f"s at {short_due}"), first["summary"]
    assert c.get("/v1/jobs?policy=warn-builds").json()["total"] == 0  # planned with no job and no window
    assert not stack.redis.exists(f"janitor:{registry.url.removeprefix('http://')}:lock")
    assert tags_of(registry, "warn/app") == {"dev-1", "dev-2", "dev-3", "stable"}

    # GET shows the warning and its delivery; the CLI shows notify_before and the warning.
    def delivered() -> dict[str, Any] | None:
        shown = c.get("/v1/policies/warn-builds").json()["last_upcoming"]
        return shown if shown and [w["state"] for w in shown["webhooks"]] == ["delivered"] else None
    shown = wait_until(delivered, 15, 0.2)
    assert shown, c.get("/v1/policies/warn-builds").json()
    assert shown["due_at"] == due_at and shown["summary"] == first["summary"]
    assert shown["webhooks"][0]["event"] == "policy.upcoming" and shown["webhooks"][0]["last_status"] == 200
    out = subprocess.run([CLI, "policy", "show", "warn-builds"], capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "JANITOR_URL": stack.api, "JANITOR_TOKEN": token_of("root"),
                              "COLUMNS": "250"})
    assert out.returncode == 0, out
    assert "notify_before" in out.stdout and f"{PERIOD - 1}s" in out.stdout and "last_warning" in out.stdout
    assert "will delete 3 tags" in out.stdout

    # A bot protects dev-2 after the warning. Replacing the policy reschedules the same due time; its warning
    # was sent already and is not sent again.
    resp = c.call("PUT", "/v1/policies/warn-builds", "root", {**policy, "keep_tags": "^dev-2$"})
    assert resp.status_code == 200 and resp.json()["next_run"] == due_at, resp.text

    # The run plans again when due: dev-2, out of the policy's reach now, stays.
    job = wait_until(lambda: next((j for j in c.get("/v1/jobs?policy=warn-builds").json()["items"]
                                   if j["status"] in ("succeeded", "failed")), None), PERIOD + 90, 0.5)
    assert job and job["status"] == "succeeded", job
    assert job["request"]["trigger"] == "schedule" and job["request"]["due"] == due_at
    assert job["result"]["plan"]["tags"] == ["warn/app:dev-1", "warn/app:dev-3"]
    assert sorted(job["result"]["tags_removed"]) == ["warn/app:dev-1", "warn/app:dev-3"], job["result"]
    assert tags_of(registry, "warn/app") == {"dev-2", "stable"}
    assert [w["due_at"] for w in warnings(receiver)].count(due_at) == 1  # once per due time

    # The next due time has its own warning, planned once that run had ended: nothing left to delete.
    following = wait_until(lambda: next((w for w in warnings(receiver) if w["due_at"] > due_at), None), 20, 0.2)
    assert following, [w["due_at"] for w in warnings(receiver)]
    assert following["plan"]["tags"] == [] and following["plan"]["manifests"] == []
    assert following["summary"].startswith("policy warn-builds runs in ") and \
        following["summary"].endswith("and would delete nothing now"), following["summary"]

    # Disabled: no further warning nor run.
    resp = c.call("PUT", "/v1/policies/warn-builds", "root", {**policy, "keep_tags": "^dev-2$", "enabled": False})
    assert resp.status_code == 200 and resp.json()["next_run"] is None
    sent, runs = len(warnings(receiver)), c.get("/v1/jobs?policy=warn-builds").json()["total"]
    time.sleep(PERIOD + 3)
    assert len(warnings(receiver)) == sent and c.get("/v1/jobs?policy=warn-builds").json()["total"] == runs


def test_bad_notify_before_is_refused_with_the_error_shape_and_nothing_stored(
        registry: Registry, chatops: Chatops) -> None:  # noqa: F811
    stack, c, _ = chatops(registry, worker=False)
    good = {"name": "warned", "repositories": ["team/*"], "schedule": "0 3 * * *", "notify_before": "24h"}
    bad: list[tuple[dict[str, Any], str]] = [
        ({**good, "notify_before": "24"}, "a duration"), ({**good, "notify_before": "0h"}, "a duration"),
        ({**good, "notify_before": "-1h"}, "a duration"), ({**good, "notify_before": 86400}, "must be a string"),
        ({**good, "notify_before": True}, "must be a string"), ({**good, "notify_before": ["24h"]}, "must be a string"),
        ({**good, "notify_before": "101y"}, "a duration"),
        ({k: v for k, v in good.items() if k != "schedule"}, "needs a schedule"),
        ({**good, "schedule": None}, "needs a schedule"),
        ({**good, "schedule": "1h", "notify_before": "1h"}, "shorter than the schedule's interval"),
        ({**good, "schedule": "15m", "notify_before": "2h"}, "shorter than the schedule's interval"),
    ]
    for body, words in bad:
        resp = c.post("/v1/policies", "root", body)
        assert resp.status_code == 422, (body, resp.text)
        error = resp.json()
        assert set(error) == {"code", "message", "status", "details"} and error["status"] == 422
        assert error["code"] == "INVALID_REQUEST" and words in " ".join(error["details"]["notify_before"]), error
    assert stack.nothing_queued() and not stack.redis.keys("janitor:*:policies")
    assert not stack.redis.zcard("rq:scheduled:janitor")

    # A stored policy: a bad replacement changes nothing, a good one clears the warning with the schedule.
    resp = c.post("/v1/policies", "root", {**good, "notify_before": "1h"})
    assert resp.status_code == 201 and resp.json()["notify_before"] == "1h", resp.text
    for body, _ in bad:
        resp = c.call("PUT", "/v1/policies/warned", "root", {k: v for k, v in body.items() if k != "name"})
        assert resp.status_code == 422 and "notify_before" in resp.json()["details"], (body, resp.text)
    assert c.get("/v1/policies/warned").json()["notify_before"] == "1h"
    resp = c.call("PUT", "/v1/policies/warned", "root", {"repositories": ["team/*"]})
    assert resp.status_code == 200 and resp.json()["notify_before"] is None and resp.json()["schedule"] is None
