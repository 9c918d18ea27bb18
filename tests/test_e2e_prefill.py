"""Manifests and config times read from the registry's files into the content cache (janitor.storage.contents.prefill),
on a real registry container: only bytes that hash to their digest are taken, what the files cannot answer is
left to the HTTP API, and the worker's first fill then asks the registry for no config blob."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
import redis
import requests

from janitor.registry.container import RegistryContainer
from janitor.registry.manifests import ACCEPT, OCI_MANIFEST, sha256_digest
from janitor.storage import contents
from janitor.storage import files as storage
from janitor.storage.contents import ContentCache
from janitor.storage.filesystem import FilesystemStorage
from janitor.storage.layout import Layout
from tests import images
from tests.conftest import Registry, Stack
from tests.images import wait_until

pytestmark = pytest.mark.e2e
ROOT = "/var/lib/registry"
_CONFIG_GET = re.compile(r'"GET /v2/\S+/blobs/sha256:[0-9a-f]{64} HTTP')


def pushed(reg: Registry) -> dict[str, images.Image]:
    p = images.Pusher(reg.url)
    made = {"a": images.image(OCI_MANIFEST, created=datetime(2024, 5, 1, tzinfo=timezone.utc)),
            "b": images.image(created=datetime(2025, 1, 2, tzinfo=timezone.utc)),
            "amd": images.image(OCI_MANIFEST, platform=("linux", "amd64")),
            "arm": images.image(OCI_MANIFEST, platform=("linux", "arm64"))}
    p.image("team/app", made["a"], "v1")
    p.image("team/app", made["b"], "v2")
    p.index("team/multi", images.index([made["amd"], made["arm"]]), "latest")
    return made


def test_stored_blobs_are_read_only_when_they_hash_to_their_digest(registry: Registry) -> None:
    made = pushed(registry)
    container = RegistryContainer(registry.name)
    a, b = made["a"], made["b"]
    missing = "sha256:" + "0" * 64
    config_a = sha256_digest(a.config)
    found = storage.read_blobs(container, ROOT, [a.digest, b.digest, config_a, missing], 1024 * 1024)
    assert found == {a.digest: a.manifest, b.digest: b.manifest, config_a: a.config}
    # Larger than the limit: left to the HTTP API.
    assert storage.read_blobs(container, ROOT, [a.digest], len(a.manifest) - 1) == {}
    # Bytes that do not hash to the digest (a manifest caught mid-write) are not taken.
    container.write_file(Layout(ROOT).blob_data(b.digest), b.manifest[:20])
    assert storage.read_blobs(container, ROOT, [a.digest, b.digest], 1024 * 1024) == {a.digest: a.manifest}


def test_prefill_caches_what_the_registry_api_answers(registry: Registry, redis_conn: redis.Redis) -> None:
    made = pushed(registry)
    cache = ContentCache(redis_conn, "janitor:prefill-test")
    added = contents.prefill(cache, FilesystemStorage(RegistryContainer(registry.name), ROOT))
    # Four image manifests and one index; four image configs.
    assert added == {"manifests": 5, "configs": 4}
    for img in made.values():
        cached = cache.manifests([img.digest])[img.digest]
        assert cached.raw == img.manifest and cached.media_type == img.media_type
        config = json.loads(img.config)
        assert cache.created([sha256_digest(img.config)]) == {sha256_digest(img.config): config["created"]}
    served = requests.get(f"{registry.url}/v2/team/multi/manifests/latest", headers={"Accept": ACCEPT}, timeout=30)
    index = cache.manifests([served.headers["Docker-Content-Digest"]])
    assert [m.raw for m in index.values()] == [served.content]
    # Nothing new: nothing read again.
    assert contents.prefill(cache, FilesystemStorage(RegistryContainer(registry.name), ROOT)) == {"manifests": 0, "configs": 0}


def test_the_first_fill_asks_the_registry_for_no_config_blob(registry: Registry,
                                                            make_stack: Callable[..., Stack]) -> None:
    made = pushed(registry)
    since = int(time.time()) - 1
    stack = make_stack(registry)
    assert wait_until(lambda: bool(stack.get("/readyz").json()["checks"]["index"].get("filled_at")), 60)
    tags = {t["name"]: t for t in stack.get("/v1/repositories/team/app/tags").json()["items"]}
    assert tags["v1"]["digest"] == made["a"].digest and tags["v1"]["created"].startswith("2024-05-01T00:00:00")
    assert tags["v2"]["created"].startswith("2025-01-02T00:00:00")
    logs = registry.container.logs(since=since).decode(errors="replace")
    assert "GET /v2/team/app/tags/list" in logs  # the fill did read the registry
    assert not _CONFIG_GET.findall(logs)
