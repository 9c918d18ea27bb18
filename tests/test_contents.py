"""The content cache in Redis: what it returns is exactly what the registry stored, or nothing."""

from __future__ import annotations

import json

import redis

from janitor.registry import manifests as mf
from janitor.storage import contents
from janitor.storage.contents import ContentCache


def _manifest(layer: str) -> mf.Manifest:
    raw = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": "sha256:" + "c" * 64, "size": 7},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                  "digest": "sha256:" + layer * 64, "size": 100}]}).encode()
    return mf.parse(raw, mf.OCI_MANIFEST, mf.sha256_digest(raw))


def test_round_trip_and_namespaces(redis_conn: redis.Redis) -> None:
    a, b = ContentCache(redis_conn, "janitor:one"), ContentCache(redis_conn, "janitor:two")
    m = _manifest("a")
    a.put_manifests([m])
    assert a.manifests([m.digest, "sha256:" + "f" * 64]) == {m.digest: m}
    assert b.manifests([m.digest]) == {}  # another registry's keys are its own
    a.put_created({"sha256:" + "c" * 64: "2024-01-01T00:00:00Z", "sha256:" + "d" * 64: None})
    assert a.created(["sha256:" + "c" * 64, "sha256:" + "d" * 64, "sha256:" + "e" * 64]) == {
        "sha256:" + "c" * 64: "2024-01-01T00:00:00Z", "sha256:" + "d" * 64: None}


def test_tampered_entry_is_absent(redis_conn: redis.Redis) -> None:
    cache = ContentCache(redis_conn, "janitor:tamper")
    m, other = _manifest("a"), _manifest("b")
    cache.put_manifests([m])
    # Bytes that do not hash to the key's digest (a bug or a hand edit) are never served.
    redis_conn.set(f"janitor:tamper:content:manifest:{m.digest}", b'{"media_type": "x"}\n' + other.raw)
    assert cache.manifests([m.digest]) == {}
    redis_conn.set(f"janitor:tamper:content:manifest:{other.digest}", b"not json")
    assert cache.manifests([other.digest]) == {}


def test_a_stored_manifest_without_its_media_type_is_left_to_http() -> None:
    body = json.dumps({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:" + "1" * 64, "size": 2},
                       "layers": []}).encode()
    assert contents._stored_manifest(mf.sha256_digest(body), body) is None
    assert contents._stored_manifest("sha256:" + "2" * 64, b"not json") is None
    v1 = json.dumps({"schemaVersion": 1, "mediaType": "application/vnd.docker.distribution.manifest.v1+json"}).encode()
    assert contents._stored_manifest(mf.sha256_digest(v1), v1) is None
