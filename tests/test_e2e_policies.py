"""Retention policies on the real stack: the tags that survive, dry runs that match real runs, globs over
nested repositories, schedules fired by RQ from the worker, and bad input refused with nothing stored."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from janitor.registry.manifests import OCI_INDEX, OCI_MANIFEST, sha256_digest
from tests import images
from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.e2e


def ago(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


def artifact() -> images.Image:
    """An OCI artifact whose config is not an image config: it has no creation time."""
    config = json.dumps({"kind": "sbom", "nonce": os.urandom(8).hex()}).encode()
    blob = os.urandom(512)
    img = images.Image(OCI_MANIFEST, config, [blob])
    img.manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.example.sbom.config+json", "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.example.sbom.layer", "digest": sha256_digest(blob),
                    "size": len(blob)}],
    }).encode()
    return img


def populate(p: images.Pusher, repo: str, now: datetime) -> dict[str, str]:
    """33 tags of distinct creation times: build-01 (28 days old) .. build-28 (1 day), `latest` sharing
    build-28's manifest, v1.0.0 (40 days) and v1.1.0 (3.5 days), an index `multi` whose children are 50 and
    2.5 days old, an artifact `sbom` with no creation time, and one untagged image (60 days)."""
    digests: dict[str, str] = {}
    hour = timedelta(hours=1)
    for i in range(1, 29):
        img = images.image(layers=1, layer_size=512, created=ago(now, 29 - i) - hour)
        digests[f"build-{i:02d}"] = p.image(repo, img, f"build-{i:02d}")
        if i == 28:
            digests["latest"] = p.image(repo, img, "latest")
    for tag, days in (("v1.0.0", 40), ("v1.1.0", 3.5)):
        digests[tag] = p.image(repo, images.image(layers=1, layer_size=512, created=ago(now, days)), tag)
    children = [images.image(OCI_MANIFEST, layers=1, layer_size=512, platform=("linux", arch), created=ago(now, d))
                for arch, d in (("amd64", 50), ("arm64", 2.5))]
    digests["multi"] = p.index(repo, images.index(children, OCI_INDEX), "multi")
    digests["sbom"] = p.image(repo, artifact(), "sbom")
    digests["@untagged"] = p.image(repo, images.image(layers=1, layer_size=512, created=ago(now, 60)), None)
    return digests


BUILDS = [f"build-{i:02d}" for i in range(1, 29)]
ALL_TAGS = {*BUILDS, "latest", "v1.0.0", "v1.1.0", "multi", "sbom"}

# Each rule alone, then all together: the policy and exactly the tags it leaves.
CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "keep-last": ({"keep_last": 5}, {"build-28", "latest", "build-27", "multi", "build-26", "sbom"}),
    "older-than": ({"older_than": "10d"}, ALL_TAGS - {f"build-{i:02d}" for i in range(1, 20)} - {"v1.0.0"}),
    "delete-tags": ({"delete_tags": "^build-0"}, ALL_TAGS - {f"build-0{i}" for i in range(1, 10)}),
    "keep-tags": ({"keep_tags": r"^(latest|v\d+\.\d+\.\d+)$"}, {"latest", "v1.0.0", "v1.1.0", "sbom"}),
    "combined": ({"delete_tags": "^(build|v)", "keep_tags": r"^v1\.1\.", "keep_last": 8, "older_than": "5d",
                  "untagged": True},
                 ALL_TAGS - {f"build-{i:02d}" for i in range(1, 24)} - {"v1.0.0"}),
}


def registry_tags(stack: Stack, repo: str) -> set[str]:
    resp = requests.get(f"{stack.registry.url}/v2/{repo}/tags/list", timeout=30)
    return set(resp.json().get("tags") or []) if resp.status_code == 200 else set()


def run(stack: Stack, name: str, dry_run: bool) -> dict[str, Any]:
    resp = stack.post(f"/v1/policies/{name}/runs", {"dry_run": dry_run})
    assert resp.status_code == 202, resp.text
    assert resp.headers["Location"].endswith(f"/v1/jobs/{resp.json()['id']}")
    return resp.json()


def create(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    resp = stack.post("/v1/policies", body)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"].endswith(f"/v1/policies/{body['name']}")
    return resp.json()


def test_each_rule_alone_then_combined_leaves_exactly_the_expected_tags(
        registry, make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(registry, JANITOR_UNTAGGED_MIN_AGE="0")  # the untagged image was pushed a moment ago
    now = datetime.now(timezone.utc)
    with ThreadPoolExecutor(len(CASES)) as pool:  # a pusher (one HTTP session) per repository
        digests = dict(zip(CASES, pool.map(lambda name: populate(stack.pusher(), f"ret/{name}", now), CASES)))
    for name, (rules, _) in CASES.items():
        create(stack, {"name": name, "repositories": [f"ret/{name}"], **rules})

    dry = {name: run(stack, name, True) for name in CASES}
    dry = {name: stack.wait(job["id"]) for name, job in dry.items()}
    for name, job in dry.items():
        assert job["status"] == "succeeded", job
        assert job["kind"] == "policy" and job["policy"] == name
        assert registry_tags(stack, f"ret/{name}") == ALL_TAGS  # a dry run changes nothing
    # The preview says why each tag stays, and that a tag with no creation time is never deleted.
    [repo_plan] = dry["keep-last"]["result"]["plan"]["repositories"]
    reasons = {k["tag"]: k["reason"] for k in repo_plan["keep"]}
    assert reasons == {"build-28": "keep_last", "latest": "keep_last", "build-27": "keep_last", "multi": "keep_last",
                       "build-26": "keep_last", "sbom": "no_creation_time"}
    [combined_plan] = dry["combined"]["result"]["plan"]["repositories"]
    reasons = {k["tag"]: k["reason"] for k in combined_plan["keep"]}
    assert reasons["v1.1.0"] == "keep_tags" and reasons["latest"] == "not_matched"
    assert reasons["build-24"] == "keep_last" and reasons["sbom"] == "not_matched"
    assert {k["tag"]: k["created"] for k in combined_plan["keep"]}["sbom"] is None
    assert digests["combined"]["@untagged"] in combined_plan["manifests"]

    real = {name: run(stack, name, False) for name in CASES}
    real = {name: stack.wait(job["id"], 240) for name, job in real.items()}
    for name, (_, expected) in CASES.items():
        job, plan = real[name], dry[name]["result"]["plan"]
        assert job["status"] == "succeeded", job
        assert registry_tags(stack, f"ret/{name}") == expected, name
        for tag in expected:
            assert images.pull_verified(stack.registry.url, f"ret/{name}", tag) == [], (name, tag)
        # The dry run's plan is what the real run did, and GC ran for it.
        assert job["result"]["tags_removed"] == plan["tags"], name
        assert sorted(job["result"]["manifests_deleted"]) == sorted(plan["manifests"]), name
        assert sorted(t.split(":", 1)[1] for t in plan["tags"]) == sorted(ALL_TAGS - expected), name
        assert job["result"]["planned"]["bytes"] == plan["bytes"] > 0
        assert job["result"]["gc"]["blobs_deleted"] >= 1 and job["result"]["bytes_freed"] >= plan["bytes"]
    # `latest` shares build-28's manifest: keep-tags removes the build tag alone, the manifest stays.
    [keep_tags_plan] = real["keep-tags"]["result"]["plan"]["repositories"]
    assert keep_tags_plan["untagged_only"] == ["build-28"]
    assert digests["keep-tags"]["build-28"] not in real["keep-tags"]["result"]["manifests_deleted"]
    assert images.head_manifest(stack.registry.url, "ret/combined", digests["combined"]["@untagged"]) == 404
    assert images.head_manifest(stack.registry.url, "ret/keep-last", digests["keep-last"]["@untagged"]) == 200
    last = stack.get("/v1/policies/combined").json()["last_run"]
    assert last["job_id"] == real["combined"]["id"] and last["status"] == "succeeded"


def test_globs_select_exactly_the_intended_nested_repositories(stack: Stack) -> None:
    p = stack.pusher()
    repos = ["team/app", "team/app/sub", "team/x/app", "tools/ci", "tools/cd", "other/team/app"]
    for repo in repos:
        p.image(repo, images.image(layers=1, layer_size=256), "old")
    cases = {"one-segment": (["team/*", "tools/ci"], ["team/app", "tools/ci"]),
             "any-depth": (["team/**"], ["team/app", "team/app/sub", "team/x/app"]),
             "leaf": (["**/app"], ["other/team/app", "team/app", "team/x/app"])}
    for name, (globs, _) in cases.items():
        create(stack, {"name": name, "repositories": globs})
    jobs = {name: run(stack, name, True) for name in cases}
    for name, (_, expected) in cases.items():
        job = stack.wait(jobs[name]["id"])
        assert job["status"] == "succeeded", job
        assert [r["repository"] for r in job["result"]["plan"]["repositories"]] == expected, name
        assert job["result"]["plan"]["tags"] == sorted(f"{r}:old" for r in expected)

    # Matching nothing: a successful run that changed nothing, done at once without a window.
    create(stack, {"name": "nothing", "repositories": ["nowhere/**"]})
    job = run(stack, "nothing", False)
    assert job["status"] == "succeeded" and job["window"] is None and job["result"]["changed"] is False
    assert stack.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    assert all(registry_tags(stack, r) == {"old"} for r in repos)


def policy_jobs(stack: Stack) -> list[dict[str, Any]]:
    found = []
    for key in stack.redis.scan_iter(match="janitor:*:job:*"):
        raw = stack.redis.get(key)
        if raw:
            job = json.loads(raw)
            if job["kind"] == "policy":
                found.append(job)
    return found


def test_a_short_schedule_fires_once_per_moment_with_two_workers_sharing_one_window(stack: Stack) -> None:
    p = stack.pusher()
    for tag in ("a", "b"):
        p.image("sched/app", images.image(layers=1, layer_size=256), tag)
    second = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=stack.env, start_new_session=True)
    try:
        # Both keep every tag: their runs plan, change nothing, and need no GC.
        for name in ("every-a", "every-b"):
            view = create(stack, {"name": name, "repositories": ["sched/*"], "keep_last": 10, "schedule": "3s"})
            assert view["next_run"] and view["last_run"] is None and view["source"] == "api"

        def fired() -> bool:
            jobs = policy_jobs(stack)
            return sum(j["policy"] == "every-a" and j["status"] == "succeeded" for j in jobs) >= 3
        assert images.wait_until(fired, 90, 0.5), policy_jobs(stack)
        time.sleep(1.5)

        def grouped() -> dict[str, list[dict[str, Any]]]:
            found: dict[str, list[dict[str, Any]]] = {}
            for job in policy_jobs(stack):
                found.setdefault(job["request"]["due"], []).append(job)
            return found

        # The schedule goes on firing every 3 s, and a moment's two jobs are recorded one after the other: a
        # list read in between shows the newest moment with one of them. Read until no moment is half-recorded.
        def settled() -> dict[str, list[dict[str, Any]]] | None:
            found = grouped()
            return found if all(len(group) == 2 for group in found.values()) else None

        by_due = images.wait_until(settled, 10, 0.3) or grouped()
        jobs = [j for group in by_due.values() for j in group]
        for job in jobs:
            assert job["request"]["trigger"] == "schedule" and job["request"]["dry_run"] is False
        for due, group in by_due.items():
            # Once per policy and moment, however many workers; both policies in the same window.
            assert sorted(j["policy"] for j in group) == ["every-a", "every-b"], (due, group)
            finished = [j for j in group if j["status"] == "succeeded"]
            if len(finished) == 2:
                assert finished[0]["window"]["id"] == finished[1]["window"]["id"], due
                assert all(j["result"]["changed"] is False for j in finished)
                assert all(j["steps"][-1]["name"] == "delete" for j in finished)  # no fence, no GC
        dues = sorted(by_due)
        assert len(dues) >= 3
        view = stack.get("/v1/policies/every-a").json()
        assert view["last_run"]["job_id"] in {j["id"] for j in jobs} and view["next_run"] > dues[-1]

        # Paused: no next run, and no run due after the pause (one due before it may still be on its way).
        paused_at = datetime.now(timezone.utc)
        resp = request(stack, "PUT", "/v1/policies/every-a", json={
            "repositories": ["sched/*"], "keep_last": 10, "schedule": "3s", "enabled": False})
        assert resp.status_code == 200, resp.text
        assert resp.json()["next_run"] is None and resp.json()["enabled"] is False
        paused = sum(j["policy"] == "every-a" for j in policy_jobs(stack))
        time.sleep(7)
        due_times = [datetime.fromisoformat(j["request"]["due"])
                     for j in policy_jobs(stack) if j["policy"] == "every-a"]
        assert len(due_times) <= paused + 1 and all(d <= paused_at for d in due_times), (paused_at, due_times)
        assert sum(j["policy"] == "every-b" for j in policy_jobs(stack)) > paused
        assert registry_tags(stack, "sched/app") == {"a", "b"}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(second.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            second.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(second.pid, signal.SIGKILL)


def request(stack: Stack, method: str, path: str, **kw: Any) -> requests.Response:
    headers = {**stack.headers, **kw.pop("headers", {})}
    return requests.request(method, stack.api + path, headers=headers, timeout=30, **kw)


def test_bad_input_is_refused_with_the_error_shape_and_nothing_stored(
        registry, make_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    policies_file = tmp_path / "policies.yaml"
    policies_file.write_text("policies:\n  - name: from-git\n    repositories: ['team/**']\n    keep_last: 3\n")
    stack = make_stack(registry, POLICIES_FILE=str(policies_file))
    good = {"name": "good", "repositories": ["team/*"]}
    bad_bodies: list[tuple[Any, str]] = [
        ({**good, "name": "../etc"}, "name"), ({**good, "name": "a/b"}, "name"), ({**good, "name": "UP"}, "name"),
        ({**good, "name": 7}, "name"), ({"repositories": ["x"]}, "name"),
        ({**good, "repositories": "team/*"}, "repositories"), ({**good, "repositories": []}, "repositories"),
        ({**good, "repositories": ["team/***"]}, "repositories"), ({**good, "repositories": [None]}, "repositories"),
        ({**good, "keep_last": -1}, "keep_last"), ({**good, "keep_last": "5"}, "keep_last"),
        ({**good, "keep_last": 2.5}, "keep_last"), ({**good, "keep_last": True}, "keep_last"),
        ({**good, "older_than": "30"}, "older_than"), ({**good, "older_than": 30}, "older_than"),
        ({**good, "delete_tags": "("}, "delete_tags"), ({**good, "delete_tags": r"(a)\1"}, "delete_tags"),
        ({**good, "keep_tags": "(?=lookahead)"}, "keep_tags"), ({**good, "keep_tags": 1}, "keep_tags"),
        ({**good, "untagged": "yes"}, "untagged"), ({**good, "untagged": 1}, "untagged"),
        ({**good, "schedule": "every night"}, "schedule"), ({**good, "schedule": "0 25 * * *"}, "schedule"),
        ({**good, "enabled": "false"}, "enabled"), ({**good, "surprise": 1}, "surprise"),
    ]
    for body, field in bad_bodies:
        resp = stack.post("/v1/policies", body)
        assert resp.status_code == 422, (body, resp.text)
        error = resp.json()
        assert set(error) == {"code", "message", "status", "details"} and error["status"] == 422
        assert field in error["details"], (body, error)
    for raw in ("[1, 2]", "not json", '"text"'):
        resp = request(stack, "POST", "/v1/policies", data=raw, headers={"Content-Type": "application/json"})
        assert 400 <= resp.status_code < 500 and set(resp.json()) == {"code", "message", "status", "details"}
    # Hostile regular expressions: RE2 answers at once, whatever the pattern.
    for pattern in ("(a+)+$", "(a|aa)+b", "(.*a){20}", "^(([a-z])+.)+[A-Z]([a-z])+$"):
        start = time.monotonic()
        resp = stack.post("/v1/policies", {**good, "name": "hostile", "delete_tags": pattern})
        assert time.monotonic() - start < 5 and resp.status_code == 201, resp.text
        assert request(stack, "DELETE", "/v1/policies/hostile").status_code == 204
    for path in ("/v1/policies/..%2F..%2Fetc", "/v1/policies/a%2Fb", "/v1/policies/UPPER", "/v1/policies/a.b",
                 "/v1/policies/%00", "/v1/policies/..", "/v1/policies/unknown"):
        for method in ("GET", "PUT", "DELETE"):
            resp = request(stack, method, path, json={"repositories": ["x"]})
            assert 400 <= resp.status_code < 500, (method, path, resp.text)
            assert set(resp.json()) == {"code", "message", "status", "details"}, (method, path)
        resp = request(stack, "POST", path + "/runs", json={"dry_run": True})
        assert 400 <= resp.status_code < 500 and set(resp.json()) == {"code", "message", "status", "details"}
    create(stack, good)
    for body in ({}, {"dry_run": "yes"}, {"dry_run": 1}, {"dry_run": True, "extra": 1}, [True]):
        resp = stack.post("/v1/policies/good/runs", body)
        assert resp.status_code == 422, (body, resp.text)
    assert stack.post("/v1/policies", good).status_code == 409  # a second POST of the same name
    assert stack.post("/v1/policies", {**good, "name": "from-git"}).status_code == 409
    resp = request(stack, "PUT", "/v1/policies/good", json={**good, "name": "renamed"})
    assert resp.status_code == 422 and "name" in resp.json()["details"]
    # File policies are listed with their source and are read-only here.
    listed = {p["name"]: p for p in stack.get("/v1/policies").json()["items"]}
    assert listed["from-git"]["source"] == "file" and listed["good"]["source"] == "api"
    assert listed["from-git"]["keep_last"] == 3
    assert request(stack, "PUT", "/v1/policies/from-git", json={"repositories": ["x"]}).status_code == 409
    assert request(stack, "DELETE", "/v1/policies/from-git").status_code == 409
    # Nothing stored but the one good policy; nothing queued.
    assert stack.redis.hkeys(f"janitor:{registry.url.removeprefix('http://')}:policies") == [b"good"]
    assert stack.nothing_queued()
    assert not stack.redis.zcard("rq:scheduled:janitor")
    resp = request(stack, "PUT", "/v1/policies/good", json={"repositories": ["team/**"], "keep_last": 4})
    assert resp.status_code == 200 and resp.json()["keep_last"] == 4 and resp.json()["repositories"] == ["team/**"]
    assert request(stack, "DELETE", "/v1/policies/good").status_code == 204
    assert stack.get("/v1/policies/good").status_code == 404
