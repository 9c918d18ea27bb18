"""Protected tags: rules naming tags that nothing removes (a deletion naming them is refused with 409
TAG_PROTECTED, a policy keeps them with reason `protected`, the window skips them), where the rules are kept
(Redis per registry, or read-only in PROTECTIONS_FILE), and the pure checks every caller shares.

A rule is `{"name", "repositories": [globs as in policies], "tags": "<RE2 regex>"}`; the regular expression is
searched, like a policy's keep_tags, so `^v\\d+\\.\\d+\\.\\d+$` matches whole tags only. One validator serves the
API and the file, so a rule means the same wherever it was written. Only an admin's
`"override_protection": true` on a deletion passes a rule by, and the job records it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from janitor import errors
from janitor.jobs.records import Keys
from janitor.planning import named, retention
from janitor.planning.policies import NAME_MAX, NAME_RE, is_name
from janitor.planning.rules import Graph, Plan
from janitor.planning.snapshot import Snapshot

FIELDS = ("name", "repositories", "tags")
MAX_REPOSITORY_GLOBS = 100
REASON = "protected"  # a policy's keep reason, and the window's skip reason
__all__ = ["NAME_MAX", "NAME_RE", "REASON", "ProtectionStore", "protected", "validate", "violations"]

Rule = Mapping[str, Any]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def validate(data: Any, name: str | None = None) -> dict[str, Any]:
    """A rule with its three fields, or InvalidProtection with each bad field and what is wrong with it.
    `name`, when given, is the name from the path: a body may repeat it but not change it."""
    if not isinstance(data, dict):
        raise errors.InvalidProtection("a protection rule is a JSON object", _schema=["a rule is an object of fields"])
    problems = named.check_name_and_repositories(data, name, FIELDS, "rule", is_name, MAX_REPOSITORY_GLOBS)

    given, repos = data.get("name", name), data.get("repositories")

    def bad(field: str, message: str) -> None:
        problems.setdefault(field, []).append(message)

    tags = data.get("tags")
    if not isinstance(tags, str) or not tags:
        bad("tags", "required: an RE2 regular expression (searched), e.g. ^v\\d+\\.\\d+\\.\\d+$")
    else:
        try:
            retention.compile_regex(tags)
        except retention.RuleError as exc:
            bad("tags", str(exc))
    if problems:
        raise errors.InvalidProtection("the protection rule is not valid: see details", **problems)
    return {"name": given, "repositories": list(repos), "tags": tags}


# -- the pure checks --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> Any:
    return retention.compile_glob(pattern)


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    return retention.compile_regex(pattern)


def protected(repo: str, tag: str, rules: Iterable[Rule]) -> str | None:
    """The name of the first rule (by name) protecting `repo:tag`, or None."""
    for rule in sorted(rules, key=lambda r: r["name"]):
        if any(_glob(g).match(repo) for g in rule["repositories"]) and _regex(rule["tags"]).search(tag):
            return str(rule["name"])
    return None


def covers(repo: str, rules: Iterable[Rule]) -> bool:
    """Whether any rule's globs name the repository: only those need their tags read."""
    return any(_glob(g).match(repo) for rule in rules for g in rule["repositories"])


def protected_tags(repo: str, tags: Iterable[str], rules: Sequence[Rule]) -> dict[str, str]:
    """tag -> the rule protecting it, for the protected ones among `tags`."""
    if not rules or not covers(repo, rules):
        return {}
    return {t: rule for t in tags if (rule := protected(repo, t, rules)) is not None}


def reaching(graph: Graph, digest: str, protected_by: Mapping[str, str]) -> dict[str, str]:
    """The protected tags (tag -> rule) that reach `digest`: on it, on an index above it, or on the image it
    refers to (a signature of a protected image is protected too)."""
    above = graph.reaching(digest)
    return {t: r for t, r in protected_by.items() if graph.tags.get(t) in above}


def violations(snap: Snapshot, plan: Plan, rules: Sequence[Rule]) -> list[dict[str, str]]:
    """What a plan would take from protected tags: each protected tag it removes, or whose image (a manifest
    the tag reaches) it deletes, as {repository, tag, rule}, sorted."""
    found: dict[tuple[str, str], str] = {}
    for r in plan.repos:
        repo = snap.repos[r.repository]
        guarded = protected_tags(r.repository, repo.tags, rules)
        if not guarded:
            continue
        found.update({(r.repository, t): guarded[t] for t in r.tags if t in guarded})
        if r.delete:
            graph = Graph(repo.manifests, repo.tags)
            for digest in r.delete:
                found.update({(r.repository, t): rule for t, rule in reaching(graph, digest, guarded).items()})
    return [{"repository": repo, "tag": tag, "rule": rule} for (repo, tag), rule in sorted(found.items())]


def refuse(found: list[dict[str, str]], what: str) -> None:
    """409 TAG_PROTECTED naming every protected tag the request would take, and the rule of each."""
    if not found:
        return
    first = found[0]
    names = ", ".join(f"{f['repository']}:{f['tag']} (rule {f['rule']})" for f in found[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    raise errors.TagProtected(
        f"{what} would remove protected tags: {names}{more}. Change the rule, or an admin passes "
        "\"override_protection\": true",
        repository=first["repository"], tag=first["tag"], rule=first["rule"], protected=found)


# -- where rules are kept ---------------------------------------------------------------------------


KIND = named.Kind(
    short="rule", noun="protection rule", plural="rules", file_key="protections", file_variable="PROTECTIONS_FILE",
    path="/v1/protections", validate=validate, invalid=errors.InvalidProtection,
    not_found=errors.ProtectionNotFound, exists=errors.ProtectionExists, read_only=errors.ProtectionReadOnly,
    is_name=is_name)


def load_file(path: str) -> dict[str, dict[str, Any]]:
    """Rules in a YAML file: a list of rules, or {"protections": [...]}. Any bad entry refuses the file."""
    return named.load_file(path, KIND)


class ProtectionStore(named.NamedStore):
    """API rules in one Redis hash per registry; file rules read (and re-read when the file changes) from disk.
    A file that cannot be read fails the caller: a deletion is never checked against half the rules."""

    def __init__(self, conn: redis.Redis, keys: Keys, protections_file: str | None = None) -> None:
        super().__init__(conn, f"{keys.prefix}:protections", protections_file, KIND)

