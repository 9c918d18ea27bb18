"""The write fence: the registry restarted in read-only mode for GC, and back to writable after.

Distribution has no runtime switch, so the fence rewrites the config the container was started with
(storage.maintenance.readonly.enabled) and restarts it. The original is kept byte for byte next to it in
the container, and the fenced config starts with a marker naming the window and lease that set it, so any
later worker can tell a fence left by a crash and undo it without Redis, and a window never undoes a fence
that is not its own.

Rewriting the file proves nothing on its own (the environment can override it): janitor/probe.py checks
that writes are really refused, and really accepted again.
"""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import requests
import yaml

from janitor import errors
from janitor.registry.container import FileMeta, RegistryContainer

MARKER = b"# registry-janitor: read-only for maintenance"
BACKUP_SUFFIX = ".janitor-original"
# Between polls of /v2/ after a restart: every poll saved is time writes stay refused.
READY_POLL = 0.01
_MARKER_LINE = re.compile(rb"^# registry-janitor: read-only for maintenance(?: by (\S+))?;")


def readonly_config(original: bytes, backup_path: str, owner: str = "") -> bytes:
    """The original config with writes refused, behind a marker line that names its owner and the backup."""
    config = copy.deepcopy(yaml.safe_load(original) or {})
    storage = config.setdefault("storage", {}) or {}
    config["storage"] = storage
    maintenance = storage.get("maintenance") or {}
    maintenance["readonly"] = {"enabled": True}
    storage["maintenance"] = maintenance
    by = f" by {owner}" if owner else ""
    return MARKER + f"{by}; the original is in {backup_path}\n".encode() + \
        yaml.safe_dump(config, sort_keys=False).encode()


def marker_owner(config: bytes) -> str | None:
    """Who fenced this config: the owner named in its marker, "" for a marker without one (an older
    version), None when the config is not fenced."""
    match = _MARKER_LINE.match(config)
    if not match:
        return None
    return match.group(1).decode() if match.group(1) else ""


class ConfigReads:
    """The config as last read at each look, with the stat it was read at. A look whose stat (one HEAD, about
    1 ms of the engine's CPU) shows the same size, mode and mtime takes the bytes from here instead of reading
    the file again (an archive the engine builds: about 50 ms, every few seconds, per registry). A fenced config
    keeps the original's mode and mtime and may even match its size, but while one is in place its backup
    exists (written before it, removed only once the original is back and a write was accepted): kept bytes
    are used only when the caller saw no backup, and a config with a fence marker is never kept."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], tuple[tuple[Any, ...], bytes]] = {}  # (container name, path)

    def read(self, container: RegistryContainer, path: str, backup: bool | None = None) -> bytes:
        """`backup`: whether the caller saw the config's backup (None: looked up here)."""
        if backup is None:
            backup = container.exists(path + BACKUP_SUFFIX)
        key = (container.name, path)
        container_id = container.get().id  # part of what must match: one made anew holds another file
        stat = container.stat(path, container_id)
        seen = (container_id, stat.get("size"), stat.get("mode"), stat.get("mtime"),
                stat.get("linkTarget")) if stat else None
        kept = self._kept.get(key)
        if not backup and seen is not None and kept is not None and kept[0] == seen:
            return kept[1]
        raw = container.read_file(path)
        if seen is not None and marker_owner(raw) is None:
            self._kept[key] = (seen, raw)
        else:
            self._kept.pop(key, None)
        return raw


# The process's own: the supervision look and the heartbeat read the same config every few seconds.
CONFIG_READS = ConfigReads()


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
        time.sleep(READY_POLL)


class WriteFence:
    """The config file and the restart. Ownership and probes are janitor/guard.py's business."""

    def __init__(self, container: RegistryContainer, registry_url: str, stop_timeout: int, ready_timeout: float) -> None:
        self.container = container
        self.registry_url = registry_url
        self.stop_timeout = stop_timeout
        self.ready_timeout = ready_timeout
        self.stopped_at: float | None = None  # monotonic: when `close` began to stop the writable registry
        self.restart_seconds = 0.0  # the engine's last restart (stop and start), until it returned
        self.stopped: str | None = None  # the run the last restart stopped (None: the registry was not running)
        # config path -> the owner named in the fenced config this object wrote (and has not put back): what
        # that file says for as long as nobody else has held the lease since
        self.written: dict[str, str] = {}
        self.originals: dict[str, bytes] = {}  # config path -> the original this object saved as its backup
        # config path -> the original's owner, mode and mtime: the backup, the fenced config and the restored
        # one all keep them (secrets in the config must never become world-readable).
        self.metas: dict[str, FileMeta] = {}

    def restart(self) -> float:
        """Restart (or start, after a kill) the registry; seconds until it answers (after the engine's restart
        itself, which takes `restart_seconds`)."""
        started = time.monotonic()
        self.stopped = None
        self.stopped = self.container.restart(self.stop_timeout)
        self.restart_seconds = time.monotonic() - started
        return wait_ready(self.registry_url, self.ready_timeout)

    def close(self, config_path: str, owner: str = "") -> float:
        """Refuse writes: save the config, write the read-only one, restart. Returns seconds to ready."""
        original, meta = self.container.read_entry(config_path)
        if marker_owner(original) is not None:
            raise errors.ContainerError("the registry is already fenced by an earlier window; recover it first")
        backup = config_path + BACKUP_SUFFIX
        self.container.write_file(backup, original, meta=meta)
        self.originals[config_path], self.metas[config_path] = original, meta
        self.container.write_file(config_path, readonly_config(original, backup, owner), meta=meta)
        self.written[config_path] = owner
        self.stopped_at = time.monotonic()  # until now the writable registry ran: writes refused from here
        return self.restart()

    def owner(self, config_path: str) -> str | None:
        """The owner named by the fence in place ("" if unnamed), None when the config is not fenced."""
        return marker_owner(self.container.read_file(config_path))

    def put_back(self, config_path: str, fenced: bool | None = None) -> bool:
        """Write the original config back over a fenced one; the backup stays until writes are proven.
        False when there was no fence to take down. `fenced`: the caller just read the marker. The original
        this object saved itself is written without reading the backup again (each read costs time while
        writes are refused)."""
        if not (self.owner(config_path) is not None if fenced is None else fenced):
            return False
        original, meta = self.originals.get(config_path), self.metas.get(config_path)
        if original is None or meta is None:  # a fence left by a crash: the backup kept the original's stat
            original, meta = self.container.read_entry(config_path + BACKUP_SUFFIX)
        self.container.write_file(config_path, original, meta=meta)
        self.written.pop(config_path, None)
        return True

    def drop_backup(self, config_path: str) -> None:
        """Only once the registry has accepted a write with the original config back."""
        if self.owner(config_path) is not None:
            raise errors.ContainerError("refusing to remove the config backup while the config is still fenced")
        self.container.exec(["rm", "-f", config_path + BACKUP_SUFFIX])

    def has_backup(self, config_path: str) -> bool:
        return self.container.exists(config_path + BACKUP_SUFFIX)

    def left_closed(self, config_path: str) -> bool:
        return self.owner(config_path) is not None


def cause(env: dict[str, str], config_path: str) -> str:
    """Why a rewritten config may not take effect, from the container's environment, and the fix."""
    overriding = sorted(k for k in env if k.startswith("REGISTRY_STORAGE_MAINTENANCE"))
    other_file = env.get("REGISTRY_CONFIGURATION_PATH")
    causes: list[str] = []
    if overriding:
        causes.append(f"the container's environment sets {', '.join(overriding)}, which replaces the whole "
                      "storage.maintenance section of the config file, read-only flag included")
    if other_file and other_file != config_path:
        causes.append(f"REGISTRY_CONFIGURATION_PATH={other_file} points the registry at a file other than "
                      f"{config_path}, the one the janitor rewrites")
    if not causes:
        causes.append("nothing in the container's recorded environment explains it, so most likely its "
                      "entrypoint or command exports REGISTRY_STORAGE_MAINTENANCE (or "
                      "REGISTRY_STORAGE_MAINTENANCE_READONLY), which overrides the config file's storage."
                      f"maintenance section, or the registry reads a config file other than {config_path}")
    return ("Likely cause: " + "; ".join(causes) + ". Fix: move those maintenance settings into "
            f"{config_path} (storage.maintenance.uploadpurging ...) and remove the variable from the "
            f"container's environment and entrypoint, and run the registry with {config_path} "
            "(`registry serve <that file>`); then ask again.")
