"""Every setting the service and the worker read, from environment variables, in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from janitor.config.storage import S3Overrides, s3_from_env


def _bool(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    return float(raw) if raw else default


def _log_format(raw: str) -> str:
    fmt = raw.strip().lower() or "text"
    if fmt not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, not {raw!r}")
    return fmt


GC_MODES = ("registry", "incremental")
DURATION_RE = re.compile(r"^([1-9][0-9]{0,6})([smhdw])$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_RESTORE_WINDOW = 366 * 86400.0


def restore_window(raw: object, what: str = "JANITOR_RESTORE_WINDOW") -> float:
    """Seconds a deletion stays restorable: `0` (off), a whole number and a unit (s, m, h, d, w: `7d`, `3s`),
    or a number of seconds (REGISTRIES_FILE may give one). At most 366 days: GC keeps those bytes meanwhile."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str) and (raw.strip() in ("", "0")):
        seconds = 0.0
    elif isinstance(raw, str) and (match := DURATION_RE.match(raw.strip())):
        seconds = float(int(match.group(1)) * DURATION_UNITS[match.group(2)])
    else:
        raise ValueError(f"{what} must be 0 (off) or a whole number and a unit s, m, h, d or w (e.g. 7d, 12h, "
                         f"30s), not {raw!r}")
    if not 0 <= seconds <= MAX_RESTORE_WINDOW:
        raise ValueError(f"{what} must be from 0 to 366 days, not {raw!r}")
    return seconds


def gc_mode(raw: object, what: str = "JANITOR_GC_MODE") -> str:
    """registry (distribution's own garbage-collect, the default) or incremental (the janitor's mark before
    the fence and sweep under it: docs/window.md)."""
    mode = (raw.strip().lower() or "registry") if isinstance(raw, str) else raw
    if mode not in GC_MODES:
        raise ValueError(f"{what} must be registry or incremental, not {raw!r}")
    return mode


def _index_mode(raw: str) -> str:
    mode = raw.strip().lower() or "auto"
    if mode not in ("auto", "notifications", "polling"):
        raise ValueError(f"JANITOR_INDEX_MODE must be auto, notifications or polling, not {raw!r}")
    return mode


CACHE_URL_SCHEMES = ("redis", "rediss", "unix")


def cache_url(raw: str | None, what: str = "JANITOR_REGISTRY_CACHE_URL") -> str | None:
    """The registry's Redis blob cache as the worker reaches it: a redis://, rediss:// or unix:// URL (the
    registry's own config names it as the registry container sees it)."""
    value = (raw or "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in CACHE_URL_SCHEMES or not (parts.hostname or parts.path) or \
            (parts.scheme != "unix" and not parts.hostname):
        raise ValueError(f"{what} must be a redis://, rediss:// or unix:// URL (e.g. redis://:password@host:6379/0),"
                         f" not {parts._replace(netloc=parts.hostname or '').geturl()!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{what}: bad port ({exc})") from exc
    return value


@dataclass(frozen=True)
class Replica:
    """One container serving a registry's storage, with its own address: the fence and the write probes must
    reach each container itself, never a load balancer that may answer from another one."""

    container: str
    url: str


def without_credentials(url: str, what: str) -> str:
    """A registry URL with no user:password@ in it: the URL becomes Redis key names, the host people confirm
    with, job records and webhooks, so credentials in it would leak everywhere. ValueError naming `what`
    (the variable or the file's entry), never echoing the value."""
    netloc = url.partition("://")[2].partition("/")[0]
    if "@" in netloc:
        host = netloc.rpartition("@")[2]
        raise ValueError(f"{what} must not carry credentials (user:password@{host}): give them as a username "
                         "and password setting instead, so they never reach Redis keys, job records or webhooks")
    return url


@dataclass(frozen=True)
class Settings:
    registry_url: str = "http://localhost:5000"
    registry_username: str | None = None
    registry_password: str | None = None
    registry_container: str = "registry"
    # Several containers on one storage (REGISTRIES_FILE `replicas:`); empty: the one `registry_container`, at
    # `registry_url`. The first is `registry_container`: GC, holds and storage reads run in it.
    registry_replicas: tuple[Replica, ...] = ()
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
    # Protected tags kept in git: a YAML file of rules, read-only through the API.
    protections_file: str | None = None
    # Parallel registry reads when a policy reads tags, manifests and image configs.
    policy_read_concurrency: int = 16
    # `untagged` never deletes a manifest pushed (revision link written) less than this many seconds ago, nor
    # what it uses: a manifest pushed by digest may still be getting its tag, or an index its children.
    untagged_min_age: float = 3600.0
    # Longest a maintenance window may run before its remaining steps are skipped and writes come back on.
    max_window: float = 4 * 3600.0
    # Longest `registry garbage-collect` may run before it is stopped (never past the window's end).
    gc_timeout: float = 2 * 3600.0
    # registry: `registry garbage-collect` under the fence; incremental: the janitor marks before the fence and,
    # under it, applies only what changed since and sweeps (docs/window.md). A request may ask for registry.
    gc_mode: str = "registry"
    # "text" or "json" (one JSON object per line, with request_id, job_id and window_id where they apply).
    log_format: str = "text"
    # When set, GET /metrics needs `Authorization: Bearer <metrics_token>`.
    metrics_token: str | None = None
    # Named tokens with scopes (YAML), re-read when it changes; bare API_TOKENS stay admin.
    api_tokens_file: str | None = None
    # Every real (non-dry) deletion and policy run waits for approval.
    require_approval: bool = False
    # A job awaiting approval this long ends as expired.
    approval_ttl: float = 24 * 3600.0
    # Receivers of job events, and the secret their HMAC-SHA256 signature is made with.
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str | None = None
    webhook_timeout: float = 10.0
    # Seconds between delivery attempts after a failure; one retry per entry.
    webhook_retry_intervals: tuple[int, ...] = (5, 30, 120, 600, 1800)
    # Many registries (janitor/registries.py): the YAML file naming them; without it one registry, from REGISTRY_*.
    registries_file: str | None = None
    # This registry's name, in /v1/registries/{name}/..., job records, webhooks and logs.
    name: str = "default"
    # The Docker engine that runs this registry's container; None: DOCKER_HOST, as the docker CLI reads it.
    docker_host: str | None = None
    # What this registry's Redis keys are namespaced by (`janitor:<namespace>:...`); None: its host[:port],
    # which is what a deployment without REGISTRIES_FILE always used, so its jobs and policies carry over.
    redis_namespace: str | None = None
    # The registries `python -m worker` serves (WORKER_REGISTRIES=a,b); empty: every registry it knows.
    worker_registries: tuple[str, ...] = ()
    # How long a registry's windows wait for a worker that reaches its Docker host before a worker that cannot
    # takes them anyway, to fail them with DOCKER_UNAVAILABLE instead of leaving them queued for good.
    docker_grace: float = 30.0

    @property
    def namespace(self) -> str:
        """The registry's identity in Redis: every key, the RQ queue and the webhook queue derive from it."""
        return self.redis_namespace or self.registry_host
    # The listing index (janitor/index.py): the worker reads the whole registry again this often (seconds).
    index_reconcile_interval: float = 60.0
    # auto (notifications when the registry's config sends events to /v1/events), notifications or polling.
    index_mode: str = "auto"
    # Parallel registry reads when the index fills or reconciles.
    index_read_concurrency: int = 16
    # Bearer tokens a registry sends with its notifications: the `events` scope only (POST /v1/events).
    events_tokens: tuple[str, ...] = ()
    # The registry's Redis blob-descriptor cache as the worker reaches it (redis:// or rediss:// URL); None: the
    # address the registry's config gives, which is the registry container's view (`redis:6379`, `localhost`).
    registry_cache_url: str | None = None
    # How long what a deletion or policy run deleted can be put back (POST /v1/jobs/{id}/restore); GC keeps its
    # blobs until then. 0: off. A request's or a policy's `restore_window` overrides it.
    restore_window: float = 0.0

    @property
    def replicas(self) -> tuple[Replica, ...]:
        """Every container of this registry, the one GC runs in first; one unless REGISTRIES_FILE names several."""
        return self.registry_replicas or (Replica(self.registry_container, self.registry_url),)
    # The janitor's own endpoint and credentials for the registry's bucket (janitor/config/storage.py); empty:
    # the registry's own, from its config.
    s3: S3Overrides = S3Overrides()

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
            registry_url=without_credentials(env.get("REGISTRY_URL", d.registry_url).rstrip("/"), "REGISTRY_URL"),
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
            protections_file=env.get("PROTECTIONS_FILE") or None,
            policy_read_concurrency=max(1, int(_float(env, "JANITOR_POLICY_CONCURRENCY", d.policy_read_concurrency))),
            untagged_min_age=_float(env, "JANITOR_UNTAGGED_MIN_AGE", d.untagged_min_age),
            max_window=_float(env, "JANITOR_MAX_WINDOW", d.max_window),
            gc_timeout=_float(env, "JANITOR_GC_TIMEOUT", d.gc_timeout),
            gc_mode=gc_mode(env.get("JANITOR_GC_MODE", d.gc_mode)),
            log_format=_log_format(env.get("LOG_FORMAT", d.log_format)),
            metrics_token=env.get("METRICS_TOKEN") or None,
            api_tokens_file=env.get("API_TOKENS_FILE") or None,
            require_approval=_bool(env, "JANITOR_REQUIRE_APPROVAL"),
            approval_ttl=_float(env, "JANITOR_APPROVAL_TTL", d.approval_ttl),
            webhook_urls=tuple(u.strip() for u in env.get("WEBHOOK_URLS", "").split(",") if u.strip()),
            webhook_secret=env.get("WEBHOOK_SECRET") or None,
            webhook_timeout=_float(env, "WEBHOOK_TIMEOUT", d.webhook_timeout),
            webhook_retry_intervals=tuple(
                int(float(x)) for x in env.get("WEBHOOK_RETRY_INTERVALS", "").split(",") if x.strip()
            ) or d.webhook_retry_intervals,
            registries_file=env.get("REGISTRIES_FILE") or None,
            docker_host=env.get("DOCKER_HOST") or None,
            docker_grace=_float(env, "JANITOR_DOCKER_GRACE", d.docker_grace),
            worker_registries=tuple(n.strip() for n in env.get("WORKER_REGISTRIES", "").split(",") if n.strip()),
            index_reconcile_interval=max(1.0, _float(env, "JANITOR_RECONCILE_INTERVAL", d.index_reconcile_interval)),
            index_mode=_index_mode(env.get("JANITOR_INDEX_MODE", d.index_mode)),
            index_read_concurrency=max(1, int(_float(env, "JANITOR_INDEX_CONCURRENCY", d.index_read_concurrency))),
            events_tokens=tuple(t.strip() for t in env.get("EVENTS_TOKENS", "").split(",") if t.strip()),
            registry_cache_url=cache_url(env.get("JANITOR_REGISTRY_CACHE_URL")),
            restore_window=restore_window(env.get("JANITOR_RESTORE_WINDOW", "0")),
            s3=s3_from_env(env),
        )
