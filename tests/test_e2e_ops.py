"""Operators' tools on the real stack: /metrics after real windows (worker figures visible through the
API under gunicorn with two workers), JSON logs with request ids, and the `registry-janitor` CLI run as a
person runs it (a subprocess, the confirmation answered on stdin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests import images
from tests.conftest import ROOT, Registry, Stack, free_port, wait_http
from tests.images import wait_until

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).parent / "registry-janitor")
METRICS_TOKEN = "metrics-secret"


@pytest.fixture
def logged_stack(registry: Registry, redis_server: str, redis_conn: redis.Redis,
                 tmp_path: Path) -> Iterator[tuple[Stack, Path, Path]]:
    """The stack as conftest.start_stack runs it, with JSON logs kept in files and METRICS_TOKEN set."""
    port = free_port()
    env = {**os.environ, "REGISTRY_URL": registry.url, "REGISTRY_CONTAINER": registry.name, "REDIS_URL": redis_server,
           "API_TOKENS": "test-token", "JANITOR_LOCK_TTL": "6", "LOG_FORMAT": "json", "METRICS_TOKEN": METRICS_TOKEN}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn.conf.py makes a private one
    stack = Stack(f"http://127.0.0.1:{port}", registry, redis_conn, env)
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with api_log.open("wb") as api_err, worker_log.open("wb") as worker_err:
        stack.procs["api"] = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2", "--threads", "4",
             "service:create_app()"], cwd=ROOT, env=env, start_new_session=True, stderr=api_err)
        stack.procs["worker"] = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env,
                                                 start_new_session=True, stderr=worker_err)
    try:
        wait_http(f"{stack.api}/healthz")
        yield stack, api_log, worker_log
    finally:
        stack.kill()


def scrape(stack: Stack, token: str | None = METRICS_TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = requests.get(f"{stack.api}/metrics", timeout=30,
                        headers={"Authorization": f"Bearer {token}"} if token else {})
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(resp.text) for s in fam.samples}


def cli(stack: Stack, *argv: str, stdin: str = "", timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JANITOR_URL": stack.api, "JANITOR_TOKEN": stack.token, "COLUMNS": "200"}
    return subprocess.run([CLI, *argv], input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


def cli_on_terminal(stack: Stack, *argv: str, timeout: float = 180) -> tuple[int, str]:
    """The CLI on a pseudo-terminal, as a person sees it (live progress instead of lines)."""
    import pty
    import select

    env = {**os.environ, "JANITOR_URL": stack.api, "JANITOR_TOKEN": stack.token, "COLUMNS": "120", "TERM": "xterm"}
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([CLI, *argv], stdin=secondary, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                data = os.read(primary, 65536)
            except OSError:  # the terminal closed: the CLI is done
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(primary)
    return proc.wait(30), b"".join(chunks).decode(errors="replace")


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(p, dict) and {"time", "level", "logger", "message"} <= p.keys() for p in parsed)
    return parsed


def test_cli_metrics_and_logs_follow_real_windows(logged_stack: tuple[Stack, Path, Path]) -> None:
    stack, api_log, worker_log = logged_stack
    p = stack.pusher()
    doomed, keeper = images.image(layers=2, layer_size=300_000), images.image()
    p.image("team/app", doomed, "old")
    p.image("team/app", keeper, "current")

    # -- /metrics is protected by METRICS_TOKEN (and an API token is not it) ----------------------------------
    for headers in ({}, {"Authorization": "Bearer test-token"}):
        refused = requests.get(f"{stack.api}/metrics", headers=headers, timeout=30)
        assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED", refused.text
    before = scrape(stack)
    assert before[("janitor_registry_up", ())] == 1 and before[("janitor_redis_up", ())] == 1
    assert before[("janitor_jobs_total", (("kind", "deletion"), ("outcome", "succeeded")))] == 0

    # -- the CLI: listing ----------------------------------------------------------------------------------
    out = cli(stack, "repos", "--json")
    assert out.returncode == 0, out
    assert {r["name"]: r["tag_count"] for r in json.loads(out.stdout)} == {"team/app": 2}
    out = cli(stack, "tags", "team/app")
    assert out.returncode == 0 and "old" in out.stdout and "current" in out.stdout and "kB" in out.stdout, out

    # -- delete: the plan, a "no", then a "yes" followed step by step ------------------------------------------
    out = cli(stack, "delete", "team/app", "--tag", "old", stdin="n\n")
    assert out.returncode == 1, out
    assert "old" in out.stderr and "manifest" in out.stderr and "GC will free 4 blobs" in out.stderr, out.stderr
    assert "nothing was deleted" in out.stderr
    assert images.head_manifest(stack.registry.url, "team/app", "old") == 200

    out = cli(stack, "delete", "team/app", "--tag", "old", stdin="y\n")
    assert out.returncode == 0, out
    assert "Delete this from the registry" in out.stderr
    for step in ("preflight", "delete", "fence", "gc", "restart", "verify"):
        assert f"✓ {step}" in out.stderr, out.stderr
    assert "manifests deleted: 1, tags removed: 1" in out.stdout and "GC freed 4 blobs" in out.stdout, out.stdout
    assert images.head_manifest(stack.registry.url, "team/app", "old") == 404
    assert images.head_manifest(stack.registry.url, "team/app", "current") == 200
    job_id = out.stdout.strip().splitlines()[-1].split()[1].rstrip(":")

    out = cli(stack, "jobs", job_id, "--json")
    assert out.returncode == 0, out
    job = json.loads(out.stdout)
    assert job["status"] == "succeeded" and job["result"]["manifests_deleted"] == [doomed.digest]

    # -- exit codes: unknown tag 1, request the API calls invalid 2, dry run 0 ---------------------------------
    out = cli(stack, "delete", "team/app", "--tag", "nope", "--dry-run")
    assert out.returncode == 1 and "TAG_UNKNOWN" in out.stderr, out
    out = cli(stack, "delete", "team/app", "--digest", "sha256:nothex")
    assert out.returncode == 2 and "INVALID_REQUEST" in out.stderr, out
    out = cli(stack, "delete", "team/app", "--tag", "current", "--dry-run", "--json")
    assert out.returncode == 0, out
    assert json.loads(out.stdout)["result"]["plan"]["tags"] == ["team/app:current"]

    # -- gc through the CLI while /metrics is watched: read-only shows while the registry is fenced ------------
    seen_read_only = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if scrape(stack).get(("janitor_registry_read_only", ())) == 1:
                seen_read_only.set()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out = cli(stack, "gc", "--json")
    stop.set()
    watcher.join(30)
    assert out.returncode == 0, out
    gc_job = json.loads(out.stdout)
    assert gc_job["status"] == "succeeded"
    assert seen_read_only.is_set(), "janitor_registry_read_only never showed 1 during the GC window"

    # -- on a terminal: live step table, then the summary -----------------------------------------------------
    code, screen = cli_on_terminal(stack, "gc")
    assert code == 0, screen
    assert "restart" in screen and "verify" in screen and "succeeded" in screen and "writes were refused" in screen

    # -- the worker's figures, seen the same in every scrape (whichever gunicorn worker answers) -------------
    dry_runs, real = 3, 1  # "no" preview, "yes" preview, --dry-run of current (the TAG_UNKNOWN one was refused)
    # A heartbeat that caught the last window's restart says "not running" until the next look, a second later.
    assert images.wait_until(lambda: scrape(stack).get(("janitor_worker_up", ())) == 1, 15), scrape(stack)
    scrapes = [scrape(stack) for _ in range(8)]
    for m in scrapes:
        assert m[("janitor_jobs_total", (("kind", "deletion"), ("outcome", "succeeded")))] == dry_runs + real
        assert m[("janitor_jobs_total", (("kind", "gc"), ("outcome", "succeeded")))] == 2
        assert m[("janitor_windows_total", (("outcome", "succeeded"),))] == dry_runs + real + 2
        assert m[("janitor_gc_runs_total", (("outcome", "succeeded"),))] == 3
        assert m[("janitor_write_refused_seconds_count", ())] == 3
        assert m[("janitor_write_refused_seconds_sum", ())] > (
            job["window"]["write_refused_seconds"] + gc_job["window"]["write_refused_seconds"])
        assert m[("janitor_gc_duration_seconds_count", ())] == 3
        assert m[("janitor_window_duration_seconds_count", ())] == dry_runs + real + 2
        assert m[("janitor_freed_bytes_total", ())] == job["result"]["bytes_freed"] + gc_job["result"]["bytes_freed"]
        assert job["result"]["bytes_freed"] > 600_000
        assert m[("janitor_queue_depth", ())] == 0 and m[("janitor_registry_read_only", ())] == 0
        assert m[("janitor_worker_up", ())] == 1
        # HTTP figures of both gunicorn workers, summed: POSTs to /v1/deletions the CLI made, by status.
        assert m[("janitor_http_requests_total", (("method", "POST"), ("route", "/v1/deletions"),
                                                  ("status", "202")))] == dry_runs + real
        assert m[("janitor_http_requests_total", (("method", "POST"), ("route", "/v1/deletions"),
                                                  ("status", "422")))] == 1
        assert m[("janitor_http_request_duration_seconds_count", (("method", "GET"),
                                                                   ("route", "/v1/jobs/{job_id}")))] > 0
    assert len({m[("janitor_http_requests_total", (("method", "GET"), ("route", "/metrics"), ("status", "200")))]
                for m in scrapes}) == len(scrapes)  # each scrape counts itself: strictly rising, never per-worker

    # -- logs: one JSON object per line; request ids honoured and returned; job and window ids ---------------
    resp = requests.post(f"{stack.api}/v1/gc", json={}, timeout=30,
                         headers={**stack.headers, "X-Request-ID": "bot-run-42"})
    assert resp.status_code == 202 and resp.headers["X-Request-ID"] == "bot-run-42"
    traced = stack.wait(resp.json()["id"])
    made = requests.get(f"{stack.api}/healthz", headers={"X-Request-ID": "bad id with spaces"}, timeout=30)
    assert made.headers["X-Request-ID"] != "bad id with spaces" and len(made.headers["X-Request-ID"]) == 32

    def api_line() -> dict[str, Any] | None:
        return next((r for r in json_lines(api_log) if r.get("request_id") == "bot-run-42"), None)
    line = wait_until(api_line, 10)
    assert line and line["job_id"] == traced["id"] and line["status"] == 202 and line["path"] == "/v1/gc", line
    api_records = json_lines(api_log)
    assert any(r["logger"].startswith("gunicorn.error") for r in api_records)  # gunicorn's own lines too
    assert any(r.get("request_id") == made.headers["X-Request-ID"] for r in api_records)
    worker_records = json_lines(worker_log)
    in_window = [r for r in worker_records if r.get("window_id") == traced["window"]["id"]]
    assert in_window, worker_records[-20:]
    assert all(r.get("job_id") == traced["id"] for r in in_window if "job_id" in r)
    assert any(r.get("job_id") == traced["id"] for r in in_window)
