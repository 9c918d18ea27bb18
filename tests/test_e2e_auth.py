"""The service against registries that want credentials: htpasswd basic auth, and bearer tokens from a real
token service (tests/token_server.py). REGISTRY_USERNAME/REGISTRY_PASSWORD reach the registry either way;
listing, a deletion window (GC, restart, health, verify) and the outcome are checked as with no auth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import bcrypt
import docker
import pytest
import redis
import requests

from janitor.registry.manifests import DOCKER_MANIFEST, OCI_MANIFEST
from tests import images
from tests.conftest import Registry, Stack, start_registry, start_stack
from tests.token_server import TokenServer, token_session

pytestmark = pytest.mark.e2e

USER, PASSWORD = "janitor", "s3cret-Pa55"
STEPS = ["preflight", "delete", "drain", "fence", "hold", "gc", "restart", "health", "verify"]


@pytest.fixture
def htpasswd_registry(docker_client: docker.DockerClient, registry_image: str, tmp_path: Path) -> Iterator[Registry]:
    auth = tmp_path / "auth"
    auth.mkdir()
    # distribution reads bcrypt entries only; Apache's `htpasswd -B` writes $2y$, the bcrypt package $2b$.
    entry = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode().replace("$2b$", "$2y$", 1)
    (auth / "htpasswd").write_text(f"someone-else:{bcrypt.hashpw(b'other', bcrypt.gensalt(rounds=5)).decode()}\n"
                                   f"{USER}:{entry}\n")
    reg = start_registry(docker_client, registry_image, volumes={str(auth): {"bind": "/auth", "mode": "ro"}},
                         REGISTRY_AUTH="htpasswd", REGISTRY_AUTH_HTPASSWD_REALM="rj-test-realm",
                         REGISTRY_AUTH_HTPASSWD_PATH="/auth/htpasswd")
    yield reg
    reg.container.remove(force=True, v=True)


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    with TokenServer(USER, PASSWORD) as server:
        yield server


@pytest.fixture
def token_registry(docker_client: docker.DockerClient, registry_image: str, tmp_path: Path,
                   token_server: TokenServer) -> Iterator[Registry]:
    certs = tmp_path / "certs"
    certs.mkdir()
    token_server.write_cert(certs)
    reg = start_registry(docker_client, registry_image, volumes={str(certs): {"bind": "/certs", "mode": "ro"}},
                         **token_server.registry_env("/certs/cert.pem"))
    yield reg
    reg.container.remove(force=True, v=True)


def basic_session(password: str = PASSWORD) -> requests.Session:
    session = requests.Session()
    session.auth = (USER, password)
    return session


def _started(reg: Registry, redis_server: str, redis_conn: redis.Redis, password: str = PASSWORD) -> Stack:
    return start_stack(reg, redis_server, redis_conn, REGISTRY_USERNAME=USER, REGISTRY_PASSWORD=password)


def _assert_locked(reg: Registry, session: requests.Session) -> None:
    """The registry really wants credentials: anonymous reads are refused, authenticated ones served."""
    assert requests.get(f"{reg.url}/v2/_catalog", timeout=10).status_code == 401
    assert requests.head(f"{reg.url}/v2/", timeout=10).status_code == 401
    assert session.get(f"{reg.url}/v2/", timeout=10).status_code == 200


def _list_delete_gc_restart(stack: Stack, session: requests.Session) -> None:
    """Push, list through the API, delete a tag in a full window and check the registry afterwards."""
    reg = stack.registry
    p = images.Pusher(reg.url, session=session)
    doomed = images.image(layers=3, layer_size=30_000)
    keeper = images.image(OCI_MANIFEST)
    solo = images.image()
    assert p.image("team/app", doomed, "old") == doomed.digest
    assert p.image("team/app", keeper, "current") == keeper.digest
    p.manifest("team/app", "alias", keeper.manifest, keeper.media_type)  # a second tag on the same manifest
    p.image("solo", solo, "latest")
    _assert_locked(reg, session)

    listed = stack.get("/v1/repositories")
    assert listed.status_code == 200, listed.text
    assert {r["name"]: r["tag_count"] for r in listed.json()["items"]} == {"team/app": 3, "solo": 1}
    tags = stack.get("/v1/repositories/team/app/tags")
    assert tags.status_code == 200, tags.text
    by_name = {t["name"]: t for t in tags.json()["items"]}
    assert by_name["old"]["digest"] == doomed.digest and by_name["old"]["media_type"] == DOCKER_MANIFEST
    assert by_name["old"]["size"] == doomed.size and by_name["old"]["created"]
    assert by_name["current"]["digest"] == keeper.digest and by_name["current"]["size"] == keeper.size
    assert stack.get("/v1/repositories/nope/tags").json()["code"] == "REPOSITORY_UNKNOWN"

    before = reg.storage_bytes()
    # `old` goes with its manifest; `alias` alone, which on distribution 2.x the worker does by pushing a
    # throwaway manifest over the tag and deleting that: writes that need the push scope too.
    job = stack.wait(stack.delete({"repository": "team/app", "tags": ["old", "alias"]})["id"])
    assert job["status"] == "succeeded", job
    assert [s["name"] for s in job["steps"]] == STEPS
    assert all(s["status"] == "succeeded" for s in job["steps"]), job["steps"]
    assert job["result"]["manifests_deleted"] == [doomed.digest]
    assert next(s for s in job["steps"] if s["name"] == "delete")["outcome"]["untagged"] == ["team/app:alias"]
    gc = job["result"]["gc"]
    freed = set(doomed.blobs) | {doomed.digest}
    # The throwaway's manifest and config go too.
    assert freed < set(gc["deleted_blobs"]) and len(gc["deleted_blobs"]) == len(freed) + 2, gc
    assert reg.storage_bytes() == before - (doomed.size + len(doomed.manifest))
    assert job["result"]["bytes_freed"] > doomed.size + len(doomed.manifest)
    integrity = job["result"]["integrity"]
    # Targeted: team/app:current and solo:latest survive; neither shares a blob with what went.
    assert integrity["broken"] == [] and integrity["mode"] == "targeted" and integrity["surviving_manifests"] == 2

    # The registry, restarted in the window, still wants credentials, and the deleted image is gone.
    _assert_locked(reg, session)
    assert images.head_manifest(reg.url, "team/app", "old", session) == 404
    assert images.head_manifest(reg.url, "team/app", doomed.digest, session) == 404
    assert images.head_manifest(reg.url, "team/app", "alias", session) == 404
    for digest in doomed.blobs:
        assert images.head_blob(reg.url, "team/app", digest, session) == 404
    assert images.pull_verified(reg.url, "team/app", "current", session) == []
    assert images.pull_verified(reg.url, "solo", "latest", session) == []
    # And the API, whose client authenticated before the restart, still reads it.
    after = stack.get("/v1/repositories/team/app/tags")
    assert after.status_code == 200, after.text
    assert [t["name"] for t in after.json()["items"]] == ["current"]


def _assert_auth_failed(stack: Stack) -> None:
    resp = stack.get("/v1/repositories")
    assert resp.status_code == 502, resp.text
    err = resp.json()
    assert err["code"] == "REGISTRY_AUTH_FAILED" and err["status"] == 502 and err["message"], err
    tags = stack.get("/v1/repositories/team/app/tags")
    assert tags.status_code == 502 and tags.json()["code"] == "REGISTRY_AUTH_FAILED", tags.text
    refused = stack.post("/v1/deletions", {"repository": "team/app", "tags": ["v1"]})
    assert refused.status_code == 502 and refused.json()["code"] == "REGISTRY_AUTH_FAILED", refused.text
    assert stack.nothing_queued()


def test_basic_auth_listing_and_a_deletion_window(htpasswd_registry: Registry, redis_server: str,
                                                  redis_conn: redis.Redis) -> None:
    stack = _started(htpasswd_registry, redis_server, redis_conn)
    try:
        _list_delete_gc_restart(stack, basic_session())
    finally:
        stack.kill()


def test_basic_auth_wrong_password_answers_registry_auth_failed(htpasswd_registry: Registry, redis_server: str,
                                                                redis_conn: redis.Redis) -> None:
    images.Pusher(htpasswd_registry.url, session=basic_session()).image("team/app", images.image(), "v1")
    assert basic_session("wrong").get(f"{htpasswd_registry.url}/v2/", timeout=10).status_code == 401
    stack = _started(htpasswd_registry, redis_server, redis_conn, password="wrong")
    try:
        _assert_auth_failed(stack)
    finally:
        stack.kill()


def test_token_auth_listing_and_a_deletion_window(token_registry: Registry, token_server: TokenServer,
                                                  redis_server: str, redis_conn: redis.Redis) -> None:
    session = token_session(USER, PASSWORD)
    stack = _started(token_registry, redis_server, redis_conn)
    try:
        _list_delete_gc_restart(stack, session)
    finally:
        stack.kill()
    # The janitor got its own tokens for what it did: the catalog, reading, pushing the throwaway and
    # deleting in team/app (the test pushers never ask for the catalog or for delete).
    granted = token_server.scopes_granted()
    assert {"registry:catalog:*", "repository:team/app:pull", "repository:team/app:pull,push",
            "repository:team/app:delete"} <= granted, granted
    assert token_server.refusals == 0


def test_token_auth_wrong_password_answers_registry_auth_failed(token_registry: Registry, token_server: TokenServer,
                                                                redis_server: str, redis_conn: redis.Redis) -> None:
    images.Pusher(token_registry.url, session=token_session(USER, PASSWORD)).image("team/app", images.image(), "v1")
    assert token_server.refusals == 0
    # Tokens are what the registry checks: a forged one (signed by another key) is refused.
    forged = TokenServer(USER, PASSWORD, service=token_server.service, issuer=token_server.issuer)
    bad = forged.issue(USER, [{"type": "repository", "name": "team/app", "actions": ["pull"]}])
    resp = requests.get(f"{token_registry.url}/v2/team/app/tags/list", headers={"Authorization": f"Bearer {bad}"},
                        timeout=10)
    assert resp.status_code == 401
    forged.httpd.server_close()
    granted_before = len(token_server.grants)
    stack = _started(token_registry, redis_server, redis_conn, password="wrong")
    try:
        _assert_auth_failed(stack)
    finally:
        stack.kill()
    # The janitor did ask the token service, which refused it and granted nothing.
    assert token_server.refusals > 0 and len(token_server.grants) == granted_before
