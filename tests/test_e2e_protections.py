"""Protected tags on the real stack: the rules' CRUD (API and PROTECTIONS_FILE, scopes, bad input in the error
shape) and the CLI; every deletion kind refused with 409 TAG_PROTECTED before anything is queued, untagged
keeping what a protected tag reaches, an admin's override recorded on the job; and inside the window: a rule
added while a deletion and a policy run await approval wins (skipped with reason `protected`, kept with reason
`protected`), as the job and its webhook say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from janitor.registry.manifests import OCI_INDEX, OCI_MANIFEST
from tests import images
from tests.conftest import Registry, Stack
from tests.images import wait_until
from tests.test_e2e_chatops import (  # noqa: F401 - `chatops` and `receiver` are fixtures
    Client,
    Receiver,
    chatops,
    forbidden,
    receiver,
    secret,
    verify,
)

pytestmark = pytest.mark.e2e
Chatops = Callable[..., tuple[Stack, Client, Any]]
CLI = str(Path(sys.executable).parent / "registry-janitor")
RELEASES = {"name": "releases", "repositories": ["**"], "tags": r"^v\d+\.\d+\.\d+$"}
ERROR_SHAPE = {"code", "message", "status", "details"}


def tags_of(registry: Registry, repo: str) -> set[str]:
    resp = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=30)
    return set(resp.json().get("tags") or []) if resp.status_code == 200 else set()


def old_image(days: float) -> images.Image:
    return images.image(layers=1, layer_size=512, created=datetime.now(timezone.utc) - timedelta(days=days))


def cli(stack: Stack, *argv: str, who: str = "root") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JANITOR_URL": stack.api, "JANITOR_TOKEN": secret(who), "COLUMNS": "250"}
    return subprocess.run([CLI, *argv], input="", capture_output=True, text=True, timeout=120, env=env, check=False)


def conflict(resp: requests.Response) -> dict[str, Any]:
    assert resp.status_code == 409, resp.text
    body = resp.json()
    assert set(body) == ERROR_SHAPE and body["code"] == "TAG_PROTECTED" and body["status"] == 409, body
    return body["details"]


def test_rules_through_the_api_the_file_and_the_cli_with_bad_input_refused(
        registry: Registry, chatops: Chatops, tmp_path: Path) -> None:  # noqa: F811
    rules_file = tmp_path / "protections.yaml"
    rules_file.write_text("protections:\n  - name: from-git\n    repositories: ['team/**']\n    tags: '^stable$'\n")
    stack, c, _ = chatops(registry, worker=False, PROTECTIONS_FILE=str(rules_file))

    # Scopes: `read` lists and shows, `admin` changes.
    forbidden(c.post("/v1/protections", "bot", RELEASES), "admin")
    forbidden(c.post("/v1/protections", "alice", RELEASES), "admin")
    forbidden(c.get("/v1/protections", "approve-only"), "read")
    created = c.post("/v1/protections", "root", RELEASES)
    assert created.status_code == 201, created.text
    assert created.headers["Location"].endswith("/v1/protections/releases")
    assert created.json() == {**RELEASES, "source": "api"}
    assert c.get(created.headers["Location"], "reader").json() == {**RELEASES, "source": "api"}
    listed = c.get("/v1/protections", "reader").json()
    assert listed["total"] == 2 and [r["name"] for r in listed["items"]] == ["from-git", "releases"]
    assert listed["items"][0] == {"name": "from-git", "repositories": ["team/**"], "tags": "^stable$",
                                  "source": "file"}
    forbidden(c.call("PUT", "/v1/protections/releases", "bot", RELEASES), "admin")
    forbidden(c.call("DELETE", "/v1/protections/releases", "bot"), "admin")

    # Conflicts: a second rule of a name, and the file's rules are read-only here.
    for name in ("releases", "from-git"):
        again = c.post("/v1/protections", "root", {**RELEASES, "name": name})
        assert again.status_code == 409 and again.json()["code"] == "PROTECTION_EXISTS", again.text
    for method in ("PUT", "DELETE"):
        ro = c.call(method, "/v1/protections/from-git", "root", {"repositories": ["x"], "tags": "x"})
        assert ro.status_code == 409 and ro.json()["code"] == "PROTECTION_READ_ONLY", ro.text

    # Bad input: each field, wrong types, not JSON objects, bad names in the path: 4xx in the error shape.
    bad_bodies: list[tuple[Any, str]] = [
        ({**RELEASES, "name": "UP"}, "name"), ({**RELEASES, "name": "../x"}, "name"), ({**RELEASES, "name": 7}, "name"),
        ({"repositories": ["**"], "tags": "x"}, "name"), ({**RELEASES, "repositories": "**"}, "repositories"),
        ({**RELEASES, "repositories": []}, "repositories"), ({**RELEASES, "repositories": ["a/***"]}, "repositories"),
        ({**RELEASES, "repositories": [3]}, "repositories"), ({"name": "n", "repositories": ["**"]}, "tags"),
        ({**RELEASES, "tags": ""}, "tags"), ({**RELEASES, "tags": ["v"]}, "tags"), ({**RELEASES, "tags": "("}, "tags"),
        ({**RELEASES, "tags": r"(a)\1"}, "tags"), ({**RELEASES, "tags": "(?!x)"}, "tags"),
        ({**RELEASES, "surprise": 1}, "surprise"),
    ]
    for body, field in bad_bodies:
        resp = c.post("/v1/protections", "root", body)
        assert resp.status_code == 422, (body, resp.text)
        assert set(resp.json()) == ERROR_SHAPE and field in resp.json()["details"], (body, resp.json())
    for raw in ("[1]", "nope", '"text"'):
        resp = requests.post(stack.api + "/v1/protections", data=raw, timeout=30, headers={
            "Authorization": f"Bearer {secret('root')}", "Content-Type": "application/json"})
        assert 400 <= resp.status_code < 500 and set(resp.json()) == ERROR_SHAPE, resp.text
    renamed = c.call("PUT", "/v1/protections/releases", "root", {**RELEASES, "name": "other"})
    assert renamed.status_code == 422 and "name" in renamed.json()["details"]
    for path in ("/v1/protections/UPPER", "/v1/protections/a.b", "/v1/protections/..%2Fx", "/v1/protections/unknown"):
        for method in ("GET", "PUT", "DELETE"):
            resp = c.call(method, path, "root", {"repositories": ["x"], "tags": "x"})
            assert 400 <= resp.status_code < 500 and set(resp.json()) == ERROR_SHAPE, (method, path, resp.text)
    assert c.get("/v1/protections/unknown").json()["code"] == "PROTECTION_UNKNOWN"
    key = f"janitor:{registry.url.removeprefix('http://')}:protections"
    assert stack.redis.hkeys(key) == [b"releases"]  # nothing else stored

    replaced = c.call("PUT", "/v1/protections/releases", "root", {"repositories": ["team/*"], "tags": "^v"})
    assert replaced.status_code == 200 and replaced.json() == {"name": "releases", "repositories": ["team/*"],
                                                               "tags": "^v", "source": "api"}
    assert c.call("DELETE", "/v1/protections/releases", "root").status_code == 204
    assert c.get("/v1/protections/releases").status_code == 404

    # The CLI: protect (create, then replace), protections, unprotect; errors on stderr with the code.
    out = cli(stack, "protect", "releases", "--repositories", "team/*", "-r", "tools/**,libs/*", "--tags", "^v")
    assert out.returncode == 0 and "created" in out.stdout, out
    out = cli(stack, "protect", "releases", "-r", "**", "-t", r"^v\d+\.\d+\.\d+$", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {**RELEASES, "source": "api"}, out
    assert c.get("/v1/protections/releases").json()["repositories"] == ["**"]
    out = cli(stack, "protections")
    assert out.returncode == 0 and "releases" in out.stdout and "from-git" in out.stdout and "file" in out.stdout, out
    listed = json.loads(cli(stack, "protections", "--json", who="reader").stdout)
    assert [r["name"] for r in listed] == ["from-git", "releases"]
    out = cli(stack, "protect", "nope", "-r", "**", "-t", "(")
    assert out.returncode == 2 and "INVALID_REQUEST" in out.stderr and "tags" in out.stderr, out
    out = cli(stack, "protect", "x", "-r", "**", "-t", "v", who="bot")
    assert out.returncode == 1 and "FORBIDDEN" in out.stderr, out
    out = cli(stack, "unprotect", "from-git")
    assert out.returncode == 1 and "PROTECTION_READ_ONLY" in out.stderr, out
    out = cli(stack, "unprotect", "releases")
    assert out.returncode == 0 and "removed" in out.stdout, out
    assert stack.redis.hkeys(key) == []
    assert stack.nothing_queued()


def test_every_deletion_kind_is_refused_untagged_keeps_and_an_admin_overrides(
        registry: Registry, chatops: Chatops) -> None:  # noqa: F811
    stack, c, _ = chatops(registry, JANITOR_UNTAGGED_MIN_AGE="0")
    p = images.Pusher(registry.url)
    release, dev = images.image(), images.image()
    p.image("team/app", release, "v1.0.0")
    p.image("team/app", dev, "dev")
    amd, arm = (images.image(OCI_MANIFEST, platform=("linux", a)) for a in ("amd64", "arm64"))
    multi = p.index("team/app", images.index([amd, arm], OCI_INDEX), "v2.0.0")
    loose = p.image("team/app", images.image(), None)
    p.image("other/lib", images.image(), "v3.1.4")
    assert c.post("/v1/protections", "root", RELEASES).status_code == 201
    app_tags = [{"repository": "team/app", "tag": t, "rule": "releases"} for t in ("v1.0.0", "v2.0.0")]

    details = conflict(c.post("/v1/deletions", "bot", {"repository": "team/app", "tags": ["dev", "v1.0.0"]}))
    assert details["tag"] == "v1.0.0" and details["rule"] == "releases" and details["repository"] == "team/app"
    assert details["protected"] == app_tags[:1]
    dry = c.post("/v1/deletions", "bot", {"repository": "team/app", "tags": ["v1.0.0"], "dry_run": True})
    assert conflict(dry)["tag"] == "v1.0.0"  # a dry run is told too
    assert conflict(c.post("/v1/deletions", "bot", {"repository": "team/app", "digests": [release.digest]}))[
        "protected"] == app_tags[:1]
    # A child of the protected index: REFERENCED_BY_INDEX first; forced, the protected tag still refuses it.
    child = c.post("/v1/deletions", "bot", {"repository": "team/app", "digests": [amd.digest]})
    assert child.status_code == 409 and child.json()["code"] == "REFERENCED_BY_INDEX"
    assert conflict(c.post("/v1/deletions", "bot", {"repository": "team/app", "digests": [amd.digest],
                                                     "force": True}))["protected"] == app_tags[1:]
    assert conflict(c.post("/v1/deletions", "bot", {"repository": "team/app", "all_tags": True}))["protected"] == app_tags
    everything = conflict(c.post("/v1/deletions", "root", {"all_repositories": True,
                                                           "confirm": registry.url.removeprefix("http://")}))
    assert everything["protected"] == [{"repository": "other/lib", "tag": "v3.1.4", "rule": "releases"}, *app_tags]
    # override_protection: admin only, a JSON boolean only.
    forbidden(c.post("/v1/deletions", "bot", {"repository": "team/app", "tags": ["v1.0.0"],
                                               "override_protection": True}), "admin")
    for value in ("yes", 1, None, "true"):
        bad = c.post("/v1/deletions", "root", {"repository": "team/app", "tags": ["v1.0.0"],
                                                "override_protection": value})
        assert bad.status_code == 422 and set(bad.json()) == ERROR_SHAPE, (value, bad.text)
        assert "override_protection" in bad.json()["details"], bad.json()
    assert stack.nothing_queued()

    # Untagged takes only the loose image: the protected index and its children stay, pullable.
    untagged = c.submit("bot", {"repository": "team/app", "untagged": True})
    dev_job = c.submit("bot", {"repository": "team/app", "tags": ["dev"]})
    done = c.wait(untagged["id"], "succeeded", "failed")
    assert done["status"] == "succeeded" and done["result"]["manifests_deleted"] == [loose], done
    assert c.wait(dev_job["id"], "succeeded", "failed")["result"]["tags_removed"] == ["team/app:dev"]
    assert images.pull_verified(registry.url, "team/app", "v2.0.0") == []
    assert images.head_manifest(registry.url, "team/app", multi) == 200

    # An admin overrides: the job records it, the tag goes.
    forced = c.submit("root", {"repository": "team/app", "tags": ["v1.0.0"], "override_protection": True})
    assert forced["request"]["override_protection"] is True and forced["requested_by"] == "root"
    done = c.wait(forced["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert done["request"]["override_protection"] is True and done["result"]["override_protection"] is True
    assert done["result"]["tags_removed"] == ["team/app:v1.0.0"] and done["result"]["skipped"] == []
    assert "protection overridden" in done["summary"]
    assert tags_of(registry, "team/app") == {"v2.0.0"} and tags_of(registry, "other/lib") == {"v3.1.4"}


def test_a_rule_added_while_requests_await_approval_wins_in_the_window(
        registry: Registry, chatops: Chatops, receiver: Receiver) -> None:  # noqa: F811
    _, c, _ = chatops(registry, WEBHOOK_URLS=receiver.url + "/ok")
    p = images.Pusher(registry.url)
    for tag, days in (("v1.0.0", 30), ("dev-1", 20), ("latest", 1)):
        p.image("team/app", old_image(days), tag)
    rc, v2 = p.image("team/web", old_image(5), "rc"), p.image("team/web", old_image(6), "v2.0.0")
    assert c.post("/v1/policies", "root", {"name": "old-ones", "repositories": ["team/app"],
                                           "delete_tags": "^(v|dev)"}).status_code == 201

    run = c.post("/v1/policies/old-ones/runs", "bot", {"dry_run": False, "approval": "required"})
    assert run.status_code == 202, run.text
    deletion = c.submit("bot", {"repository": "team/web", "tags": ["rc", "v2.0.0"], "approval": "required"})
    planned_run = c.wait(run.json()["id"], "awaiting_approval", "failed")
    assert planned_run["result"]["plan"]["tags"] == ["team/app:dev-1", "team/app:v1.0.0"], planned_run
    planned = c.wait(deletion["id"], "awaiting_approval", "failed")
    assert planned["result"]["plan"]["tags"] == ["team/web:rc", "team/web:v2.0.0"], planned

    assert c.post("/v1/protections", "root", RELEASES).status_code == 201  # after the plans, before the window
    for job in (run.json(), deletion):
        assert c.post(f"/v1/jobs/{job['id']}/approve", "alice").status_code == 200
    done = c.wait(deletion["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert done["result"]["tags_removed"] == ["team/web:rc"]
    assert done["result"]["skipped"] == [{"repository": "team/web", "digest": v2, "tags": ["v2.0.0"],
                                          "rules": ["releases"], "reason": "protected"}]
    assert done["result"]["manifests_deleted"] == [rc]
    assert tags_of(registry, "team/web") == {"v2.0.0"} and images.pull_verified(registry.url, "team/web", "v2.0.0") == []
    assert "1 kept by protection rules" in done["summary"]

    policy_done = c.wait(run.json()["id"], "succeeded", "failed")
    assert policy_done["status"] == "succeeded", policy_done
    assert policy_done["result"]["tags_removed"] == ["team/app:dev-1"]
    assert tags_of(registry, "team/app") == {"v1.0.0", "latest"}
    [step] = [s for s in policy_done["steps"] if s["name"] == "delete"][-1:]
    [repo_plan] = step["outcome"]["plan"]["repositories"]
    assert {k["tag"]: k["reason"] for k in repo_plan["keep"]} == {"v1.0.0": "protected", "latest": "not_matched"}

    # A dry run of the policy now says so in its plan.
    preview = c.post("/v1/policies/old-ones/runs", "bot", {"dry_run": True}).json()
    [repo_plan] = c.wait(preview["id"], "succeeded", "failed")["result"]["plan"]["repositories"]
    assert {k["tag"]: k["reason"] for k in repo_plan["keep"]} == {"v1.0.0": "protected", "latest": "not_matched"}
    assert [d["tag"] for d in repo_plan["delete"]] == []

    # The webhook says what the job says: the protected manifest skipped, in the summary and the job.
    def delivered() -> list[dict[str, Any]]:
        return [b for d in receiver.at("/ok") if (b := verify(d))["job"]["id"] == deletion["id"]
                and b["event"] == "job.succeeded"]
    assert wait_until(delivered, 60), receiver.events()
    [event] = delivered()
    assert event["summary"] == done["summary"]
    assert event["job"]["result"]["skipped"] == done["result"]["skipped"]
