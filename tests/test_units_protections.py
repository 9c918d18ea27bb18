"""Protected tags without Docker or Redis: the validator the API and PROTECTIONS_FILE share, the pure rule
`protected(repo, tag, rules)`, what a plan would take from protected tags, and retention keeping them."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from janitor import errors
from janitor.planning import protections, retention, rules
from tests.test_rules import image, index, repo, snapshot

RELEASES = {"name": "releases", "repositories": ["**"], "tags": r"^v\d+\.\d+\.\d+$"}
TEAM = {"name": "team-stable", "repositories": ["team/*"], "tags": "^(latest|stable)$"}


def problems(body: object, name: str | None = None) -> dict[str, list[str]]:
    with pytest.raises(errors.InvalidProtection) as refused:
        protections.validate(body, name)
    assert refused.value.code == "INVALID_REQUEST"
    return refused.value.details


def test_a_valid_rule_comes_back_whole() -> None:
    assert protections.validate(RELEASES) == RELEASES
    assert protections.validate({"repositories": ["team/*"], "tags": "x"}, name="from-path")["name"] == "from-path"


@pytest.mark.parametrize(("body", "field"), [
    ({**RELEASES, "name": "UP"}, "name"), ({**RELEASES, "name": "a/b"}, "name"), ({**RELEASES, "name": 7}, "name"),
    ({**RELEASES, "name": "x" * 64}, "name"), ({"repositories": ["**"], "tags": "v"}, "name"),
    ({**RELEASES, "repositories": "**"}, "repositories"), ({**RELEASES, "repositories": []}, "repositories"),
    ({**RELEASES, "repositories": ["team/***"]}, "repositories"), ({**RELEASES, "repositories": [None]}, "repositories"),
    ({**RELEASES, "repositories": ["UPPER"]}, "repositories"), ({**RELEASES, "repositories": ["x"] * 101}, "repositories"),
    ({"name": "n", "repositories": ["**"]}, "tags"), ({**RELEASES, "tags": ""}, "tags"), ({**RELEASES, "tags": 5}, "tags"),
    ({**RELEASES, "tags": "("}, "tags"), ({**RELEASES, "tags": r"(a)\1"}, "tags"), ({**RELEASES, "tags": "(?=v)"}, "tags"),
    ({**RELEASES, "tags": "a" * 1025}, "tags"), ({**RELEASES, "keep": True}, "keep"),
])
def test_each_bad_field_is_named(body: dict, field: str) -> None:
    assert field in problems(body)


def test_not_an_object_and_renaming_are_refused() -> None:
    assert "_schema" in problems(["releases"])
    assert "name" in problems({**RELEASES, "name": "other"}, name="releases")


def test_the_rule_names_the_first_rule_by_name_that_protects() -> None:
    both = [TEAM, RELEASES, {"name": "a-first", "repositories": ["team/app"], "tags": "^v1\\."}]
    assert protections.protected("team/app", "v1.2.3", both) == "a-first"
    assert protections.protected("other/app", "v1.2.3", both) == "releases"
    assert protections.protected("team/app", "latest", both) == "team-stable"
    assert protections.protected("team/sub/app", "latest", both) is None  # * stays within one segment
    assert protections.protected("team/app", "v1.2.3-rc1", [RELEASES]) is None  # anchored
    assert protections.protected("team/app", "xv1.2.3", [{**RELEASES, "tags": r"v\d"}]) == "releases"  # searched
    assert protections.protected("team/app", "latest", []) is None
    assert protections.protected_tags("team/app", ["latest", "v2.0.0", "dev"], both) == {
        "latest": "team-stable", "v2.0.0": "releases"}
    assert protections.protected_tags("elsewhere", ["latest"], [TEAM]) == {}


def test_a_hostile_pattern_answers_at_once() -> None:
    rule = protections.validate({"name": "hostile", "repositories": ["**"], "tags": "(a+)+$"})
    start = time.monotonic()
    assert protections.protected("r", "a" * 5000 + "!", [rule]) is None
    assert time.monotonic() - start < 1


def test_violations_name_protected_tags_taken_directly_or_through_their_image() -> None:
    amd, arm, other = image("amd"), image("arm"), image("other")
    idx = index("idx", [amd, arm])
    sig = image("sig", subject=idx)
    r = repo("team/app", {"v1.0.0": idx, "latest": idx, "dev": other, "sha256-x.sig": sig}, [idx, amd, arm, sig, other])
    snap = snapshot(r)

    def found(**request: object) -> list[dict[str, str]]:
        return protections.violations(snap, rules.plan_request(snap, {"repository": "team/app", **request}),
                                      [RELEASES])

    assert found(tags=["dev"]) == []
    assert found(tags=["v1.0.0"]) == [{"repository": "team/app", "tag": "v1.0.0", "rule": "releases"}]
    assert found(digests=[idx.digest]) == [{"repository": "team/app", "tag": "v1.0.0", "rule": "releases"}]
    # A child of the protected index (forced past REFERENCED_BY_INDEX) and the index's signature are its image.
    assert found(digests=[amd.digest], force=True)[0]["tag"] == "v1.0.0"
    assert found(digests=[sig.digest])[0]["tag"] == "v1.0.0"
    assert found(all_tags=True) == [{"repository": "team/app", "tag": "v1.0.0", "rule": "releases"}]
    assert found(untagged=True) == []
    assert protections.violations(snap, rules.plan_request(snap, {"repository": "team/app", "all_tags": True}), []) == []
    with pytest.raises(errors.TagProtected) as refused:
        protections.refuse(found(all_tags=True), "deleting every tag of team/app")
    assert refused.value.code == "TAG_PROTECTED"
    assert refused.value.details["tag"] == "v1.0.0" and refused.value.details["rule"] == "releases"


def test_untagged_never_touches_what_a_protected_tag_reaches_children_included() -> None:
    amd, arm, loose = image("amd"), image("arm"), image("loose")
    idx = index("idx", [amd, arm])
    r = repo("app", {"v1.0.0": idx}, [idx, amd, arm, loose])
    plan = rules.plan_request(snapshot(r), {"repository": "app", "untagged": True})
    assert plan.repos[0].delete == [loose.digest]
    assert protections.violations(snapshot(r), plan, [RELEASES]) == []


def test_a_policy_keeps_a_protected_tag_with_reason_protected() -> None:
    now = datetime(2024, 6, 1, tzinfo=timezone.utc)
    tags = [retention.TagInfo(name, "sha256:" + name, now - timedelta(days=days))
            for name, days in (("v1.0.0", 90), ("build-1", 80), ("build-2", 1))]
    every = retention.Rules(older_than=timedelta(days=30))
    decision = retention.decide(tags, every, now, protected={"v1.0.0"})
    assert [t.name for t in decision.delete] == ["build-1"]
    kept = {t.name: reasons for t, reasons in decision.keep}
    assert kept == {"v1.0.0": ["protected"], "build-2": ["newer_than"]}
    # keep_last still counts the protected tag among the newest
    last = retention.decide(tags, retention.Rules(keep_last=1), now, protected={"v1.0.0"})
    assert {t.name for t in last.delete} == {"build-1"}


def test_the_file_is_read_whole_or_refused(tmp_path: Path) -> None:
    path = tmp_path / "protections.yaml"
    path.write_text("protections:\n  - name: releases\n    repositories: ['**']\n    tags: '^v\\d+$'\n")
    assert protections.load_file(str(path)) == {"releases": {**RELEASES, "tags": r"^v\d+$", "source": "file"}}
    path.write_text("- name: releases\n  repositories: ['**']\n  tags: '^v'\n")  # a bare list too
    assert list(protections.load_file(str(path))) == ["releases"]
    path.write_text("protections:\n  - name: ok\n    repositories: ['**']\n    tags: 'v'\n  - name: bad\n"
                    "    repositories: ['**']\n    tags: '('\n")
    with pytest.raises(errors.InvalidProtection) as refused:
        protections.load_file(str(path))
    assert refused.value.details["index"] == 1 and "tags" in refused.value.details
    path.write_text("- {name: twice, repositories: ['**'], tags: v}\n- {name: twice, repositories: ['**'], tags: w}\n")
    with pytest.raises(errors.InvalidProtection, match="twice"):
        protections.load_file(str(path))
    path.write_text("protections: nope\n")
    with pytest.raises(errors.InvalidProtection):
        protections.load_file(str(path))


def test_protections_file_is_read_from_the_environment_and_per_registry() -> None:
    from janitor.config import registries
    from janitor.config.settings import Settings

    base = Settings.from_env({"PROTECTIONS_FILE": "/etc/janitor/protections.yaml"})
    assert base.protections_file == "/etc/janitor/protections.yaml"
    known = registries.parse("registries:\n  - name: eu\n    url: http://127.0.0.1:5001\n    container: eu\n"
                             "    protections_file: /etc/eu.yaml\n  - name: us\n    url: http://127.0.0.1:5002\n"
                             "    container: us\n",
                             base, {}, source="test")
    assert known.get("eu").protections_file == "/etc/eu.yaml"
    assert known.get("us").protections_file == "/etc/janitor/protections.yaml"
