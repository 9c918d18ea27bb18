"""Everything a window talks to, built once per job from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import redis

from janitor.config.settings import Settings
from janitor.jobs.records import JobStore, Keys
from janitor.registry.client import RegistryClient
from janitor.registry.container import RegistryContainer
from janitor.storage.contents import ContentCache
from janitor.storage.freed import SizeBook
from janitor.storage.revisions import RevisionBook
from janitor.storage.views import ViewBook
from janitor.window.fence import WriteFence
from janitor.window.guard import ReplicaParts


@dataclass
class Context:
    settings: Settings
    conn: redis.Redis
    store: JobStore
    keys: Keys
    client: RegistryClient
    container: RegistryContainer
    fence: WriteFence
    contents: ContentCache  # manifests by digest: each read from the registry once
    sizes: SizeBook  # blob sizes learned from manifests, and when the last GC ran
    revisions: RevisionBook  # the stored manifests as the last window listed them
    views: ViewBook  # on an object store, what the last window's fence read, for the next to start from
    # Every container of the registry, `container` first: fenced, probed and restarted each at its own address.
    replicas: list[ReplicaParts] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, conn: redis.Redis | None = None) -> Context:
        # With timeouts: a paused or partitioned Redis makes a record's save fail and retry, not hang the window.
        conn = conn or redis.Redis.from_url(settings.redis_url, socket_timeout=15, socket_connect_timeout=5)
        container = RegistryContainer(settings.registry_container, docker_host=settings.docker_host)
        keys = Keys.of(settings)
        client = RegistryClient.from_settings(settings)
        replicas: list[ReplicaParts] = []
        for n, replica in enumerate(settings.replicas):
            own = container if n == 0 else RegistryContainer(replica.container, docker_host=settings.docker_host)
            probes = client if replica.url == settings.registry_url else \
                RegistryClient.from_settings(replace(settings, registry_url=replica.url))
            replicas.append(ReplicaParts(own, WriteFence(own, replica.url, settings.restart_stop_timeout,
                                                         settings.registry_ready_timeout), probes))
        return cls(
            settings=settings,
            conn=conn,
            store=JobStore(conn, settings.job_ttl, keys),
            keys=keys,
            client=client,
            container=container,
            fence=replicas[0].fence,
            contents=ContentCache(conn, keys.prefix),
            sizes=SizeBook(conn, keys.prefix),
            revisions=RevisionBook(conn, keys.prefix),
            views=ViewBook(conn, keys.prefix),
            replicas=replicas,
        )
