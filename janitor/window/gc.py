"""Running the registry's own garbage-collect inside its container, and reading what it did."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from janitor import errors
from janitor.registry.container import RegistryContainer

_SUMMARY = re.compile(r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion", re.M)
# Exit codes of `timeout` when it stopped the command: 124 (coreutils), 143 (TERM), 137 (KILL).
_STOPPED = frozenset({124, 137, 143})
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


def run(container: RegistryContainer, config_path: str, dry_run: bool = False, timeout: float | None = None) -> GcSummary:
    """garbage-collect without --delete-untagged: on 2.x that flag deletes the children of tagged indexes.

    With `timeout`, it runs under `timeout` inside the container (busybox and coreutils both have it):
    TERM past the limit, KILL 10 s later, so a hung GC cannot keep the registry read-only for ever."""
    argv = ["registry", "garbage-collect", config_path]
    if dry_run:
        argv.append("--dry-run")
    limit = max(1, int(timeout)) if timeout is not None else None
    if limit is not None:
        argv = ["timeout", "-s", "TERM", "-k", "10", str(limit), *argv]
    started = time.monotonic()
    result = container.exec(argv)
    if limit is not None and result.exit_code in _STOPPED and time.monotonic() - started >= limit - 1:
        raise errors.GcTimeout(f"garbage-collect ran past its limit of {limit}s and was stopped",
                               timeout_seconds=limit, exit_code=result.exit_code)
    if result.exit_code != 0:
        raise errors.GarbageCollectFailed(
            f"garbage-collect exited {result.exit_code}: {result.stderr.strip()[-2000:] or result.stdout.strip()[-2000:]}",
            exit_code=result.exit_code,
        )
    return parse_output(result.stdout)
