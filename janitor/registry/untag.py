"""Removing one tag while its manifest stays for the other tags that share it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from janitor import errors
from janitor.registry.client import RegistryClient
from janitor.registry.manifests import OCI_MANIFEST

THROWAWAY_CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


@dataclass
class Untagged:
    """What an untag did. `moved_to`: the tag was pushed again meanwhile and now names this digest; it was
    left as it is (not untagged). `blobs`: the throwaway's, which the window's GC frees."""

    blobs: set[str] = field(default_factory=set)
    moved_to: str | None = None

    @property
    def done(self) -> bool:
        return self.moved_to is None


def untag(client: RegistryClient, repository: str, tag: str, expected: str | None = None) -> Untagged:
    """DELETE by tag where the registry supports it (distribution 3.x, OCI distribution-spec 1.1). On 2.x,
    which answers 400 DIGEST_INVALID, point the tag at a unique throwaway manifest and delete that by digest:
    only the tag moves.

    A push of the same tag can land between the check and the throwaway's PUT. The tag is read again right
    before the PUT (when `expected` is given) and right after it: if it then names neither the throwaway nor
    `expected`, someone pushed after our PUT and their push stands; the tag is left alone and reported
    moved. (Deleting the throwaway by digest is still safe: distribution only untags tags that name it now.)"""
    try:
        client.delete_manifest(repository, tag)
        return Untagged()
    except errors.RegistryError as exc:
        if isinstance(exc, errors.DeleteDisabled) or exc.details.get("status") != 400:
            raise
    config = json.dumps({"registry-janitor": "throwaway manifest used to untag", "tag": tag,
                         "nonce": uuid.uuid4().hex}).encode()
    config_digest = client.push_blob(repository, config)
    body = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": THROWAWAY_CONFIG_TYPE, "digest": config_digest, "size": len(config)},
        "layers": [],
    }).encode()
    if expected is not None:  # as close to the PUT as it gets: a push since the caller's check stands
        now = client.manifest_digest(repository, tag)
        if now != expected:
            return Untagged({config_digest}, moved_to=now or "")
    digest = client.put_manifest(repository, tag, body, OCI_MANIFEST)
    now = client.manifest_digest(repository, tag)
    client.delete_manifest(repository, digest)  # ours alone (unique nonce): no tag but ours can name it
    if now != digest:
        return Untagged({digest, config_digest}, moved_to=now or "")
    return Untagged({digest, config_digest})
