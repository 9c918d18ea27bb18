"""Reading and tidying the registry's filesystem storage from inside its container (busybox tools only).

Every path is built from the storage root and a validated repository name, never from raw input.
"""

from __future__ import annotations

import posixpath
import re

from janitor import errors, names
from janitor.container import RegistryContainer

DEFAULT_ROOT = "/var/lib/registry"
_SIZE_LINE = re.compile(r"^(\d+) .*/blobs/sha256/[a-f0-9]{2}/([a-f0-9]{64})/data$")
_REVISION = re.compile(r"^.*/repositories/(.+)/_manifests/revisions/sha256/([a-f0-9]{64})/link$")


def root(container: RegistryContainer, config_path: str) -> str:
    """The filesystem root the registry stores under (env override first, as distribution reads it)."""
    env = container.env()
    if env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"):
        return env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"].rstrip("/")
    config = container.read_yaml(config_path)
    fs = (config.get("storage") or {}).get("filesystem") or {}
    return str(fs.get("rootdirectory") or DEFAULT_ROOT).rstrip("/")


def v2(storage_root: str) -> str:
    return f"{storage_root}/docker/registry/v2"


def blob_sizes(container: RegistryContainer, storage_root: str) -> dict[str, int]:
    """Size of every blob in storage, in one exec, so what GC deletes can be counted in bytes."""
    result = container.exec(["find", f"{v2(storage_root)}/blobs", "-type", "f", "-name", "data",
                             "-exec", "stat", "-c", "%s %n", "{}", "+"])
    sizes: dict[str, int] = {}
    for line in result.stdout.splitlines():
        match = _SIZE_LINE.match(line.strip())
        if match:
            sizes["sha256:" + match.group(2)] = int(match.group(1))
    return sizes


def revisions(container: RegistryContainer, storage_root: str) -> dict[str, set[str]]:
    """Every stored manifest of every repository, tagged or not: the registry API cannot list untagged ones."""
    result = container.exec(["find", f"{v2(storage_root)}/repositories", "-type", "f", "-path",
                             "*/_manifests/revisions/sha256/*/link"])
    found: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():
        match = _REVISION.match(line.strip())
        if match and names.is_repository(match.group(1)):
            found.setdefault(match.group(1), set()).add("sha256:" + match.group(2))
    return found


def remove_empty_blob_dirs(container: RegistryContainer, storage_root: str) -> None:
    """GC leaves empty blobs/sha256/xx/<hex> directories behind; remove them, deepest first."""
    for depth in ("3", "2"):  # busybox find has no -delete
        container.exec(["find", f"{v2(storage_root)}/blobs", "-mindepth", depth, "-maxdepth", depth, "-type", "d",
                        "-empty", "-exec", "rmdir", "{}", "+"])


def active_uploads(container: RegistryContainer, storage_root: str, within: float, now: float) -> int:
    """Upload sessions written to within the last `within` seconds: pushes in the middle of a blob."""
    result = container.exec(["find", f"{v2(storage_root)}/repositories", "-type", "f", "-path", "*/_uploads/*/data",
                             "-exec", "stat", "-c", "%Y", "{}", "+"])
    return sum(1 for line in result.stdout.split() if line.isdigit() and int(line) >= now - within)


def _entries(container: RegistryContainer, path: str) -> list[str]:
    result = container.exec(["find", path, "-mindepth", "1", "-maxdepth", "1"])
    return [line for line in result.stdout.splitlines() if line.strip()] if result.exit_code == 0 else []


def remove_repository(container: RegistryContainer, storage_root: str, name: str) -> str | None:
    """Remove an emptied repository's directory (GC never does, so it stays in _catalog). Run it while the
    registry refuses writes. Returns why it was kept, or None when it is gone."""
    repo_dir = names.repository_dir(storage_root, name)
    if _entries(container, f"{repo_dir}/_manifests/tags"):
        return "tags were pushed to it after the deletion"
    if _entries(container, f"{repo_dir}/_uploads"):
        return "an upload into it is in flight"
    container.exec(["rm", "-rf", f"{repo_dir}/_manifests", f"{repo_dir}/_layers", f"{repo_dir}/_uploads"])
    # Nested repositories (team/app/sub) live inside team/app: remove only directories left empty.
    base = posixpath.dirname(names.repository_dir(storage_root, "x"))
    path = repo_dir
    while path != base and container.exec(["rmdir", path]).exit_code == 0:
        path = posixpath.dirname(path)
    return None


_REVISION_TIME = re.compile(r"^(\d+) .*/repositories/(.+)/_manifests/revisions/sha256/([a-f0-9]{64})/link$")


def revision_times(container: RegistryContainer, storage_root: str) -> tuple[float, dict[str, dict[str, float]]]:
    """Every stored manifest of every repository with its revision link's mtime (when it was last pushed),
    and the container's clock at the read, in one exec: ages are then measured on one clock. A failing `find`
    stops the caller, except on a registry that has never stored a repository."""
    repos = f"{v2(storage_root)}/repositories"
    result = container.exec(["find", repos, "-path", repos, "-exec", "date", "+%s", ";", "-o", "-type", "f", "-path",
                             "*/_manifests/revisions/sha256/*/link", "-exec", "stat", "-c", "%Y %n", "{}", "+"])
    lines = result.stdout.splitlines()
    if result.exit_code != 0:
        if not result.stdout.strip() and "No such file" in result.stderr:
            return 0.0, {}  # nothing pushed yet
        raise errors.ContainerError(f"cannot list stored manifests under {repos}: {result.stderr.strip()[:500]}")
    read_at = float(lines[0]) if lines and lines[0].strip().isdigit() else 0.0
    found: dict[str, dict[str, float]] = {}
    for line in lines[1:]:
        match = _REVISION_TIME.match(line.strip())
        if match and names.is_repository(match.group(2)):
            found.setdefault(match.group(2), {})["sha256:" + match.group(3)] = float(match.group(1))
    return read_at, found
