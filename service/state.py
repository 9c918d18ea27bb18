"""Per-registry connections (Redis, the RQ queue, the registry client), built once per registry by create_app.

`state()` is the State of the registry the request is about: the one named in /v1/registries/{registry}/...
(`g.registry`, set by service/registry_scope.py), else the default registry (the unprefixed paths)."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app, g, has_request_context
from rq import Queue

from janitor.config.settings import Settings
from janitor.index import TagIndex
from janitor.jobs.records import JobStore, Keys
from janitor.registry.client import RegistryClient

STATES = "janitor_registries"  # app.extensions key: registry name -> State, in REGISTRIES_FILE's order
DEFAULT = "janitor"  # app.extensions key: the default registry's State


@dataclass
class State:
    settings: Settings
    conn: redis.Redis
    store: JobStore
    keys: Keys
    queue: Queue
    client: RegistryClient
    index: TagIndex

    @classmethod
    def build(cls, settings: Settings, conn: redis.Redis | None = None) -> State:
        """`conn`: one Redis connection pool shared by every registry on the same Redis."""
        conn = conn or redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        keys = Keys.of(settings)
        client = RegistryClient.from_settings(settings)
        return cls(
            settings=settings,
            conn=conn,
            store=JobStore(conn, settings.job_ttl, keys),
            keys=keys,
            queue=Queue(keys.queue_name, connection=conn),
            client=client,
            index=TagIndex(conn, keys.prefix, client, settings.index_read_concurrency, settings.index_mode),
        )


def state() -> State:
    name = g.get("registry") if has_request_context() else None
    if name is None:
        return current_app.extensions[DEFAULT]
    return current_app.extensions[STATES][name]  # known: checked before the view runs


def states() -> dict[str, State]:
    """Every registry's State, by name."""
    return current_app.extensions[STATES]
