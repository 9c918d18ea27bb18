"""Logic that can be checked alone: the name grammar, GC output, the read-only config, settings."""

from __future__ import annotations

import pytest
import yaml

from janitor import errors
from janitor.config.settings import Settings
from janitor.registry import names
from janitor.window import fence, gc

GC_OUTPUT = """test/one

0 blobs marked, 3 blobs and 0 manifests eligible for deletion
blob eligible for deletion: sha256:f94362d2e94b280a340aaa2fc4df80cf148f9053342d8354a48ec74b1163c544
blob eligible for deletion: sha256:ffc0a0e1421182efa999ec51a05c9afc4d07dca0a3d1de55a0ded05233fd3b1a
blob eligible for deletion: sha256:cadf50eaf74464d4ebc753ebf595bfee4febf87b9ad39c40f6c5cd80225c160e
"""


def test_gc_output_is_parsed() -> None:
    summary = gc.parse_output(GC_OUTPUT)
    assert (summary.blobs_marked, summary.blobs_deleted, summary.manifests_deleted) == (0, 3, 0)
    assert len(summary.deleted_blobs) == 3
    with pytest.raises(errors.GarbageCollectFailed):
        gc.parse_output("panic: something else\n")


@pytest.mark.parametrize("name,ok", [
    ("a", True), ("team/app", True), ("a.b_c__d-e/f--g", True), ("a.b/" + "x" * 251, True),
    ("", False), ("A", False), ("../x", False), ("a/../b", False), ("a//b", False), ("/a", False), ("a/", False),
    ("a_", False), ("-a", False), ("a.b/" + "x" * 252, False), ("a b", False),
    # 255 characters as registry:2 counts them: with docker.io/library/ or docker.io/ before the name.
    ("x" * 237, True), ("x" * 238, False), ("x/" + "y" * 243, True), ("x/" + "y" * 244, False),
])
def test_repository_grammar(name: str, ok: bool) -> None:
    assert names.is_repository(name) is ok


def test_tag_and_digest_grammar() -> None:
    assert names.is_tag("v1.2-rc_3") and names.is_tag("_x") and not names.is_tag(".x") and not names.is_tag("a" * 129)
    assert names.is_digest("sha256:" + "a" * 64) and not names.is_digest("sha256:" + "A" * 64)
    assert not names.is_digest("sha512:" + "a" * 128)


def test_readonly_config_keeps_everything_else() -> None:
    original = b"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /data\n  maintenance:\n" \
               b"    uploadpurging:\n      enabled: false\nhttp:\n  addr: :5000\n"
    fenced = fence.readonly_config(original, "/etc/x.yml.janitor-original")
    assert fenced.startswith(fence.MARKER)
    config = yaml.safe_load(fenced)
    assert config["storage"]["maintenance"] == {"uploadpurging": {"enabled": False}, "readonly": {"enabled": True}}
    assert config["storage"]["filesystem"] == {"rootdirectory": "/data"} and config["http"] == {"addr": ":5000"}


def test_settings_from_env() -> None:
    s = Settings.from_env({"REGISTRY_URL": "http://reg.local:5000/", "API_TOKENS": " a, b ,,",
                           "JANITOR_LOCK_TTL": "12"})
    assert s.registry_url == "http://reg.local:5000" and s.registry_host == "reg.local:5000"
    assert s.api_tokens == ("a", "b") and s.lock_ttl == 12.0
    d = Settings.from_env({})
    assert d.registry_url == "http://localhost:5000" and d.redis_url == "redis://localhost:6379/0"
    assert d.api_tokens == ()


def test_registry_client_reads_proxies_from_the_environment_once_per_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests' own per-request reading of the environment is off (it scanned every variable on every request);
    the client still sends through HTTP(S)_PROXY and honours NO_PROXY, read once per origin."""
    from janitor.registry.client import RegistryClient
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,10.1.2.3")
    client = RegistryClient("http://registry.example:5000")
    assert client.session.trust_env is False
    assert client._environment("http://registry.example:5000/v2/")["proxies"].get("http") == "http://127.0.0.1:3128"
    assert not client._environment("http://10.1.2.3:5000/v2/")["proxies"]
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9999")  # read once: later changes are not seen
    assert client._environment("http://registry.example:5000/x")["proxies"].get("http") == "http://127.0.0.1:3128"
