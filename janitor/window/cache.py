"""The registry's blob-descriptor cache. In memory it dies with the restart that ends every window; in
Redis it survives, so the keys of every swept blob are removed, or the registry keeps saying "layer already
exists" about blobs GC deleted."""

from __future__ import annotations

from typing import Any

import redis

from janitor.registry.container import RegistryContainer


def redis_settings(container: RegistryContainer, config_path: str) -> dict[str, Any] | None:
    """The registry's Redis, when its blob-descriptor cache lives there (env overrides config, as in
    distribution)."""
    config = container.read_yaml(config_path)
    env = container.env()
    kind = env.get("REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR") or \
        (((config.get("storage") or {}).get("cache") or {}).get("blobdescriptor"))
    if kind != "redis":
        return None
    conf = config.get("redis") or {}
    addr = env.get("REGISTRY_REDIS_ADDR") or conf.get("addr") or "localhost:6379"
    host, _, port = str(addr).rpartition(":")
    return {
        "host": host or "localhost",
        "port": int(port or 6379),
        "password": env.get("REGISTRY_REDIS_PASSWORD") or conf.get("password") or None,
        "db": int(env.get("REGISTRY_REDIS_DB") or conf.get("db") or 0),
    }


def forget(conn: redis.Redis, digests: list[str], repositories: list[str] | None = None) -> int:
    """Remove the global and per-repository descriptors of these blobs. Returns how many keys went.

    The global `blobs::<digest>` entry is what makes the registry answer "exists": a repository's entry
    is only consulted together with it, so once the global one is gone every answer about the blob comes
    from storage. With `repositories` (those the window's change names) only their entries are tidied,
    without scanning every key of the registry's cache; without, every repository's are."""
    if not digests:
        return 0
    wanted = set(digests)
    removed = 0
    with conn.pipeline(transaction=False) as pipe:
        for digest in wanted:
            pipe.delete(f"blobs::{digest}")
        removed += sum(int(n) for n in pipe.execute())
    if repositories is not None:
        with conn.pipeline(transaction=False) as pipe:
            for repo in sorted(set(repositories)):
                pipe.srem(f"repository::{repo}::blobs", *wanted)
                for digest in wanted:
                    pipe.delete(f"repository::{repo}::blobs::{digest}")
            removed += sum(int(n) for n in pipe.execute())
        return removed
    for key in conn.scan_iter(match="repository::*", count=1000):
        name = key.decode()
        if name.endswith("::blobs"):
            removed += int(conn.srem(name, *wanted))
        else:
            head, sep, digest = name.rpartition("::blobs::")
            if sep and digest in wanted:
                removed += int(conn.delete(name))
    return removed
