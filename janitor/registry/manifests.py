"""Manifest media types and what a manifest references, for every format distribution stores."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
# Without all four, 2.8 answers 400 or converts, and the digest is not the stored one.
ACCEPT = ", ".join([DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX])


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str | None = None


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    raw: bytes
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()
    subject: str | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def blob_digests(self) -> tuple[str, ...]:
        """Blobs this manifest keeps alive (its own JSON is a blob too)."""
        own = [self.config.digest] if self.config else []
        return tuple([self.digest, *own, *(layer.digest for layer in self.layers)])

    @property
    def image_size(self) -> int:
        """Config plus layers, the size an image takes on a client."""
        return (self.config.size if self.config else 0) + sum(layer.size for layer in self.layers)


def _descriptor(d: dict[str, Any]) -> Descriptor:
    platform = d.get("platform")
    label = None
    if isinstance(platform, dict) and platform.get("os"):
        label = "/".join(str(p) for p in (platform.get("os"), platform.get("architecture"), platform.get("variant")) if p)
    return Descriptor(
        media_type=str(d.get("mediaType", "")),
        digest=str(d["digest"]),
        size=int(d.get("size", 0)),
        platform=label,
    )


def parse(raw: bytes, media_type: str | None = None, digest: str | None = None) -> Manifest:
    """Parse a stored manifest; media type from the body wins over the header, as distribution does."""
    doc = json.loads(raw)
    mt = doc.get("mediaType") or media_type or ""
    if not mt and "manifests" in doc:
        mt = OCI_INDEX
    elif not mt:
        mt = OCI_MANIFEST
    subject = doc.get("subject")
    return Manifest(
        digest=digest or sha256_digest(raw),
        media_type=mt,
        raw=raw,
        config=_descriptor(doc["config"]) if isinstance(doc.get("config"), dict) else None,
        layers=tuple(_descriptor(d) for d in doc.get("layers") or ()),
        children=tuple(_descriptor(d) for d in doc.get("manifests") or ()),
        subject=subject.get("digest") if isinstance(subject, dict) else None,
    )
