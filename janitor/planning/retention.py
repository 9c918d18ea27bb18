"""Retention rules as pure functions: which tags of one repository a policy deletes, and why each other tag
stays. No I/O here, so every rule is proven by fast unit tests; janitor.planning.policies feeds it what the registry
holds.

Regular expressions and globs run on RE2 (google-re2): its automaton matches in time linear in the input and
has no backtracking, so no pattern a caller sends can hang the API or the worker. A bounded timeout on a
backtracking engine (the `regex` module) would still burn a core for the whole timeout per tag and needs a
thread per match; RE2 simply has no catastrophic case. What RE2 leaves out (backreferences, lookaround) is
answered with a 422 naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import re2
from croniter import croniter

# Kept-tag reasons, in the order they are reported when several hold. `protected`: a protection rule
# (janitor/planning/protections.py) names the tag, whatever the policy says.
PROTECTED, KEEP_TAGS, NOT_MATCHED, NO_CREATION_TIME, KEEP_LAST, NEWER_THAN = (
    "protected", "keep_tags", "not_matched", "no_creation_time", "keep_last", "newer_than")
PULLED_RECENTLY, KEEP_LAST_PULLED, NO_PULL_DATA = "pulled_recently", "keep_last_pulled", "no_pull_data"
REASONS = (PROTECTED, KEEP_TAGS, NOT_MATCHED, NO_CREATION_TIME, KEEP_LAST, NEWER_THAN, PULLED_RECENTLY,
           KEEP_LAST_PULLED, NO_PULL_DATA)

MAX_PATTERN = 1024
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 8 << 20  # a pattern whose automaton needs more is refused, not built
_RE2_OPTIONS.log_errors = False

_DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = timedelta(days=366 * 100)
_GLOB_CHARS = re.compile(r"^[a-z0-9._/*-]+$")
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?$")


class RuleError(ValueError):
    """A rule that cannot be used; the message says what is wrong with it."""


def compile_regex(pattern: str) -> Any:
    if len(pattern) > MAX_PATTERN:
        raise RuleError(f"at most {MAX_PATTERN} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except Exception as exc:  # re2 raises its own error type, with the parser's reason as bytes
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RuleError(f"not a valid RE2 regular expression (no backreferences or lookaround): {reason}") from None


def compile_glob(pattern: str) -> Any:
    """A repository glob on the whole name: `*` stays within one path segment, `**` crosses them
    (`team/**` is everything below team/, `**/app` is every repository called app at any depth)."""
    if not pattern or len(pattern) > 255 or not _GLOB_CHARS.match(pattern):
        raise RuleError("a glob is a repository name (lowercase letters, digits, '.', '_', '-', '/') with * or **")
    if "***" in pattern or "//" in pattern or pattern.startswith("/") or pattern.endswith("/"):
        raise RuleError("not a valid glob: no '***', no empty path segment")
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:[^/]+/)*")  # zero or more whole segments
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re2.escape(pattern[i]))
            i += 1
    return re2.compile("^" + "".join(out) + "$", _RE2_OPTIONS)


def parse_duration(value: str) -> timedelta:
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise RuleError("a duration is a whole number and a unit: s, m, h, d or w (e.g. 90m, 12h, 30d, 2w)")
    duration = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if duration > MAX_DURATION:
        raise RuleError("at most 100 years")
    return duration


def is_interval(schedule: str) -> bool:
    """An interval schedule (15m) rather than a cron expression."""
    return bool(_DURATION.match(schedule))


def check_schedule(value: str) -> None:
    """A 5-field cron expression in UTC, or an interval such as 15m."""
    if _DURATION.match(value):
        parse_duration(value)
        return
    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise RuleError("not a cron expression (5 fields, UTC, e.g. '0 3 * * *') nor an interval (e.g. 15m)")


def next_run(schedule: str, after: datetime) -> datetime:
    """The first time strictly after `after` the schedule is due. Intervals are aligned on the epoch, so
    policies with the same interval fall due together and share one window."""
    after = after.astimezone(timezone.utc)
    if _DURATION.match(schedule):
        step = int(parse_duration(schedule).total_seconds())
        ts = int(after.timestamp()) // step * step + step
        return datetime.fromtimestamp(ts, timezone.utc)
    nxt = croniter(schedule, after.replace(tzinfo=None, microsecond=0)).get_next(datetime)
    return nxt.replace(tzinfo=timezone.utc)


def parse_time(value: Any) -> datetime | None:
    """An image config's `created` (RFC 3339, often with nanoseconds) as an aware datetime, or None."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value.strip())
    if not match:
        return None
    day, clock, frac, zone = match.groups()
    frac = (frac or ".0")[:7]
    zone = "+00:00" if zone in (None, "Z", "z") else zone if ":" in zone else zone[:3] + ":" + zone[3:]
    try:
        parsed = datetime.fromisoformat(f"{day}T{clock}{frac}{zone}")
    except ValueError:
        return None
    if parsed.year < 1980:
        return None  # reproducible builds stamp the epoch (or 1980): that is no creation time
    return parsed.astimezone(timezone.utc)


@dataclass(frozen=True)
class Rules:
    keep_last: int | None = None
    older_than: timedelta | None = None
    delete_tags: Any = None  # compiled RE2 pattern, searched
    keep_tags: Any = None
    keep_pulled_within: timedelta | None = None
    keep_last_pulled: int | None = None

    @property
    def uses_pulls(self) -> bool:
        return self.keep_pulled_within is not None or self.keep_last_pulled is not None


@dataclass(frozen=True)
class TagInfo:
    name: str
    digest: str
    created: datetime | None  # an index: its newest child's
    last_pulled: datetime | None = None  # the newest pull of its digest the janitor heard of


def pulls_observed(rules: Rules, heard_since: datetime | None, now: datetime) -> bool:
    """Whether the janitor has heard pulls long enough for the pull rules to judge a tag it heard no pull of:
    for `keep_pulled_within`, at least that long; for `keep_last_pulled` alone, at all. Before that, such a
    tag may have been pulled without the janitor knowing, so it stays (`no_pull_data`)."""
    if heard_since is None:
        return False
    return rules.keep_pulled_within is None or heard_since <= now - rules.keep_pulled_within


@dataclass
class Decision:
    delete: list[TagInfo]
    keep: list[tuple[TagInfo, list[str]]]  # tag and every reason it stays, first one reported


def rank(tags: list[TagInfo]) -> list[TagInfo]:
    """Newest first, ties by name; tags with no creation time come last (they are never deleted)."""
    dated = sorted((t for t in tags if t.created), key=lambda t: (-t.created.timestamp(), t.name))  # type: ignore[union-attr]
    return dated + sorted((t for t in tags if not t.created), key=lambda t: t.name)


def rank_pulled(tags: list[TagInfo]) -> list[TagInfo]:
    """Most recently pulled first, ties by name; tags with no pull heard of are left out."""
    return sorted((t for t in tags if t.last_pulled), key=lambda t: (-t.last_pulled.timestamp(), t.name))  # type: ignore[union-attr]


def decide(tags: list[TagInfo], rules: Rules, now: datetime, protected: Collection[str] = (),
           pulls_heard_since: datetime | None = None) -> Decision:
    """A tag goes when every given rule lets it: it is not `protected` (by name), matches delete_tags, does not
    match keep_tags, is not among the keep_last newest, is older than older_than, was not pulled within
    keep_pulled_within and is not among the keep_last_pulled most recently pulled. Rules left out do not
    restrict. A protected tag still counts among the keep_last newest. `pulls_heard_since`: when the janitor
    began hearing the registry's pulls (None: never); a tag with no pull heard of stays while that is too
    recent for the pull rules to judge it (pulls_observed)."""
    decision = Decision([], [])
    cutoff = now - rules.older_than if rules.older_than is not None else None
    pulled_cutoff = now - rules.keep_pulled_within if rules.keep_pulled_within is not None else None
    observed = pulls_observed(rules, pulls_heard_since, now)
    last_pulled = ({t.name for t in rank_pulled(tags)[:rules.keep_last_pulled]}
                   if rules.keep_last_pulled is not None else set())
    for position, tag in enumerate(rank(tags)):
        reasons = [PROTECTED] if tag.name in protected else []
        if rules.keep_tags is not None and rules.keep_tags.search(tag.name):
            reasons.append(KEEP_TAGS)
        if rules.delete_tags is not None and not rules.delete_tags.search(tag.name):
            reasons.append(NOT_MATCHED)
        if tag.created is None:
            reasons.append(NO_CREATION_TIME)
        if rules.keep_last is not None and position < rules.keep_last:
            reasons.append(KEEP_LAST)
        if cutoff is not None and tag.created is not None and tag.created >= cutoff:
            reasons.append(NEWER_THAN)
        if pulled_cutoff is not None and tag.last_pulled is not None and tag.last_pulled >= pulled_cutoff:
            reasons.append(PULLED_RECENTLY)
        if tag.name in last_pulled:
            reasons.append(KEEP_LAST_PULLED)
        if rules.uses_pulls and tag.last_pulled is None and not observed:
            reasons.append(NO_PULL_DATA)
        if reasons:
            decision.keep.append((tag, reasons))
        else:
            decision.delete.append(tag)
    return decision
