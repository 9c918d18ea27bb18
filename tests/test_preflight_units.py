"""Preflight, layout and registry-edge rules that need no Docker: config discovery, traps read from container
attrs, the storage driver, path validation, per-repository holds, credential origins (on real loopback HTTP
servers) and size limits."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from janitor import errors
from janitor.registry.client import (
    CONFIG_LIMIT,
    LIST_LIMIT,
    MANIFEST_LIMIT,
    RegistryClient,
    origin,
)
from janitor.registry.container import ExecResult, command_of, config_path_from, env_of
from janitor.registry.manifests import OCI_MANIFEST, sha256_digest
from janitor.storage import layout
from janitor.storage.files import only_missing
from janitor.window import cache, holds, preflight

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
D3 = "sha256:" + "c" * 64

# -- config path: the way distribution finds it ------------------------------------------------------------


@pytest.mark.parametrize("argv,env,expected", [
    (["/entrypoint.sh", "/etc/docker/registry/config.yml"], {}, "/etc/docker/registry/config.yml"),  # registry:2
    (["/entrypoint.sh", "/etc/distribution/config.yml"], {}, "/etc/distribution/config.yml"),  # registry:3
    (["registry", "serve", "/srv/reg.yaml"], {"REGISTRY_CONFIGURATION_PATH": "/other.yml"}, "/srv/reg.yaml"),
    (["registry", "serve"], {"REGISTRY_CONFIGURATION_PATH": "/cfg/elsewhere.yml"}, "/cfg/elsewhere.yml"),
    (["/entrypoint.sh", "serve"], {"REGISTRY_CONFIGURATION_PATH": "/cfg/x.yml"}, "/cfg/x.yml"),
    (["/bin/registry", "serve", "/conf/registry"], {}, "/conf/registry"),  # any path, no suffix needed
    (["sh", "-c", "exec registry serve /x/c.yml"], {}, "/x/c.yml"),
    # A wrapper shell that passes the path on as its positional argument.
    (["/bin/sh", "-c", "export A=b; exec registry serve \"$1\"", "sh", "/y/c.yml"], {}, "/y/c.yml"),
    (["/bin/sh", "-c", "exec registry serve \"$1\""], {"REGISTRY_CONFIGURATION_PATH": "/e.yml"}, "/e.yml"),
    (["registry", "serve"], {}, None),  # distribution itself refuses to start: say so, never guess
    (["/entrypoint.sh"], {}, None),
])
def test_config_path_is_found_as_distribution_finds_it(argv: list[str], env: dict[str, str],
                                                      expected: str | None) -> None:
    assert config_path_from(argv, env) == expected


def test_command_and_env_come_from_inspect_attrs() -> None:
    attrs = {"Path": "registry", "Args": ["serve"], "Config": {"Env": ["A=1", "REGISTRY_CONFIGURATION_PATH=/c.yml",
                                                                          "B=x=y", "NOVALUE"]}}
    assert command_of(attrs) == ["registry", "serve"]
    assert env_of(attrs) == {"A": "1", "REGISTRY_CONFIGURATION_PATH": "/c.yml", "B": "x=y"}
    assert config_path_from(command_of(attrs), env_of(attrs)) == "/c.yml"


# -- traps -------------------------------------------------------------------------------------------------

FS = preflight.StorageAccess("filesystem")
CONFIG = "/etc/docker/registry/config.yml"


def _attrs(env: list[str] | None = None, mounts: list[dict[str, Any]] | None = None,
           readonly_rootfs: bool = False) -> dict[str, Any]:
    return {"Path": "/entrypoint.sh", "Args": [CONFIG], "Config": {"Env": env or []},
            "Mounts": mounts or [], "HostConfig": {"ReadonlyRootfs": readonly_rootfs}}


def _codes(traps: list[errors.PreflightFailed]) -> list[str]:
    return [t.code for t in traps]


def test_maintenance_in_the_environment_is_a_trap_that_names_the_variable_and_the_fix() -> None:
    env = ['REGISTRY_STORAGE_MAINTENANCE={"uploadpurging":{"enabled":false}}', "REGISTRY_STORAGE_DELETE_ENABLED=true"]
    traps = preflight.find_traps(_attrs(env), CONFIG, FS)
    assert _codes(traps) == ["REGISTRY_ENV_OVERRIDES_MAINTENANCE"]
    assert "REGISTRY_STORAGE_MAINTENANCE" in traps[0].message and CONFIG in traps[0].message
    assert "remove" in traps[0].message and traps[0].details["variables"] == ["REGISTRY_STORAGE_MAINTENANCE"]
    leaf = preflight.find_traps(_attrs(["REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED=false"]), CONFIG, FS)
    assert _codes(leaf) == ["REGISTRY_ENV_OVERRIDES_MAINTENANCE"]
    # Single keys elsewhere in storage do not touch the maintenance section.
    assert preflight.find_traps(_attrs(["REGISTRY_STORAGE_DELETE_ENABLED=true",
                                        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/data"]), CONFIG, FS) == []


def test_registry_storage_in_the_environment_replaces_the_section_the_fence_writes() -> None:
    traps = preflight.find_traps(_attrs(["REGISTRY_STORAGE=filesystem"]), CONFIG, FS)
    assert _codes(traps) == ["REGISTRY_ENV_OVERRIDES_STORAGE"] and "REGISTRY_STORAGE" in traps[0].message
    # inmemory never gets a fence (no GC runs), so nothing is defeated.
    assert preflight.find_traps(_attrs(["REGISTRY_STORAGE=inmemory"]), CONFIG,
                                preflight.StorageAccess("inmemory")) == []


def test_config_mounts() -> None:
    directory = {"Type": "bind", "Source": "/srv/reg", "Destination": "/etc/docker/registry", "RW": True}
    assert preflight.find_traps(_attrs(mounts=[directory]), CONFIG, FS) == []
    ro_dir = {**directory, "RW": False, "Mode": "ro"}
    traps = preflight.find_traps(_attrs(mounts=[ro_dir]), CONFIG, FS)
    assert _codes(traps) == ["REGISTRY_CONFIG_READ_ONLY"] and "/etc/docker/registry" in traps[0].message
    single = {"Type": "bind", "Source": "/srv/reg/config.yml", "Destination": CONFIG, "RW": True}
    traps = preflight.find_traps(_attrs(mounts=[directory, single]), CONFIG, FS)  # the most specific mount counts
    assert _codes(traps) == ["REGISTRY_CONFIG_FILE_MOUNT"]
    assert "/srv/reg:/etc/docker/registry" in traps[0].message  # the fix, spelled out
    both = preflight.find_traps(_attrs(mounts=[{**single, "RW": False}]), CONFIG, FS)
    assert _codes(both) == ["REGISTRY_CONFIG_FILE_MOUNT", "REGISTRY_CONFIG_READ_ONLY"]
    # A mount that merely shares a prefix is not the config's mount.
    other = {"Type": "bind", "Source": "/x", "Destination": "/etc/docker/reg", "RW": False}
    assert preflight.find_traps(_attrs(mounts=[other]), CONFIG, FS) == []
    assert _codes(preflight.find_traps(_attrs(readonly_rootfs=True), CONFIG, FS)) == ["REGISTRY_CONFIG_READ_ONLY"]
    assert preflight.find_traps(_attrs(mounts=[directory], readonly_rootfs=True), CONFIG, FS) == []


def test_several_traps_are_all_reported() -> None:
    report = preflight.Report(CONFIG, FS, "/var/lib/registry", preflight.find_traps(
        _attrs(["REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED=false"],
               [{"Type": "bind", "Source": "/s/c.yml", "Destination": CONFIG, "RW": False}]), CONFIG, FS))
    with pytest.raises(errors.EnvOverridesMaintenance) as caught:
        report.raise_first()
    assert [a["code"] for a in caught.value.details["also"]] == ["REGISTRY_CONFIG_FILE_MOUNT",
                                                                 "REGISTRY_CONFIG_READ_ONLY"]


# -- storage driver --------------------------------------------------------------------------------------


@pytest.mark.parametrize("env,config,driver", [
    ({}, {"storage": {"filesystem": {"rootdirectory": "/x"}, "delete": {"enabled": True},
                      "maintenance": {}, "cache": {"blobdescriptor": "inmemory"}}}, "filesystem"),
    ({}, {"storage": {"s3": {"bucket": "b"}, "redirect": {"disable": True}}}, "s3"),
    ({"REGISTRY_STORAGE": "inmemory"}, {"storage": {"filesystem": {}}}, "inmemory"),
    ({"REGISTRY_STORAGE": "S3"}, {}, "s3"),
    ({}, {}, "unknown"),
])
def test_storage_driver(env: dict[str, str], config: dict[str, Any], driver: str) -> None:
    assert preflight.storage_driver(env, config) == driver


def test_protections_off_unless_the_janitor_reads_the_storage() -> None:
    assert FS.protections_off == {} and FS.gc_runs and FS.message == "filesystem storage: every protection is on"
    s3 = preflight.StorageAccess("s3")
    assert s3.protections_off == {} and s3.gc_runs and s3.readable and not s3.filesystem
    assert s3.message == "s3 storage: every protection is on"
    gcs = preflight.StorageAccess("gcs")
    assert set(gcs.protections_off) == {"holds", "untagged_listing", "repository_removal", "exact_bytes"}
    assert gcs.gc_runs and "'gcs'" in gcs.message and "filesystem and s3" in gcs.message
    mem = preflight.StorageAccess("inmemory")
    assert "garbage_collection" in mem.protections_off and not mem.gc_runs
    assert mem.as_dict()["protections_off"] == sorted(mem.protections_off)


@pytest.mark.parametrize("request_body,needs", [
    ({"repository": "a", "untagged": True}, True), ({"repository": "a", "all_tags": True}, True),
    ({"all_repositories": True, "confirm": "h"}, True), ({"repository": "a", "tags": ["t"]}, False),
    ({"repository": "a", "digests": [D1]}, False),
])
def test_requests_that_need_the_registry_files(request_body: dict[str, Any], needs: bool) -> None:
    assert (preflight.needs_storage(request_body) is not None) is needs
    preflight.refuse_without_storage(request_body, FS)  # filesystem: everything goes
    preflight.refuse_without_storage(request_body, preflight.StorageAccess("s3"))  # and s3
    preflight.refuse_without_storage(request_body, {"driver": "s3", "filesystem": False, "readable": True})
    if needs:
        with pytest.raises(errors.StorageAccessRequired, match="inmemory"):
            preflight.refuse_without_storage(request_body, {"driver": "inmemory", "filesystem": False})
    else:
        preflight.refuse_without_storage(request_body, preflight.StorageAccess("inmemory"))


# -- layout ----------------------------------------------------------------------------------------------


def test_layout_builds_every_path_from_validated_parts() -> None:
    lay = layout.Layout("/var/lib/registry/")
    assert lay.v2 == "/var/lib/registry/docker/registry/v2"
    assert lay.repository("team/app") == "/var/lib/registry/docker/registry/v2/repositories/team/app"
    assert lay.revision("team/app", D1) == lay.repository("team/app") + "/_manifests/revisions/sha256/" + "a" * 64
    assert lay.tag("team/app", "v1.0") == lay.repository("team/app") + "/_manifests/tags/v1.0"
    assert lay.blob_data(D2) == f"{lay.v2}/blobs/sha256/bb/{'b' * 64}/data"
    assert lay.layers("x") == lay.repository("x") + "/_layers" and lay.uploads("x") == lay.repository("x") + "/_uploads"
    assert lay.rel_blob_data(D2) == f"blobs/sha256/bb/{'b' * 64}/data"
    assert lay.rel_revision_link("a/b", D1) == f"repositories/a/b/_manifests/revisions/sha256/{'a' * 64}/link"


@pytest.mark.parametrize("call", [
    lambda lay: lay.repository("../../etc"), lambda lay: lay.repository("a/../../b"),
    lambda lay: lay.repository("/abs"), lambda lay: lay.repository("A"),
    lambda lay: lay.revision("ok", "sha256:" + "A" * 64), lambda lay: lay.blob("sha256:../../x"),
    lambda lay: lay.blob("sha512:" + "a" * 128), lambda lay: lay.tag("ok", "../x"),
    lambda lay: lay.rel_revision_link("a/..", D1),
])
def test_layout_refuses_what_could_leave_storage(call: Callable[[layout.Layout], str]) -> None:
    with pytest.raises(layout.LayoutError):
        call(layout.Layout("/var/lib/registry"))


def test_layout_refuses_a_relative_root() -> None:
    for bad in ("", "var/lib/registry", "./x"):
        with pytest.raises(layout.LayoutError):
            layout.Layout(bad)


def test_layout_parses_what_find_prints_and_nothing_else() -> None:
    lay = layout.Layout("/data")
    rev = f"/data/docker/registry/v2/repositories/team/app/_manifests/revisions/sha256/{'a' * 64}/link"
    assert lay.parse_revision_link(rev) == ("team/app", D1)
    assert lay.parse_revision_link(rev.replace("/data/", "/other/")) is None  # another root
    assert lay.parse_revision_link(rev.replace("team/app", "Team/App")) is None  # not a repository name
    layer = f"/data/docker/registry/v2/repositories/x/_layers/sha256/{'b' * 64}/link"
    assert lay.parse_layer_link(layer) == ("x", D2) and lay.parse_revision_link(layer) is None
    assert lay.parse_blob_data(f"/data/docker/registry/v2/blobs/sha256/cc/{'c' * 64}/data") == D3
    assert lay.parse_blob_data(f"/data/docker/registry/v2/blobs/sha256/cc/{'c' * 63}/data") is None


# -- holds are scoped to their repository ------------------------------------------------------------------


def test_a_blob_released_in_one_repository_keeps_its_hold_in_another() -> None:
    recent = {"a": {D1, D2}, "b": {D1, D3}}
    released = {"a": {D1, D2}}
    assert holds.unreleased(recent, released) == {"b": {D1, D3}}
    assert holds.unreleased(recent, {}) == recent
    assert holds.unreleased({"a": {D1}}, {"b": {D1}}) == {"a": {D1}}


def test_only_no_such_file_is_not_a_failure() -> None:
    assert only_missing(ExecResult(1, "", "find: /x/repositories: No such file or directory\n"))
    assert not only_missing(ExecResult(1, "", "find: /x: Permission denied\nfind: /y: No such file or directory\n"))
    assert not only_missing(ExecResult(126, "", "exec: find: not found\n"))
    assert not only_missing(ExecResult(1, "", ""))


# -- credentials only to the registry's origin (real HTTP servers on loopback) -----------------------------


class Server:
    """A loopback HTTP server answering from a route table and recording the Authorization header of each
    request it got."""

    def __init__(self, routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                path = urlsplit(self.path).path
                server.seen.append((self.command, path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                route = server.routes.get(f"{self.command} {path}")
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = handle_one

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda *args: None  # type: ignore[method-assign]  # clients that stop reading
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def auth(self, path: str) -> list[str | None]:
        return [a for _, p, a in self.seen if p == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None,
          length: int | None = None) -> Callable[[BaseHTTPRequestHandler], None]:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
    return handle


def basic_protected(inner: Callable[[BaseHTTPRequestHandler], None]) -> Callable[[BaseHTTPRequestHandler], None]:
    def handle(h: BaseHTTPRequestHandler) -> None:
        if not (h.headers.get("Authorization") or "").startswith("Basic "):
            reply(401, b"{}", {"WWW-Authenticate": 'Basic realm="r"'})(h)
        else:
            inner(h)
    return handle


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] | None = None) -> Server:
        made.append(Server(routes or {}))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_origin_is_scheme_host_and_port() -> None:
    assert origin("http://127.0.0.1:5000/v2/") == origin("HTTP://127.0.0.1:5000")
    assert origin("https://reg.local/v2/") == origin("https://reg.local:443")
    assert origin("http://127.0.0.1:5000") != origin("http://127.0.0.1:5001")
    assert origin("http://reg.local") != origin("https://reg.local")
    assert origin("http://reg.local") != origin("http://reg.local.evil")


def test_link_and_location_at_another_origin_get_no_credentials(servers: Callable[..., Server]) -> None:
    other = servers()
    registry = servers()
    other.routes.update({
        "GET /v2/_catalog": reply(200, json.dumps({"repositories": ["b"]}).encode()),
        "PUT /upload/1": reply(201),
    })
    registry.routes.update({
        "GET /v2/_catalog": basic_protected(reply(200, json.dumps({"repositories": ["a"]}).encode(),
                                                  {"Link": f'<{other.url}/v2/_catalog?last=a&n=1>; rel="next"'})),
        "HEAD /v2/r/blobs/" + sha256_digest(b"x"): basic_protected(reply(404)),
        "POST /v2/r/blobs/uploads/": basic_protected(reply(202, headers={"Location": f"{other.url}/upload/1"})),
    })
    client = RegistryClient(registry.url, "janitor", "secret", timeout=5, retry_seconds=0)
    assert client.catalog() == ["a", "b"]
    assert client.push_blob("r", b"x") == sha256_digest(b"x")
    assert registry.auth("/v2/_catalog")[-1] is not None and registry.auth("/v2/r/blobs/uploads/")[-1] is not None
    assert other.auth("/v2/_catalog") == [None] and other.auth("/upload/1") == [None]


def test_redirects_carry_credentials_only_back_to_the_registry(servers: Callable[..., Server]) -> None:
    storage = servers()
    registry = servers()
    config = json.dumps({"architecture": "amd64"}).encode()
    storage.routes["GET /bucket/blob"] = reply(307, headers={"Location": f"{registry.url}/back"})
    registry.routes.update({
        "GET /v2/r/blobs/" + D1: basic_protected(reply(307, headers={"Location": f"{storage.url}/bucket/blob"})),
        "GET /back": basic_protected(reply(200, config)),
    })
    client = RegistryClient(registry.url, "janitor", "secret", timeout=5, retry_seconds=0)
    assert client.image_config("r", D1) == {"architecture": "amd64"}
    assert storage.auth("/bucket/blob") == [None]
    assert registry.auth("/back")[-1] is not None


def test_another_origin_asking_for_credentials_gets_none(servers: Callable[..., Server]) -> None:
    other = servers({"PUT /upload/1": reply(401, headers={"WWW-Authenticate": 'Basic realm="give"'})})
    registry = servers({
        "HEAD /v2/r/blobs/" + sha256_digest(b"y"): reply(404),
        "POST /v2/r/blobs/uploads/": reply(202, headers={"Location": f"{other.url}/upload/1"}),
    })
    client = RegistryClient(registry.url, "janitor", "secret", timeout=5, retry_seconds=0)
    with pytest.raises(errors.RegistryAuthFailed, match="not the registry's origin"):
        client.push_blob("r", b"y")
    assert other.auth("/upload/1") == [None]


def test_token_credentials_go_to_the_named_realm_and_the_token_only_to_the_registry(
        servers: Callable[..., Server]) -> None:
    def token(h: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(h.path).query)
        assert query["service"] == ["reg"] and query["scope"] == ["repository:r:pull"]
        reply(200, json.dumps({"token": "tok-1"}).encode())(h)

    def bearer(h: BaseHTTPRequestHandler) -> None:
        if h.headers.get("Authorization") != "Bearer tok-1":
            reply(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm.url}/token",service="reg",'
                                                   'scope="repository:r:pull"'})(h)
        else:
            reply(200, json.dumps({"name": "r", "tags": ["t"]}).encode(),
                  {"Link": f'<{other.url}/v2/r/tags/list?last=t>; rel="next"'})(h)

    realm = servers({"GET /token": token})
    other = servers({"GET /v2/r/tags/list": reply(200, json.dumps({"name": "r", "tags": ["u"]}).encode())})
    registry = servers({"GET /v2/r/tags/list": bearer})
    client = RegistryClient(registry.url, "janitor", "secret", timeout=5, retry_seconds=0)
    assert client.tags("r") == ["t", "u"]
    assert realm.auth("/token")[0] is not None and realm.auth("/token")[0].startswith("Basic ")  # type: ignore[union-attr]
    assert registry.auth("/v2/r/tags/list") == [None, "Bearer tok-1"]
    assert other.auth("/v2/r/tags/list") == [None]


def test_a_realm_that_is_not_an_http_url_is_refused(servers: Callable[..., Server]) -> None:
    registry = servers({"GET /v2/": reply(401, b"{}", {"WWW-Authenticate": 'Bearer realm="file:///etc/passwd"'})})
    client = RegistryClient(registry.url, "janitor", "secret", timeout=5, retry_seconds=0)
    with pytest.raises(errors.RegistryAuthFailed, match="realm"):
        client.ping()


# -- size limits -------------------------------------------------------------------------------------------


def _manifest_body(pad: int) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 2},
                       "layers": [], "annotations": {"pad": "x" * pad}}).encode()


def test_manifests_and_configs_are_read_within_bounds(servers: Callable[..., Server]) -> None:
    small = _manifest_body(10)
    big = _manifest_body(MANIFEST_LIMIT)

    def chunked(body: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
        """No Content-Length at all: only reading can tell the size."""
        def handle(h: BaseHTTPRequestHandler) -> None:
            h.protocol_version = "HTTP/1.0"
            h.send_response(200)
            h.send_header("Content-Type", OCI_MANIFEST)
            h.end_headers()
            h.wfile.write(body)
            h.close_connection = True
        return handle

    registry = servers({
        "GET /v2/r/manifests/small": reply(200, small, {"Content-Type": OCI_MANIFEST}),
        "GET /v2/r/manifests/claims": reply(200, small, {"Content-Type": OCI_MANIFEST}, length=MANIFEST_LIMIT + 1),
        "GET /v2/r/manifests/streamed": chunked(big),
        "GET /v2/r/blobs/" + D1: reply(200, b"{}"),
        "GET /v2/r/blobs/" + D2: chunked(b"[" + b"0," * CONFIG_LIMIT + b"0]"),
        "GET /v2/big/tags/list": reply(200, b"{}", length=LIST_LIMIT + 1),
    })
    client = RegistryClient(registry.url, timeout=10, retry_seconds=0)
    assert client.manifest("r", "small").digest == sha256_digest(small)
    with pytest.raises(errors.RegistryResponseTooLarge, match=str(MANIFEST_LIMIT)):
        client.manifest("r", "claims")
    with pytest.raises(errors.RegistryResponseTooLarge, match="stopped reading"):
        client.manifest("r", "streamed")
    assert client.image_config("r", D1) == {}
    with pytest.raises(errors.RegistryResponseTooLarge):
        client.image_config("r", D2)
    with pytest.raises(errors.RegistryResponseTooLarge, match="tag list"):
        client.tags("big")


# -- the registry's Redis blob cache: every spelling distribution reads ----------------------------------------

REDIS_CACHE = {"storage": {"cache": {"blobdescriptor": "redis"}, "filesystem": {}}}


def _cache(env: dict[str, str], redis_section: dict[str, Any] | None = None, version: int | None = None,
           config: dict[str, Any] | None = None) -> cache.CacheTarget | None:
    doc = dict(config if config is not None else REDIS_CACHE)
    if redis_section is not None:
        doc["redis"] = redis_section
    return cache.read(env, doc, "/etc/distribution/config.yml", version)


@pytest.mark.parametrize("env,config,kind", [
    ({}, REDIS_CACHE, "redis"),
    ({}, {"storage": {"cache": {"blobdescriptor": "inmemory"}}}, "inmemory"),
    ({}, {"storage": {"filesystem": {}}}, None),
    ({"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis"}, {"storage": {"cache": {"blobdescriptor": "inmemory"}}},
     "redis"),
    ({"REGISTRY_STORAGE_CACHE": "{blobdescriptor: redis}"}, {}, "redis"),
    ({"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "Redis"}, {}, "redis"),
])
def test_blob_cache_kind_env_overrides_config(env: dict[str, str], config: dict[str, Any], kind: str | None) -> None:
    assert cache.blob_cache_kind(env, config) == kind


def test_no_redis_blob_cache_reads_nothing() -> None:
    assert _cache({}, {"addr": "redis:6379"}, config={"storage": {"cache": {"blobdescriptor": "inmemory"}}}) is None


@pytest.mark.parametrize("env,section,addrs,source", [
    # 2.x: redis.addr, and REGISTRY_REDIS_ADDR over it
    ({}, {"addr": "redis:6379"}, ("redis:6379",), "redis.addr in /etc/distribution/config.yml"),
    ({"REGISTRY_REDIS_ADDR": "10.0.0.5:6380"}, {"addr": "redis:6379"}, ("10.0.0.5:6380",), "REGISTRY_REDIS_ADDR"),
    # 3.x: redis.addrs (a list), REGISTRY_REDIS_ADDRS as YAML, or one element per REGISTRY_REDIS_ADDRS_<n>
    ({}, {"addrs": ["redis:6379"]}, ("redis:6379",), "redis.addrs in /etc/distribution/config.yml"),
    ({"REGISTRY_REDIS_ADDRS": "[localhost:6379]"}, None, ("localhost:6379",), "REGISTRY_REDIS_ADDRS"),
    ({"REGISTRY_REDIS_ADDRS": "localhost:6379"}, None, ("localhost:6379",), "REGISTRY_REDIS_ADDRS"),
    ({"REGISTRY_REDIS_ADDRS_0": "cache:6379"}, {"addrs": ["old:6379"]}, ("cache:6379",), "REGISTRY_REDIS_ADDRS_0"),
    ({"REGISTRY_REDIS_ADDRS_0": "a:1", "REGISTRY_REDIS_ADDRS_1": "b:2"}, None, ("a:1", "b:2"),
     "REGISTRY_REDIS_ADDRS_1"),
    # the whole section in one variable
    ({"REGISTRY_REDIS": "{addrs: [r3:6379], db: 2}"}, {"addr": "ignored:1"}, ("r3:6379",), "REGISTRY_REDIS"),
    # both spellings naming one address: no doubt
    ({}, {"addr": "redis:6379", "addrs": ["redis:6379"]}, ("redis:6379",), "redis.addrs in /etc/distribution/config.yml"),
    # a section without any address: read, and refused when reached (see below)
    ({}, {"password": "x"}, (), "redis.addr / redis.addrs"),
])
def test_cache_address_in_every_spelling(env: dict[str, str], section: dict[str, Any] | None,
                                         addrs: tuple[str, ...], source: str) -> None:
    found = _cache(env, section)
    assert found is not None and found.addrs == addrs and found.source == source


def test_password_db_username_from_file_and_environment() -> None:
    found = _cache({"REGISTRY_REDIS_PASSWORD": "s3cret", "REGISTRY_REDIS_DB": "7"},
                   {"addrs": ["redis:6379"], "password": "file", "db": 1, "username": "reg"})
    assert found is not None
    assert (found.password, found.db, found.username) == ("s3cret", 7, "reg")
    env_only = _cache({"REGISTRY_REDIS_ADDR": "h:1", "REGISTRY_REDIS_USERNAME": "u", "REGISTRY_REDIS_PASSWORD": "123"})
    assert env_only is not None and (env_only.password, env_only.username, env_only.db) == ("123", "u", 0)


@pytest.mark.parametrize("env,section,tls", [
    ({}, {"addr": "h:1"}, False),
    ({}, {"addr": "h:1", "tls": {"enabled": True}}, True),  # 3.0 alphas
    ({"REGISTRY_REDIS_TLS_ENABLED": "true"}, {"addr": "h:1"}, True),
    ({}, {"addrs": ["h:1"], "tls": {"certificate": "/c.pem", "key": "/k.pem"}}, True),  # 3.0
    ({}, {"addrs": ["h:1"], "tls": {"clientcas": ["/ca.pem"]}}, True),
    ({}, {"addrs": ["h:1"], "tls": {"rootcas": ["/ca.pem"]}}, True),  # 3.1
    ({"REGISTRY_REDIS_TLS_ROOTCAS": "[/ca.pem]"}, {"addrs": ["h:1"]}, True),
    ({"REGISTRY_REDIS_TLS": "{certificate: /c.pem, key: /k.pem}"}, {"addrs": ["h:1"]}, True),
    ({}, {"addrs": ["h:1"], "tls": {"enabled": False}}, False),
])
def test_tls_in_every_spelling(env: dict[str, str], section: dict[str, Any], tls: bool) -> None:
    found = _cache(env, section)
    assert found is not None and found.tls is tls
    assert found.worker_address.startswith("rediss://" if tls else "redis://")


def test_the_version_decides_between_the_two_spellings() -> None:
    section = {"addr": "old:6379", "addrs": ["new:6379"], "username": "u", "tls": {"certificate": "/c"}}
    two = _cache({}, section, version=2)
    three = _cache({}, section, version=3)
    assert two is not None and two.addrs == ("old:6379",) and not two.tls and two.username is None  # 2.x ignores them
    assert three is not None and three.addrs == ("new:6379",) and three.tls and three.username == "u"
    with pytest.raises(errors.CacheConfigAmbiguous) as raised:
        _cache({}, section)
    assert raised.value.code == "REGISTRY_CACHE_AMBIGUOUS" and "Nothing was deleted" in raised.value.message
    assert "REGISTRY_REDIS_ADDR" in _cache({"REGISTRY_REDIS_ADDR": "e:1"}, {"addrs": ["n:1"]}, version=2).source  # type: ignore[union-attr]


@pytest.mark.parametrize("output,major", [
    ("registry github.com/docker/distribution 2.8.2+ds1", 2),
    ("registry github.com/docker/distribution v2.8.3", 2),
    ("registry github.com/distribution/distribution/v3 v3.1.1", 3),
    ("", None), ("registry unknown", None),
])
def test_registry_version_output(output: str, major: int | None) -> None:
    assert cache.version_major(output) == major


@pytest.mark.parametrize("addr,expected", [
    ("redis:6379", ("redis", 6379)), ("localhost", ("localhost", 6379)), ("[::1]:6380", ("::1", 6380)),
    ("10.1.2.3:7000", ("10.1.2.3", 7000)),
])
def test_host_port(addr: str, expected: tuple[str, int]) -> None:
    assert cache.host_port(addr) == expected


def test_operator_url_replaces_the_registry_view_and_hides_the_password() -> None:
    found = cache.with_override(_cache({}, {"addrs": ["redis:6379"], "password": "x"}), "redis://:pw@127.0.0.1:6390/3")
    assert found is not None and found.url == "redis://:pw@127.0.0.1:6390/3"
    assert found.worker_address == "redis://127.0.0.1:6390/3" and "pw" not in str(found.as_dict())
    assert found.as_dict()["registry_addresses"] == ["redis:6379"] and found.as_dict()["override"] is True
    assert cache.with_override(None, "redis://h:1/0") is None  # no Redis blob cache: nothing to clean


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("target,code", [
    (cache.CacheTarget((), "redis.addr / redis.addrs"), "REGISTRY_CACHE_UNREACHABLE"),
    (cache.CacheTarget(("a:1", "b:2"), "redis.addrs"), "REGISTRY_CACHE_UNSUPPORTED"),
    (cache.CacheTarget(("s:26379",), "redis.addrs", master_name="mymaster"), "REGISTRY_CACHE_UNSUPPORTED"),
])
def test_caches_the_janitor_cannot_clean_are_refused_before_connecting(target: cache.CacheTarget, code: str) -> None:
    with pytest.raises(errors.PreflightFailed) as raised:
        cache.reach(target)
    assert raised.value.code == code and "JANITOR_REGISTRY_CACHE_URL" in raised.value.message


def test_an_unreachable_cache_names_both_views_and_the_fix() -> None:
    port = _closed_port()
    with pytest.raises(errors.CacheUnreachable) as raised:
        cache.reach(cache.CacheTarget((f"127.0.0.1:{port}",), "REGISTRY_REDIS_ADDRS"), timeout=1)
    msg = raised.value.message
    assert f"127.0.0.1:{port}" in msg and "REGISTRY_REDIS_ADDRS" in msg and "cache_url" in msg
    assert "Nothing was deleted" in msg
    with pytest.raises(errors.CacheUnreachable) as raised:
        cache.reach(cache.CacheTarget(("redis:6379",), "redis.addr", url=f"redis://:pw@127.0.0.1:{port}/0"), timeout=1)
    assert "the address given for the worker" in raised.value.message and "pw" not in raised.value.message


def test_forget_after_gc_retries_then_names_the_blobs() -> None:
    port = _closed_port()
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        time.sleep(seconds)

    with pytest.raises(errors.CacheNotCleaned) as raised:
        cache.forget_retrying(cache.CacheTarget((f"127.0.0.1:{port}",), "redis.addr"), [D1, D2], ["team/app"],
                              within=1.5, sleep=nap)
    assert 2 <= len(naps) <= 5 and raised.value.details["digests"] == [D1, D2]
    assert raised.value.code == "REGISTRY_CACHE_NOT_CLEANED"


def test_the_cache_url_setting_and_per_registry_field() -> None:
    from janitor.config.registries import RegistriesFileError, parse
    from janitor.config.settings import Settings

    assert Settings.from_env({}).registry_cache_url is None
    env = Settings.from_env({"JANITOR_REGISTRY_CACHE_URL": " rediss://:pw@127.0.0.1:6390/2 "})
    assert env.registry_cache_url == "rediss://:pw@127.0.0.1:6390/2"
    for bad in ("127.0.0.1:6379", "http://127.0.0.1:6379", "redis://", "redis://h:notaport/0"):
        with pytest.raises(ValueError, match="JANITOR_REGISTRY_CACHE_URL"):
            Settings.from_env({"JANITOR_REGISTRY_CACHE_URL": bad})
    with pytest.raises(ValueError) as hidden:
        Settings.from_env({"JANITOR_REGISTRY_CACHE_URL": "tcp://:secret@h:1/0"})
    assert "secret" not in str(hidden.value)
    text = """registries:
  - {name: a, url: "http://127.0.0.1:5001", container: ra, cache_url: "redis://127.0.0.1:6391/4"}
  - {name: b, url: "http://127.0.0.1:5002", container: rb}
"""
    known = parse(text, env, env={})
    # One registry's cache is never every registry's default: the variable is for the single registry.
    assert known.get("a").registry_cache_url == "redis://127.0.0.1:6391/4"
    assert known.get("b").registry_cache_url is None
    with pytest.raises(RegistriesFileError, match=r"registries\[0\] \(a\): cache_url must be a redis://"):
        parse(text.replace("redis://127.0.0.1:6391/4", "127.0.0.1:6391"), env, env={})
