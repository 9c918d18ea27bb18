"""The worker's view of Docker, published in Redis: the API reports it on /readyz without needing the Docker
socket itself (only the worker drives the registry container)."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import redis

from janitor import errors
from janitor.config.storage import S3Overrides
from janitor.jobs.records import Keys, now
from janitor.registry.container import RegistryContainer, env_of
from janitor.window import preflight
from janitor.window.fence import CONFIG_READS

INTERVAL = 5.0
UNREACHABLE = "DOCKER_UNAVAILABLE"
NOT_RUNNING = "REGISTRY_CONTAINER_NOT_RUNNING"


# Values no secret can be: flags, numbers, and distribution's own driver and cache names (which /readyz names).
_PLAIN = re.compile(r"^(true|false|yes|no|on|off|\d+|filesystem|inmemory|s3|s3aws|gcs|azure|swift|oss|redis)$",
                    re.IGNORECASE)
REDACTED = "<redacted>"


def redact(found: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The check as unauthenticated /readyz may show it: every value of the container's environment (its
    secrets live there: REGISTRY_HTTP_SECRET, storage keys, ...) replaced in the messages, nested ones too."""
    values = sorted({v for v in env.values() if len(v) >= 4 and not _PLAIN.match(v)}, key=len, reverse=True)

    def scrub(value: Any, text: bool) -> Any:
        if isinstance(value, dict):  # only messages are prose; fields such as `driver` are names
            return {k: scrub(v, k == "message") for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v, text) for v in value]
        if text and isinstance(value, str):
            for secret in values:
                value = value.replace(secret, REDACTED)
        return value
    return scrub(found, False)


def check(container: RegistryContainer, s3: S3Overrides | None = None) -> dict[str, Any]:
    try:
        got = container.get()
        status = got.status
    except errors.JanitorError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}
    if status != "running":
        return {"ok": False, "code": NOT_RUNNING,
                "message": f"registry container {container.name!r} is {status}"}
    return redact({"ok": True, "storage": storage_check(container, s3)}, env_of(got.attrs))


def storage_check(container: RegistryContainer, s3: S3Overrides | None = None) -> dict[str, Any]:
    """What the storage driver allows, and any trap that would fail every window's preflight."""
    try:
        report = preflight.inspect(container, s3=s3, reads=CONFIG_READS)  # every few seconds: a stat, not a read
    except errors.JanitorError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}
    found: dict[str, Any] = {"ok": not report.traps, **report.storage.as_dict()}
    if report.traps:
        found.update(code=report.traps[0].code, message=report.traps[0].message)
    return found


def publish(conn: redis.Redis, keys: Keys, container: RegistryContainer, s3: S3Overrides | None = None) -> None:
    conn.set(keys.heartbeat, json.dumps({**check(container, s3), "at": now()}), px=int(INTERVAL * 3000))


def report(conn: redis.Redis, keys: Keys, container: RegistryContainer,
           s3: S3Overrides | None = None) -> dict[str, Any]:
    """One look at Docker, published: on the heartbeat when the engine answers (the container's state, good
    or bad), apart (`publish_unreachable`) when it does not. Returns what was seen; `code` DOCKER_UNAVAILABLE
    means this worker must not take the registry's windows."""
    found = check(container, s3)
    if found.get("code") == UNREACHABLE:
        publish_unreachable(conn, keys, found.get("message", "Docker engine unreachable"))
    else:
        conn.set(keys.heartbeat, json.dumps({**found, "at": now()}), px=int(INTERVAL * 3000))
    return found


def storage(conn: redis.Redis, keys: Keys) -> dict[str, Any] | None:
    """The storage driver the worker last saw (None when unknown): the API refuses requests it cannot serve."""
    found = read(conn, keys).get("storage")
    return found if isinstance(found, dict) and "driver" in found else None


def read(conn: redis.Redis, keys: Keys) -> dict[str, Any]:
    raw = conn.get(keys.heartbeat)
    if not raw:
        unreachable = conn.get(keys.unreachable)
        if unreachable:
            # Workers serve this registry but none reaches its Docker host: they do not take its windows.
            return json.loads(unreachable)
        return {"ok": False, "code": "NO_WORKER", "message": "no worker has reported in the last "
                f"{INTERVAL * 3:.0f}s: is `python -m worker` running?"}
    return json.loads(raw)


def publish_unreachable(conn: redis.Redis, keys: Keys, message: str) -> None:
    """A worker that cannot reach this registry's Docker host says so apart from the heartbeat, which only
    workers serving the registry write: one that can reach it wins /readyz, one that cannot never hides it."""
    conn.set(keys.unreachable, json.dumps({"ok": False, "code": UNREACHABLE, "message": message,
                                           "at": now()}), px=int(INTERVAL * 3000))


def start(conn: redis.Redis, keys: Keys, container: RegistryContainer) -> threading.Thread:
    def loop() -> None:
        while True:
            try:
                publish(conn, keys, container)
            except redis.RedisError:
                pass  # Redis is down: /readyz says so on its own
            time.sleep(INTERVAL)

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    return thread
