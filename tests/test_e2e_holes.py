"""Smaller holes found by reading (issue 17): each proven on the real registry, Redis and Docker."""

from __future__ import annotations

import json
from collections.abc import Callable
import pytest

from janitor.registry.client import RegistryClient
from janitor.registry.untag import THROWAWAY_CONFIG_TYPE, untag
from tests import images
from tests.conftest import Registry, Stack

pytestmark = pytest.mark.e2e
REPO = "team/app"


class PushAfterThrowaway(RegistryClient):
    """A real client whose throwaway PUT is followed at once by someone else's push of the same tag: the
    interleaving a busy registry produces now and then, made certain."""

    def __init__(self, url: str, other: images.Image) -> None:
        super().__init__(url, timeout=10, retry_seconds=0)
        self.other = other
        self.pushed: str | None = None

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        digest = super().put_manifest(repository, reference, body, media_type)
        if json.loads(body).get("config", {}).get("mediaType") == THROWAWAY_CONFIG_TYPE and self.pushed is None:
            self.pushed = images.Pusher(self.base_url).image(repository, self.other, reference)
        return digest


def test_a_push_landing_after_the_throwaway_is_kept_and_reported(registry: Registry) -> None:
    p = images.Pusher(registry.url)
    img, other = images.image(), images.image()
    p.image(REPO, img, "v1")
    p.manifest(REPO, "latest", img.manifest, img.media_type)  # v1 goes alone: the 2.x throwaway path
    client = PushAfterThrowaway(registry.url, other)

    done = untag(client, REPO, "v1", img.digest)

    assert client.pushed == other.digest
    assert not done.done and done.moved_to == other.digest
    assert images.head_manifest(registry.url, REPO, "v1") == 200
    assert client.manifest_digest(REPO, "v1") == other.digest  # their push stands
    assert images.pull_verified(registry.url, REPO, "v1") == []
    assert registry.revisions()[REPO] == {img.digest, other.digest}  # the throwaway itself is gone


def test_an_untag_without_a_race_still_untags(registry: Registry) -> None:
    p = images.Pusher(registry.url)
    img = images.image()
    p.image(REPO, img, "v1")
    p.manifest(REPO, "latest", img.manifest, img.media_type)
    client = RegistryClient(registry.url, timeout=10, retry_seconds=0)
    done = untag(client, REPO, "v1", img.digest)
    assert done.done and len(done.blobs) == 2
    assert images.head_manifest(registry.url, REPO, "v1") == 404
    assert registry.revisions()[REPO] == {img.digest}


def test_a_tag_put_on_a_named_digest_after_the_plan_keeps_it(registry: Registry,
                                                            make_stack: Callable[..., Stack]) -> None:
    """Never more than planned: a `digests` deletion checks the tags again right before each delete."""
    stack = make_stack(registry)
    p = stack.pusher()
    base = images.image()
    p.image(REPO, base, "keep-0")
    for i in range(1, 120):  # every check before a delete reads these again: the deletions take a while
        p.manifest(REPO, f"keep-{i}", base.manifest, base.media_type)
    named = [images.image(layers=1, layer_size=256) for _ in range(30)]
    for n, img in enumerate(named):
        p.image(REPO, img, f"old-{n}")  # its own tag, planned to go with it
    digests = [img.digest for img in named]
    order = sorted(digests)  # the plan deletes by digest order (no index among them)
    by_digest = {img.digest: img for img in named}
    rescued = [by_digest[d] for d in order[-3:]]

    job_id = stack.delete({"repository": REPO, "digests": digests})["id"]
    assert images.wait_until(lambda: images.head_manifest(registry.url, REPO, order[0]) == 404, 60, 0.01)
    for n, img in enumerate(rescued):  # deletes are under way: these tags come after the plan
        p.manifest(REPO, f"new-{n}", img.manifest, img.media_type)
    job = stack.wait(job_id)

    assert job["status"] == "succeeded", job
    skipped = {s["digest"]: s for s in job["result"]["skipped"]}
    assert set(skipped) == {img.digest for img in rescued}, job["result"]["skipped"]
    assert [skipped[img.digest]["tags"] for img in rescued] == [[f"new-{n}"] for n in range(3)]
    assert sorted(job["result"]["manifests_deleted"]) == order[:-3]
    for n, img in enumerate(rescued):
        assert images.pull_verified(registry.url, REPO, f"new-{n}") == []
