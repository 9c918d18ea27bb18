"""What S3Storage's listings found (janitor/storage/s3.py): one listing of `repositories/`, one of `blobs/`, and
the view of both that a fence read, which a window carries to the next (kept in Redis: janitor/storage/
views.py)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from typing import Any, NamedTuple


class Links(NamedTuple):
    """One listing of `repositories/`."""

    read_at: float  # the store's clock when it began
    revisions: dict[str, dict[str, float]]  # repository -> manifest digest -> LastModified of its revision link
    layers: dict[str, dict[str, float]]  # repository -> blob digest -> LastModified of its layer link
    layered: set[str]  # repositories with any object under `_layers` (distribution's catalog walk)
    began: float  # the worker's clock before its first request


class Blobs(NamedTuple):
    """One listing of `blobs/`."""

    sizes: dict[str, tuple[int, float]]  # digest -> (size, LastModified)
    began: float  # the worker's clock before its first request


class View(NamedTuple):
    """What the reads under the fence found: the view a window carries to the next (S3Storage.carry)."""

    links: Links | None
    blobs: dict[str, tuple[int, float]] | None

    def dump(self) -> bytes | None:
        """Compressed JSON; None unless both prefixes were read."""
        links, blobs = self.links, self.blobs
        if links is None or blobs is None:
            return None
        return zlib.compress(json.dumps({
            "revisions": links.revisions, "layers": links.layers, "layered": sorted(links.layered),
            "blobs": blobs}, separators=(",", ":")).encode())

    @staticmethod
    def load(data: bytes, read_at: float, began: float) -> tuple[Links, Blobs] | None:
        """A dumped view as the listings it stands for, read at `read_at` (the store's clock) and begun at `began`
        (the worker's); None when it cannot be read."""
        try:
            found = json.loads(zlib.decompress(data))
            links = Links(read_at, _times(found["revisions"]), _times(found["layers"]),
                          set(map(str, found["layered"])), began)
            sizes = {str(d): (int(v[0]), float(v[1])) for d, v in found["blobs"].items()}
        except (zlib.error, ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None
        return links, Blobs(sizes, began)

    def without_blobs(self, digests: Iterable[str]) -> View:
        gone = set(digests)
        return self._replace(blobs=None if self.blobs is None else
                             {d: v for d, v in self.blobs.items() if d not in gone})

    def without_repository(self, name: str) -> View:
        links = self.links
        if links is None:
            return self
        return self._replace(links=links._replace(
            revisions={r: t for r, t in links.revisions.items() if r != name},
            layers={r: t for r, t in links.layers.items() if r != name}, layered=links.layered - {name}))


def _times(found: Any) -> dict[str, dict[str, float]]:
    return {str(repo): {str(d): float(t) for d, t in times.items()} for repo, times in found.items()}
