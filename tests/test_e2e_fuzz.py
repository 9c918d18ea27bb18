"""Fuzzing in the suite: a bounded schemathesis run against the live service finds no 5xx, every answer conforms
to the document, and invalid data is refused. Plus the two defects an earlier long run found."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis
import requests

from tests import images
from tests.conftest import Registry, Stack, start_registry, start_stack

pytestmark = pytest.mark.e2e

# Half a minute in the suite (a core for that long: the suite is bound by CPU); FUZZ_SECONDS=600 for a deeper run.
FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS", "30"))
CONFIG = Path(__file__).parent / "fuzz" / "schemathesis.toml"  # the two per-operation exceptions, explained


@pytest.fixture
def api_only(registry: Registry, redis_server: str, redis_conn: redis.Redis) -> Iterator[Stack]:
    """The API under gunicorn with no worker: accepted jobs stay queued, so fuzzing never starts a window
    (which would make the registry read-only and restart it over and over)."""
    s = start_stack(registry, redis_server, redis_conn, worker=False)
    try:
        yield s
    finally:
        s.kill()


@pytest.fixture(scope="module")
def shared_api(docker_client: docker.DockerClient, registry_image: str, redis_server: str) -> Iterator[Stack]:
    """One API with no worker, on a registry nobody pushes to, for the tests below that only send requests:
    each used to start its own registry and gunicorn. Its own Redis database: other tests flush database 0."""
    registry = start_registry(docker_client, registry_image)
    url = redis_server.rsplit("/", 1)[0] + "/1"
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    s = start_stack(registry, url, conn, worker=False)
    try:
        yield s
    finally:
        s.kill()
        registry.container.remove(force=True, v=True)
        conn.flushdb()


def test_schemathesis_finds_nothing(api_only: Stack, tmp_path: Path) -> None:
    p = api_only.pusher()
    p.image("team/app", images.image(), "v1")
    p.image("team/app", images.image(), "v2")
    p.image("solo", images.image(), "latest")
    st = Path(sys.executable).parent / "schemathesis"
    cmd = [str(st), "--config-file", str(CONFIG), "run", f"{api_only.api}/openapi.json", "--max-time", str(FUZZ_SECONDS), "--workers", "1",
           "--request-timeout", "30", "-H", f"Authorization: Bearer {api_only.token}",
           "--report", "junit", "--report-dir", str(tmp_path)]
    # In tmp_path: schemathesis keeps a cache (.schemathesis/) in its working directory.
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=FUZZ_SECONDS * 4)
    report = out.stdout + out.stderr
    (tmp_path / "schemathesis.log").write_text(report)
    # The findings first, each line cut short: one reproduce line can hold a 100 kB body.
    findings = "\n".join(line[:400] for line in report[max(report.find("FAILURES"), 0):].splitlines())
    assert out.returncode == 0, f"schemathesis found problems (exit {out.returncode}):\n{findings[:12000]}"
    assert "passed" in report.lower(), report[-3000:]


def test_a_repeated_query_parameter_is_a_422(shared_api: Stack) -> None:
    for query in ("page=1&page=x", "page=1&page=2", "page_size=5&page_size=5"):
        resp = shared_api.get(f"/v1/repositories?{query}")
        assert resp.status_code == 422, (query, resp.text)
        assert resp.json()["code"] == "INVALID_REQUEST" and resp.json()["details"], resp.json()
    tags = shared_api.get("/v1/repositories/team/app/tags?page=1&page=x")
    assert tags.status_code == 422 and "page" in tags.json()["details"]


def raw_request(url: str, line: str) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"{line}\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_an_over_long_request_line_gets_the_json_error_shape(shared_api: Stack) -> None:
    """gunicorn answers this before Flask sees it; gunicorn.conf.py makes the answer JSON."""
    resp = requests.get(f"{shared_api.api}/v1/jobs/{'a' * 10_000}", headers=shared_api.headers, timeout=30)
    assert resp.status_code == 414
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {"code": "URI_TOO_LONG", "status": 414, "details": {},
                           "message": "the request line (method, path and query) is too long"}
    long_query = requests.get(f"{shared_api.api}/v1/repositories", params={"page": "1" * 9000},
                              headers=shared_api.headers, timeout=30)
    assert long_query.status_code == 414 and long_query.json()["code"] == "URI_TOO_LONG"
    garbage = raw_request(shared_api.api, "NOT A REQUEST LINE AT ALL")
    head, _, body = garbage.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"Content-Type: application/json" in head, garbage[:300]
    assert b'"code": "BAD_REQUEST"' in body
    # The service still answers normally afterwards.
    after = shared_api.get("/v1/repositories")
    assert after.status_code == 200 and after.json()["items"] == [], after.text


@pytest.mark.parametrize("name, fits", [
    ("0" * 237, True), ("0" * 238, False),                    # docker.io/library/ goes before it
    ("team/" + "0" * 240, True), ("team/" + "0" * 241, False),  # docker.io/ goes before it
    ("reg.example/" + "0" * 243, True), ("reg.example/" + "0" * 244, False),  # a host: counted as it is
])
def test_a_name_too_long_for_the_registry_is_refused_not_a_5xx(shared_api: Stack, name: str, fits: bool) -> None:
    """registry:2 answers 500 for a name over 255 characters as docker normalises it (found by fuzzing)."""
    direct = requests.get(f"{shared_api.registry.url}/v2/{name}/tags/list", timeout=30).status_code
    assert direct == (404 if fits else 500), "the registry's own limit moved"
    resp = shared_api.get(f"/v1/repositories/{name}/tags")
    assert resp.status_code == (404 if fits else 422), resp.text
    assert resp.json()["code"] == ("REPOSITORY_UNKNOWN" if fits else "INVALID_REQUEST")
