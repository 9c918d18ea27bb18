"""Which Storage (janitor/storage/driver.py) serves a registry: found from the driver its config names, with
the janitor's own endpoint and credentials for an object store where the operator gave them."""

from __future__ import annotations

import dataclasses
from typing import Any

from janitor.config.storage import S3Overrides
from janitor.registry.container import RegistryContainer
from janitor.storage import files
from janitor.storage.driver import Storage
from janitor.storage.filesystem import FilesystemStorage
from janitor.storage.s3 import S3Location, S3Storage, location_from

FILESYSTEM = "filesystem"
S3 = "s3"
# The drivers whose storage the janitor reads and changes itself: every protection is on with them.
READABLE = frozenset({FILESYSTEM, S3})


def s3_location(env: dict[str, str], config: dict[str, Any], overrides: S3Overrides | None = None) -> S3Location:
    """The registry's bucket (its config, environment first), reached the way the operator says."""
    location = location_from(env, config)
    if not overrides:
        return location
    changes: dict[str, Any] = {}
    if overrides.endpoint:
        changes["endpoint"] = overrides.endpoint
        changes["secure"] = overrides.endpoint.startswith("https://")
    if overrides.region:
        changes["region"] = overrides.region
    if overrides.access_key:
        changes.update(accesskey=overrides.access_key, secretkey=overrides.secret_key,
                       sessiontoken=overrides.session_token)
    elif overrides.session_token:
        changes["sessiontoken"] = overrides.session_token
    return dataclasses.replace(location, **changes)


def open_storage(container: RegistryContainer, driver: str, env: dict[str, str], config: dict[str, Any],
                 overrides: S3Overrides | None = None) -> Storage | None:
    """The registry's storage, or None for a driver the janitor cannot read. Makes no request; raises
    StorageConfigInvalid when the driver's settings are incomplete."""
    if driver == FILESYSTEM:
        return FilesystemStorage(container, files.root_from(env, config))
    if driver == S3:
        return S3Storage(s3_location(env, config, overrides))
    return None
