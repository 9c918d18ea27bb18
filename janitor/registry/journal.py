"""What the registry wrote since a point in time, read from its own access log: the repositories written to
and the blobs whose data may have been stored. The window reads it under the fence so that an object store is
listed again only where something changed (janitor/window/journal.py says when it may be trusted).

Distribution writes one access-log line per request to stdout, in the combined log format, once the request's
handler has returned, so after every change that request made to storage:

    127.0.0.1 - - [07/Dec/2026:15:11:20 +0000] "PUT /v2/team/app/manifests/latest HTTP/1.1" 201 0 "" "docker/27"

The window sends a request of its own (`marker_path`) before it lists the bucket. A change logged before that
request's line was finished before the listing began; one logged after it is in the lines that follow. So the
lines after the marker name every repository that may differ from the listing, as long as the registry logged
every request it served until it stopped: the caller proves that (a graceful stop, the same run).

Every request that is not a GET, HEAD or OPTIONS counts, whatever its status (a failed PUT may still have
written part of what it meant to), except a 405: distribution answers it before any handler runs (read-only
mode, deletes disabled, a method no route takes), as it answers the fence's own probes and every push while
the fence stands. A write the janitor cannot attribute to a repository makes the journal unusable
(`Unreadable`), never smaller.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from janitor.registry import names

MARKER_PARAM = "janitor-journal"
READS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSED = "405"  # refused before anything was written
NO_ROUTE = "404"  # with a path no writing route takes: the router's own answer
# host, user id, user, [time], "method uri proto", status
_LINE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>[A-Za-z]+) (?P<uri>\S+) [^"]*" (?P<status>\d{3}) ')
# What distribution logs (info level, on stderr by default) right before it serves its first request.
_START = re.compile(r'msg="listening on ')
# The routes that write (distribution's registry/api/v2/routes.go), each ending a path after the name.
_WRITES = (
    re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$"),
    re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?:[^/]+)?$"),
    re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<reference>[^/]+)$"),
)


class Unreadable(ValueError):
    """The log does not say for certain what was written since the marker."""


@dataclass(frozen=True)
class Written:
    """What the registry may have written since the marker was answered (`since`, the worker's clock):
    listings begun after `since` miss nothing outside these repositories and blobs."""

    since: float
    repositories: frozenset[str]
    blobs: frozenset[str]  # digests the writes name (uploads, manifests and blobs by digest): maybe new data
    requests: int  # write requests logged after the marker


def marker_path(token: str) -> str:
    """The window's own request: a GET of the API's base, which every registry answers (401 included)."""
    return f"/v2/?{MARKER_PARAM}={urllib.parse.quote(token, safe='')}"


def read_run(lines: Iterable[str], since: float, token: str | None = None, from_start: bool = True) -> Written:
    """The writes one run of the registry logged from its start (`lines`: its output, both streams, from the
    moment it started), up to the marker's line when `token` is given. `since` is given back in the answer: the
    point the caller's view of storage was true at (the run's start, or earlier while nothing could write).

    Raises Unreadable unless the lines begin with the run's start: distribution prints `listening on` once its
    listener is open and before it serves a request, so with that line there, no request of the run came
    before what was read (a log rotated since, or a log level above info, leaves it out). Without `from_start`
    (the caller knows the engine kept everything: a log driver that never trims) that line is not needed.
    Also raises when the marker is not there, or a write's repository cannot be told."""
    marker = None if token is None else marker_path(token)
    started, found = not from_start, False
    before: list[tuple[str, str, str]] = []
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            started = started or _START.search(line) is not None
            continue
        if not started:
            raise Unreadable("the run's log shows a request before the registry's `listening on` line: its start "
                             "was rotated away, or is not in what the engine keeps")
        method, uri = match.group("method").upper(), match.group("uri")
        if marker is not None and method == "GET" and uri == marker:
            found = True
            break
        if method not in READS and match.group("status") != REFUSED:
            before.append((method, uri, match.group("status")))
    if not started:
        raise Unreadable("the run's log does not show the registry's `listening on` line (rotated away, or a log "
                         "level above info hides it): it cannot say that nothing was written before it")
    if marker is not None and not found:
        raise Unreadable("the registry's access log does not show the window's marker request")
    return _written(since, before)


def read(lines: Iterable[str], token: str, since: float) -> Written:
    """The writes logged after the marker's line (the last one, should the window have sent it twice).
    Raises Unreadable when the marker is not there (the access log is off, rotated away, or elsewhere) or when
    a write's repository cannot be told."""
    marker = marker_path(token)
    after: list[tuple[str, str, str]] | None = None
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            continue  # the registry's own log lines (stderr unless configured otherwise), or other output
        method, uri = match.group("method").upper(), match.group("uri")
        if method == "GET" and uri == marker:
            after = []
        elif after is not None and method not in READS and match.group("status") != REFUSED:
            after.append((method, uri, match.group("status")))
    if after is None:
        raise Unreadable("the registry's access log does not show the window's marker request (the access log "
                         "is off, or not on the container's stdout, or its log driver keeps nothing to read)")
    return _written(since, after)


def _written(since: float, writes: list[tuple[str, str, str]]) -> Written:
    repositories: set[str] = set()
    blobs: set[str] = set()
    counted = [(method, uri) for method, uri, status in writes
               if status != NO_ROUTE or _routed(uri)]  # else the router's own 404: no handler ran
    for method, uri in counted:
        touched, named = _write(method, uri)
        repositories |= touched
        blobs |= named
    return Written(since, frozenset(repositories), frozenset(blobs), len(counted))


def _routed(uri: str) -> bool:
    path = urllib.parse.unquote(uri.partition("?")[0])
    return any(m is not None and names.is_repository(m.group("name")) for m in (r.match(path) for r in _WRITES))


def _write(method: str, uri: str) -> tuple[set[str], set[str]]:
    """(repositories this request may have written to, blob digests it names). A path under /v2/ that no
    writing route explains raises; one outside it writes nothing to storage."""
    path, _, query = uri.partition("?")
    if not path.startswith("/v2/"):
        return set(), set()
    path = urllib.parse.unquote(path)
    repositories: set[str] = set()
    blobs: set[str] = set()
    for route in _WRITES:
        match = route.match(path)
        if match is None or not names.is_repository(match.group("name")):
            continue
        repositories.add(match.group("name"))  # an ambiguous path: every repository it could be, all listed
        reference = match.groupdict().get("reference")
        if reference and names.is_digest(reference):
            blobs.add(reference)
    if not repositories:
        raise Unreadable(f"a {method} {path[:200]} was logged whose repository cannot be told")
    for value in urllib.parse.parse_qs(query).get("digest", []):
        if names.is_digest(value):  # other algorithms are not distribution's sha256 layout: never listed
            blobs.add(value)
    return repositories, blobs
