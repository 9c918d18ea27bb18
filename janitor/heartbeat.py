"""The worker's view of Docker, published in Redis: the API reports it on /readyz without needing the Docker
socket itself (only the worker drives the registry container)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import redis

from janitor import errors, preflight
from janitor.container import RegistryContainer
from janitor.records import Keys, now

INTERVAL = 5.0


def check(container: RegistryContainer) -> dict[str, Any]:
    try:
        status = container.get().status
    except errors.JanitorError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}
    if status != "running":
        return {"ok": False, "code": "REGISTRY_CONTAINER_NOT_RUNNING",
                "message": f"registry container {container.name!r} is {status}"}
    return {"ok": True, "storage": storage_check(container)}


def storage_check(container: RegistryContainer) -> dict[str, Any]:
    """What the storage driver allows, and any trap that would fail every window's preflight."""
    try:
        report = preflight.inspect(container)
    except errors.JanitorError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}
    found: dict[str, Any] = {"ok": not report.traps, **report.storage.as_dict()}
    if report.traps:
        found.update(code=report.traps[0].code, message=report.traps[0].message)
    return found


def publish(conn: redis.Redis, keys: Keys, container: RegistryContainer) -> None:
    conn.set(keys.heartbeat, json.dumps({**check(container), "at": now()}), px=int(INTERVAL * 3000))


def storage(conn: redis.Redis, keys: Keys) -> dict[str, Any] | None:
    """The storage driver the worker last saw (None when unknown): the API refuses requests it cannot serve."""
    found = read(conn, keys).get("storage")
    return found if isinstance(found, dict) and "driver" in found else None


def read(conn: redis.Redis, keys: Keys) -> dict[str, Any]:
    raw = conn.get(keys.heartbeat)
    if not raw:
        return {"ok": False, "code": "NO_WORKER", "message": "no worker has reported in the last "
                f"{INTERVAL * 3:.0f}s: is `python -m worker` running?"}
    return json.loads(raw)


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
