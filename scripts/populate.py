#!/usr/bin/env python3
"""Fill a registry with many small real images, fast, through its API (as `docker push` would store them),
for the benchmarks in scripts/.

Each repository gets one base layer shared by its tags; each tag its own config (with a distinct `created`,
an hour apart, newest last) and its own small layer, so deleting a tag frees bytes and listings sort by
creation time meaningfully. Blobs go up as monolithic uploads (one POST with the digest), in parallel.

    .venv/bin/python scripts/populate.py http://127.0.0.1:5000 --repos 100 --tags 10
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from threading import local

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from janitor.registry.manifests import sha256_digest as _digest  # noqa: E402
from tests.images import layer as _layer  # noqa: E402

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# Docker's schema 2, what a classic `docker push` stores: tools that ask only for it (registry-cli) get a 404
# for an OCI manifest from registry 2.8.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
TYPES = {  # manifest media type -> (config, layer) media types
    MANIFEST: (CONFIG, LAYER),
    DOCKER_MANIFEST: ("application/vnd.docker.container.image.v1+json",
                      "application/vnd.docker.image.rootfs.diff.tar.gzip"),
}


@dataclass(frozen=True)
class Pushed:
    repository: str
    tag: str
    digest: str
    size: int  # config plus layers
    created: str


class Populator:
    def __init__(self, base: str, workers: int = 16, layer_size: int = 1024, media_type: str = MANIFEST) -> None:
        self.base = base.rstrip("/")
        self.workers = workers
        self.layer_size = layer_size
        self.media_type = media_type
        self._local = local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def blob(self, repo: str, data: bytes) -> str:
        """One monolithic upload; a 5xx (an S3 endpoint on loopback gives up now and then under load) is tried
        again with a new upload, as a client would, up to three times."""
        for attempt in range(3):
            try:
                return self._blob(repo, data)
            except requests.HTTPError as exc:
                if attempt == 2 or exc.response is None or exc.response.status_code < 500:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def _blob(self, repo: str, data: bytes) -> str:
        digest = _digest(data)
        resp = self.session.post(f"{self.base}/v2/{repo}/blobs/uploads/", params={"digest": digest}, data=data,
                                 headers={"Content-Type": "application/octet-stream"}, timeout=60)
        if resp.status_code == 202:  # this registry wants the chunked flow: finish with a PUT
            loc = resp.headers["Location"]
            loc = loc if loc.startswith("http") else self.base + loc
            resp = self.session.put(loc, params={"digest": digest}, data=data, timeout=60)
        resp.raise_for_status()
        return digest

    def image(self, repo: str, tag: str, base_layer: bytes, created: datetime) -> Pushed:
        own = _layer(self.layer_size)
        layers = [base_layer, own]
        stamp = created.isoformat(timespec="seconds").replace("+00:00", "Z")
        config = json.dumps({"architecture": "amd64", "os": "linux", "created": stamp, "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [_digest(gzip.decompress(b)) for b in layers]},
                             "nonce": os.urandom(8).hex()}).encode()
        for data in (config, own):
            self.blob(repo, data)
        config_type, layer_type = TYPES[self.media_type]
        body = json.dumps({
            "schemaVersion": 2, "mediaType": self.media_type,
            "config": {"mediaType": config_type, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": _digest(b), "size": len(b)} for b in layers],
        }).encode()
        resp = self.session.put(f"{self.base}/v2/{repo}/manifests/{tag}", data=body,
                                headers={"Content-Type": self.media_type}, timeout=60)
        resp.raise_for_status()
        return Pushed(repo, tag, resp.headers["Docker-Content-Digest"],
                      len(config) + sum(len(b) for b in layers), stamp)

    def repository(self, repo: str, tags: int) -> list[Pushed]:
        base_layer = _layer(self.layer_size * 4)
        self.blob(repo, base_layer)
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=tags)
        return [self.image(repo, f"v{i}", base_layer, start + timedelta(hours=i)) for i in range(tags)]

    def fill(self, repos: int, tags: int, prefix: str = "bench/app") -> list[Pushed]:
        """`repos` repositories named <prefix>-0000..., `tags` tags each (v0 oldest)."""
        names = [f"{prefix}-{i:04d}" for i in range(repos)]
        with ThreadPoolExecutor(self.workers) as pool:
            return [p for found in pool.map(lambda n: self.repository(n, tags), names) for p in found]


def populate(registry_url: str, repos: int, tags: int, prefix: str = "bench/app", workers: int = 16,
             media_type: str = MANIFEST) -> list[Pushed]:
    return Populator(registry_url, workers, media_type=media_type).fill(repos, tags, prefix)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("registry_url")
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--prefix", default="bench/app")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--docker", action="store_true", help="Docker schema 2 manifests instead of OCI")
    args = parser.parse_args()
    start = time.monotonic()
    pushed = populate(args.registry_url, args.repos, args.tags, args.prefix, args.workers,
                      DOCKER_MANIFEST if args.docker else MANIFEST)
    print(json.dumps({"tags": len(pushed), "seconds": round(time.monotonic() - start, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
