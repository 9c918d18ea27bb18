"""The registry's access log read as what it wrote since the window's marker (janitor/registry/journal.py):
the lines are distribution 2.8's, as its container prints them."""

from __future__ import annotations

import pytest

from janitor.registry import journal

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def line(method: str, uri: str, status: int = 201) -> str:
    return f'127.0.0.1 - - [07/Dec/2026:15:11:20 +0000] "{method} {uri} HTTP/1.1" {status} 0 "" "docker/27.0"'


MARKER = line("GET", journal.marker_path("w1-abc"), 200)


def test_only_writes_after_the_marker_count_each_with_its_repository_and_the_blobs_it_names() -> None:
    lines = [
        line("PUT", "/v2/before/manifests/v1"),  # finished before the mark's listing began
        'time="2026-12-07T15:11:20Z" level=info msg="response completed" http.request.method=PUT',
        MARKER,
        line("GET", "/v2/read/manifests/v1", 200),
        line("HEAD", f"/v2/read/blobs/{A}", 200),
        line("POST", "/v2/team/app/blobs/uploads/", 202),
        line("PATCH", "/v2/team/app/blobs/uploads/0d6b0e6c-6e83-4d6a-9f8f-1f2d3e4c5b6a", 202),
        line("PUT", f"/v2/team/app/blobs/uploads/0d6b0e6c-6e83-4d6a-9f8f-1f2d3e4c5b6a?_state=xyz&digest=sha256%3A{'a' * 64}"),
        line("POST", f"/v2/other/blobs/uploads/?mount={B}&from=team/app", 201),
        line("PUT", "/v2/team/app/manifests/v1"),
        line("PUT", f"/v2/by/digest/manifests/{B}", 500),  # failed: it may still have stored its data
        line("DELETE", f"/v2/gone/manifests/{A}", 202),
        line("DELETE", f"/v2/unlinked/blobs/{A}", 202),
        line("GET", "/debug/vars", 200),
        line("POST", "/v2/janitor-probe/blobs/uploads/", 405),  # refused: read-only, as after the fence
    ]
    written = journal.read(lines, "w1-abc", 12.5)
    assert written.since == 12.5
    assert written.repositories == {"team/app", "other", "by/digest", "gone", "unlinked"}
    assert written.blobs == {A, B}
    assert written.requests == 8


def test_without_the_marker_the_log_says_nothing_for_certain() -> None:
    with pytest.raises(journal.Unreadable, match="marker"):
        journal.read([line("PUT", "/v2/a/manifests/v1")], "w1-abc", 0.0)
    with pytest.raises(journal.Unreadable, match="marker"):  # another window's marker
        journal.read([line("GET", journal.marker_path("w2-abc"), 200)], "w1-abc", 0.0)


def test_a_write_whose_repository_cannot_be_told_makes_the_log_unusable() -> None:
    with pytest.raises(journal.Unreadable, match="cannot be told"):
        journal.read([MARKER, line("PUT", "/v2/Not_A_Name/manifests/v1")], "w1-abc", 0.0)
    with pytest.raises(journal.Unreadable, match="cannot be told"):
        journal.read([MARKER, line("POST", "/v2/_catalog")], "w1-abc", 0.0)


def test_a_path_two_routes_could_explain_names_every_repository_it_could_be() -> None:
    written = journal.read([MARKER, line("DELETE", f"/v2/team/blobs/manifests/{A}")], "w1-abc", 0.0)
    assert written.repositories == {"team/blobs"}
    written = journal.read([MARKER, line("POST", "/v2/a/blobs/uploads/blobs/uploads/")], "w1-abc", 0.0)
    assert written.repositories == {"a/blobs/uploads"}
    written = journal.read([MARKER, line("PUT", "/v2/a/manifests/blobs/uploads/x")], "w1-abc", 0.0)
    assert written.repositories == {"a/manifests"}


def test_the_last_marker_counts_and_a_percent_encoded_path_is_read_decoded() -> None:
    lines = [MARKER, line("PUT", "/v2/early/manifests/v1"), MARKER, line("PUT", "/v2/team%2Fapp/manifests/v1")]
    assert journal.read(lines, "w1-abc", 0.0).repositories == {"team/app"}


START = ('time="2026-12-07T17:41:51.895828476Z" level=info msg="listening on [::]:5000" go.version=go1.19.8 '
         'instance.id=4aa005e9-c066-419e-8105-3a8377265071 service=registry version=2.8.2+ds1')


def test_a_run_read_from_its_start_counts_every_write_up_to_the_marker() -> None:
    lines = [
        'time="2026-12-07T17:41:51Z" level=info msg="redis not configured"',
        START,
        line("PUT", "/v2/first/manifests/v1"),
        line("POST", "/v2/janitor-probe/blobs/uploads/", 202),  # the window's own write probe, after its restart
        line("HEAD", f"/v2/read/blobs/{A}", 200),
        line("DELETE", f"/v2/gone/manifests/{B}", 202),
        line("PUT", "/v2/nothing-routes-this", 404),  # the router's own 404: no handler ran
        MARKER,
        line("PUT", "/v2/after/manifests/v1"),  # the fence follows the log from the marker for these
    ]
    written = journal.read_run(lines, 3.0, "w1-abc")
    assert (written.since, written.repositories, written.blobs, written.requests) == \
        (3.0, {"first", "janitor-probe", "gone"}, {B}, 3)
    whole = journal.read_run(lines, 3.0)  # before any marker: everything the run wrote so far
    assert whole.repositories == {"first", "janitor-probe", "gone", "after"} and whole.requests == 4


def test_a_run_whose_start_is_not_in_its_log_says_nothing_for_certain() -> None:
    # Rotated away: the first line the engine still has is a request.
    with pytest.raises(journal.Unreadable, match="before the registry's `listening on`"):
        journal.read_run([line("PUT", "/v2/a/manifests/v1"), START], 0.0)
    # A log level above info: the registry never prints it.
    with pytest.raises(journal.Unreadable, match="before the registry's `listening on`"):
        journal.read_run([line("GET", "/v2/", 200)], 0.0)
    with pytest.raises(journal.Unreadable, match="does not show the registry's `listening on`"):
        journal.read_run([], 0.0)
    with pytest.raises(journal.Unreadable, match="marker"):
        journal.read_run([START, line("PUT", "/v2/a/manifests/v1")], 0.0, "w1-abc")
    # A log the engine never trims (json-file without max-size) needs no start line to be whole.
    assert journal.read_run([line("PUT", "/v2/a/manifests/v1")], 0.0, from_start=False).repositories == {"a"}
