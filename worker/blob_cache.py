"""The registry's Redis blob cache in a window: the swept blobs' keys removed before writes resume, and keys an
earlier window could not remove (its cache was away after the sweep) removed in the next window's preflight."""

from __future__ import annotations

import contextlib
from typing import Any

import redis as redis_lib

from janitor import errors
from janitor.window import cache
from worker.state import WindowState

# After GC, how long the swept blobs' keys are retried against a Redis blob cache that does not answer.
CACHE_RETRY_SECONDS = 30.0
# Blobs whose cache keys a window could not remove: the next window's preflight removes them.
LEFT_OVER_KEYS = ":blob-cache-left-over"


def forget(state: WindowState, digests: list[str], repositories: list[str]) -> int:
    """The swept blobs' keys out of the registry's Redis blob cache, retried for a while (preflight
    reached that Redis). If it never answers, the digests are kept for the next window's preflight and
    the jobs fail with REGISTRY_CACHE_NOT_CLEANED, naming them."""
    assert state.blob_cache is not None
    try:
        return cache.forget_retrying(state.blob_cache, digests, repositories,
                                     within=min(CACHE_RETRY_SECONDS, max(1.0, state.guard.remaining())))
    except errors.CacheNotCleaned:
        with contextlib.suppress(redis_lib.RedisError):
            if digests:
                state.ctx.conn.sadd(state.ctx.keys.prefix + LEFT_OVER_KEYS, *digests)
        raise


def forget_left_over(state: WindowState, target: cache.CacheTarget) -> dict[str, Any]:
    """Keys an earlier window could not remove from the cache (it was away after that GC), removed now that
    preflight reached it."""
    key = state.ctx.keys.prefix + LEFT_OVER_KEYS
    try:
        left = sorted(d.decode() for d in state.ctx.conn.smembers(key))
    except redis_lib.RedisError:
        return {}
    if not left:
        return {}
    conn = cache.connect(target)
    try:
        removed = cache.forget(conn, left)
    except (redis_lib.RedisError, OSError) as exc:
        raise errors.CacheUnreachable(
            f"the registry's Redis blob cache at {target.worker_address} stopped answering while the keys an "
            f"earlier window left were removed: {exc}. Nothing was deleted.", address=target.worker_address) from exc
    finally:
        conn.close()
    state.ctx.conn.srem(key, *left)
    return {"blob_cache_left_over_removed": removed, "blob_cache_left_over_blobs": len(left)}
