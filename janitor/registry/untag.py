"""Removing one tag while its manifest stays for the other tags that share it."""

from __future__ import annotations

import json
import uuid

from janitor import errors
from janitor.registry.client import RegistryClient
from janitor.registry.manifests import OCI_MANIFEST

THROWAWAY_CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


def untag(client: RegistryClient, repository: str, tag: str) -> set[str]:
    """DELETE by tag where the registry supports it (distribution 3.x, OCI distribution-spec 1.1). On 2.x,
    which answers 400 DIGEST_INVALID, point the tag at a unique throwaway manifest and delete that by digest:
    only the tag moves. Returns the throwaway's blobs, which the window's GC frees."""
    try:
        client.delete_manifest(repository, tag)
        return set()
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
    digest = client.put_manifest(repository, tag, body, OCI_MANIFEST)
    client.delete_manifest(repository, digest)
    return {digest, config_digest}
