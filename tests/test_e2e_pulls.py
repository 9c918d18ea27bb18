"""Keep what is pulled, on the real stack: a registry notifying the service of manifest pulls (as
docker-compose.yml configures it), `last_pulled` in the tag listing (the janitor's own reads not counted), the
policy rules keep_pulled_within and keep_last_pulled with their reasons and the plan's word on its pull data,
pushes still fresh in the listing, and bad values for the new fields refused in the error shape."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import pytest
import requests

from janitor.registry.manifests import ACCEPT, OCI_MANIFEST
from tests import images
from tests.conftest import Stack
from tests.images import wait_until
from tests.test_e2e_index import (  # noqa: F401 - fixtures
    index_check,
    notified,
    post_events,
    tags_of,
    tokens_file,
)

pytestmark = pytest.mark.e2e
DOCKER_UA = "docker/24.0.7 go/go1.20.10 git-commit/311b9ff os/linux arch/amd64"


def pull(stack: Stack, repo: str, tag: str) -> None:
    """As `docker pull` does it: HEAD the tag, then GET the manifest by digest."""
    base = f"{stack.registry.url}/v2/{repo}/manifests/"
    headers = {"Accept": ACCEPT, "User-Agent": DOCKER_UA}
    digest = requests.head(base + tag, headers=headers, timeout=30).headers["Docker-Content-Digest"]
    assert requests.get(base + digest, headers=headers, timeout=30).status_code == 200


def dry_run(stack: Stack, name: str) -> dict[str, Any]:
    resp = stack.post(f"/v1/policies/{name}/runs", {"dry_run": True})
    assert resp.status_code == 202, resp.text
    job = stack.wait(resp.json()["id"])
    assert job["status"] == "succeeded", job
    return job["result"]["plan"]


def kept(plan: dict[str, Any], repo: str = "team/app") -> dict[str, list[str]]:
    [view] = [r for r in plan["repositories"] if r["repository"] == repo]
    return {k["tag"]: k["reasons"] for k in view["keep"]}


def deleted(plan: dict[str, Any], repo: str = "team/app") -> set[str]:
    [view] = [r for r in plan["repositories"] if r["repository"] == repo]
    return {d["tag"] for d in view["delete"]}


def policy(stack: Stack, body: dict[str, Any]) -> None:
    resp = stack.post("/v1/policies", {"repositories": ["team/app"], **body})
    assert resp.status_code == 201, resp.text


def test_pulls_reach_the_listing_and_the_policies(notified: tuple[Stack, Any, Any]) -> None:  # noqa: F811
    stack, _, _ = notified
    assert wait_until(lambda: index_check(stack).get("mode") == "notifications" and index_check(stack).get("filled_at"),
                      60), index_check(stack)
    p = stack.pusher()
    digests = {t: p.image("team/app", images.image(OCI_MANIFEST, layers=1, layer_size=512), t) for t in ("v1", "v2", "v3")}
    pushed = time.monotonic()
    assert wait_until(lambda: set(tags_of(stack, "team/app")) == {"v1", "v2", "v3"}, 10, 0.05)
    assert time.monotonic() - pushed < 2.0  # pushes still show within 2 s
    # The janitor read every pushed tag (a HEAD each, pull events the registry sent it): none counts as a pull.
    time.sleep(1.0)
    assert {t: e["last_pulled"] for t, e in tags_of(stack, "team/app").items()} == {"v1": None, "v2": None, "v3": None}

    # Before any pull is heard, the pull rules judge nothing: every tag stays, and the plan says why.
    policy(stack, {"name": "recent", "keep_pulled_within": "1h"})
    plan = dry_run(stack, "recent")
    assert kept(plan) == {"v1": ["no_pull_data"], "v2": ["no_pull_data"], "v3": ["no_pull_data"]}
    assert plan["pulls"]["heard_since"] is None and plan["pulls"]["observed"] is False

    # Someone pulls v1: its last_pulled shows (to the second), the others' stay null.
    before = first_pull = int(time.time())
    pull(stack, "team/app", "v1")
    assert wait_until(lambda: tags_of(stack, "team/app")["v1"]["last_pulled"], 5, 0.05), tags_of(stack, "team/app")
    shown = tags_of(stack, "team/app")
    when = datetime.fromisoformat(shown["v1"]["last_pulled"].replace("Z", "+00:00")).timestamp()
    assert before <= when <= time.time() and shown["v2"]["last_pulled"] is None

    # Pulls heard for less than the hour keep_pulled_within names: v1 pulled recently, the others unknown.
    plan = dry_run(stack, "recent")
    assert kept(plan) == {"v1": ["pulled_recently"], "v2": ["no_pull_data"], "v3": ["no_pull_data"]}
    assert plan["pulls"]["heard_since"] and plan["pulls"]["observed"] is False and "no_pull_data" in plan["pulls"]["note"]
    assert {k["tag"]: k["last_pulled"] for k in plan["repositories"][0]["keep"]}["v1"] == shown["v1"]["last_pulled"]

    # keep_last_pulled: once pulls are heard, the N most recently pulled stay; tags never pulled since may go.
    policy(stack, {"name": "last", "keep_last_pulled": 1})
    plan = dry_run(stack, "last")
    assert kept(plan) == {"v1": ["keep_last_pulled"]} and deleted(plan) == {"v2", "v3"}

    # A short keep_pulled_within, observed in full: v1's pull is too old by now; v2 is pulled all along, as a
    # busy tag is (every 0.5 s, so however slow the machine, its last pull is within the 5 s at plan time).
    policy(stack, {"name": "short", "keep_pulled_within": "5s"})
    while time.time() < first_pull + 6:
        time.sleep(0.2)
    stop = threading.Event()

    def keep_pulling() -> None:
        while not stop.wait(0.5):
            try:
                pull(stack, "team/app", "v2")
            except (requests.RequestException, KeyError, AssertionError):
                pass  # the window restarts the registry: pulled again half a second later
    pull(stack, "team/app", "v2")
    puller = threading.Thread(target=keep_pulling, daemon=True)
    puller.start()
    try:
        assert wait_until(lambda: tags_of(stack, "team/app")["v2"]["last_pulled"], 5, 0.05)
        plan = dry_run(stack, "short")
        assert plan["pulls"]["observed"] is True
        assert kept(plan) == {"v2": ["pulled_recently"]} and deleted(plan) == {"v1", "v3"}
        # Carried out for real: v1 and v3 go, v2 stays.
        resp = stack.post("/v1/policies/short/runs", {"dry_run": False})
        assert resp.status_code == 202, resp.text
        job = stack.wait(resp.json()["id"])
    finally:
        stop.set()
        puller.join(10)
    assert job["status"] == "succeeded", job
    assert set(tags_of(stack, "team/app")) == {"v2"}
    assert digests["v2"] == tags_of(stack, "team/app")["v2"]["digest"]


def test_pull_events_are_recorded_once_by_digest_and_bad_values_are_refused(notified: tuple[Stack, Any, Any]) -> None:  # noqa: F811
    stack, _, _ = notified
    p = stack.pusher()
    digest = p.image("team/lib", images.image(OCI_MANIFEST, layers=1, layer_size=512), "v1")
    assert wait_until(lambda: "v1" in tags_of(stack, "team/lib"), 10, 0.05)
    event = {"action": "pull", "timestamp": "2026-01-02T03:04:05.678901234Z",
             "target": {"mediaType": OCI_MANIFEST, "digest": digest, "repository": "team/lib", "tag": "v1"},
             "request": {"useragent": DOCKER_UA}}
    blob = {**event, "target": {**event["target"], "mediaType": "application/octet-stream"}}
    own = {**event, "request": {"useragent": "registry-janitor (python-requests/2.32.3)"}}
    resp = post_events(stack, {"events": [event, blob, own]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["pulls"] == 1 and resp.json()["ignored"] == 2
    assert tags_of(stack, "team/lib")["v1"]["last_pulled"] == "2026-01-02T03:04:05Z"  # the event's time
    older = {**event, "timestamp": "2025-01-01T00:00:00Z"}
    assert post_events(stack, {"events": [older]}).status_code == 200
    assert tags_of(stack, "team/lib")["v1"]["last_pulled"] == "2026-01-02T03:04:05Z"  # only a newer time is kept

    # A manifest deleted straight through the registry loses its pull time once the registry confirms it gone
    # (its delete event is a hint); a delete event naming a digest still stored changes nothing.
    other = p.image("team/lib", images.image(OCI_MANIFEST, layers=1, layer_size=512), "v2")
    assert post_events(stack, {"events": [{**event, "target": {**event["target"], "digest": other, "tag": "v2"}}]}
                       ).json()["pulls"] == 1
    [key] = stack.redis.keys("*:pulls:team/lib")
    forged = {"action": "delete", "timestamp": "2026-01-02T03:04:06Z",
              "target": {"repository": "team/lib", "digest": other}}
    assert post_events(stack, {"events": [forged]}).status_code == 200
    assert requests.delete(f"{stack.registry.url}/v2/team/lib/manifests/{digest}", timeout=30).status_code == 202
    assert wait_until(lambda: not stack.redis.hexists(key, digest), 10, 0.05), stack.redis.hgetall(key)
    assert stack.redis.hexists(key, other)

    for body, field in (({"keep_pulled_within": "30"}, "keep_pulled_within"),
                        ({"keep_pulled_within": 30}, "keep_pulled_within"),
                        ({"keep_pulled_within": "0d"}, "keep_pulled_within"),
                        ({"keep_last_pulled": -1}, "keep_last_pulled"),
                        ({"keep_last_pulled": "5"}, "keep_last_pulled"),
                        ({"keep_last_pulled": True}, "keep_last_pulled"),
                        ({"keep_last_pulled": 1.5}, "keep_last_pulled")):
        resp = stack.post("/v1/policies", {"name": "bad", "repositories": ["team/*"], **body})
        assert resp.status_code == 422, (body, resp.text)
        error = resp.json()
        assert set(error) == {"code", "message", "status", "details"} and field in error["details"], error
        put = requests.put(stack.api + "/v1/policies/bad", json={"repositories": ["team/*"], **body},
                           headers=stack.headers, timeout=30)
        assert put.status_code == 422 and field in put.json()["details"], put.text
    assert stack.get("/v1/policies/bad").status_code == 404  # nothing stored
    # An event whose pull names a bad repository is refused like any event.
    bad = post_events(stack, {"events": [{**event, "target": {**event["target"], "repository": "UP/../x"}}]})
    assert bad.status_code == 422 and set(bad.json()) == {"code", "message", "status", "details"}


def test_deleted_manifests_lose_their_pull_times_and_a_restore_brings_them_back(  # noqa: F811
        notified: tuple[Stack, Any, Any]) -> None:
    """The window's delete step drops the pull time of each manifest it deletes (a repository it removes loses
    its whole hash), the restore record keeps it, and a restore puts it back."""
    stack, _, _ = notified
    p = stack.pusher()
    d1 = p.image("team/app", images.image(OCI_MANIFEST, layers=1, layer_size=512), "v1")
    d2 = p.image("team/app", images.image(OCI_MANIFEST, layers=1, layer_size=512), "v2")
    d3 = p.image("team/gone", images.image(OCI_MANIFEST, layers=1, layer_size=512), "only")
    assert wait_until(lambda: set(tags_of(stack, "team/app")) == {"v1", "v2"} and "only" in tags_of(stack, "team/gone"),
                      10, 0.05)

    def pulled(repo: str, tag: str, digest: str) -> dict[str, Any]:
        return {"action": "pull", "timestamp": "2026-01-02T03:04:05Z", "request": {"useragent": DOCKER_UA},
                "target": {"mediaType": OCI_MANIFEST, "digest": digest, "repository": repo, "tag": tag}}
    resp = post_events(stack, {"events": [pulled("team/app", "v1", d1), pulled("team/app", "v2", d2),
                                          pulled("team/gone", "only", d3)]})
    assert resp.status_code == 200 and resp.json()["pulls"] == 3, resp.text
    [app_key] = stack.redis.keys("*:pulls:team/app")
    [gone_key] = stack.redis.keys("*:pulls:team/gone")
    assert set(stack.redis.hkeys(app_key)) == {d1.encode(), d2.encode()}

    def ok(job: dict[str, Any]) -> dict[str, Any]:
        done = stack.wait(job["id"], timeout=180)
        assert done["status"] == "succeeded", done
        return done
    by_tag = ok(stack.delete({"repository": "team/app", "tags": ["v1"], "restore_window": "10m"}))
    assert by_tag["result"]["manifests_deleted"] == [d1]
    ok(stack.delete({"repository": "team/gone", "all_tags": True}))
    assert set(stack.redis.hkeys(app_key)) == {d2.encode()}  # v2 was not deleted: its pull time stays
    assert not stack.redis.exists(gone_key)  # the repository was removed: its hash went with it

    ok(stack.post(f"/v1/jobs/{by_tag['id']}/restore").json())
    assert stack.redis.hget(app_key, d1) == str(int(datetime.fromisoformat("2026-01-02T03:04:05+00:00").timestamp())).encode()
    assert wait_until(lambda: tags_of(stack, "team/app").get("v1", {}).get("last_pulled") == "2026-01-02T03:04:05Z", 30)


def test_a_repository_named_since_is_recorded_and_the_old_marker_moves(redis_conn: Any) -> None:
    """The "heard since" marker was <prefix>:pulls:since, the hash key of a repository named `since`: a pull
    of it failed its envelope, which the registry then retried for ever. The marker moves on the next write."""
    from janitor.planning.pulls import PullBook

    book = PullBook(redis_conn, "janitor:t")
    redis_conn.set("janitor:t:pulls:since", "1000")  # a marker written before the upgrade
    assert book.heard_since() == datetime.fromtimestamp(1000).astimezone()
    digest = "sha256:" + "c" * 64
    pulled = {"action": "pull", "timestamp": "2026-01-02T03:04:05Z", "request": {"useragent": DOCKER_UA},
              "target": {"mediaType": OCI_MANIFEST, "digest": digest, "repository": "since", "tag": "v1"}}
    assert book.record([pulled]) == 1
    assert redis_conn.get("janitor:t:pulls-since") == b"1000"  # moved, not reset
    assert book.heard_since() == datetime.fromtimestamp(1000).astimezone()
    assert set(book.times(["since"])["since"]) == {digest}
