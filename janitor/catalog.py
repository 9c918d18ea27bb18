"""What the registry holds, as the API lists it: repositories with tag counts, tags with their details.

Manifests and configs are immutable by digest, so their details are cached in memory by digest; the tag to
digest mapping is read fresh every time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from janitor import errors
from janitor.manifests import Manifest
from janitor.registry import RegistryClient


@dataclass(frozen=True)
class ImageInfo:
    size: int
    created: str | None


class DigestCache:
    """A small LRU of per-digest image details, shared by the API's threads."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, ImageInfo] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> ImageInfo | None:
        with self._lock:
            info = self._items.get(digest)
            if info is not None:
                self._items.move_to_end(digest)
            return info

    def put(self, digest: str, info: ImageInfo) -> None:
        with self._lock:
            self._items[digest] = info
            self._items.move_to_end(digest)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


class Catalog:
    def __init__(self, client: RegistryClient, cache: DigestCache | None = None) -> None:
        self.client = client
        self.cache = cache or DigestCache()

    def repositories(self) -> list[str]:
        return sorted(self.client.catalog())

    def tag_count(self, repository: str) -> int:
        try:
            return len(self.client.tags(repository))
        except errors.RepositoryNotFound:
            return 0  # emptied repositories stay in _catalog until their directory goes

    def tags(self, repository: str) -> list[str]:
        return sorted(self.client.tags(repository))

    def describe(self, repository: str, tag: str) -> dict[str, Any]:
        manifest = self.client.manifest(repository, tag)
        platforms: list[str] = []
        if manifest.is_index:
            infos = [self._image(repository, child.digest) for child in manifest.children]
            size = sum(i.size for i in infos)
            created = max((i.created for i in infos if i.created), default=None)
            platforms = [c.platform for c in manifest.children if c.platform and c.platform != "unknown/unknown"]
        else:
            info = self._image(repository, manifest.digest, manifest)
            size, created = info.size, info.created
        return {
            "name": tag,
            "digest": manifest.digest,
            "media_type": manifest.media_type,
            "size": size,
            "created": created,
            "platforms": platforms,
        }

    def _image(self, repository: str, digest: str, manifest: Manifest | None = None) -> ImageInfo:
        cached = self.cache.get(digest)
        if cached:
            return cached
        manifest = manifest or self.client.manifest(repository, digest)
        created = None
        if manifest.config and not manifest.is_index:
            try:
                config = self.client.image_config(repository, manifest.config.digest)
                created = config.get("created") if isinstance(config, dict) else None
            except (ValueError, errors.NotFound):
                created = None  # an artifact whose config is not JSON, or is missing
        info = ImageInfo(size=manifest.image_size, created=created)
        self.cache.put(digest, info)
        return info
