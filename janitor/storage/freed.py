"""What GC freed, in bytes, without stat-ing every blob of the store inside the window.

A blob's size is known without touching the storage when a manifest describes it (its descriptor's size;
a manifest's own blob is its JSON), and the registry checked that size when the manifest was pushed. So the
window takes sizes from every manifest it knows (its plans, the content cache) and from a book of sizes kept
in Redis across windows, and stats, before the fence, only blob files written recently: a blob older than
that survived the previous GC, so a manifest used it then (or a hold kept it, and holds only cover blobs
linked within the upload grace), and that manifest was known to the window that ran that GC.

The book (`<prefix>:window:blob-sizes`, digest -> bytes) loses what GC sweeps, so it stays the size of the
store; `<prefix>:window:last-gc` is when the window of the last GC that finished prepared it (epoch seconds):
blobs linked from that time less the upload grace were held or seen by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis

from janitor.registry.manifests import Manifest

CHUNK = 1000
# Slack on top of the grace: an upload's data is written a little before its link.
MARGIN_SECONDS = 30


def known_sizes(manifests: Iterable[Manifest]) -> dict[str, int]:
    """digest -> bytes of every blob these manifests describe, their own JSON included."""
    sizes: dict[str, int] = {}
    for manifest in manifests:
        sizes[manifest.digest] = len(manifest.raw)
        if manifest.config:
            sizes[manifest.config.digest] = manifest.config.size
        for layer in manifest.layers:
            sizes[layer.digest] = layer.size
    return sizes


def stat_since(last_gc: float | None, now: float, grace: float) -> float | None:
    """From when blob files must be stat-ed before GC: the last GC's window start, less the upload grace its
    holds covered, less a margin. None (every blob) when no GC is on record."""
    if last_gc is None or last_gc > now:
        return None
    return last_gc - grace - MARGIN_SECONDS


def count(deleted: Iterable[str], sizes: Mapping[str, int]) -> tuple[int, list[str]]:
    """Bytes of the deleted blobs, and those whose size nobody knew (never expected; reported if it happens)."""
    total, unknown = 0, []
    for digest in deleted:
        if digest in sizes:
            total += sizes[digest]
        else:
            unknown.append(digest)
    return total, sorted(unknown)


class SizeBook:
    """Blob sizes learned from manifests, across windows, and when the last GC ran."""

    def __init__(self, conn: redis.Redis, prefix: str) -> None:
        self.conn = conn
        self.sizes_key = f"{prefix}:window:blob-sizes"
        self.last_gc_key = f"{prefix}:window:last-gc"

    def remember(self, sizes: Mapping[str, int]) -> None:
        items = list(sizes.items())
        with self.conn.pipeline(transaction=False) as pipe:
            for start in range(0, len(items), CHUNK):
                pipe.hset(self.sizes_key, mapping=dict(items[start:start + CHUNK]))
            pipe.execute()

    def lookup(self, digests: Iterable[str]) -> dict[str, int]:
        wanted = list(dict.fromkeys(digests))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), CHUNK):
            part = wanted[start:start + CHUNK]
            for digest, raw in zip(part, self.conn.hmget(self.sizes_key, part), strict=True):
                if raw is not None and raw.isdigit():
                    found[digest] = int(raw)
        return found

    def forget(self, digests: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(digests))
        for start in range(0, len(wanted), CHUNK):
            self.conn.hdel(self.sizes_key, *wanted[start:start + CHUNK])

    def last_gc(self) -> float | None:
        raw = self.conn.get(self.last_gc_key)
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None

    def gc_started(self, at: float) -> None:
        self.conn.set(self.last_gc_key, repr(at))
