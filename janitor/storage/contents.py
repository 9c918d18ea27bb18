"""What never changes, kept in Redis: manifests and image-config creation times, by digest.

A digest names its content for good, so an entry here is never stale and never needs invalidating; only its
presence changes (a manifest deleted from the registry may stay cached, which is harmless: nothing looks a
manifest up here without a digest some tag, revision or index named). Every reader of the registry (the
listing, a window's plan, its integrity check, a policy) asks here before the registry, so a manifest is
fetched once per registry, not once per listing or per window.

Keys live under the registry's prefix (`<prefix>:content:...`), like every other key. Each entry expires
`ttl` seconds (a week) after it was last written, read or seen by a prefill: the cache stays bounded by what
the registry still holds and uses, and a manifest deleted long ago does not keep its key forever. An entry
that expired while still needed is read from the registry again, once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from janitor.registry import manifests as mf
from janitor.registry.client import CONFIG_LIMIT, MANIFEST_LIMIT
from janitor.registry.manifests import Manifest
from janitor.storage.driver import Storage

# Reads and writes go in pipelines of this many keys: one round trip per chunk, bounded memory per call.
CHUNK = 1000
# prefill reads from the registry's files only blobs up to this size (manifests and image configs are a few KiB;
# larger ones are read over HTTP): with storage.PATHS_PER_EXEC per exec, one archive stays within 128 MiB.
STORED_BLOB_LIMIT = 128 * 1024
# Seconds an entry lives after it was last used: far above the reconcile interval, which sees every stored
# manifest (prefill) and every tagged one.
CONTENT_TTL = 7 * 24 * 3600


class ContentCache:
    """Manifests by digest (their raw bytes and media type) and `created` of image configs by config digest."""

    def __init__(self, conn: redis.Redis, prefix: str, ttl: float = CONTENT_TTL) -> None:
        self.conn = conn
        self.prefix = prefix
        self.ttl = max(1, int(ttl))

    def _get_all(self, keys: list[str]) -> list[Any]:
        """GETEX in one pipeline: read, and keep for another `ttl`, what is still used."""
        with self.conn.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.getex(key, ex=self.ttl)
            return list(pipe.execute())

    def _manifest_key(self, digest: str) -> str:
        return f"{self.prefix}:content:manifest:{digest}"

    def _created_key(self, config_digest: str) -> str:
        return f"{self.prefix}:content:created:{config_digest}"

    def manifests(self, digests: Iterable[str]) -> dict[str, Manifest]:
        """Those of `digests` cached here, parsed. An entry that does not parse (or whose bytes do not hash to
        its digest) is treated as absent: the caller reads the registry and overwrites it."""
        wanted = list(dict.fromkeys(digests))
        found: dict[str, Manifest] = {}
        for start in range(0, len(wanted), CHUNK):
            part = wanted[start:start + CHUNK]
            for digest, raw in zip(part, self._get_all([self._manifest_key(d) for d in part]), strict=True):
                if raw:
                    manifest = _decode(digest, raw)
                    if manifest is not None:
                        found[digest] = manifest
        return found

    def cached_manifests(self, digests: Iterable[str]) -> set[str]:
        """Those of `digests` with an entry here (not read back: a periodic prefill asks about every stored one);
        being still stored, each one found is kept for another `ttl`."""
        wanted = list(dict.fromkeys(digests))
        found: set[str] = set()
        for start in range(0, len(wanted), CHUNK):
            part = wanted[start:start + CHUNK]
            with self.conn.pipeline(transaction=False) as pipe:
                for digest in part:
                    pipe.expire(self._manifest_key(digest), self.ttl)  # 1 when there (and kept), 0 when not
                found |= {d for d, there in zip(part, pipe.execute(), strict=True) if there}
        return found

    def put_manifests(self, found: Iterable[Manifest]) -> None:
        items = list(found)
        for start in range(0, len(items), CHUNK):
            with self.conn.pipeline(transaction=False) as pipe:
                for manifest in items[start:start + CHUNK]:
                    pipe.set(self._manifest_key(manifest.digest), _encode(manifest), ex=self.ttl)
                pipe.execute()

    def created(self, config_digests: Iterable[str]) -> dict[str, str | None]:
        """`created` of these image configs, for those known here (a known config may state no time: None)."""
        wanted = list(dict.fromkeys(config_digests))
        found: dict[str, str | None] = {}
        for start in range(0, len(wanted), CHUNK):
            part = wanted[start:start + CHUNK]
            for digest, raw in zip(part, self._get_all([self._created_key(d) for d in part]), strict=True):
                if raw is not None:
                    value = json.loads(raw)
                    found[digest] = value if isinstance(value, str) else None
        return found

    def put_created(self, times: Mapping[str, str | None]) -> None:
        items = list(times.items())
        for start in range(0, len(items), CHUNK):
            with self.conn.pipeline(transaction=False) as pipe:
                for digest, when in items[start:start + CHUNK]:
                    pipe.set(self._created_key(digest), json.dumps(when), ex=self.ttl)
                pipe.execute()


def prefill(cache: ContentCache, store: Storage) -> dict[str, int]:
    """Every stored manifest not cached yet, and the `created` of every image config they name, read from the
    registry's storage (`Storage.read_blobs`: a few execs or object reads, not a registry request each) into the cache. A first fill then
    asks the registry's HTTP API for tags and digests, but for no config blob, its costliest request. What the
    files cannot answer (a blob mid-write, too large, a manifest that names no media type) is left to HTTP.
    Returns how many manifests and config times were added."""
    stored: set[str] = set().union(*store.revisions().values())
    unknown = stored - cache.cached_manifests(stored)
    read = store.read_blobs(unknown, min(MANIFEST_LIMIT, STORED_BLOB_LIMIT))
    new = {d: m for d, raw in read.items() if (m := _stored_manifest(d, raw)) is not None}
    cache.put_manifests(new.values())
    # Configs of the manifests just cached: one cached before had its config read with it (the listing's reads
    # cache both), and one that did not is read over HTTP when a listing needs it.
    configs = {m.config.digest for m in new.values() if not m.is_index and m.config is not None}
    times: dict[str, str | None] = {}
    for digest, raw in store.read_blobs(configs - set(cache.created(configs)),
                                        min(CONFIG_LIMIT, STORED_BLOB_LIMIT)).items():
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None  # an artifact whose config is not JSON: no time, as when read over HTTP
        when = doc.get("created") if isinstance(doc, dict) else None
        times[digest] = when if isinstance(when, str) else None
    cache.put_created(times)
    return {"manifests": len(new), "configs": len(times)}


def _stored_manifest(digest: str, raw: bytes) -> Manifest | None:
    """A manifest from its stored bytes, when they name their media type (the registry's HTTP answer would
    otherwise supply it in a header, which a file does not have)."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2 or not isinstance(doc.get("mediaType"), str):
            return None
        return mf.parse(raw, None, digest)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _encode(manifest: Manifest) -> bytes:
    header = json.dumps({"media_type": manifest.media_type}).encode()
    return header + b"\n" + manifest.raw


def _decode(digest: str, stored: Any) -> Manifest | None:
    header, _, raw = bytes(stored).partition(b"\n")
    try:
        media_type = json.loads(header).get("media_type")
        if mf.sha256_digest(raw) != digest:
            return None
        return mf.parse(raw, media_type, digest)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
