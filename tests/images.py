"""Real image content for the tests: random layers, configs, manifests and indexes, pushed and pulled
over the registry API the way `docker push` and `docker pull` do."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import requests

from janitor.registry.manifests import (
    ACCEPT,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    parse,
    sha256_digest,
)

LAYER_TYPES = {DOCKER_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar.gzip",
               OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar+gzip"}
CONFIG_TYPES = {DOCKER_MANIFEST: "application/vnd.docker.container.image.v1+json",
                OCI_MANIFEST: "application/vnd.oci.image.config.v1+json"}


def layer(size: int = 4096) -> bytes:
    """A gzipped tar with one file of random bytes: unique content, so unique digest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(size)
        info = tarfile.TarInfo("data.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


@dataclass
class Image:
    media_type: str
    config: bytes
    layers: list[bytes]
    manifest: bytes = b""
    platform: tuple[str, str] = ("linux", "amd64")

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def blobs(self) -> dict[str, bytes]:
        return {sha256_digest(b): b for b in [self.config, *self.layers]}

    @property
    def size(self) -> int:
        return len(self.config) + sum(len(b) for b in self.layers)


def image(media_type: str = DOCKER_MANIFEST, layers: int = 2, layer_size: int = 4096,
          platform: tuple[str, str] = ("linux", "amd64"), shared_layers: list[bytes] | None = None,
          created: datetime | None = None) -> Image:
    """`created` (default now) is the config's creation time, what retention policies rank images by."""
    blobs = list(shared_layers or []) + [layer(layer_size) for _ in range(layers)]
    stamp = (created or datetime.now(timezone.utc)).isoformat(timespec="seconds").replace("+00:00", "Z")
    config = json.dumps({
        "architecture": platform[1], "os": platform[0], "created": stamp,
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(gzip.decompress(b)) for b in blobs]},
        "config": {}, "nonce": os.urandom(8).hex(),
    }).encode()
    img = Image(media_type, config, blobs, platform=platform)
    img.manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": CONFIG_TYPES[media_type], "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPES[media_type], "digest": sha256_digest(b), "size": len(b)} for b in blobs],
    }).encode()
    return img


@dataclass
class Index:
    media_type: str
    children: list[Image]
    manifest: bytes = b""

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def index(children: list[Image], media_type: str = OCI_INDEX) -> Index:
    child_type = OCI_MANIFEST if media_type == OCI_INDEX else DOCKER_MANIFEST
    assert all(c.media_type == child_type for c in children)
    body = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "manifests": [{"mediaType": c.media_type, "digest": c.digest, "size": len(c.manifest),
                       "platform": {"os": c.platform[0], "architecture": c.platform[1]}} for c in children],
    }).encode()
    return Index(media_type, children, body)


@dataclass
class Pusher:
    """Pushes like `docker push`: HEAD each blob, upload only those the registry does not claim to have."""

    base: str
    session: requests.Session = field(default_factory=requests.Session)
    skipped: list[str] = field(default_factory=list)

    def blob(self, repo: str, data: bytes) -> None:
        digest = sha256_digest(data)
        if self.session.head(f"{self.base}/v2/{repo}/blobs/{digest}", timeout=30).status_code == 200:
            self.skipped.append(digest)
            return
        start = self.session.post(f"{self.base}/v2/{repo}/blobs/uploads/", timeout=30)
        start.raise_for_status()
        loc = start.headers["Location"]
        loc = loc if loc.startswith("http") else self.base + loc
        put = self.session.put(loc + ("&" if "?" in loc else "?") + f"digest={digest}", data=data,
                               headers={"Content-Type": "application/octet-stream"}, timeout=30)
        put.raise_for_status()

    def manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        resp = self.session.put(f"{self.base}/v2/{repo}/manifests/{ref}", data=body,
                                headers={"Content-Type": media_type}, timeout=30)
        resp.raise_for_status()
        return resp.headers["Docker-Content-Digest"]

    def image(self, repo: str, img: Image, tag: str | None) -> str:
        for data in img.blobs.values():
            self.blob(repo, data)
        return self.manifest(repo, tag or img.digest, img.manifest, img.media_type)

    def index(self, repo: str, idx: Index, tag: str) -> str:
        for child in idx.children:
            self.image(repo, child, None)
        return self.manifest(repo, tag, idx.manifest, idx.media_type)


def pull_verified(base: str, repo: str, ref: str, session: requests.Session | None = None) -> list[str]:
    """Pull a manifest and every blob it reaches, verifying each digest; returns the problems found.
    `session` carries the credentials of a registry that wants them (unauthenticated by default)."""
    http = session or requests
    problems: list[str] = []
    resp = http.get(f"{base}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=30)
    if resp.status_code != 200:
        return [f"manifest {repo}:{ref} answered {resp.status_code}"]
    manifest = parse(resp.content, resp.headers.get("Content-Type"))
    if manifest.is_index:
        for child in manifest.children:
            problems += pull_verified(base, repo, child.digest, session)
        return problems
    for digest in manifest.blob_digests[1:]:
        blob = http.get(f"{base}/v2/{repo}/blobs/{digest}", timeout=30)
        if blob.status_code != 200:
            problems.append(f"blob {digest} of {repo}:{ref} answered {blob.status_code}")
        elif "sha256:" + hashlib.sha256(blob.content).hexdigest() != digest:
            problems.append(f"blob {digest} of {repo}:{ref} has the wrong content")
    return problems


def head_manifest(base: str, repo: str, ref: str, session: requests.Session | None = None) -> int:
    return (session or requests).head(f"{base}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=30).status_code


def head_blob(base: str, repo: str, digest: str, session: requests.Session | None = None) -> int:
    return (session or requests).head(f"{base}/v2/{repo}/blobs/{digest}", timeout=30).status_code


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
