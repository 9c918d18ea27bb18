"""The incremental GC sweeps exactly what distribution's garbage-collect would, on a real registry.

Hypothesis generates registries: repositories (nested ones too) sharing layers, images of both formats pushed
by tag and by digest, indexes with children, referrers (an OCI `subject`), manifests deleted by digest and by
tag (2.8 cannot delete a tag: the tag is moved to a throwaway manifest that is then deleted, as
janitor.registry.untag does), blobs uploaded without a manifest inside and outside the upload grace. Part of it
is pushed before the mark and part between the mark and the fence; the holds are placed as a window places them.
Then `registry garbage-collect --dry-run` must name exactly the janitor's sweep (the holds keep the same blobs
for both), with the same number of blobs marked; after the janitor's sweep, GC finds nothing left to delete and
every tagged image still pulls whole.

One registry container per driver serves every example: its storage is emptied and it restarts in between. On
S3 (moto on loopback) every storage read is an HTTP request and garbage-collect walks the bucket: a few examples
there (GC_EQUALITY_S3_EXAMPLES), the filesystem takes the many.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import redis
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from janitor.registry.container import RegistryContainer
from janitor.registry.manifests import DOCKER_MANIFEST, OCI_MANIFEST, sha256_digest
from janitor.storage.contents import ContentCache
from janitor.storage.driver import Storage
from janitor.storage.filesystem import FilesystemStorage
from janitor.storage.s3 import S3Location, S3Storage
from janitor.window import gc, holds, incremental
from tests import images
from tests.conftest import Bucket, Registry, S3Endpoint, s3_config, start_registry
from tests.images import Pusher, pull_verified, wait_until

ROOT = "/var/lib/registry"
CONFIG = "/etc/docker/registry/config.yml"
GRACE = 600.0  # links older than this are outside the upload grace (set back with `touch`)
REPOS = ["app", "team/web", "team/web/sub"]

# One operation: (kind, repository, selector, flag); selectors pick earlier items modulo their count.
OPS = st.tuples(
    st.sampled_from(["image", "image", "image", "index", "referrer", "delete", "untag", "orphan", "mount"]),
    st.sampled_from(REPOS), st.integers(0, 50), st.booleans())


@dataclass
class World:
    """What the test pushed, to pick targets from."""

    pusher: Pusher
    reg: Registry
    shared: list[bytes]
    pushed: dict[str, list[str]] = field(default_factory=dict)  # repo -> manifest digests, in push order
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # repo -> tag -> manifest digest
    children: dict[str, list[str]] = field(default_factory=dict)  # index digest -> its children
    blobs: dict[str, list[str]] = field(default_factory=dict)  # repo -> blobs linked there, for mounts
    old: dict[str, set[str]] = field(default_factory=dict)  # repo -> orphans linked outside the grace

    def push_image(self, repo: str, img: images.Image, tagged: bool) -> str:
        tag = f"t{uuid.uuid4().hex[:8]}" if tagged else None
        digest = self.pusher.image(repo, img, tag)
        self.pushed.setdefault(repo, []).append(digest)
        if tag:
            self.tags.setdefault(repo, {})[tag] = digest
        self.blobs.setdefault(repo, []).extend(img.blobs)
        return digest

    def run(self, op: tuple[str, str, int, bool]) -> None:
        kind, repo, sel, flag = op
        media_type = OCI_MANIFEST if flag else DOCKER_MANIFEST
        if kind == "image":
            shared = [self.shared[sel % len(self.shared)]] if sel % 3 else []
            img = images.image(media_type, layers=sel % 3, layer_size=64, shared_layers=shared)
            self.push_image(repo, img, bool(sel % 4))  # some pushed by digest only
        elif kind == "index":
            children = [images.image(OCI_MANIFEST, layers=1, layer_size=64, platform=("linux", arch),
                                     shared_layers=[self.shared[sel % len(self.shared)]] if flag else [])
                        for arch in ("amd64", "arm64")[: 1 + sel % 2]]
            for child in children:
                self.push_image(repo, child, False)
            idx = images.index(children)
            tag = f"t{uuid.uuid4().hex[:8]}"
            self.pushed[repo].append(self.pusher.manifest(repo, tag, idx.manifest, idx.media_type))
            self.tags.setdefault(repo, {})[tag] = idx.digest
            self.children[idx.digest] = [c.digest for c in children]
        elif kind == "referrer" and self.pushed.get(repo):
            subject = self.pushed[repo][sel % len(self.pushed[repo])]
            config = json.dumps({"nonce": uuid.uuid4().hex}).encode()
            payload = images.layer(32)
            for blob in (config, payload):
                self.pusher.blob(repo, blob)
            self.blobs.setdefault(repo, []).extend([sha256_digest(config), sha256_digest(payload)])
            body = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.example.sbom.config+json", "digest": sha256_digest(config),
                           "size": len(config)},
                "layers": [{"mediaType": "application/vnd.example.sbom", "digest": sha256_digest(payload),
                            "size": len(payload)}],
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}}).encode()
            self.pushed[repo].append(self.pusher.manifest(repo, sha256_digest(body), body, OCI_MANIFEST))
        elif kind == "delete" and self.pushed.get(repo):
            digest = self.pushed[repo].pop(sel % len(self.pushed[repo]))
            resp = self.pusher.session.delete(f"{self.reg.url}/v2/{repo}/manifests/{digest}", timeout=30)
            assert resp.status_code == 202, resp.text
            self.tags[repo] = {t: m for t, m in self.tags.get(repo, {}).items() if m != digest}  # its tags went too
        elif kind == "untag" and self.tags.get(repo):
            tag = sorted(self.tags[repo])[sel % len(self.tags[repo])]
            del self.tags[repo][tag]
            config = json.dumps({"untag": tag, "nonce": uuid.uuid4().hex}).encode()
            self.pusher.blob(repo, config)
            body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": sha256_digest(config), "size": len(config)}}).encode()
            digest = self.pusher.manifest(repo, tag, body, OCI_MANIFEST)
            resp = self.pusher.session.delete(f"{self.reg.url}/v2/{repo}/manifests/{digest}", timeout=30)
            assert resp.status_code == 202, resp.text
        elif kind == "orphan":
            blob = images.layer(48)
            self.pusher.blob(repo, blob)  # a push cut off before its manifest
            if flag and not self.reg.bucket:  # outside the grace: its link set back in time
                hexd = sha256_digest(blob).split(":")[1]
                self.reg.exec("touch", "-d", f"@{int(time.time() - 3 * GRACE)}",
                              f"{ROOT}/docker/registry/v2/repositories/{repo}/_layers/sha256/{hexd}/link")
            elif flag:  # an object's LastModified cannot be set back: the holds leave it out instead
                self.old.setdefault(repo, set()).add(sha256_digest(blob))
        elif kind == "mount" and self.blobs.get(repo):
            # A blob another repository has, linked here without a manifest (cross-repository mount).
            other = next((r for r in REPOS if r != repo and self.blobs.get(r)), None)
            if other:
                blob = self.blobs[other][sel % len(self.blobs[other])]
                resp = self.pusher.session.post(
                    f"{self.reg.url}/v2/{repo}/blobs/uploads/?mount={blob}&from={other}", timeout=30)
                assert resp.status_code in (201, 202), resp.text


@pytest.fixture(scope="module")
def shared_registry(docker_client, registry_image) -> Iterator[Registry]:  # type: ignore[no-untyped-def]
    reg = start_registry(docker_client, registry_image)
    yield reg
    reg.container.remove(force=True, v=True)


@pytest.fixture(scope="module")
def shared_s3_registry(docker_client, registry_image, s3_server: S3Endpoint) -> Iterator[Registry]:  # type: ignore[no-untyped-def]
    bucket = Bucket(s3_server, s3_server.new_bucket(), "/registry")
    reg = start_registry(docker_client, registry_image, config=s3_config(bucket), bucket=bucket,
                         REGISTRY_STORAGE_S3_ACCESSKEY=s3_server.access_key,
                         REGISTRY_STORAGE_S3_SECRETKEY=s3_server.secret_key)
    yield reg
    reg.container.remove(force=True, v=True)


def storage_of(reg: Registry) -> Storage:
    """The janitor's Storage on the registry, as a window would open it."""
    if reg.bucket is None:
        return FilesystemStorage(RegistryContainer(reg.name), ROOT)
    end = reg.bucket.endpoint
    return S3Storage(S3Location(reg.bucket.name, end.region, end.url, reg.bucket.rootdirectory, True, False,
                                end.access_key, end.secret_key))


def empty(reg: Registry) -> None:
    """Back to no storage at all, and a restart: the in-memory blob cache must forget the last example."""
    if reg.bucket is not None:
        reg.bucket.remove("")
    else:
        reg.exec("rm", "-rf", f"{ROOT}/docker")
    reg.container.restart(timeout=5)
    assert wait_until(lambda: _up(reg.url), 30), "the registry did not come back"


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/v2/", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def window(reg: Registry, conn: redis.Redis, before: list, between: list, cached: bool) -> None:  # type: ignore[type-arg]
    """One generated registry through mark, change, holds and sweep, checked against garbage-collect."""
    empty(reg)
    container = RegistryContainer(reg.name)
    store = storage_of(reg)
    world = World(Pusher(reg.url), reg, [images.layer(64) for _ in range(2)])
    # One image first: distribution's garbage-collect fails on a storage with no repositories directory at all
    # ("Path not found"), which only a freshly emptied registry has; the janitor's mark has nothing to compare.
    world.run(("image", REPOS[0], 1, True))
    for op in before:
        world.run(op)
    contents = ContentCache(conn, f"janitor:test-{uuid.uuid4().hex[:8]}")
    if cached:  # the content cache knows some manifests already; the rest are read from the files
        stored = set().union(*store.revisions().values()) if world.pushed else set()
        incremental.manifest_refs(store, contents, sorted(stored)[::2])
    since = store.marks(uuid.uuid4().hex, {"gc": time.time() - 1})["gc"]
    premark = incremental.before_fence(store, contents, store.revisions(), since)
    for op in between:  # pushes and deletions after the mark, before the fence
        world.run(op)
    built = holds.build(holds.unreleased(holds.recent_blobs(store, GRACE), world.old))
    holds.place(store, built)
    try:
        sweep = incremental.under_fence(store, contents, premark, [h for h, _ in built])
        dry = gc.run(container, CONFIG, dry_run=True)
        assert sorted(sweep.blobs) == dry.deleted_blobs, {
            "janitor_only": sorted(set(sweep.blobs) - set(dry.deleted_blobs)),
            "registry_only": sorted(set(dry.deleted_blobs) - set(sweep.blobs))}
        assert sweep.blobs_marked == dry.blobs_marked
        store.delete_blobs(sweep.blobs)
        assert gc.run(container, CONFIG, dry_run=True).deleted_blobs == []  # nothing left that GC would sweep
    finally:
        holds.release(store, [h for h, _ in built])
        store.drop_marks([since])
    store.remove_blob_dirs(sweep.blobs)
    for repo, tags in world.tags.items():
        for tag, digest in tags.items():
            if any(c not in world.pushed[repo] for c in world.children.get(digest, ())):
                continue  # an index whose child was deleted by digest: broken by that request, not by GC
            assert pull_verified(reg.url, repo, tag) == [], f"{repo}:{tag} does not pull whole after the sweep"


F = TypeVar("F", bound=Callable[..., Any])


def generated_registries(examples_env: str, examples: int, before: int, between: int) -> Callable[[F], F]:
    """Hypothesis for one driver's equality test: `examples_env` sets how many registries (0 skips the test),
    `before`/`between` bound the operations before the first window and between the two."""
    def wrap(test: F) -> F:
        test = given(before=st.lists(OPS, min_size=1, max_size=before), between=st.lists(OPS, max_size=between),
                     cached=st.booleans())(test)
        test = settings(max_examples=max(1, int(os.environ.get(examples_env, str(examples)))), deadline=None,
                        # (0 skips the test below: hypothesis itself refuses 0); no shrinking: minutes on a registry
                        phases=[Phase.explicit, Phase.reuse, Phase.generate],
                        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                               HealthCheck.data_too_large])(test)
        return pytest.mark.skipif(os.environ.get(examples_env) == "0", reason=f"{examples_env}=0")(test)
    return wrap


@generated_registries("GC_EQUALITY_EXAMPLES", examples=10, before=14, between=6)
def test_incremental_sweep_equals_garbage_collect(shared_registry: Registry, redis_conn: redis.Redis,
                                                  before: list, between: list, cached: bool) -> None:  # type: ignore[type-arg]
    window(shared_registry, redis_conn, before, between, cached)


@generated_registries("GC_EQUALITY_S3_EXAMPLES", examples=2, before=10, between=5)
def test_incremental_sweep_equals_garbage_collect_on_s3(shared_s3_registry: Registry, redis_conn: redis.Redis,
                                                        before: list, between: list, cached: bool) -> None:  # type: ignore[type-arg]
    window(shared_s3_registry, redis_conn, before, between, cached)


@pytest.mark.parametrize("driver", ["filesystem", "s3"])
def test_a_fixed_registry_with_every_case(driver: str, request: pytest.FixtureRequest,
                                          redis_conn: redis.Redis) -> None:
    """Every kind of operation at least once, before and after the mark, on each driver: a failure here reads
    plainly."""
    reg = request.getfixturevalue("shared_s3_registry" if driver == "s3" else "shared_registry")
    before = [("image", "app", 1, True), ("image", "app", 2, False), ("index", "app", 1, True),
              ("image", "team/web", 4, True), ("referrer", "app", 0, True), ("delete", "app", 1, True),
              ("untag", "app", 0, True), ("orphan", "team/web", 0, True), ("orphan", "team/web", 0, False),
              ("mount", "team/web/sub", 1, True), ("image", "team/web/sub", 5, False)]
    between = [("image", "team/web", 1, False), ("delete", "team/web", 0, True), ("index", "team/web/sub", 0, False),
               ("orphan", "app", 1, False), ("untag", "team/web/sub", 0, True)]
    window(reg, redis_conn, before, between, cached=True)

