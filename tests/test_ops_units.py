"""Rules of the operator features, fast: metric figures from job records, their Redis round trip and
exposition, JSON log records with their ids, request ids, and the CLI's rendering and usage errors."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from rich.console import Console

from cli import render
from janitor import logs
from janitor.config.settings import Settings
from janitor.jobs import telemetry
from janitor.jobs.records import Keys
from service.metrics.collect import families
from service.requestlog import request_id_from

CLI = str(Path(sys.executable).parent / "registry-janitor")


def _job(kind: str, status: str, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": f"{kind}-{status}", "kind": kind, "status": status, "steps": steps or []}


GC_STEP = {"name": "gc", "status": "succeeded", "started_at": "2026-01-01T00:00:01Z",
           "finished_at": "2026-01-01T00:00:03Z",
           "outcome": {"duration_seconds": 1.7, "bytes_freed": 12345, "blobs_deleted": 3}}
WINDOW = {"id": "w1", "started_at": "2026-01-01T00:00:00.000Z", "finished_at": "2026-01-01T00:00:12.500Z",
          "write_refused_seconds": 4.25}


def test_a_window_adds_its_jobs_length_refusal_and_gc_once() -> None:
    jobs = [_job("deletion", "succeeded", [GC_STEP]), _job("gc", "succeeded", [GC_STEP]),
            _job("deletion", "failed")]
    obs = {(o.name, o.labels): o.value for o in telemetry.observations(WINDOW, jobs)}
    assert obs[("janitor_jobs", (("kind", "deletion"), ("outcome", "succeeded")))] == 1
    assert obs[("janitor_jobs", (("kind", "deletion"), ("outcome", "failed")))] == 1
    assert obs[("janitor_jobs", (("kind", "gc"), ("outcome", "succeeded")))] == 1
    assert obs[("janitor_windows", (("outcome", "partial"),))] == 1
    assert obs[("janitor_window_duration_seconds", ())] == 12.5
    assert obs[("janitor_write_refused_seconds", ())] == 4.25
    assert obs[("janitor_gc_duration_seconds", ())] == 1.7  # one GC although two jobs carry its step
    assert obs[("janitor_freed_bytes", ())] == 12345 and obs[("janitor_freed_blobs", ())] == 3
    assert sum(1 for o in telemetry.observations(WINDOW, jobs) if o.name == "janitor_gc_runs") == 1


def test_a_dry_run_window_refuses_no_writes_and_runs_no_gc() -> None:
    obs = telemetry.observations({**WINDOW, "write_refused_seconds": None}, [_job("deletion", "succeeded")])
    names = {o.name for o in obs}
    assert "janitor_write_refused_seconds" not in names and "janitor_gc_runs" not in names
    assert ("janitor_windows", (("outcome", "succeeded"),)) in {(o.name, o.labels) for o in obs}
    failed = telemetry.observations(WINDOW, [_job("gc", "failed", [{**GC_STEP, "status": "failed"}])])
    assert {(o.name, o.labels) for o in failed} >= {("janitor_windows", (("outcome", "failed"),)),
                                                   ("janitor_gc_runs", (("outcome", "failed"),))}
    assert "janitor_gc_duration_seconds" not in {o.name for o in failed}


def test_buckets_are_le_and_cumulative() -> None:
    bounds = (1.0, 5.0, telemetry.INF)
    assert telemetry.bucket_of(1.0, bounds) == 1.0 and telemetry.bucket_of(1.01, bounds) == 5.0
    assert telemetry.bucket_of(1e9, bounds) == telemetry.INF
    hist = telemetry.Histogram({1.0: 2, telemetry.INF: 1}, sum=30, count=3)
    assert hist.cumulative(bounds) == [("1.0", 2), ("5.0", 2), ("+Inf", 3)]


def test_figures_round_trip_through_redis_and_render_as_prometheus_text(redis_conn: redis.Redis) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    keys = Keys("127.0.0.1:5999")
    jobs = [_job("deletion", "succeeded", [GC_STEP])]
    telemetry.record(redis_conn, keys, WINDOW, jobs)
    telemetry.record(redis_conn, keys, {**WINDOW, "write_refused_seconds": 100.0}, jobs)
    figures = telemetry.read(redis_conn, keys)

    class Source:
        def collect(self):  # type: ignore[no-untyped-def]
            return families(figures)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Source())  # type: ignore[arg-type]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    assert samples[("janitor_jobs_total", (("kind", "deletion"), ("outcome", "succeeded")))] == 2
    assert samples[("janitor_jobs_total", (("kind", "gc"), ("outcome", "failed")))] == 0  # known, never seen
    assert samples[("janitor_windows_total", (("outcome", "succeeded"),))] == 2
    assert samples[("janitor_freed_bytes_total", ())] == 2 * 12345
    assert samples[("janitor_write_refused_seconds_count", ())] == 2
    assert samples[("janitor_write_refused_seconds_sum", ())] == 104.25
    assert samples[("janitor_write_refused_seconds_bucket", (("le", "5.0"),))] == 1
    assert samples[("janitor_write_refused_seconds_bucket", (("le", "120.0"),))] == 2
    assert samples[("janitor_gc_duration_seconds_bucket", (("le", "2.5"),))] == 2


def test_recording_never_raises_without_redis() -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    telemetry.record(dead, Keys("x"), WINDOW, [_job("gc", "succeeded")])


def _json_lines(fmt_stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in fmt_stream.getvalue().splitlines()]


def test_json_logs_carry_the_ids_that_apply_and_nothing_else() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.ops.json")
    logger.propagate = False
    handler = logs.handler("json", stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("outside")
        with logs.bound(request_id="r-1", job_id="j-1"):
            logger.info("inside %s", "request", extra={"status": 202})
            with logs.bound(window_id="w-1", job_id=None):
                logger.warning("in the window")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    outside, inside, window, failed = _json_lines(stream)
    assert set(outside) == {"time", "level", "logger", "message"} and outside["message"] == "outside"
    assert inside["request_id"] == "r-1" and inside["job_id"] == "j-1" and "window_id" not in inside
    assert inside["message"] == "inside request" and inside["status"] == 202 and inside["level"] == "INFO"
    assert window["window_id"] == "w-1" and "job_id" not in window and window["request_id"] == "r-1"
    assert "request_id" not in failed and "ValueError: boom" in failed["exc_info"]
    assert outside["time"].endswith("Z")


def test_text_logs_show_the_ids_too() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.ops.text")
    logger.propagate = False
    logger.addHandler(logs.handler("text", stream))
    with logs.bound(job_id="j-9"):
        logger.warning("hello")
    assert stream.getvalue().rstrip().endswith("hello job_id=j-9")


def test_request_ids_are_honoured_when_sane_and_made_otherwise() -> None:
    assert request_id_from("abc-123_x.y") == "abc-123_x.y"
    for bad in (None, "", "has space", "x" * 129, "new\nline", "<script>"):
        made = request_id_from(bad)
        assert made != bad and len(made) == 32


def test_log_format_setting() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"LOG_FORMAT": "JSON"}).log_format == "json"
    assert Settings.from_env({"METRICS_TOKEN": "m"}).metrics_token == "m"
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        Settings.from_env({"LOG_FORMAT": "xml"})


def test_sizes_and_plans_for_people() -> None:
    assert render.size(0) == "0 bytes" and render.size(1500) == "1.5 kB" and render.size(None) == "-"
    assert render.size(2_500_000) == "2.5 MB"
    digest = "sha256:" + "ab" * 32
    plan = {"repositories": [{"repository": "team/app", "tags": ["old"], "untagged_only": ["alias"],
                              "manifests": [digest], "tags_by_manifest": {digest: ["old"]},
                              "remove_repository": False}],
            "tags": ["team/app:alias", "team/app:old"], "manifests": [digest], "blobs": ["a", "b"], "bytes": 2048}
    assert render.plan_rows(plan, {digest: 3_000_000}) == [
        ("team/app", "manifest sha256:abababababab", "old", "3.0 MB"),
        ("team/app", "tag only (manifest stays)", "alias", "-")]
    assert render.plan_summary(plan) == "1 manifest and 2 tags to delete; GC will free 2 blobs, 2.0 kB"


def test_job_summary_says_why_a_job_failed() -> None:
    job = {"id": "j1", "status": "failed", "kind": "gc", "window": {"write_refused_seconds": 3.21},
           "error": {"code": "GC_FAILED", "message": "exit 1", "step": "gc"}, "result": {}}
    lines = render.job_summary(job)
    assert lines[0] == "failed in step gc: GC_FAILED: exit 1"
    assert "writes were refused for 3.2s" in lines and lines[-1] == "job j1: failed"


def table_text(table: Any) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_job_lists_mark_dry_runs_and_policy_plans_say_why_tags_stay() -> None:
    jobs = [{"id": "j1", "kind": "deletion", "status": "succeeded", "request": {"repository": "team/app",
                                                                               "dry_run": True}},
            {"id": "j2", "kind": "deletion", "status": "succeeded", "request": {"repository": "team/app"}},
            {"id": "j3", "kind": "policy", "status": "awaiting_approval", "policy": "nightly",
             "request": {"dry_run": False}}]
    lines = {line.split("│")[1].strip(): line for line in table_text(render.jobs_table(jobs)).splitlines()
             if line.count("│") > 2}
    assert "dry run" in lines["j1"] and "dry run" not in lines["j2"] and "dry run" not in lines["j3"]
    assert "policy nightly" in lines["j3"] and "team/app" in lines["j2"]
    assert render.steps_table({**jobs[0], "steps": []}).title == "job j1 (deletion, dry run): succeeded"
    assert render.steps_table({**jobs[1], "steps": []}).title == "job j2 (deletion): succeeded"
    untagged, tagged = "sha256:" + "cd" * 32, "sha256:" + "ef" * 32
    plan = {"repositories": [{"repository": "team/app", "delete": [{"tag": "dev-1", "created": None}],
                              "keep": [{"tag": "v1", "reason": "keep_tags", "reasons": ["keep_tags", "keep_last"]}],
                              "manifests": [tagged, untagged], "tags_by_manifest": {tagged: ["dev-1"]}}],
            "tags": ["team/app:dev-1"], "manifests": [tagged, untagged]}
    text = table_text(render.policy_plan_table(plan))
    assert "keep: keep_tags; keep_last" in text and "(untagged) sha256:cdcdcdcdcdcd" in text
    assert "sha256:efef" not in text and "2 manifests and 1 tag to delete" in text
    text = table_text(render.repositories_table([{"name": "team/app", "tag_count": 3, "size": 2_500_000}]))
    assert "2.5 MB" in text and "Size" in text


@pytest.mark.parametrize("argv", [
    ["delete", "team/app"],
    ["delete", "team/app", "--tag", "a", "--untagged"],
    ["jobs", "--watch"],
    ["jobs", "--status", "bogus"],
    ["jobs", "j1", "--kind", "gc"],
    ["policy", "show"],
    ["policy", "nope", "x"],
    ["approve"],
    ["nope"],
    ["tags"],
])
def test_cli_bad_usage_exits_2_before_any_request(argv: list[str]) -> None:
    # JANITOR_URL points nowhere: a usage error must come before any request.
    out = subprocess.run([CLI, *argv], capture_output=True, text=True, timeout=60,
                         env={"JANITOR_URL": "http://127.0.0.1:1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2, out
    assert "Usage" in out.stderr or "Error" in out.stderr


def test_cli_unreachable_api_exits_1_and_says_where() -> None:
    out = subprocess.run([CLI, "--url", "http://127.0.0.1:1", "repos"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "cannot reach the janitor at http://127.0.0.1:1" in out.stderr


def test_route_labels_are_rules_not_paths() -> None:
    from flask import Flask

    from service.metrics.collect import route_label

    app = Flask(__name__)
    app.add_url_rule("/v1/jobs/<string:job_id>", "job", lambda job_id: "")
    app.add_url_rule("/v1/repositories/<path:name>/tags", "tags", lambda name: "")
    with app.test_request_context("/v1/jobs/abc123"):
        app.preprocess_request()
        assert route_label() == "/v1/jobs/{job_id}"
    with app.test_request_context("/v1/repositories/team/app/tags"):
        assert route_label() == "/v1/repositories/{name}/tags"
    with app.test_request_context("/nothing/here"):
        assert route_label() == "unmatched"


def test_metrics_answer_without_redis_and_keep_their_token() -> None:
    from service import create_app

    dead = "http://127.0.0.1:1"
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", registry_url=dead, metrics_token="m-t",
                              api_tokens=("api-t",)))
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    refused = client.get("/metrics", headers={"Authorization": "Bearer api-t"})
    assert refused.status_code == 401 and refused.json["code"] == "UNAUTHORIZED"
    ok = client.get("/metrics", headers={"Authorization": "Bearer m-t", "X-Request-ID": "scrape-1"})
    assert ok.status_code == 200 and ok.headers["X-Request-ID"] == "scrape-1"
    text = ok.get_data(as_text=True)
    assert "janitor_redis_up 0.0" in text and "janitor_registry_up 0.0" in text
    assert 'janitor_http_requests_total{method="GET",route="/metrics",status="401"}' in text
