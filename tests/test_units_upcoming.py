"""`notify_before` validation, when a warning is due, and its one-line summary and body: pure, in milliseconds."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from janitor import errors
from janitor.planning import policies, upcoming

DUE = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)
GOOD = {"name": "app-builds", "repositories": ["team/*"], "schedule": "0 3 * * *", "notify_before": "24h"}


def problems(body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(errors.InvalidPolicy) as caught:
        policies.validate(body)
    return caught.value.details


@pytest.mark.parametrize("schedule,before", [
    ("0 3 * * *", "24h"), ("0 3 * * *", "30m"), ("0 3 * * 1", "3d"), ("15m", "14m"), ("1h", "59m"),
    ("1d", "23h"), ("2w", "1w"),
])
def test_good_notify_before_is_kept(schedule: str, before: str) -> None:
    policy = policies.validate({**GOOD, "schedule": schedule, "notify_before": before})
    assert policy["notify_before"] == before and policy["schedule"] == schedule


def test_no_notify_before_is_null() -> None:
    assert policies.validate({"name": "a", "repositories": ["x"]})["notify_before"] is None
    assert policies.validate({**GOOD, "notify_before": None})["notify_before"] is None


@pytest.mark.parametrize("change,words", [
    ({"notify_before": "24"}, "a duration is a whole number"),
    ({"notify_before": "0h"}, "a duration is a whole number"),
    ({"notify_before": "-1h"}, "a duration is a whole number"),
    ({"notify_before": "1.5h"}, "a duration is a whole number"),
    ({"notify_before": ""}, "a duration is a whole number"),
    ({"notify_before": "5300w"}, "at most 100 years"),
    ({"notify_before": 3600}, "must be a string"),
    ({"notify_before": False}, "must be a string"),
    ({"notify_before": {"hours": 24}}, "must be a string"),
    ({"schedule": None}, "needs a schedule"),
    ({"schedule": "1h", "notify_before": "1h"}, "shorter than the schedule's interval (1h)"),
    ({"schedule": "15m", "notify_before": "1d"}, "shorter than the schedule's interval (15m)"),
])
def test_bad_notify_before_names_the_field_and_why(change: dict[str, Any], words: str) -> None:
    found = problems({**GOOD, **change})
    assert list(found) == ["notify_before"] and words in " ".join(found["notify_before"]), found


def test_notify_before_without_any_schedule_field_needs_one() -> None:
    body = {k: v for k, v in GOOD.items() if k != "schedule"}
    assert "needs a schedule" in problems(body)["notify_before"][0]


def test_a_bad_schedule_is_reported_alone_not_again_as_notify_before() -> None:
    assert list(problems({**GOOD, "schedule": "every night"})) == ["schedule"]


def test_policies_file_refuses_notify_before_without_schedule(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text("policies:\n  - name: nightly\n    repositories: ['team/*']\n    notify_before: 24h\n")
    with pytest.raises(errors.InvalidPolicy) as caught:
        policies.load_file(str(path))
    assert caught.value.details["index"] == 0 and "needs a schedule" in caught.value.details["notify_before"][0]
    path.write_text("- {name: nightly, repositories: ['team/*'], schedule: '0 3 * * *', notify_before: 2h}\n")
    assert policies.load_file(str(path))["nightly"]["notify_before"] == "2h"


def test_the_warning_is_due_notify_before_ahead_and_named_once_per_due_time() -> None:
    assert upcoming.warn_at(DUE, "24h") == DUE - timedelta(hours=24)
    assert upcoming.warn_at(DUE, "90m") == DUE - timedelta(minutes=90)
    one = upcoming.job_id("reg.example:5000", "app-builds", DUE)
    assert one == upcoming.job_id("reg.example:5000", "app-builds", DUE)
    assert one != upcoming.job_id("reg.example:5000", "app-builds", DUE + timedelta(days=1))
    assert one != upcoming.job_id("other", "app-builds", DUE) and ":" not in one


@pytest.mark.parametrize("seconds,shown", [
    (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"), (5400, "90m"), (7200, "2h"), (86400, "24h"),
    (86400 - 4, "24h"), (86400 + 30, "24h"), (2 * 86400, "48h"), (3 * 86400, "3d"), (-10, "0s"),
])
def test_time_left_reads_as_a_person_would_say_it(seconds: int, shown: str) -> None:
    assert upcoming.time_left(timedelta(seconds=seconds)) == shown


def plan(tags: int, manifests: int, size: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"repositories": [], "tags": [f"team/app:build-{i}" for i in range(tags)],
                           "manifests": [f"sha256:{i:064x}" for i in range(manifests)]}
    if size is not None:
        out["bytes"] = size
    return out


@pytest.mark.parametrize("found,line", [
    (plan(12, 9, 3_400_000_000),
     "policy app-builds will delete 12 tags (9 manifests, 3.4 GB) in 24h at 2026-12-07T03:00Z"),
    (plan(1, 1, 999), "policy app-builds will delete 1 tag (1 manifest, 999 B) in 24h at 2026-12-07T03:00Z"),
    (plan(2, 0, 0), "policy app-builds will delete 2 tags (0 B) in 24h at 2026-12-07T03:00Z"),
    (plan(3, 2), "policy app-builds will delete 3 tags (2 manifests) in 24h at 2026-12-07T03:00Z"),
    (plan(0, 4, 2_000_000), "policy app-builds will delete 4 manifests (2.0 MB) in 24h at 2026-12-07T03:00Z"),
    (plan(0, 0, 0), "policy app-builds runs in 24h at 2026-12-07T03:00Z and would delete nothing now"),
])
def test_summary_is_one_line_with_what_goes_and_when(found: dict[str, Any], line: str) -> None:
    assert upcoming.summary("app-builds", DUE, DUE - timedelta(hours=24), found) == line


def test_summary_when_the_plan_could_not_be_read_says_why_on_one_line() -> None:
    line = upcoming.summary("app-builds", DUE + timedelta(seconds=7), DUE, None,
                            {"code": "REGISTRY_UNAVAILABLE", "message": "registry\nunreachable " + "x" * 300})
    assert line.startswith("policy app-builds runs in 7s at 2026-12-07T03:00:07Z; its plan could not be read now: "
                           "REGISTRY_UNAVAILABLE: registry unreachable x")
    assert "\n" not in line and line.endswith("…") and len(line) < 320


def test_body_carries_the_plan_due_time_and_summary() -> None:
    policy = policies.validate(GOOD)
    found = plan(2, 2, 1000)
    raw = upcoming.body("default", policy, DUE, found, "the line")
    body = json.loads(raw)
    assert body["event"] == "policy.upcoming" and body["policy"] == "app-builds" and body["registry"] == "default"
    assert body["due_at"] == "2026-12-07T03:00:00Z" and body["notify_before"] == "24h"
    assert body["plan"] == found and body["summary"] == "the line" and body["error"] is None
    assert body["definition"] == policy
    assert raw == json.dumps(body, sort_keys=True)  # fixed bytes: every retry sends and signs the same
