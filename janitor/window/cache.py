"""The registry's blob-descriptor cache. In memory it dies with the restart that ends every window; in
Redis it survives, so the keys of every swept blob are removed, or the registry keeps saying "layer already
exists" about blobs GC deleted (and accepts manifests naming them).

Where that Redis is comes from the registry's config, read every way distribution reads it (`read`, pure):
2.x `redis.addr`, 3.x `redis.addrs` (a list), and the REGISTRY_REDIS* variables that override the file. That
address is the registry container's view (`redis:6379` on a compose network, `localhost` inside the
container), so an operator may give the cache's address as the worker sees it (JANITOR_REGISTRY_CACHE_URL,
or `cache_url` per registry). Preflight reaches the cache before anything is deleted (`reach`): a cache
that cannot be cleaned after GC must stop the window while nothing has changed.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from janitor import errors
from janitor.registry.container import RegistryContainer

log = logging.getLogger(__name__)
DEFAULT_PORT = 6379
CONNECT_TIMEOUT = 5.0
# Sub-sections and scalar fields of `redis` a REGISTRY_REDIS_<FIELD> variable may set (distribution matches
# field names case-insensitively). Pool settings and timeouts change nothing for the janitor.
_FIELDS = ("addr", "addrs", "username", "password", "db", "mastername", "clientname")
_TLS_FIELDS = ("enabled", "certificate", "key", "clientcas", "rootcas")


@dataclass(frozen=True)
class CacheTarget:
    """The registry's Redis blob cache: where the registry reaches it (`addrs`, from `source`) and, when the
    operator gave it, where the worker does (`url`)."""

    addrs: tuple[str, ...]
    source: str  # the spelling it was read from, named in messages: "redis.addrs in <config>", "REGISTRY_REDIS_ADDR"
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    master_name: str | None = None  # Sentinel: the registry asks `addrs` (sentinels) where the master is
    url: str | None = None  # the operator's redis:// or rediss:// URL, as the worker sees the cache

    @property
    def worker_address(self) -> str:
        """Where the worker connects, for messages (never with the password)."""
        if self.url:
            parts = urlsplit(self.url)
            return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path or ''}"
        return f"{'rediss' if self.tls else 'redis'}://{self.addrs[0] if self.addrs else '?'}/{self.db}"

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.worker_address, "registry_addresses": list(self.addrs), "source": self.source,
                "db": self.db, "tls": self.tls, "override": self.url is not None}


# -- reading the registry's config (pure) ---------------------------------------------------------------------


def _scalar(payload: str) -> Any:
    """An environment value as distribution reads it: YAML into the field (`7` is a number, `[a, b]` a list)."""
    try:
        value = yaml.safe_load(payload)
    except yaml.YAMLError:
        return payload
    return payload if value is None else value


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def blob_cache_kind(env: Mapping[str, str], config: Mapping[str, Any]) -> str | None:
    """`storage.cache.blobdescriptor` after the environment: REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR, else the
    whole section in REGISTRY_STORAGE_CACHE, else the file."""
    if env.get("REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR"):
        return str(env["REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR"]).strip().lower()
    section: Any = ((config.get("storage") or {}) if isinstance(config.get("storage"), dict) else {}).get("cache")
    if env.get("REGISTRY_STORAGE_CACHE"):
        section = _scalar(env["REGISTRY_STORAGE_CACHE"])
    if isinstance(section, dict):
        kind = section.get("blobdescriptor")
        return str(kind).strip().lower() if kind else None
    return None


def redis_section(env: Mapping[str, str], config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The `redis` section distribution ends up with, and where each field came from (`redis.<field> in the
    config` or the variable's name). REGISTRY_REDIS replaces the whole section; REGISTRY_REDIS_<FIELD>,
    REGISTRY_REDIS_ADDRS_<n> and REGISTRY_REDIS_TLS_<FIELD> set one field each."""
    raw = config.get("redis")
    section: dict[str, Any] = {str(k).lower(): v for k, v in raw.items()} if isinstance(raw, dict) else {}
    origin = {k: f"redis.{k}" for k in section}
    if env.get("REGISTRY_REDIS"):
        whole = _scalar(env["REGISTRY_REDIS"])
        section = {str(k).lower(): v for k, v in whole.items()} if isinstance(whole, dict) else {}
        origin = {k: "REGISTRY_REDIS" for k in section}
    tls = dict(section.get("tls")) if isinstance(section.get("tls"), dict) else {}
    if env.get("REGISTRY_REDIS_TLS"):
        whole = _scalar(env["REGISTRY_REDIS_TLS"])
        tls = dict(whole) if isinstance(whole, dict) else {}
    indexed: dict[int, str] = {}
    for name in sorted(env):
        if not name.startswith("REGISTRY_REDIS_"):
            continue
        rest = name[len("REGISTRY_REDIS_"):].lower()
        if rest in _FIELDS:
            section[rest] = _scalar(env[name])
            origin[rest] = name
        elif rest.startswith("addrs_") and rest[6:].isdigit():
            indexed[int(rest[6:])] = env[name]
            origin["addrs"] = name
        elif rest.startswith("tls_") and rest[4:] in _TLS_FIELDS:
            tls[rest[4:]] = _scalar(env[name])
    if indexed:  # distribution appends REGISTRY_REDIS_ADDRS_<n> in order from 0
        addrs = list(_addr_list(section.get("addrs")))
        for idx in sorted(indexed):
            if idx < len(addrs):
                addrs[idx] = indexed[idx]
            elif idx == len(addrs):
                addrs.append(indexed[idx])
        section["addrs"] = addrs
    if tls:
        section["tls"] = {str(k).lower(): v for k, v in tls.items()}
    return section, origin


def _addr_list(value: Any) -> tuple[str, ...]:
    """3.x `addrs`: a list; a single address (as a string, or comma-separated) is taken too."""
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(p.strip() for p in str(value).split(",") if p.strip())


def version_major(output: str) -> int | None:
    """`registry --version`: "registry github.com/docker/distribution 2.8.2+ds1" or "... v3.0.0" -> 2, 3."""
    found = re.search(r"\bv?(\d+)\.\d+", output.strip().rsplit(" ", 1)[-1]) if output.strip() else None
    return int(found.group(1)) if found else None


def read(env: Mapping[str, str], config: Mapping[str, Any], config_path: str = "the config",
         version: int | None = None) -> CacheTarget | None:
    """The registry's Redis blob cache, or None when its blob descriptors are not cached in Redis.

    2.x reads `redis.addr` (REGISTRY_REDIS_ADDR) and ignores `addrs`; 3.x reads `redis.addrs`
    (REGISTRY_REDIS_ADDRS, a YAML list, or REGISTRY_REDIS_ADDRS_0...) and ignores `addr`. With both spellings
    and different addresses, `version` (the registry's major version) decides; without it that is refused,
    since cleaning the wrong Redis leaves the stale keys. 3.x adds `username`, `mastername` (Sentinel) and TLS
    (`tls.certificate`, `tls.key`, `tls.clientcas` in 3.0, `tls.rootcas` in 3.1; 3.0 alphas: `tls.enabled`)."""
    if blob_cache_kind(env, config) != "redis":
        return None
    section, origin = redis_section(env, config)

    def where(field: str) -> str:
        named = origin.get(field, "")
        return named if named.startswith("REGISTRY_") else f"redis.{field} in {config_path}"

    old = _text(section.get("addr"))
    new = _addr_list(section.get("addrs"))
    if version == 2 or (version is None and old and not new):
        addrs, source = ((old,) if old else ()), where("addr")
    elif version is not None and version >= 3 or (new and not old):
        addrs, source = new, where("addrs")
    elif new and old:
        if old not in new:
            raise errors.CacheConfigAmbiguous(
                f"the registry's config names its Redis blob cache twice, as {where('addr')} = {old!r} (read by "
                f"distribution 2.x only) and {where('addrs')} = {list(new)!r} (read by 3.x only), and the "
                "janitor could not tell which version runs. Fix: remove the spelling your registry ignores, or "
                "give the cache's address as the worker sees it (JANITOR_REGISTRY_CACHE_URL, or cache_url in "
                "REGISTRIES_FILE). Nothing was deleted.", addr=old, addrs=list(new))
        addrs, source = new, where("addrs")
    else:
        addrs, source = (), "redis.addr / redis.addrs"
    tls_section = section.get("tls") if isinstance(section.get("tls"), dict) else {}
    tls = version != 2 and (tls_section.get("enabled") is True or str(tls_section.get("enabled")).lower() == "true"
                            or any(tls_section.get(k) for k in ("certificate", "key", "clientcas", "rootcas")))
    db = section.get("db") or 0
    try:
        db = int(db)
    except (TypeError, ValueError):
        db = 0
    return CacheTarget(
        addrs=addrs, source=source, db=db,
        username=_text(section.get("username")) if version != 2 else None,
        password=_text(section.get("password")), tls=bool(tls),
        master_name=_text(section.get("mastername")) if version != 2 else None)


def with_override(target: CacheTarget | None, url: str | None) -> CacheTarget | None:
    """The operator's URL replaces the address, credentials and TLS the registry's config gives (only the
    worker's way there differs); without a Redis blob cache it changes nothing."""
    return replace(target, url=url) if target is not None and url else target


def host_port(addr: str) -> tuple[str, int]:
    """`host:port`, `[::1]:port` or a bare host (port 6379)."""
    addr = addr.strip()
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        return host, int(rest.lstrip(":") or DEFAULT_PORT)
    if addr.count(":") == 1:
        host, _, port = addr.partition(":")
        return host or "localhost", int(port or DEFAULT_PORT)
    return addr or "localhost", DEFAULT_PORT


# -- reaching it ------------------------------------------------------------------------------------------------


def locate(container: RegistryContainer, config_path: str, config: dict[str, Any] | None = None,
           env: dict[str, str] | None = None, override_url: str | None = None) -> CacheTarget | None:
    """The registry's Redis blob cache as its container is configured. `registry --version` is asked only
    when both the 2.x and the 3.x spelling name an address."""
    config = container.read_yaml(config_path) if config is None else config
    env = container.env() if env is None else env
    try:
        found = read(env, config, config_path)
    except errors.CacheConfigAmbiguous:
        if override_url:
            found = read(env, config, config_path, version=3)  # only "is it Redis" matters: the URL says where
        else:
            result = container.exec(["registry", "--version"])
            major = version_major(result.stdout) if result.exit_code == 0 else None
            if major is None:
                raise
            found = read(env, config, config_path, version=major)
    return with_override(found, override_url)


def connect(target: CacheTarget, timeout: float = CONNECT_TIMEOUT) -> redis.Redis:
    """A connection with timeouts, to the operator's URL or to the address the registry's config gives."""
    # No retries inside redis-py (it backs off for seconds on a refused connection): the callers retry.
    opts: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                            "retry": Retry(NoBackoff(), 0)}
    if target.url:
        return redis.Redis.from_url(target.url, **opts)
    host, port = host_port(target.addrs[0])
    return redis.Redis(host=host, port=port, db=target.db, username=target.username, password=target.password,
                       ssl=target.tls, **opts)


def reach(target: CacheTarget, timeout: float = CONNECT_TIMEOUT) -> redis.Redis:
    """Preflight: a connection that answered, to a Redis the janitor can clean. Raises the reason otherwise."""
    fix = ("Fix: give the cache's address as the worker sees it, as a redis:// or rediss:// URL with its "
           "password and db (JANITOR_REGISTRY_CACHE_URL, or cache_url in REGISTRIES_FILE). Nothing was deleted.")
    if not target.url:
        if not target.addrs:
            raise errors.CacheUnreachable(
                f"the registry caches blob descriptors in Redis (storage.cache.blobdescriptor: redis) but its config "
                f"names no Redis address ({target.source}). {fix}", source=target.source)
        if target.master_name or len(target.addrs) > 1:
            raise errors.CacheUnsupported(
                f"the registry's Redis blob cache is a {'Sentinel' if target.master_name else 'cluster'} "
                f"({target.source} = {list(target.addrs)}); the janitor cleans a single Redis server only. "
                f"{'Give the current master as the URL (after a failover, change it). ' if target.master_name else ''}"
                f"{fix}", addresses=list(target.addrs), source=target.source)
    try:
        conn = connect(target, timeout)
        conn.ping()
        cluster = conn.info("cluster").get("cluster_enabled")
    except (redis.RedisError, OSError, ValueError) as exc:
        seen = ("the address given for the worker" if target.url
                else f"{target.source} = {list(target.addrs)!r}, the address as the registry container sees it")
        raise errors.CacheUnreachable(
            f"the registry caches blob descriptors in Redis, and the worker cannot reach that Redis at "
            f"{target.worker_address} ({seen}): {exc}. After GC the janitor must remove the swept blobs' keys "
            f"there, or the registry keeps answering that they exist and accepts manifests whose layers are gone. "
            f"{fix}", address=target.worker_address, source=target.source, override=target.url is not None) from exc
    if str(cluster) == "1":
        raise errors.CacheUnsupported(
            f"the registry's Redis blob cache at {target.worker_address} is a Redis Cluster node; the janitor cleans "
            f"a single Redis server only. {fix}", address=target.worker_address)
    return conn


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
            _, sep, digest = name.rpartition("::blobs::")
            if sep and digest in wanted:
                removed += int(conn.delete(name))
    return removed


def forget_retrying(target: CacheTarget, digests: list[str], repositories: list[str] | None,
                    within: float, sleep: Callable[[float], None] = time.sleep) -> int:
    """`forget`, retried on a new connection for up to `within` seconds: after the sweep a Redis that blinks
    must not leave keys of swept blobs behind. Raises CacheNotCleaned, naming the blobs, when it never answers."""
    deadline = time.monotonic() + max(0.0, within)
    attempt = 0
    while True:
        attempt += 1
        try:
            return forget(connect(target), digests, repositories)
        except (redis.RedisError, OSError) as exc:
            if time.monotonic() + min(2.0, 0.25 * attempt) > deadline:
                raise errors.CacheNotCleaned(
                    f"GC swept {len(digests)} blobs but their keys could not be removed from the registry's Redis "
                    f"blob cache at {target.worker_address} after {attempt} attempts ({exc}): until they are, the "
                    "registry may say those blobs exist. The janitor removes them at the start of its next window; "
                    f"to do it now, delete the keys blobs::<digest> there for the digests in details.",
                    address=target.worker_address, digests=sorted(digests)) from exc
            log.warning("cannot clean the registry's blob cache at %s yet (%s); retrying", target.worker_address, exc)
            sleep(min(2.0, 0.25 * attempt))
