"""POST /v1/events answered by the thin WSGI path (service/events/fast.py) gives the same answers as the Flask
view behind it, for good and bad envelopes, tokens and paths, on a real Redis; only the good ones are answered
without Flask, and they are recorded and counted in /metrics as before."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client import REGISTRY
from werkzeug.test import Client

from janitor.config.settings import Settings
from janitor.registry.client import USER_AGENT

DIGEST = "sha256:" + "a" * 64
MEDIA = "application/vnd.docker.distribution.events.v1+json"


def event(action: str = "pull", **target: Any) -> dict[str, Any]:
    return {"id": "e1", "timestamp": "2026-11-29T12:00:00.000000000Z", "action": action,
            "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 700, "digest": DIGEST,
                       "length": 700, "repository": "team/app", "url": "http://r/v2/team/app", "tag": "v1",
                       **target},
            "request": {"id": "r1", "addr": "127.0.0.1:1", "host": "r", "method": "GET", "useragent": "docker/24"},
            "actor": {}, "source": {"addr": "r:5000", "instanceID": "i"}}


def envelope(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


@pytest.fixture
def app(redis_server: str, redis_conn: redis.Redis, tmp_path: Path) -> Any:
    from service import create_app

    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"name": "reader", "token_sha256": hashlib.sha256(b"read-t").hexdigest(), "scopes": ["read"]}]}))
    # The registry is never reached: the push and delete claims are checked in the background, after the answer.
    return create_app(Settings(redis_url=redis_server, registry_url="http://127.0.0.1:9", api_tokens=("admin-t",),
                               events_tokens=("events-t",), api_tokens_file=str(tokens), max_body_bytes=4096))


def untagged(e: dict[str, Any]) -> dict[str, Any]:
    return {**e, "target": {k: v for k, v in e["target"].items() if k != "tag"}}


GOOD: list[tuple[str, bytes]] = [
    ("pull", envelope(event())),
    ("pull by digest", envelope(untagged(event()))),
    ("push", envelope(event("push"))),
    ("push by digest", envelope(untagged(event("push")))),
    ("delete", envelope(event("delete"))),
    ("mount and blob", envelope(event("mount"), event("pull", mediaType="application/octet-stream"))),
    ("the janitor's own read", envelope({**event(), "request": {"useragent": f"{USER_AGENT} (x)"}})),
    ("several", envelope(event(), event("push", repository="team/other", tag="v2"), event("delete", tag="v3"))),
    ("no events", envelope()),
    ("no request", envelope({k: v for k, v in event().items() if k != "request"})),
]
BAD: list[tuple[str, bytes]] = [
    ("not JSON", b"{nope"),
    ("not UTF-8", b'{"events": ["\xff"]}'),
    ("not an object", b"[]"),
    ("no events", b"{}"),
    ("events not a list", b'{"events": "x"}'),
    ("bad repository", envelope(event(repository="Team/App"))),
    ("bad tag", envelope(event(tag="-x"))),
    ("bad digest", envelope(event(digest="nope"))),
    ("no action", envelope({k: v for k, v in event().items() if k != "action"})),
    ("null target", envelope({**event(), "target": None})),
    ("too many", envelope(*[event()] * 101)),
    ("deep", b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),  # over the body limit too
]


def answer(client: Client, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    resp = client.post(path, data=body, headers={"X-Request-ID": "same-id", **headers})
    return resp.status_code, resp.get_data(), dict(resp.headers)


def two_paths(app: Any) -> tuple[Client, Client, list[str]]:
    """A client through the thin path (Flask behind it), one straight to Flask, and the paths Flask was asked."""
    thin = app.wsgi_app
    flask_asked: list[str] = []
    inner = thin.inner

    def counted(environ: dict[str, Any], start_response: Any) -> Any:
        flask_asked.append(environ["PATH_INFO"])
        return inner(environ, start_response)
    thin.inner = counted
    return Client(app), Client(inner), flask_asked


def test_the_thin_path_answers_as_flask_does(app: Any, redis_conn: redis.Redis) -> None:
    fast, flask, flask_asked = two_paths(app)
    good_headers = {"Content-Type": MEDIA, "Authorization": "Bearer events-t"}
    for name, body in GOOD:
        for path in ("/v1/events", "/v1/registries/default/events"):
            for headers in (good_headers, {"Content-Type": "application/json; charset=utf-8",
                                           "Authorization": "bearer  admin-t "}):
                expected = answer(flask, path, body, headers)
                assert expected[0] == 200, (name, expected)
                assert answer(fast, path, body, headers) == expected, (name, path, headers)
    assert flask_asked == [], "a good envelope with a good token was handed to Flask"
    key = f"{app.extensions['janitor'].keys.prefix}:pulls:team/app"
    assert redis_conn.hget(key, DIGEST) is not None  # the thin path recorded the pull

    refused: list[tuple[str, str, bytes, dict[str, str]]] = [
        (f"envelope: {name}", "/v1/events", body, good_headers) for name, body in BAD]
    body = envelope(event())
    refused += [
        ("no token", "/v1/events", body, {"Content-Type": MEDIA}),
        ("a bad token", "/v1/events", body, {**good_headers, "Authorization": "Bearer nope"}),
        ("not bearer", "/v1/events", body, {**good_headers, "Authorization": "Basic events-t"}),
        ("a token without the scope", "/v1/events", body, {**good_headers, "Authorization": "Bearer read-t"}),
        ("not JSON's media type", "/v1/events", body, {**good_headers, "Content-Type": "text/plain"}),
        ("no media type", "/v1/events", body, {"Authorization": "Bearer events-t"}),
        ("an unknown registry", "/v1/registries/nope/events", body, good_headers),
        ("too large", "/v1/events", envelope(*[event()] * 20), good_headers),
        ("a query string", "/v1/events?x=1", body, good_headers),
        ("a trailing slash", "/v1/events/", body, good_headers),
    ]
    for name, path, body, headers in refused:
        flask_asked.clear()
        expected = answer(flask, path, body, headers)
        got = answer(fast, path, body, headers)
        assert got == expected, name
        assert flask_asked, f"{name}: answered without Flask"
        if expected[0] != 200:
            assert set(json.loads(expected[1])) == {"code", "message", "status", "details"}, name


def test_delivered_events_are_counted_in_metrics_under_their_route(app: Any) -> None:
    fast = Client(app)
    labels = {"method": "POST", "route": "/v1/registries/{registry}/events", "status": "200"}
    before = REGISTRY.get_sample_value("janitor_http_requests_total", labels) or 0
    for _ in range(3):
        assert fast.post("/v1/registries/default/events", data=envelope(event()),
                         headers={"Content-Type": MEDIA, "Authorization": "Bearer events-t"}).status_code == 200
    assert REGISTRY.get_sample_value("janitor_http_requests_total", labels) == before + 3


def test_with_redis_away_both_paths_answer_503_in_the_error_shape(tmp_path: Path) -> None:
    from service import create_app

    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", registry_url="http://127.0.0.1:9",
                              events_tokens=("events-t",)))
    fast, flask, flask_asked = two_paths(app)
    headers = {"Content-Type": MEDIA, "Authorization": "Bearer events-t"}
    body = envelope(event(digest="sha256:" + "b" * 64))
    got = answer(fast, "/v1/events", body, headers)
    assert got == answer(flask, "/v1/events", body, headers)
    assert got[0] == 503 and json.loads(got[1])["code"] == "QUEUE_UNAVAILABLE" and flask_asked
