#!/usr/bin/env python3
"""Fill a registry with many small real images, fast, for the benchmarks in scripts/: through its API (as
`docker push` would store them), or straight into its filesystem storage (`--container`).

Each repository gets one base layer shared by its tags; each tag its own config (with a distinct `created`,
an hour apart, newest last) and its own small layer, so deleting a tag frees bytes and listings sort by
creation time meaningfully. Through the API, blobs go up as monolithic uploads (one POST with the digest), in
parallel: about 40 minutes for 40,000 tags on the 2-core machine. Into storage, the same images are written as
distribution 2.8 writes a push (blob data, the repository's layer links for the config and layers, the
manifest's revision link, the tag's current and index links) in one archive per STORAGE_CHUNK repositories,
unpacked in the container by the Docker engine: about a minute for 40,000 tags. `verify_pulls` then pulls a
few tags through the API, so the registry is known to read the result as its own.

    .venv/bin/python scripts/populate.py http://127.0.0.1:5000 --repos 100 --tags 10
    .venv/bin/python scripts/populate.py http://127.0.0.1:5000 --repos 4000 --container registry-janitor-registry
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import sys
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from threading import local
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from janitor.registry.manifests import sha256_digest as _digest  # noqa: E402
from janitor.storage.layout import Layout  # noqa: E402
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
        stamp, config, body = image_parts(base_layer, own, created, self.media_type)
        for data in (config, own):
            self.blob(repo, data)
        resp = self.session.put(f"{self.base}/v2/{repo}/manifests/{tag}", data=body,
                                headers={"Content-Type": self.media_type}, timeout=60)
        resp.raise_for_status()
        return Pushed(repo, tag, resp.headers["Docker-Content-Digest"], len(config) + len(base_layer) + len(own),
                      stamp)

    def repository(self, repo: str, tags: int) -> list[Pushed]:
        base_layer = _layer(self.layer_size * 4)
        self.blob(repo, base_layer)
        return [self.image(repo, f"v{i}", base_layer, created) for i, created in enumerate(_created(tags))]

    def fill(self, repos: int, tags: int, prefix: str = "bench/app") -> list[Pushed]:
        """`repos` repositories named <prefix>-0000..., `tags` tags each (v0 oldest)."""
        names = [f"{prefix}-{i:04d}" for i in range(repos)]
        with ThreadPoolExecutor(self.workers) as pool:
            return [p for found in pool.map(lambda n: self.repository(n, tags), names) for p in found]


def image_parts(base_layer: bytes, own: bytes, created: datetime, media_type: str) -> tuple[str, bytes, bytes]:
    """One tag's image on a repository's base layer: its `created` stamp, config and manifest bytes."""
    layers = [base_layer, own]
    stamp = created.isoformat(timespec="seconds").replace("+00:00", "Z")
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": stamp, "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [_digest(gzip.decompress(b)) for b in layers]},
                         "nonce": os.urandom(8).hex()}).encode()
    config_type, layer_type = TYPES[media_type]
    body = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": _digest(b), "size": len(b)} for b in layers],
    }).encode()
    return stamp, config, body


def _created(tags: int) -> list[datetime]:
    """An hour apart, the last an hour ago: v0 is the oldest."""
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=tags)
    return [start + timedelta(hours=i) for i in range(tags)]


def populate(registry_url: str, repos: int, tags: int, prefix: str = "bench/app", workers: int = 16,
             media_type: str = MANIFEST) -> list[Pushed]:
    return Populator(registry_url, workers, media_type=media_type).fill(repos, tags, prefix)


# -- straight into the registry's filesystem storage --------------------------------------------------------

STORAGE_CHUNK = 50  # repositories per archive: about 500 tags, 4,000 files, 5 MB
ENGINE_TIMEOUT = 900  # seconds for one archive (or the mkdir) through the Docker engine


class StorageFill:
    """The images `Populator` pushes, written where distribution 2.8's filesystem driver would put them after
    those pushes, through the Docker engine's archive upload (no access to the host's Docker directories
    needed). Blobs are shared as a registry shares them: one data file per digest, linked into each
    repository that uploaded it."""

    def __init__(self, container: Any, root: str = "/var/lib/registry", layer_size: int = 1024,
                 media_type: str = MANIFEST) -> None:
        import docker  # only here: the API fill needs no Docker SDK

        self.container = container  # a docker-py Container of the registry
        # Its own engine client: unpacking an archive takes the engine well past docker-py's 60 s on a loaded machine.
        self.api = docker.from_env(timeout=ENGINE_TIMEOUT).api
        self.layout = Layout(root)
        self.layer_size = layer_size
        self.media_type = media_type

    def fill(self, repos: int, tags: int, prefix: str = "bench/app") -> list[Pushed]:
        run = self.api.exec_create(self.container.id, ["mkdir", "-p", self.layout.v2])
        out = self.api.exec_start(run["Id"])
        if self.api.exec_inspect(run["Id"])["ExitCode"] != 0:
            raise RuntimeError(f"cannot create {self.layout.v2}: {out.decode(errors='replace')}")
        names = [f"{prefix}-{i:04d}" for i in range(repos)]
        pushed: list[Pushed] = []
        # Building an archive is CPU (gzip, sha256); unpacking it is the engine's: one of each at a time.
        with ThreadPoolExecutor(1) as unpacker:
            pending = None
            for start in range(0, len(names), STORAGE_CHUNK):
                archive, found = self._archive(names[start:start + STORAGE_CHUNK], tags)
                if pending is not None:
                    pending.result()
                pending = unpacker.submit(self._put, archive)
                pushed += found
            if pending is not None:
                pending.result()
        return pushed

    def _put(self, archive: bytes) -> None:
        if not self.api.put_archive(self.container.id, self.layout.v2, archive):
            raise RuntimeError(f"the engine refused the archive for {self.layout.v2}")

    def _archive(self, names: list[str], tags: int) -> tuple[bytes, list[Pushed]]:
        buf = io.BytesIO()
        pushed: list[Pushed] = []
        written: set[str] = set()
        now = int(time.time())
        with tarfile.open(fileobj=buf, mode="w") as tar:
            def put(path: str, data: bytes | None) -> None:
                if path in written:
                    return
                written.add(path)
                info = tarfile.TarInfo(path)
                info.mtime = now
                if data is None:  # a directory
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))

            for repo in names:
                for path, data in self._repository(repo, tags, pushed):
                    put(path, data)
        return buf.getvalue(), pushed

    def _repository(self, repo: str, tags: int, pushed: list[Pushed]) -> Iterator[tuple[str, bytes | None]]:
        """Every file of one repository and its blobs, relative to v2, in the order a push writes them (None:
        a directory)."""
        base = f"repositories/{repo}"
        yield f"{base}/_uploads", None  # left empty by every finished upload
        base_layer = _layer(self.layer_size * 4)
        yield from self._blob(repo, base_layer)
        for i, created in enumerate(_created(tags)):
            own = _layer(self.layer_size)
            stamp, config, body = image_parts(base_layer, own, created, self.media_type)
            yield from self._blob(repo, config)
            yield from self._blob(repo, own)
            digest = _digest(body)
            link = digest.encode()
            hexd = digest.partition(":")[2]
            yield self.layout.rel_blob_data(digest), body  # the manifest's own blob, not a layer link
            yield f"{base}/_manifests/revisions/sha256/{hexd}/link", link
            yield f"{base}/_manifests/tags/v{i}/current/link", link
            yield f"{base}/_manifests/tags/v{i}/index/sha256/{hexd}/link", link
            pushed.append(Pushed(repo, f"v{i}", digest, len(config) + len(base_layer) + len(own), stamp))

    def _blob(self, repo: str, data: bytes) -> Iterator[tuple[str, bytes]]:
        digest = _digest(data)
        yield self.layout.rel_blob_data(digest), data
        yield f"repositories/{repo}/_layers/sha256/{digest.partition(':')[2]}/link", digest.encode()


class BucketFill(StorageFill):
    """StorageFill's files put straight into an S3 bucket, where distribution's s3 driver keeps them
    (`<rootdirectory>/docker/registry/v2/...`; no directories in a bucket, so `_uploads` is left out as the
    driver leaves it). Filling 4,000 tags into moto through the registry's API took over 17 minutes; this
    writes the same objects those pushes leave, with boto3, a few requests at a time."""

    def __init__(self, client: Any, bucket: str, rootdirectory: str = "", layer_size: int = 1024,
                 media_type: str = MANIFEST, writers: int = 8) -> None:
        self.client = client  # a boto3 S3 client
        self.bucket = bucket
        root = rootdirectory.strip("/")
        self.prefix = (root + "/" if root else "") + "docker/registry/v2/"
        self.layout = Layout("/var/lib/registry")  # only its paths relative to v2 are used
        self.layer_size = layer_size
        self.media_type = media_type
        self.writers = writers

    def fill(self, repos: int, tags: int, prefix: str = "bench/app") -> list[Pushed]:
        pushed: list[Pushed] = []
        written: set[str] = set()
        with ThreadPoolExecutor(self.writers) as pool:
            puts = []
            for repo in (f"{prefix}-{i:04d}" for i in range(repos)):
                for path, data in self._repository(repo, tags, pushed):
                    if data is not None and path not in written:
                        written.add(path)
                        puts.append(pool.submit(self.client.put_object, Bucket=self.bucket,
                                                Key=self.prefix + path, Body=data))
            for put in puts:
                put.result()
        return pushed


def populate_storage(container: Any, repos: int, tags: int, prefix: str = "bench/app",
                     root: str = "/var/lib/registry", media_type: str = MANIFEST) -> list[Pushed]:
    return StorageFill(container, root, media_type=media_type).fill(repos, tags, prefix)


def verify_pulls(registry_url: str, pushed: list[Pushed], count: int = 5, seed: int = 19) -> list[str]:
    """Pull `count` of these tags (the first, the last, and some between) through the registry's API as a
    client would: the manifest by tag, then every blob it names, each checked against its digest. Raises
    AssertionError on the first difference; returns what was pulled."""
    others = random.Random(seed).sample(pushed[1:-1], max(0, min(count - 2, len(pushed) - 2)))
    picks = list(dict.fromkeys([pushed[0], pushed[-1], *others]))[:count]
    session = requests.Session()
    base = registry_url.rstrip("/")
    pulled = []
    for p in picks:
        resp = session.get(f"{base}/v2/{p.repository}/manifests/{p.tag}", timeout=30,
                           headers={"Accept": f"{MANIFEST}, {DOCKER_MANIFEST}"})
        resp.raise_for_status()
        assert resp.headers.get("Docker-Content-Digest") == p.digest == _digest(resp.content), p
        doc = resp.json()
        for desc in [doc["config"], *doc["layers"]]:
            blob = session.get(f"{base}/v2/{p.repository}/blobs/{desc['digest']}", timeout=30)
            blob.raise_for_status()
            assert blob.status_code == 200 and _digest(blob.content) == desc["digest"], (p, desc["digest"])
        tags = session.get(f"{base}/v2/{p.repository}/tags/list", timeout=30).json()["tags"]
        assert p.tag in tags, (p, tags)
        pulled.append(f"{p.repository}:{p.tag}")
    return pulled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("registry_url")
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--prefix", default="bench/app")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--docker", action="store_true", help="Docker schema 2 manifests instead of OCI")
    parser.add_argument("--container", help="write straight into this registry container's filesystem storage "
                        "(a registry that runs with the filesystem driver), then pull a few tags to check")
    parser.add_argument("--root", default="/var/lib/registry", help="its storage root (with --container)")
    args = parser.parse_args()
    start = time.monotonic()
    media_type = DOCKER_MANIFEST if args.docker else MANIFEST
    if args.container:
        import docker  # only here: the API fill needs no Docker SDK

        container = docker.from_env().containers.get(args.container)
        pushed = populate_storage(container, args.repos, args.tags, args.prefix, args.root, media_type)
    else:
        pushed = populate(args.registry_url, args.repos, args.tags, args.prefix, args.workers, media_type)
    out: dict[str, Any] = {"tags": len(pushed), "seconds": round(time.monotonic() - start, 2)}
    if args.container:
        out["pulled"] = verify_pulls(args.registry_url, pushed)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
