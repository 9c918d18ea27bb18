"""Which Storage (janitor/storage/driver.py) serves a registry: found from the driver its config names."""

from __future__ import annotations

from typing import Any

from janitor.registry.container import RegistryContainer
from janitor.storage import files
from janitor.storage.driver import Storage
from janitor.storage.filesystem import FilesystemStorage

FILESYSTEM = "filesystem"
S3 = "s3"


def open_storage(container: RegistryContainer, driver: str, env: dict[str, str],
                 config: dict[str, Any]) -> Storage | None:
    """The registry's storage, or None for a driver the janitor cannot read. Makes no request."""
    if driver == FILESYSTEM:
        return FilesystemStorage(container, files.root_from(env, config))
    return None
