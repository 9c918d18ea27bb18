"""The listing index on the real stack: the listing equals what the registry holds after pushes, deletes by the
janitor, deletes by someone else, and a restart with events lost; registry notifications reach the listing
within 2 s and forged or malformed ones change nothing; a slow listing holds up nothing else."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests

from janitor.index import TagIndex
from janitor.registry.client import RegistryClient
from janitor.registry.manifests import ACCEPT, OCI_INDEX, OCI_MANIFEST
from tests import images
from tests.conftest import ROOT, Registry, Stack, free_port, start_stack, wait_http
from tests.images import wait_until

pytestmark = pytest.mark.e2e
EVENTS_TOKEN, READER_TOKEN = "registry-events-token", "reader-token"


def truth(reg: Registry) -> dict[str, dict[str, str]]:
    """repository -> tag -> digest, straight from the registry's API."""
    out: dict[str, dict[str, str]] = {}
    for repo in reg.catalog():
        tags = requests.get(f"{reg.url}/v2/{repo}/tags/list", timeout=30)
        names = (tags.json().get("tags") or []) if tags.status_code == 200 else []
        out[repo] = {t: requests.head(f"{reg.url}/v2/{repo}/manifests/{t}", headers={"Accept": ACCEPT},
                                      timeout=30).headers["Docker-Content-Digest"] for t in names}
    return out


def listing(stack: Stack, settled: bool = True) -> dict[str, dict[str, str]] | None:
    """repository -> tag -> digest, as the service lists it. While pushes are still reaching the index an event
    can land between the repositories page and a tags page (`settled=False`: None, read again)."""
    repos = stack.get("/v1/repositories", params={"page_size": 500})
    assert repos.status_code == 200, repos.text
    out = {}
    for repo in repos.json()["items"]:
        tags = stack.get(f"/v1/repositories/{repo['name']}/tags", params={"page_size": 500})
        assert tags.status_code == 200, tags.text
        out[repo["name"]] = {t["name"]: t["digest"] for t in tags.json()["items"]}
        if repo["tag_count"] != len(out[repo["name"]]):
            assert not settled, (repo, out[repo["name"]])
            return None
    return out


def tags_of(stack: Stack, repo: str) -> dict[str, dict[str, Any]]:
    resp = stack.get(f"/v1/repositories/{repo}/tags", params={"page_size": 500})
    assert resp.status_code == 200, resp.text
    return {t["name"]: t for t in resp.json()["items"]}


def index_check(stack: Stack) -> dict[str, Any]:
    return requests.get(stack.api + "/readyz", timeout=30).json()["checks"]["index"]


def push_fixture(p: images.Pusher) -> dict[str, Any]:
    """Two repositories sharing a layer, an index, two tags on one manifest."""
    shared = images.layer(30_000)
    now = datetime.now(timezone.utc)
    a1 = images.image(OCI_MANIFEST, layers=2, layer_size=20_000, shared_layers=[shared], created=now - timedelta(days=40))
    a2 = images.image(OCI_MANIFEST, layers=1, layer_size=10_000, created=now - timedelta(days=10))
    amd = images.image(OCI_MANIFEST, platform=("linux", "amd64"), created=now - timedelta(days=2))
    arm = images.image(OCI_MANIFEST, platform=("linux", "arm64"), created=now - timedelta(days=1))
    multi = images.index([amd, arm])
    b1 = images.image(OCI_MANIFEST, layers=1, layer_size=5_000, shared_layers=[shared])
    p.image("team/app", a1, "v1")
    p.image("team/app", a1, "alias")
    p.image("team/app", a2, "v2")
    p.index("team/app", multi, "multi")
    p.image("other", b1, "latest")
    return {"a1": a1, "a2": a2, "amd": amd, "arm": arm, "multi": multi, "b1": b1, "shared": shared}


def blob_sizes(*imgs: images.Image) -> dict[str, int]:
    out: dict[str, int] = {}
    for img in imgs:
        out[img.digest] = len(img.manifest)
        out.update({d: len(b) for d, b in img.blobs.items()})
    return out


def test_listing_equals_the_registry_without_notifications(registry: Registry, make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(registry, JANITOR_RECONCILE_INTERVAL="3")
    p = stack.pusher()
    got = push_fixture(p)
    assert listing(stack) == truth(registry)
    assert index_check(stack)["mode"] == "polling"
    tags = tags_of(stack, "team/app")
    assert tags["v1"]["size"] == got["a1"].size and tags["v1"]["created"]
    assert tags["multi"]["media_type"] == OCI_INDEX and tags["multi"]["size"] == got["amd"].size + got["arm"].size
    assert tags["multi"]["platforms"] == ["linux/amd64", "linux/arm64"]
    config = json.loads(got["a1"].config)
    assert tags["v1"]["created"] == config["created"]

    # Sizes: each blob once per repository; usage splits what `other` shares with team/app.
    app_blobs = blob_sizes(got["a1"], got["a2"], got["amd"], got["arm"])
    app_blobs[got["multi"].digest] = len(got["multi"].manifest)
    other_blobs = blob_sizes(got["b1"])
    repos = {r["name"]: r for r in stack.get("/v1/repositories", params={"sort": "-size"}).json()["items"]}
    assert repos["team/app"]["size"] == sum(app_blobs.values()) and repos["other"]["size"] == sum(other_blobs.values())
    assert [r["name"] for r in stack.get("/v1/repositories", params={"sort": "-tags"}).json()["items"]] == ["team/app", "other"]
    assert [r["name"] for r in stack.get("/v1/repositories", params={"q": "team/*"}).json()["items"]] == ["team/app"]
    assert stack.get("/v1/repositories", params={"q": "Team/["}).status_code == 422
    usage = stack.get("/v1/usage").json()
    shared = hashlib.sha256(got["shared"]).hexdigest()
    assert usage["total_bytes"] == sum({**app_blobs, **other_blobs}.values())
    rows = {r["name"]: r for r in usage["items"]}
    assert rows["other"]["shared_bytes"] == len(got["shared"]) == rows["team/app"]["shared_bytes"], shared
    assert rows["other"]["unique_bytes"] == sum(other_blobs.values()) - len(got["shared"])

    # Sorting and age filters on tags.
    old = stack.get("/v1/repositories/team/app/tags", params={"older_than": "30d", "sort": "-created"}).json()["items"]
    assert [t["name"] for t in old] == ["alias", "v1"]
    assert stack.get("/v1/repositories/team/app/tags", params={"older_than": "1x"}).status_code == 422
    newest = stack.get("/v1/repositories/team/app/tags", params={"sort": "-created"}).json()["items"]
    assert [t["name"] for t in newest] == ["multi", "v2", "alias", "v1"]  # an index: its newest child's time

    # Deleted by someone else, straight through the registry API: gone from the listing within RECENTLY_READ
    # (a tags listing reads the registry again unless a read began less than that ago), and not sooner.
    assert requests.delete(f"{registry.url}/v2/team/app/manifests/{got['a2'].digest}", timeout=30).status_code == 202
    changed = time.monotonic()
    assert wait_until(lambda: "v2" not in tags_of(stack, "team/app"), 5, 0.05)
    assert time.monotonic() - changed <= 2.0  # the freshness bound
    assert listing(stack) == truth(registry)
    # Pushed by someone else: there as soon.
    p.image("team/app", got["a2"], "v3")
    changed = time.monotonic()
    assert wait_until(lambda: "v3" in tags_of(stack, "team/app"), 5, 0.05)
    assert time.monotonic() - changed <= 2.0  # the freshness bound
    assert tags_of(stack, "team/app")["v3"]["digest"] == got["a2"].digest
    assert listing(stack) == truth(registry)

    # Deleted by the janitor: gone when the job ends, and no reconcile brings it back.
    job = stack.wait(stack.delete({"repository": "team/app", "tags": ["v1"]})["id"])
    assert job["status"] == "succeeded", job
    assert set(tags_of(stack, "team/app")) == {"alias", "multi", "v3"}  # alias shares v1's manifest: untagged alone
    assert listing(stack) == truth(registry)
    after = time.time()
    assert wait_until(lambda: _reconciled_after(stack, after), 60), index_check(stack)
    assert listing(stack) == truth(registry)


def _reconciled_after(stack: Stack, when: float) -> bool:
    """A reconcile ended at or after `when` (epoch s; reconciled_at has milliseconds, and a worker's first
    reconcile can end within the second it started in)."""
    at = index_check(stack).get("reconciled_at")
    return bool(at) and datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() >= when


def endpoints(port: int) -> str:
    return (f"- name: janitor\n  url: http://127.0.0.1:{port}/v1/events\n"
            f"  headers:\n    Authorization: [Bearer {EVENTS_TOKEN}]\n"
            "  timeout: 2s\n  threshold: 3\n  backoff: 1s\n  ignore: {mediatypes: [application/octet-stream]}\n")


@pytest.fixture
def tokens_file() -> Iterator[str]:
    entries = [{"name": "reader", "token_sha256": hashlib.sha256(READER_TOKEN.encode()).hexdigest(), "scopes": ["read"]}]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump({"tokens": entries}, f)
    yield f.name
    os.unlink(f.name)


@pytest.fixture
def notified(make_registry: Callable[..., Registry], redis_server: str, redis_conn: redis.Redis,
             tokens_file: str) -> Iterator[tuple[Stack, Registry, Callable[[int], Stack]]]:
    """A registry sending notifications to the API's port, and the stack listening there."""
    made: list[Stack] = []

    def start(port: int) -> Stack:
        made.append(start_stack(reg, redis_server, redis_conn, port=port, API_TOKENS_FILE=tokens_file,
                                EVENTS_TOKENS=EVENTS_TOKEN, JANITOR_RECONCILE_INTERVAL="300"))
        return made[-1]

    port = free_port()
    reg = make_registry(REGISTRY_NOTIFICATIONS_ENDPOINTS=endpoints(port))
    stack = start(port)
    yield stack, reg, start
    for s in made:
        s.kill()


def test_events_reach_the_listing_and_forged_ones_change_nothing(notified: tuple[Stack, Registry, Any]) -> None:
    stack, reg, restart = notified
    assert wait_until(lambda: index_check(stack).get("mode") == "notifications" and index_check(stack).get("filled_at"), 60), \
        index_check(stack)
    p = stack.pusher()
    got = push_fixture(p)
    # Every push shows within 2 s, served from the index (no registry read per request in this mode).
    img = images.image(OCI_MANIFEST)
    p.image("fresh/repo", img, "v1")
    pushed = time.monotonic()
    assert wait_until(lambda: "fresh/repo" in [r["name"] for r in stack.get("/v1/repositories").json()["items"]], 10, 0.05)
    assert wait_until(lambda: tags_of(stack, "fresh/repo").get("v1", {}).get("digest") == img.digest, 10, 0.05)
    seen = time.monotonic() - pushed
    assert seen < 2.0, f"the push showed after {seen:.2f}s"
    if not wait_until(lambda: listing(stack, settled=False) == truth(reg), 5, 0.2):
        have, want = listing(stack), truth(reg)
        assert have == want, {r: (have.get(r), want.get(r)) for r in set(have) | set(want) if have.get(r) != want.get(r)}
    assert index_check(stack).get("last_event_at")

    # Deleted by someone else: the registry's delete event removes it within 2 s.
    assert requests.delete(f"{reg.url}/v2/team/app/manifests/{got['a2'].digest}", timeout=30).status_code == 202
    deleted = time.monotonic()
    assert wait_until(lambda: "v2" not in tags_of(stack, "team/app"), 10, 0.05)
    assert time.monotonic() - deleted < 2.0
    assert listing(stack) == truth(reg)

    # Forged events with a valid token: a push of a tag that does not exist, a delete of a manifest that does,
    # a repository the registry does not know. Each is checked against the registry and changes nothing.
    before = listing(stack)
    forged = {"events": [
        {"action": "push", "target": {"mediaType": OCI_MANIFEST, "digest": got["a2"].digest, "repository": "team/app", "tag": "ghost"}},
        {"action": "delete", "target": {"digest": got["a1"].digest, "repository": "team/app"}},
        {"action": "delete", "target": {"repository": "team/app", "tag": "v1"}},
        {"action": "push", "target": {"mediaType": OCI_MANIFEST, "digest": got["a2"].digest, "repository": "made/up", "tag": "v1"}},
    ]}
    resp = post_events(stack, forged)
    assert resp.status_code == 200, resp.text
    assert resp.json()["received"] == 4
    assert listing(stack) == before == truth(reg)

    # Refused: no token, a token without the events scope, not JSON, not an envelope.
    assert post_events(stack, forged, token=None).status_code == 401
    denied = post_events(stack, forged, token=READER_TOKEN)
    assert denied.status_code == 403 and denied.json()["code"] == "FORBIDDEN"
    # The registry's token (EVENTS_TOKENS) may send events and do nothing else.
    events_only = requests.get(stack.api + "/v1/repositories", headers={"Authorization": f"Bearer {EVENTS_TOKEN}"}, timeout=30)
    assert events_only.status_code == 403, events_only.text
    for body in (b"{not json", b'{"events": "x"}', b'{"events": [{"action": "push"}]}', b"[]",
                 json.dumps({"events": [{"action": "push", "target": {"repository": "UP/../x", "tag": "v1"}}]}).encode(),
                 json.dumps({"events": [{"action": "push", "target": {"repository": "a", "tag": "v" * 200}}]}).encode(),
                 json.dumps({"events": [{"action": "push", "target": {"repository": "a"}}] * 101}).encode()):
        bad = post_events(stack, body)
        assert 400 <= bad.status_code < 500, (body[:60], bad.status_code, bad.text)
        assert set(bad.json()) == {"code", "message", "status", "details"}
    assert listing(stack) == truth(reg)

    # The janitor's own deletion: gone at once, and never back.
    job = stack.wait(stack.delete({"repository": "team/app", "tags": ["multi"]})["id"])
    assert job["status"] == "succeeded", job
    assert "multi" not in tags_of(stack, "team/app")

    # Down while things change: events are lost; the worker's reconcile at start repairs the listing.
    stack.stop()
    p.image("team/app", got["a2"], "while-down")
    assert requests.delete(f"{reg.url}/v2/other/manifests/{got['b1'].digest}", timeout=30).status_code == 202
    back = restart(free_port())  # on another port: the registry's events still go to the old one, lost
    started = time.time()
    assert wait_until(lambda: _reconciled_after(back, started), 60), index_check(back)
    assert listing(back) == truth(reg)
    assert "while-down" in tags_of(back, "team/app") and tags_of(back, "other") == {}


def post_events(stack: Stack, body: Any, token: str | None = EVENTS_TOKEN) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(stack.api + "/v1/events", data=data, headers=headers, timeout=30)


def test_a_slow_listing_holds_up_nothing_else(registry: Registry, redis_server: str, redis_conn: redis.Redis) -> None:
    """gunicorn as gunicorn.conf.py sets it up (no -w/--threads given): while listings wait on a registry that
    does not answer, /healthz and a job poll answer at once."""
    images.Pusher(registry.url).image("team/app", images.image(), "v1")
    port = free_port()
    env = {**os.environ, "REGISTRY_URL": registry.url, "REGISTRY_CONTAINER": registry.name, "REDIS_URL": redis_server,
           "API_TOKENS": "test-token", "JANITOR_HTTP_TIMEOUT": "8", "JANITOR_REGISTRY_RETRY": "1"}
    env.pop("WEB_CONCURRENCY", None)
    env.pop("GUNICORN_CMD_ARGS", None)
    api = subprocess.Popen([sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "service:create_app()"],
                           cwd=ROOT, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer test-token"}
    try:
        wait_http(f"{base}/healthz")
        job = requests.post(f"{base}/v1/gc", json={}, headers=headers, timeout=30).json()
        registry.container.pause()
        try:
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                slow = [pool.submit(requests.get, f"{base}/v1/repositories/team/app/tags", headers=headers, timeout=60)
                        for _ in range(6)]
                time.sleep(1.0)
                assert not any(f.done() for f in slow), "the registry is paused: listings must be waiting"
                for path in ("/healthz", f"/v1/jobs/{job['id']}"):
                    started = time.monotonic()
                    resp = requests.get(base + path, headers=headers, timeout=30)
                    took = time.monotonic() - started
                    assert resp.status_code == 200 and took < 1.0, (path, resp.status_code, took)
                registry.container.unpause()
                assert all(f.result().status_code in (200, 503) for f in slow)
        finally:
            if registry.container.reload() or registry.container.status == "paused":
                registry.container.unpause()
    finally:
        os.killpg(api.pid, 15)
        api.wait(10)


def test_the_first_fill_skips_what_a_listing_read_just_before_it(registry: Registry, redis_conn: redis.Redis) -> None:
    """The API is up before the worker: a cold listing's reads in the moments before the first fill began are not
    repeated by it; every later reconcile reads everything again."""
    images.Pusher(registry.url).image("team/app", images.image(), "v1")
    index = TagIndex(redis_conn, "janitor:first-fill", RegistryClient(registry.url), 4, "polling")
    # As a listing saw it 5 s ago (before the push, say): indexed with no tags.
    assert index.commit("team/app", None, lambda tags, indexed: {})
    redis_conn.hset(index.checked_key, "team/app", repr(time.time() - 5))
    index.reconcile()
    assert index.filled() and index.tags("team/app") == {}
    index.reconcile()
    assert set(index.tags("team/app") or {}) == {"v1"}


def test_a_reconcile_pauses_before_each_repository(registry: Registry, redis_conn: redis.Redis) -> None:
    """The reconciler's pause (a window holding the lease, worker/indexer.py) comes before each repository's
    read: one that stops the reconcile leaves nothing read; one that lets it go on is asked once per repository."""
    pusher = images.Pusher(registry.url)
    for repo in ("team/a", "team/b", "team/c"):
        pusher.image(repo, images.image(), "v1")
    index = TagIndex(redis_conn, "janitor:pausing", RegistryClient(registry.url), 4, "polling")

    class Window(Exception):
        pass

    def refuse() -> None:
        raise Window()
    with pytest.raises(Window):
        index.reconcile(pause=refuse)
    assert [index.tags(r) for r in ("team/a", "team/b", "team/c")] == [None, None, None]
    asked: list[float] = []
    index.reconcile(pause=lambda: asked.append(time.monotonic()))
    assert len(asked) == 3
    assert all(set(index.tags(r) or {}) == {"v1"} for r in ("team/a", "team/b", "team/c"))


def test_the_workers_reconcile_waits_while_a_window_holds_the_lease(stack: Stack) -> None:
    """The worker's reconciler, on the real stack: asked to reconcile while a window holds the registry's lease
    (as one does from its restart to its end), it waits, and reconciles within seconds of the lease going."""
    assert wait_until(lambda: bool(index_check(stack).get("reconciled_at")), 60), index_check(stack)
    prefix = f"janitor:{urlsplit(stack.registry.url).netloc}"  # the registry's namespace: its host and port
    stack.redis.set(f"{prefix}:lock", "1:a window", px=60_000)
    try:
        stack.redis.set(f"{prefix}:index:reconcile", "now")
        assert wait_until(lambda: not stack.redis.exists(f"{prefix}:index:reconcile"), 10)  # taken up
        # The reconciler takes a request only between reconciles: one that was running has ended by now.
        asked = time.time()
        time.sleep(3)
        assert not _reconciled_after(stack, asked), index_check(stack)
    finally:
        stack.redis.delete(f"{prefix}:lock")
    released = time.time()
    assert wait_until(lambda: _reconciled_after(stack, released), 15), index_check(stack)


def test_one_reader_per_repository_across_processes(registry: Registry, redis_conn: redis.Redis) -> None:
    """Two readers (the worker's fill and an API thread, say) asking for the same repository at once: one reads
    the registry, the other waits for that read and uses it."""
    images.Pusher(registry.url).image("team/app", images.image(), "v1")

    class Counting(RegistryClient):
        reads = 0

        def tags(self, repository: str) -> list[str]:
            type(self).reads += 1
            time.sleep(0.3)  # a slow registry: the other reader arrives while this read runs
            return super().tags(repository)

    readers = [TagIndex(redis_conn, "janitor:claims", Counting(registry.url), 4, "polling") for _ in range(2)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda index: index.refresh("team/app", listed=True), readers))
    assert found == [True, True]
    assert Counting.reads == 1
    assert set(readers[1].tags("team/app") or {}) == {"v1"}
