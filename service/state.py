"""Per-app connections (Redis, the RQ queue, the registry client), built once by create_app."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app
from rq import Queue

from janitor.catalog import Catalog
from janitor.index import TagIndex
from janitor.records import JobStore, Keys
from janitor.registry import RegistryClient
from janitor.settings import Settings


@dataclass
class State:
    settings: Settings
    conn: redis.Redis
    store: JobStore
    keys: Keys
    queue: Queue
    client: RegistryClient
    catalog: Catalog
    index: TagIndex

    @classmethod
    def build(cls, settings: Settings) -> State:
        conn = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        keys = Keys(settings.registry_host)
        client = RegistryClient.from_settings(settings)
        return cls(
            settings=settings,
            conn=conn,
            store=JobStore(conn, settings.job_ttl, keys),
            keys=keys,
            queue=Queue(keys.queue_name, connection=conn),
            client=client,
            catalog=Catalog(client),
            index=TagIndex(conn, keys.prefix, client, settings.index_read_concurrency, settings.index_mode),
        )


def state() -> State:
    return current_app.extensions["janitor"]
