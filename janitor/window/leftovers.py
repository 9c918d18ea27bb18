"""What a window that stopped half-way leaves behind, and whether the registry takes writes.

A window killed between its fence and its restart (its process OOM-killed, a node drained) leaves a fence
marker in the registry's config, a holds record next to it, or the config backup, and no live lease. Each
worker looks for those every few seconds (worker/supervision.py) and recovers under the lease.

The same look says whether the registry refuses writes: a fence marker in its config, or read-only mode set
by hand (`storage.maintenance.readonly.enabled` in the file, or its REGISTRY_STORAGE_MAINTENANCE_* variables),
and the last write probe of a window. No upload is made to find out: a probe every few seconds would leave an
`_uploads` folder behind each time (distribution 3.x purges none by default). That report (in Redis, `Keys.writes`) is what /readyz and the
janitor_registry_read_only metric read, so a registry left read-only by anything shows, not only one a live
window fenced.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import redis
import yaml

from janitor.jobs.records import Keys, now
from janitor.registry.container import RegistryContainer
from janitor.window import holds
from janitor.window.fence import BACKUP_SUFFIX, ConfigReads, marker_owner

# A report older than this is not believed (its worker is gone); the worker refreshes it every few seconds.
REPORT_TTL = 15.0
CONFIG_MARKER = "config marker"
READ_ONLY_CONFIG = "read-only config"
WRITE_PROBE = "write probe"
_WINDOW = re.compile(r"^window-([0-9a-zA-Z_-]+)/")


@dataclass(frozen=True)
class Leftovers:
    config_path: str
    fence_owner: str | None  # None: the config is not fenced; "": fenced by a version that named no owner
    holds_record: bool
    backup: bool
    read_only_configured: bool = False  # read-only mode in the config or the environment, no marker of ours

    @property
    def any(self) -> bool:
        """Something only a window's recovery may undo."""
        return self.fence_owner is not None or self.holds_record or self.backup


def look(container: RegistryContainer, reads: ConfigReads | None = None) -> Leftovers:
    """Read the container's config and what sits next to it; raises JanitorError when Docker or the
    container is out of reach. Works on a stopped container too (its files are still there)."""
    path = container.config_path()
    backup = container.exists(path + BACKUP_SUFFIX)
    raw = reads.read(container, path, backup) if reads is not None else container.read_file(path)
    return Leftovers(path, marker_owner(raw), container.exists(path + holds.RECORD_SUFFIX), backup,
                     read_only_configured(container.env(), raw))


def read_only_configured(env: dict[str, str], config: bytes) -> bool:
    """Whether the registry starts read-only, as distribution reads it: the environment first
    (REGISTRY_STORAGE_MAINTENANCE_READONLY as YAML, or ..._READONLY_ENABLED), then the file's
    storage.maintenance.readonly.enabled. An unreadable file says nothing."""
    for name in ("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "REGISTRY_STORAGE_MAINTENANCE_READONLY"):
        if name in env:
            value = _yaml(env[name])
            return bool(value.get("enabled")) if isinstance(value, dict) else value is True
    doc = _yaml(config)
    section: Any = doc
    for key in ("storage", "maintenance", "readonly"):
        section = section.get(key) if isinstance(section, dict) else None
    return isinstance(section, dict) and section.get("enabled") is True


def _yaml(raw: str | bytes) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return None


def window_of(owner: str | None) -> str | None:
    """The window id in a fence owner `window-<id>/lease-<n>`."""
    found = _WINDOW.match(owner or "")
    return found.group(1) if found else None


def report(read_only: bool, source: str, owner: str | None = None) -> dict[str, Any]:
    return {"read_only": read_only, "source": source, "owner": owner, "window": window_of(owner), "at": now()}


def publish(conn: redis.Redis, keys: Keys, found: dict[str, Any]) -> None:
    conn.set(keys.writes, json.dumps(found), px=int(REPORT_TTL * 1000))


def read(conn: redis.Redis, keys: Keys) -> dict[str, Any] | None:
    """The last report, None when no worker made one within REPORT_TTL."""
    raw = conn.get(keys.writes)
    return json.loads(raw) if raw else None
