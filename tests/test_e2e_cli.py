"""The `registry-janitor` CLI for the jobs a person does by hand, on the real stack, run as a subprocess the way
a person or a script runs it: repository sizes, retention policies (list, show, preview, run), approvals
(list, approve, reject), the job list filtered with dry runs marked, and the [y/N] question without a
terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from cli import render
from tests import images
from tests.conftest import Registry, Stack
from tests.images import wait_until

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).parent / "registry-janitor")
POLICY = {"name": "dev-cleanup", "repositories": ["team/*"], "delete_tags": "^dev-"}


def cli(stack: Stack, *argv: str, stdin: str = "", token: str = "test-token",
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """stdin is a pipe, never a terminal: an empty one is what a script or CI gives the CLI."""
    env = {**os.environ, "JANITOR_URL": stack.api, "JANITOR_TOKEN": token, "COLUMNS": "250"}
    return subprocess.run([CLI, *argv], input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


def cli_json(stack: Stack, *argv: str, token: str = "test-token") -> Any:
    out = cli(stack, *argv, "--json", token=token)
    assert out.returncode == 0, out
    return json.loads(out.stdout)


def tags_of(registry: Registry, repo: str) -> set[str]:
    resp = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=30)
    return set(resp.json().get("tags") or []) if resp.status_code == 200 else set()


def push_fixture(stack: Stack) -> None:
    """team/app: two dev tags the policy deletes and `stable` it keeps; tools/ci: one larger image."""
    p = stack.pusher()
    for tag in ("dev-1", "dev-2", "stable"):
        p.image("team/app", images.image(layers=1, layer_size=2048), tag)
    p.image("tools/ci", images.image(layers=2, layer_size=200_000), "latest")


def awaiting(stack: Stack, job_id: str) -> dict[str, Any] | None:
    """The job as `registry-janitor approvals --json` lists it, once its window has planned it."""
    return next((j for j in cli_json(stack, "approvals") if j["id"] == job_id), None)


def test_repos_policies_and_approvals_through_the_cli(registry: Registry, make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(registry, JANITOR_REQUIRE_APPROVAL="true")
    push_fixture(stack)

    # -- repos: sizes as the API counts them, largest first on request -----------------------------------------
    listed = cli_json(stack, "repos")
    api = {r["name"]: r for r in stack.get("/v1/repositories").json()["items"]}
    assert {r["name"]: (r["tag_count"], r["size"]) for r in listed} == {
        n: (r["tag_count"], r["size"]) for n, r in api.items()}
    assert api["tools/ci"]["size"] > 400_000 > api["team/app"]["size"] > 6_000
    out = cli(stack, "repos", "--sort", "size")
    assert out.returncode == 0, out
    assert "Size" in out.stdout and render.size(api["tools/ci"]["size"]) in out.stdout
    assert render.size(api["team/app"]["size"]) in out.stdout
    assert out.stdout.index("tools/ci") < out.stdout.index("team/app"), out.stdout

    # -- policies: list, show, a missing one -------------------------------------------------------------------
    assert stack.post("/v1/policies", POLICY).status_code == 201
    out = cli(stack, "policies")
    assert out.returncode == 0 and "dev-cleanup" in out.stdout and "team/*" in out.stdout, out
    assert "on demand" in out.stdout
    out = cli(stack, "policy", "show", "dev-cleanup")
    assert out.returncode == 0 and "^dev-" in out.stdout and "delete_tags" in out.stdout, out
    assert cli_json(stack, "policy", "show", "dev-cleanup")["repositories"] == ["team/*"]
    out = cli(stack, "policy", "show", "nope")
    assert out.returncode == 1 and "(404)" in out.stderr, out

    # -- preview: every tag, deleted or kept and why; nothing changes ------------------------------------------
    out = cli(stack, "policy", "preview", "dev-cleanup")
    assert out.returncode == 0, out
    rows = {line.split("│")[2].strip(): line for line in out.stdout.splitlines() if line.count("│") >= 4}
    assert "delete" in rows["dev-1"] and "delete" in rows["dev-2"], out.stdout
    assert "keep: not_matched" in rows["stable"], out.stdout
    assert "2 manifests and 2 tags to delete" in out.stdout and "nothing was changed" in out.stdout
    assert tags_of(registry, "team/app") == {"dev-1", "dev-2", "stable"}

    # -- run without a terminal: the question cannot be answered, and the CLI says how to confirm -------------
    out = cli(stack, "policy", "run", "dev-cleanup")
    assert out.returncode == 1 and "not a terminal: pass -y to confirm" in out.stderr, out
    assert "aborted" not in out.stderr and "-y/--yes skips this question" in out.stderr
    out = cli(stack, "policy", "run", "dev-cleanup", stdin="n\n")
    assert out.returncode == 1 and "nothing was deleted" in out.stderr, out

    # -- a real run under JANITOR_REQUIRE_APPROVAL: queued, planned, listed as awaiting -----------------------
    out = cli(stack, "policy", "run", "dev-cleanup", "-y")
    assert out.returncode == 3 and "needs approval" in out.stdout, out
    run_id = out.stdout.split()[1]
    job = wait_until(lambda: awaiting(stack, run_id), 120, 0.5)
    assert job and job["kind"] == "policy" and job["policy"] == "dev-cleanup", job
    out = cli(stack, "approvals")
    assert out.returncode == 0 and run_id in out.stdout and "2 manifests and 2 tags to delete" in out.stdout, out
    assert "1 job awaiting approval" in out.stdout

    # -- approve: the plan, the question (not answerable without a terminal), then yes from another token ---
    out = cli(stack, "approve", run_id, token="other-token")
    assert out.returncode == 1 and "not a terminal: pass -y to confirm" in out.stderr, out
    assert "dev-1" in out.stderr and awaiting(stack, run_id)
    out = cli(stack, "approve", run_id, stdin="y\n", token="other-token")
    assert out.returncode == 0 and "approved by" in out.stdout, out
    out = cli(stack, "jobs", run_id, "--watch")
    assert out.returncode == 0 and f"job {run_id}: succeeded" in out.stdout, out
    assert tags_of(registry, "team/app") == {"stable"}
    assert cli_json(stack, "approvals") == []
    out = cli(stack, "approve", run_id, "-y", token="other-token")
    assert out.returncode == 1 and "(409)" in out.stderr, out

    # -- a deletion needing approval, rejected: nothing changes ------------------------------------------------
    out = cli(stack, "delete", "team/app", "--tag", "stable")
    assert out.returncode == 1 and "not a terminal: pass -y to confirm" in out.stderr, out
    out = cli(stack, "delete", "team/app", "--tag", "stable", "-y")
    assert out.returncode == 3 and "needs approval" in out.stdout, out
    doomed = out.stdout.split()[1]
    assert wait_until(lambda: awaiting(stack, doomed), 120, 0.5)
    out = cli(stack, "reject", doomed, token="other-token")
    assert out.returncode == 0 and f"job {doomed}: rejected by" in out.stdout, out
    assert tags_of(registry, "team/app") == {"stable"}

    # -- the job list: filtered as the API filters it, dry runs marked ------------------------------------------
    policy_jobs = cli_json(stack, "jobs", "--kind", "policy")
    assert {j["kind"] for j in policy_jobs} == {"policy"} and run_id in {j["id"] for j in policy_jobs}
    dry = [j for j in policy_jobs if j["request"].get("dry_run")]
    assert len(dry) == 3  # the preview, and the plans shown before the unanswered question and the "no"
    out = cli(stack, "jobs", "--kind", "policy")
    assert out.returncode == 0, out
    lines = {j["id"]: next(line for line in out.stdout.splitlines() if j["id"] in line) for j in policy_jobs}
    assert all("dry run" in lines[j["id"]] for j in dry) and "dry run" not in lines[run_id], out.stdout
    assert [j["id"] for j in cli_json(stack, "jobs", "--status", "rejected")] == [doomed]
    deletions = cli_json(stack, "jobs", "--kind", "deletion", "--repository", "team/app")
    assert {j["id"] for j in deletions if not j["request"].get("dry_run")} == {doomed}
    assert len(cli_json(stack, "jobs", "--limit", "1")) == 1
    out = cli(stack, "jobs", "--status", "bogus")
    assert out.returncode == 2, out
    out = cli(stack, "jobs", run_id, "--kind", "gc")
    assert out.returncode == 2 and "do not go with a JOB_ID" in out.stderr, out


def test_policy_run_confirmed_is_followed_to_the_end(registry: Registry, stack: Stack) -> None:
    push_fixture(stack)
    assert stack.post("/v1/policies", POLICY).status_code == 201
    out = cli(stack, "policy", "run", "dev-cleanup", stdin="y\n")
    assert out.returncode == 0, out
    assert "dev-2" in out.stderr and "Run policy dev-cleanup" in out.stderr
    for step in ("preflight", "delete", "gc", "restart", "verify"):
        assert f"✓ {step}" in out.stderr, out.stderr
    assert "manifests deleted: 2, tags removed: 2" in out.stdout, out.stdout
    assert tags_of(registry, "team/app") == {"stable"}

    # A policy that matches nothing any more: the preview says so and no run is asked for.
    before = {j["id"] for j in stack.get("/v1/jobs?kind=policy").json()["items"]}
    out = cli(stack, "policy", "run", "dev-cleanup")
    assert out.returncode == 0 and "nothing to delete" in out.stderr, out
    after = stack.get("/v1/jobs?kind=policy").json()["items"]
    assert [j["request"]["dry_run"] for j in after if j["id"] not in before] == [True]
