"""Running the registry's own garbage-collect inside its container, and reading what it did."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from janitor import errors
from janitor.container import RegistryContainer

_SUMMARY = re.compile(r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion", re.M)
_BLOB = re.compile(r"^blob eligible for deletion: (sha256:[a-f0-9]{64})", re.M)


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
