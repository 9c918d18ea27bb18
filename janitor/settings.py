"""Every setting the service and the worker read, from environment variables, in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    return float(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    registry_url: str = "http://localhost:5000"
    registry_username: str | None = None
    registry_password: str | None = None
    registry_container: str = "registry"
    redis_url: str = "redis://localhost:6379/0"
    api_tokens: tuple[str, ...] = ()
    # Seconds a maintenance lock lives without renewal; the worker renews it every third of this.
    lock_ttl: float = 30.0
    # How long a request may wait for its turn before its window gives up on the lock.
    lock_wait: float = 3600.0
    # How long the registry may take to answer /v2/ after a restart.
    registry_ready_timeout: float = 120.0
    # Seconds docker gives the registry to stop before it is killed on restart.
    restart_stop_timeout: int = 10
    # Blobs linked into a repository this recently are kept out of GC's reach: their manifest may still come.
    upload_grace: float = 3600.0
    # Before writes are refused, wait at most this long for blob uploads in progress to finish.
    upload_drain: float = 30.0
    # Job records are kept this long after they finish.
    job_ttl: float = 7 * 24 * 3600.0
    http_timeout: float = 30.0
    # How long a request keeps retrying while the registry is unreachable (it restarts in every window).
    registry_retry: float = 10.0
    max_body_bytes: int = 64 * 1024
    # Retention policies kept in git: a YAML file, read-only through the API.
    policies_file: str | None = None
    # Parallel registry reads when a policy reads tags, manifests and image configs.
    policy_read_concurrency: int = 16

    @property
    def registry_host(self) -> str:
        """host[:port] of the registry, the name a person confirms a registry-wide deletion with."""
        return urlsplit(self.registry_url).netloc

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        tokens = tuple(t.strip() for t in env.get("API_TOKENS", "").split(",") if t.strip())
        return cls(
            registry_url=env.get("REGISTRY_URL", d.registry_url).rstrip("/"),
            registry_username=env.get("REGISTRY_USERNAME") or None,
            registry_password=env.get("REGISTRY_PASSWORD") or None,
            registry_container=env.get("REGISTRY_CONTAINER", d.registry_container),
            redis_url=env.get("REDIS_URL", d.redis_url),
            api_tokens=tokens,
            lock_ttl=_float(env, "JANITOR_LOCK_TTL", d.lock_ttl),
            lock_wait=_float(env, "JANITOR_LOCK_WAIT", d.lock_wait),
            registry_ready_timeout=_float(env, "JANITOR_REGISTRY_READY_TIMEOUT", d.registry_ready_timeout),
            restart_stop_timeout=int(_float(env, "JANITOR_RESTART_STOP_TIMEOUT", d.restart_stop_timeout)),
            upload_grace=_float(env, "JANITOR_UPLOAD_GRACE", d.upload_grace),
            upload_drain=_float(env, "JANITOR_UPLOAD_DRAIN", d.upload_drain),
            job_ttl=_float(env, "JANITOR_JOB_TTL", d.job_ttl),
            http_timeout=_float(env, "JANITOR_HTTP_TIMEOUT", d.http_timeout),
            registry_retry=_float(env, "JANITOR_REGISTRY_RETRY", d.registry_retry),
            max_body_bytes=int(_float(env, "JANITOR_MAX_BODY_BYTES", d.max_body_bytes)),
            policies_file=env.get("POLICIES_FILE") or None,
            policy_read_concurrency=max(1, int(_float(env, "JANITOR_POLICY_CONCURRENCY", d.policy_read_concurrency))),
        )
