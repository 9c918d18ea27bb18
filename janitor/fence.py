"""The write fence: the registry restarted in read-only mode for GC, and back to writable after.

Distribution has no runtime switch, so the fence rewrites the config the container was started with
(storage.maintenance.readonly.enabled) and restarts it. The original is kept byte for byte next to it in
the container, and the fenced config starts with a marker, so any later worker can tell a fence left by a
crash and undo it without Redis.
"""

from __future__ import annotations

import copy
import time

import requests
import yaml

from janitor import errors
from janitor.container import RegistryContainer

MARKER = b"# registry-janitor: read-only for maintenance; the original is in "
BACKUP_SUFFIX = ".janitor-original"


def readonly_config(original: bytes, backup_path: str) -> bytes:
    config = copy.deepcopy(yaml.safe_load(original) or {})
    storage = config.setdefault("storage", {}) or {}
    config["storage"] = storage
    maintenance = storage.get("maintenance") or {}
    maintenance["readonly"] = {"enabled": True}
    storage["maintenance"] = maintenance
    return MARKER + backup_path.encode() + b"\n" + yaml.safe_dump(config, sort_keys=False).encode()


def wait_ready(registry_url: str, timeout: float) -> float:
    """Seconds until /v2/ answers (401 counts: the registry is serving); ContainerError past the timeout."""
    start = time.monotonic()
    while True:
        try:
            if requests.get(f"{registry_url}/v2/", timeout=2).status_code < 500:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        if time.monotonic() - start > timeout:
            raise errors.RegistryUnavailable(f"the registry did not answer /v2/ within {timeout:.0f}s of its restart")
        time.sleep(0.1)


class WriteFence:
    def __init__(self, container: RegistryContainer, registry_url: str, stop_timeout: int, ready_timeout: float) -> None:
        self.container = container
        self.registry_url = registry_url
        self.stop_timeout = stop_timeout
        self.ready_timeout = ready_timeout

    def _restart(self) -> float:
        self.container.restart(self.stop_timeout)
        return wait_ready(self.registry_url, self.ready_timeout)

    def close(self, config_path: str) -> float:
        """Refuse writes: save the config, write the read-only one, restart. Returns seconds to ready."""
        original = self.container.read_file(config_path)
        if original.startswith(MARKER):
            raise errors.ContainerError("the registry is already fenced by an earlier window; recover it first")
        backup = config_path + BACKUP_SUFFIX
        self.container.write_file(backup, original)
        self.container.write_file(config_path, readonly_config(original, backup))
        return self._restart()

    def open(self, config_path: str) -> float:
        """Accept writes again: put the original config back byte for byte, restart (which clears the
        in-memory blob-descriptor cache). Returns seconds to ready."""
        backup = config_path + BACKUP_SUFFIX
        if self.container.read_file(config_path).startswith(MARKER):
            self.container.write_file(config_path, self.container.read_file(backup))
        running = self.container.get().status == "running"
        if running:  # the original is back in place: the backup has served
            self.container.exec(["rm", "-f", backup])
        seconds = self._restart()
        if not running:
            self.container.exec(["rm", "-f", backup])
        return seconds

    def left_closed(self, config_path: str) -> bool:
        return self.container.read_file(config_path).startswith(MARKER)

    def recover(self, config_path: str) -> str | None:
        """Undo what a window that died left behind; says what it did, or None."""
        if self.left_closed(config_path):
            self.open(config_path)
            return "registry made writable and restarted"
        if self.container.exists(config_path + BACKUP_SUFFIX):
            # Died after writing the backup but before fencing, or after unfencing: the config is the original.
            self.container.exec(["rm", "-f", config_path + BACKUP_SUFFIX])
            return "stale config backup removed"
        return None
