"""Retention rules, policy validation and schedules: pure functions, proven fast without the stack."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from janitor import errors
from janitor.planning import policies, retention
from janitor.planning.retention import TagInfo

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def kept(decision: retention.Decision) -> dict[str, str]:
    return {t.name: reasons[0] for t, reasons in decision.keep}


def deleted(decision: retention.Decision) -> list[str]:
    return sorted(t.name for t in decision.delete)


@pytest.mark.parametrize("glob,yes,no", [
    ("team/*", ["team/app", "team/x"], ["team/app/sub", "team", "teams/app", "other/team/app"]),
    ("team/**", ["team/app", "team/app/sub", "team/a/b/c"], ["team", "other/team/app"]),
    ("**/app", ["app", "team/app", "a/b/app"], ["team/apps", "team/app/sub"]),
    ("team/**/ci", ["team/ci", "team/x/ci", "team/x/y/ci"], ["team/xci", "ci"]),
    ("tools/ci", ["tools/ci"], ["tools/ci2", "tools/ci/sub", "xtools/ci"]),
    ("*", ["app"], ["team/app"]),
    ("**", ["app", "team/app/sub"], []),
    ("team/app-*", ["team/app-1"], ["team/app", "team/app-1/x"]),
    ("a.b/*", ["a.b/x"], ["axb/x"]),
])
def test_globs_star_stays_in_a_segment_double_star_crosses(glob: str, yes: list[str], no: list[str]) -> None:
    pattern = retention.compile_glob(glob)
    assert [n for n in yes if pattern.match(n)] == yes
    assert [n for n in no if pattern.match(n)] == []


@pytest.mark.parametrize("glob", ["", "Team/*", "team/***", "team//app", "/team", "team/", "team/[ab]", "team/?",
                                  "a" * 256, "te am"])
def test_bad_globs_are_refused(glob: str) -> None:
    with pytest.raises(retention.RuleError):
        retention.compile_glob(glob)


@pytest.mark.parametrize("value,seconds", [("90m", 5400), ("12h", 43200), ("30d", 2592000), ("2w", 1209600),
                                           ("45s", 45)])
def test_durations(value: str, seconds: int) -> None:
    assert retention.parse_duration(value).total_seconds() == seconds


@pytest.mark.parametrize("value", ["", "30", "d", "0d", "-1d", "1.5d", "30 d", "30D", "1y", "99999999w", "01d"])
def test_bad_durations(value: str) -> None:
    with pytest.raises(retention.RuleError):
        retention.parse_duration(value)


def test_keep_last_ranks_every_tag_newest_first_ties_by_name() -> None:
    tags = [TagInfo("a", "d1", ago(1)), TagInfo("b", "d2", ago(1)), TagInfo("c", "d3", ago(2)),
            TagInfo("d", "d4", ago(3)), TagInfo("e", "d5", None)]
    d = retention.decide(tags, retention.Rules(keep_last=2), NOW)
    assert deleted(d) == ["c", "d"]
    assert kept(d) == {"a": "keep_last", "b": "keep_last", "e": "no_creation_time"}
    d = retention.decide(tags, retention.Rules(keep_last=2, delete_tags=retention.compile_regex("^[cd]$")), NOW)
    assert deleted(d) == ["c", "d"]  # the ranking is over all tags, not only the matching ones
    d = retention.decide(tags, retention.Rules(keep_last=3, delete_tags=retention.compile_regex("^[cd]$")), NOW)
    assert deleted(d) == ["d"]


def test_each_rule_alone_and_combined() -> None:
    tags = [TagInfo(f"build-{i}", f"d{i}", ago(i)) for i in range(1, 11)] + [
        TagInfo("latest", "d1", ago(1)), TagInfo("v1.0.0", "dv", ago(40)), TagInfo("sbom", "ds", None)]
    everything = retention.decide(tags, retention.Rules(), NOW)
    assert deleted(everything) == sorted(t.name for t in tags if t.name != "sbom")
    assert kept(everything) == {"sbom": "no_creation_time"}
    older = retention.decide(tags, retention.Rules(older_than=timedelta(days=5)), NOW)
    assert deleted(older) == ["build-10", "build-6", "build-7", "build-8", "build-9", "v1.0.0"]
    assert kept(older)["build-5"] == "newer_than" and kept(older)["build-4"] == "newer_than"  # 5 days is not older
    keep = retention.decide(tags, retention.Rules(keep_tags=retention.compile_regex(r"^(latest|v\d+\.\d+\.\d+)$")), NOW)
    assert set(kept(keep)) == {"latest", "v1.0.0", "sbom"} and kept(keep)["v1.0.0"] == "keep_tags"
    combined = retention.decide(tags, retention.Rules(
        keep_last=3, older_than=timedelta(days=7), delete_tags=retention.compile_regex("^build-"),
        keep_tags=retention.compile_regex("^build-9$")), NOW)
    assert deleted(combined) == ["build-10", "build-8"]
    assert kept(combined) == {"build-1": "keep_last", "latest": "not_matched", "build-2": "keep_last",
                              "build-3": "newer_than", "build-4": "newer_than", "build-5": "newer_than",
                              "build-6": "newer_than", "build-7": "newer_than", "build-9": "keep_tags",
                              "v1.0.0": "not_matched", "sbom": "not_matched"}
    reasons = {t.name: r for t, r in combined.keep}
    assert reasons["build-2"] == ["keep_last", "newer_than"] and reasons["sbom"] == ["not_matched", "no_creation_time"]


def test_keep_pulled_within_keeps_what_was_pulled_and_waits_until_its_duration_was_observed() -> None:
    tags = [TagInfo("hot", "d1", ago(90), last_pulled=ago(2)), TagInfo("cold", "d2", ago(90), last_pulled=ago(20)),
            TagInfo("never", "d3", ago(90)), TagInfo("edge", "d4", ago(90), last_pulled=ago(10))]
    rules = retention.Rules(keep_pulled_within=timedelta(days=10))
    # Pulls heard for 30 days (more than 10): a tag with no pull heard of was not pulled within them.
    d = retention.decide(tags, rules, NOW, pulls_heard_since=ago(30))
    assert deleted(d) == ["cold", "never"]
    assert kept(d) == {"hot": "pulled_recently", "edge": "pulled_recently"}  # exactly 10 days ago is within
    # Heard for 3 days only: a tag never heard pulled might have been pulled 5 days ago: it stays, and says why.
    d = retention.decide(tags, rules, NOW, pulls_heard_since=ago(3))
    assert deleted(d) == ["cold"]
    assert kept(d) == {"hot": "pulled_recently", "edge": "pulled_recently", "never": "no_pull_data"}
    d = retention.decide(tags, rules, NOW, pulls_heard_since=None)  # never heard any pull
    assert kept(d)["never"] == "no_pull_data" and deleted(d) == ["cold"]
    assert retention.decide(tags, rules, NOW, pulls_heard_since=ago(10)).delete  # exactly the duration: observed
    assert not retention.pulls_observed(rules, ago(10) + timedelta(seconds=1), NOW)
    # Without a pull rule, pull data changes nothing.
    assert deleted(retention.decide(tags, retention.Rules(), NOW)) == ["cold", "edge", "hot", "never"]


def test_keep_last_pulled_ranks_the_pulled_tags_most_recent_first() -> None:
    tags = [TagInfo("a", "d1", ago(1), last_pulled=ago(5)), TagInfo("b", "d2", ago(2), last_pulled=ago(1)),
            TagInfo("c", "d3", ago(3), last_pulled=ago(5)), TagInfo("d", "d4", ago(4)),
            TagInfo("e", "d5", ago(5), last_pulled=ago(50))]
    d = retention.decide(tags, retention.Rules(keep_last_pulled=2), NOW, pulls_heard_since=ago(60))
    assert kept(d) == {"b": "keep_last_pulled", "a": "keep_last_pulled"}  # a and c tie: by name
    assert deleted(d) == ["c", "d", "e"]
    d = retention.decide(tags, retention.Rules(keep_last_pulled=10), NOW, pulls_heard_since=ago(60))
    assert deleted(d) == ["d"]  # never pulled while pulls were heard: not among the pulled ones
    d = retention.decide(tags, retention.Rules(keep_last_pulled=0), NOW, pulls_heard_since=ago(60))
    assert deleted(d) == ["a", "b", "c", "d", "e"]
    # No pull heard at all yet: nothing to rank by, every tag with no pull data stays.
    d = retention.decide(tags[3:4], retention.Rules(keep_last_pulled=1), NOW, pulls_heard_since=None)
    assert kept(d) == {"d": "no_pull_data"}
    # With keep_pulled_within too, tags with no pull heard of wait for its duration.
    d = retention.decide(tags, retention.Rules(keep_last_pulled=1, keep_pulled_within=timedelta(days=2)), NOW,
                         pulls_heard_since=ago(1))
    assert kept(d) == {"b": "pulled_recently", "d": "no_pull_data"} and deleted(d) == ["a", "c", "e"]
    assert {t.name: r for t, r in d.keep}["b"] == ["pulled_recently", "keep_last_pulled"]
    # Combined with the others: every rule must let a tag go.
    d = retention.decide(tags, retention.Rules(keep_last_pulled=1, older_than=timedelta(days=3),
                                               keep_tags=retention.compile_regex("^e$")), NOW,
                         pulls_heard_since=ago(60))
    assert deleted(d) == ["d"] and kept(d) == {"a": "newer_than", "b": "newer_than", "c": "newer_than",
                                                 "e": "keep_tags"}


def test_pull_events_are_read_by_manifest_and_the_janitors_own_reads_are_not_pulls() -> None:
    from janitor.planning import pulls
    from janitor.registry.client import USER_AGENT

    def ev(action: str = "pull", media: str = "application/vnd.oci.image.manifest.v1+json", agent: str = "docker/24",
           stamp: str | None = "2026-06-01T11:59:00.123456789Z", **target: object) -> dict[str, object]:
        return {"action": action, "timestamp": stamp, "request": {"useragent": agent},
                "target": {"mediaType": media, "repository": "team/app", "digest": "sha256:" + "a" * 64, **target}}
    now = NOW.timestamp()
    assert pulls.pulls_of([ev()], now) == [("team/app", "sha256:" + "a" * 64, int(now) - 60)]
    assert pulls.pulls_of([ev(stamp="2027-01-01T00:00:00Z")], now)[0][2] == int(now)  # never in the future
    assert pulls.pulls_of([ev(stamp=None)], now)[0][2] == int(now)
    assert pulls.pulls_of([ev(action="push"), ev(media=pulls.BLOB_MEDIA_TYPE), ev(agent=f"{USER_AGENT} (x)"),
                           ev(repository="UP/x"), ev(digest=None), ev(digest=5)], now) == []


def test_creation_times_parse_rfc3339_with_nanoseconds_and_refuse_placeholders() -> None:
    assert retention.parse_time("2024-01-02T03:04:05.123456789Z") == datetime(2024, 1, 2, 3, 4, 5, 123456,
                                                                               tzinfo=timezone.utc)
    assert retention.parse_time("2024-01-02T05:04:05+02:00") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    for bad in (None, "", "yesterday", 12, "1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z"):
        assert retention.parse_time(bad) is None


def test_hostile_regular_expressions_match_in_linear_time() -> None:
    for pattern in ("(a+)+$", "(a|aa)+b", "(.*a){20}", "^(a|a?)+$", "(x+x+)+y"):
        compiled = retention.compile_regex(pattern)
        start = time.monotonic()
        compiled.search("a" * 50_000 + "!")
        assert time.monotonic() - start < 1.0, pattern
    for unsupported in (r"(a)\1", "(?=a)", "(?<!a)b", "a{1001}", "(" * 30 + ")" * 29, "x" * 1025):
        with pytest.raises(retention.RuleError):
            retention.compile_regex(unsupported)


def test_schedules_cron_and_epoch_aligned_intervals() -> None:
    retention.check_schedule("0 3 * * *")
    retention.check_schedule("15m")
    for bad in ("", "* * *", "61 * * * *", "0 3 * * * *", "every day", "15 m", "@daily"):
        with pytest.raises(retention.RuleError):
            retention.check_schedule(bad)
    assert retention.next_run("0 3 * * *", NOW) == datetime(2026, 6, 2, 3, 0, tzinfo=timezone.utc)
    assert retention.next_run("0 3 * * *", datetime(2026, 6, 2, 3, 0, tzinfo=timezone.utc)) == \
        datetime(2026, 6, 3, 3, 0, tzinfo=timezone.utc)
    assert retention.next_run("15m", datetime(2026, 6, 1, 12, 7, 3, tzinfo=timezone.utc)) == \
        datetime(2026, 6, 1, 12, 15, tzinfo=timezone.utc)
    # Two policies with one interval fall due at the same moment, whenever each was created.
    a = retention.next_run("5s", datetime(2026, 6, 1, 12, 0, 1, 100, tzinfo=timezone.utc))
    b = retention.next_run("5s", datetime(2026, 6, 1, 12, 0, 4, 900, tzinfo=timezone.utc))
    assert a == b == datetime(2026, 6, 1, 12, 0, 5, tzinfo=timezone.utc)


GOOD = {"name": "app-builds", "repositories": ["team/*", "tools/ci"], "keep_last": 10, "older_than": "30d",
        "delete_tags": "^(dev|pr|build)-", "keep_tags": r"^(latest|stable|v\d+\.\d+\.\d+)$", "untagged": True,
        "schedule": "0 3 * * *", "enabled": True}


def test_the_issue_example_is_valid_and_defaults_fill_in() -> None:
    assert policies.validate(GOOD) == {**GOOD, "approval": None, "notify_before": None, "keep_pulled_within": None,
                                       "keep_last_pulled": None, "restore_window": None}
    assert policies.validate({**GOOD, "approval": "required"})["approval"] == "required"
    assert policies.validate({"name": "x", "repositories": ["a"]}) == {
        "name": "x", "repositories": ["a"], "keep_last": None, "older_than": None, "delete_tags": None,
        "keep_tags": None, "keep_pulled_within": None, "keep_last_pulled": None, "untagged": False,
        "schedule": None, "enabled": True, "approval": None, "notify_before": None,
        "restore_window": None}
    pulled = policies.validate({"name": "x", "repositories": ["a"], "keep_pulled_within": "30d", "keep_last_pulled": 5})
    assert (pulled["keep_pulled_within"], pulled["keep_last_pulled"]) == ("30d", 5)
    assert policies.rules(pulled) == retention.Rules(keep_pulled_within=timedelta(days=30), keep_last_pulled=5)


@pytest.mark.parametrize("field,value", [
    ("name", None), ("name", ""), ("name", "App"), ("name", "a_b"), ("name", "../etc"), ("name", "a/b"),
    ("name", "-a"), ("name", "a--b"), ("name", "a" * 64), ("name", 5),
    ("repositories", None), ("repositories", []), ("repositories", "team/*"), ("repositories", [5]),
    ("repositories", ["Team/*"]), ("repositories", ["a"] * 101),
    ("keep_last", -1), ("keep_last", 1.5), ("keep_last", "10"), ("keep_last", True), ("keep_last", 100_001),
    ("older_than", "30"), ("older_than", 30), ("older_than", "30y"),
    ("delete_tags", "("), ("delete_tags", 5), ("delete_tags", r"(a)\1"),
    ("keep_tags", "[z-a]"), ("keep_tags", ["x"]),
    ("untagged", "true"), ("untagged", 1), ("untagged", None),
    ("schedule", "daily"), ("schedule", 15), ("schedule", "60 * * * *"),
    ("enabled", "yes"), ("enabled", 0), ("approval", "yes"), ("approval", True),
    ("keep_pulled_within", "30"), ("keep_pulled_within", 30), ("keep_pulled_within", "0d"),
    ("keep_pulled_within", "30y"), ("keep_pulled_within", ["30d"]),
    ("keep_last_pulled", -1), ("keep_last_pulled", 2.5), ("keep_last_pulled", "3"), ("keep_last_pulled", False),
    ("keep_last_pulled", 100_001),
])
def test_each_bad_field_is_named(field: str, value: object) -> None:
    with pytest.raises(errors.InvalidPolicy) as caught:
        policies.validate({**GOOD, field: value})
    assert list(caught.value.details) == [field], caught.value.details


def test_unknown_fields_and_renames_are_refused() -> None:
    with pytest.raises(errors.InvalidPolicy) as caught:
        policies.validate({**GOOD, "keep_lats": 3})
    assert list(caught.value.details) == ["keep_lats"]
    with pytest.raises(errors.InvalidPolicy) as caught:
        policies.validate(GOOD, name="other")
    assert list(caught.value.details) == ["name"]
    with pytest.raises(errors.InvalidPolicy):
        policies.validate(["not", "an", "object"])


def test_select_and_tick_ids() -> None:
    policy = policies.validate({"name": "p", "repositories": ["team/*", "tools/ci"]})
    assert policies.select(policy, ["team/app", "team/app/sub", "tools/ci", "tools/cd", "x"]) == ["team/app", "tools/ci"]
    when = datetime(2026, 6, 1, 12, 0, 5, tzinfo=timezone.utc)
    assert policies.tick_id("127.0.0.1:5000", when) == policies.tick_id("127.0.0.1:5000", when + timedelta(microseconds=1))
    assert policies.tick_id("127.0.0.1:5000", when) != policies.tick_id("127.0.0.1:5001", when)


def test_policies_file_is_validated_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.yaml"
    good.write_text("policies:\n  - name: nightly\n    repositories: ['team/**']\n    keep_last: 3\n")
    assert policies.load_file(str(good))["nightly"]["source"] == "file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: nightly\n  repositories: ['team/**']\n  keep_last: -3\n")
    with pytest.raises(errors.InvalidPolicy) as caught:
        policies.load_file(str(bad))
    assert "keep_last" in caught.value.details
    twice = tmp_path / "twice.yaml"
    twice.write_text("- {name: a, repositories: [x]}\n- {name: a, repositories: [y]}\n")
    with pytest.raises(errors.InvalidPolicy):
        policies.load_file(str(twice))


# -- a policy planned on a hand-built snapshot (janitor/policy_plan.py on janitor/rules.py) ----------------

def test_a_policy_plans_with_the_deletion_rules_on_a_snapshot() -> None:
    from janitor.planning import policy_plan
    from tests.test_rules import image, index, repo, snapshot

    now = datetime(2026, 1, 31, tzinfo=timezone.utc)
    old, new, shared_old, child_a, child_b, stray = (image(n) for n in ("old", "new", "shared", "ca", "cb", "stray"))
    multi = index("multi", [child_a, child_b])
    other = image("other", shared=("common",))
    app = repo("team/app", {"dev-1": old, "dev-2": shared_old, "v1": shared_old, "dev-3": new, "multi": multi},
               [old, new, shared_old, multi, child_a, child_b, stray])
    kept = repo("team/lib", {"dev-9": other}, [other])
    snap = snapshot(app, kept)

    class NoClient:  # every creation time is known: the planner must not read the registry
        def image_config(self, repo: str, digest: str) -> None:
            raise AssertionError(f"read {repo}@{digest}")

    times = policy_plan.CreationTimes(NoClient(), 2)
    days = {"old": 30, "new": 1, "shared": 20, "ca": 40, "cb": 2}
    times.by_config = {m.config.digest: now - timedelta(days=days[n])
                       for m, n in ((old, "old"), (new, "new"), (shared_old, "shared"), (child_a, "ca"),
                                    (child_b, "cb")) if m.config}
    times.by_config[other.config.digest] = None  # type: ignore[union-attr]  # no creation time: never deleted
    times.by_config[stray.config.digest] = now  # type: ignore[union-attr]
    policy = policies.validate({"name": "p", "repositories": ["team/*"], "delete_tags": "^dev-",
                                "older_than": "7d", "untagged": True})
    planned = policy_plan.plan(snap, policy, now, times)
    by_repo = {r.repository: r for r in planned.plan.repos}
    # dev-1 (30 days) goes with its manifest; dev-2 shares v1's manifest: untagged alone; dev-3 is too new.
    assert by_repo["team/app"].untag == ["dev-2"]
    assert set(by_repo["team/app"].delete) == {old.digest, stray.digest}  # untagged: the stray manifest too
    assert planned.named() == {("team/app", "dev-1"), ("team/app", "dev-2")}
    as_dict = planned.as_dict()
    [app_view, lib_view] = as_dict["repositories"]
    keep = {k["tag"]: k["reason"] for k in app_view["keep"]}
    assert keep == {"dev-3": "newer_than", "multi": "not_matched", "v1": "not_matched"}
    assert [(k["tag"], k["reason"]) for k in lib_view["keep"]] == [("dev-9", "no_creation_time")]
    assert as_dict["tags"] == ["team/app:dev-1", "team/app:dev-2"] and as_dict["bytes"] > 0
    assert not by_repo["team/lib"].delete and not by_repo["team/lib"].untag
    # An index counts its newest child.
    assert times.of(app, multi.digest) == now - timedelta(days=2)
