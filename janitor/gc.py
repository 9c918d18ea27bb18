"""Running the registry's own garbage-collect inside its container, and reading what it did."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from janitor import errors
from janitor.container import RegistryContainer

_SUMMARY = re.compile(r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion", re.M)
_BLOB = re.compile(r"^blob eligible for deletion: (sha256:[a-f0-9]{64})", re.M)
_MANIFEST = re.compile(r"^manifest eligible for deletion: (\S+)", re.M)
_SIZE_LINE = re.compile(r"^(\d+) .*/blobs/sha256/[a-f0-9]{2}/([a-f0-9]{64})/data$")

DEFAULT_ROOT = "/var/lib/registry"


@dataclass
class GcSummary:
    blobs_marked: int = 0
    blobs_deleted: int = 0
    manifests_deleted: int = 0
    bytes_freed: int = 0
    deleted_blobs: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_output(stdout: str) -> GcSummary:
    match = _SUMMARY.search(stdout)
    if not match:
        raise errors.GarbageCollectFailed("garbage-collect printed no summary line", stdout=stdout[-2000:])
    marked, blobs, manifests = (int(g) for g in match.groups())
    return GcSummary(blobs_marked=marked, blobs_deleted=blobs, manifests_deleted=manifests,
                     deleted_blobs=sorted(set(_BLOB.findall(stdout))))


def storage_root(container: RegistryContainer, config_path: str) -> str:
    """The filesystem root the registry stores under (env override first, as distribution reads it)."""
    env = dict(e.split("=", 1) for e in container.get().attrs["Config"].get("Env") or [] if "=" in e)
    if env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"):
        return env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"]
    config = yaml.safe_load(container.read_file(config_path)) or {}
    fs = (config.get("storage") or {}).get("filesystem") or {}
    return str(fs.get("rootdirectory") or DEFAULT_ROOT)


def blob_sizes(container: RegistryContainer, root: str) -> dict[str, int]:
    """Size of every blob in storage, in one exec, so what GC deletes can be counted in bytes."""
    blobs_dir = f"{root.rstrip('/')}/docker/registry/v2/blobs"
    result = container.exec(["find", blobs_dir, "-type", "f", "-name", "data", "-exec", "stat", "-c", "%s %n", "{}", "+"])
    sizes: dict[str, int] = {}
    for line in result.stdout.splitlines():
        match = _SIZE_LINE.match(line.strip())
        if match:
            sizes["sha256:" + match.group(2)] = int(match.group(1))
    return sizes


def run(container: RegistryContainer, config_path: str, dry_run: bool = False) -> GcSummary:
    """garbage-collect without --delete-untagged: on 2.x that flag deletes the children of tagged indexes."""
    argv = ["registry", "garbage-collect", config_path]
    if dry_run:
        argv.append("--dry-run")
    result = container.exec(argv)
    if result.exit_code != 0:
        raise errors.GarbageCollectFailed(
            f"garbage-collect exited {result.exit_code}: {result.stderr.strip()[-2000:] or result.stdout.strip()[-2000:]}",
            exit_code=result.exit_code,
        )
    return parse_output(result.stdout)


def remove_empty_dirs(container: RegistryContainer, root: str) -> None:
    """GC leaves empty blobs/sha256/xx/<hex> directories behind; remove them, deepest first."""
    blobs_dir = f"{root.rstrip('/')}/docker/registry/v2/blobs"
    for depth in ("3", "2"):  # blobs/sha256/xx/<hex>, then blobs/sha256/xx; busybox find has no -delete
        container.exec(["find", blobs_dir, "-mindepth", depth, "-maxdepth", depth, "-type", "d", "-empty",
                        "-exec", "rmdir", "{}", "+"])
