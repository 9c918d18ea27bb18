"""Reading and tidying the registry's filesystem storage from inside its container (busybox tools only).

Every path comes from janitor.storage.layout, which validates each name and digest it joins. A command that fails
stops the step (StorageCommandFailed): an unreadable directory must never pass for an empty one, or GC
would run without the holds and the plan would miss manifests. The one failure that is not an error is
"No such file or directory": a directory that does not exist yet (nothing pushed), or an entry that went
away while `find` walked past it.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from typing import Any

from janitor import errors
from janitor.registry.container import ExecResult, RegistryContainer
from janitor.registry.manifests import sha256_digest
from janitor.storage.layout import Layout

DEFAULT_ROOT = "/var/lib/registry"
# Blobs read per exec: their paths are arguments (about 80 bytes each, well inside the kernel's 2 MiB), and
# their archive is held in memory once (read_blobs' `limit` each at most).
PATHS_PER_EXEC = 1000
_MISSING = "No such file or directory"


def root(container: RegistryContainer, config_path: str) -> str:
    """The filesystem root the registry stores under (env override first, as distribution reads it)."""
    env = container.env()
    if env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"):
        return root_from(env, {})
    return root_from(env, container.read_yaml(config_path))


def root_from(env: dict[str, str], config: dict[str, Any]) -> str:
    """`root`, from the container's environment and config file already read."""
    if env.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"):
        return env["REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"].rstrip("/") or "/"
    fs = (config.get("storage") or {}).get("filesystem") or {}
    return str(fs.get("rootdirectory") or DEFAULT_ROOT).rstrip("/") or "/"


def v2(storage_root: str) -> str:
    return Layout(storage_root).v2


def only_missing(result: ExecResult) -> bool:
    """The command failed only because paths it was given or walked past do not exist."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return bool(lines) and all(_MISSING in line for line in lines)


def checked(container: RegistryContainer, argv: list[str], missing_ok: bool = True) -> ExecResult:
    """Run a storage command; raise StorageCommandFailed unless it succeeded (or, with missing_ok, failed only
    on paths that do not exist)."""
    result = container.exec(argv)
    if result.exit_code == 0 or (missing_ok and only_missing(result)):
        return result
    detail = (result.stderr.strip() or result.stdout.strip())[-1000:]
    raise errors.StorageCommandFailed(
        f"storage command `{' '.join(argv[:3])} ...` failed in container {container.name!r} "
        f"(exit {result.exit_code}): {detail or 'no output'}; nothing was assumed, the step stopped",
        argv=argv, exit_code=result.exit_code, stderr=result.stderr[-2000:])


def blob_sizes(container: RegistryContainer, storage_root: str, newer_than: str | None = None) -> dict[str, int]:
    """Size of blobs in storage, in one exec: every blob, or only those whose data is newer than the file
    `newer_than` (a mark, see `marks`). `find` still looks at each blob's directory entry, but prints and
    stats only the recent ones, so the answer grows with what was uploaded, not with the store."""
    layout = Layout(storage_root)
    # A blob stored for the first time adds its directory to blobs/sha256/<xx>, which makes <xx> newer than
    # the mark; a blob uploaded again is not moved over the stored one. So only newer <xx> are walked.
    recent = ["-path", "*/blobs/sha256/??", "!", "-newer", newer_than, "-prune", "-o", "-type", "f", "-name", "data",
              "-newer", newer_than] if newer_than is not None else ["-type", "f", "-name", "data"]
    result = checked(container, ["find", layout.blobs, *recent, "-exec", "stat", "-c", "%s %n", "{}", "+"])
    sizes: dict[str, int] = {}
    for line in result.stdout.splitlines():
        size, _, path = line.strip().partition(" ")
        digest = layout.parse_blob_data(path)
        if digest and size.isdigit():
            sizes[digest] = int(size)
    return sizes


def revision_times(container: RegistryContainer, storage_root: str) -> tuple[float, dict[str, dict[str, float]]]:
    """Every stored manifest of every repository with its revision link's mtime (when it was last pushed), and
    the container's clock at the read, in one exec: ages are then measured on one clock. The registry API
    cannot list untagged manifests; only its files can."""
    layout = Layout(storage_root)
    repos = layout.repositories
    # Layer links, uploads and tag directories hold most entries of a repository and no revision: pruned.
    result = checked(container, ["find", repos, "-path", repos, "-exec", "date", "+%s", ";",
                                 "-o", "(", "-name", "_layers", "-o", "-name", "_uploads", "-o", "-path",
                                 "*/_manifests/tags", ")", "-prune",
                                 "-o", "-type", "f", "-path", "*/_manifests/revisions/sha256/*/link",
                                 "-exec", "stat", "-c", "%Y %n", "{}", "+"])
    lines = result.stdout.splitlines()
    read_at = float(lines[0]) if lines and lines[0].strip().isdigit() else 0.0
    found: dict[str, dict[str, float]] = {}
    for line in lines[1:]:
        mtime, _, path = line.strip().partition(" ")
        parsed = layout.parse_revision_link(path)
        if parsed and mtime.isdigit():
            found.setdefault(parsed[0], {})[parsed[1]] = float(mtime)
    return read_at, found


def revisions_since(container: RegistryContainer, storage_root: str, mark: str,
                    known: dict[str, set[str]]) -> tuple[float, dict[str, set[str]]]:
    """Every stored manifest of every repository, given `known` (read when the file `mark` was last
    modified), in one exec that prints only what changed since. A manifest pushed creates its revision's
    directory or writes its link into it, a manifest deleted removes that link: either makes the revision's
    own directory newer than the mark. Unchanged revisions are neither printed nor descended into. Every
    repository's revisions directory is printed, so a repository removed since is gone from the answer.
    Also returns the container's clock at the read, like `revision_times`. (A link rewritten in place, the
    same manifest pushed again, keeps its directory's time: the set of manifests is exact, their push times
    are not, so callers that need ages use `revision_times`.)"""
    layout = Layout(storage_root)
    revs = "*/_manifests/revisions/sha256"
    repos = layout.repositories
    result = checked(container, ["find", repos, "-path", repos, "-exec", "date", "+%s", ";",
                                 "-o", "(", "-name", "_layers", "-o", "-name", "_uploads",
                                 "-o", "-path", "*/_manifests/tags", ")", "-prune",
                                 "-o", "-path", revs, "-print",
                                 "-o", "-type", "d", "-path", revs + "/*", "!", "-newer", mark, "-prune",
                                 "-o", "-type", "d", "-path", revs + "/*", "-print",
                                 "-o", "-type", "f", "-path", revs + "/*/link", "-print"])
    found: dict[str, set[str]] = {}
    changed: list[tuple[str, str]] = []
    linked: list[tuple[str, str]] = []
    prefix, suffix = layout.repositories + "/", "/_manifests/revisions/sha256"
    lines = result.stdout.splitlines()
    read_at = float(lines[0]) if lines and lines[0].strip().isdigit() else 0.0
    for line in lines[1:]:
        path = line.strip()
        if path.endswith(suffix) and path.startswith(prefix):
            name = path[len(prefix):-len(suffix)]
            found[name] = set(known.get(name, ()))
        elif (parsed := layout.parse_revision_link(path)) is not None:
            linked.append(parsed)
        elif path.startswith(prefix) and f"{suffix}/" in path:
            name, _, hexd = path[len(prefix):].rpartition(f"{suffix}/")
            if len(hexd) == 64:
                changed.append((name, "sha256:" + hexd))
    for name, digest in changed:  # removed unless its link is there now
        found.get(name, set()).discard(digest)
    for name, digest in linked:
        found.setdefault(name, set()).add(digest)
    return read_at, {name: digests for name, digests in found.items() if digests}


def revisions(container: RegistryContainer, storage_root: str) -> dict[str, set[str]]:
    """Every stored manifest of every repository, tagged or not."""
    return {repo: set(digests) for repo, digests in revision_times(container, storage_root)[1].items()}


def remove_empty_blob_dirs(container: RegistryContainer, storage_root: str) -> None:
    """GC leaves empty blobs/sha256/xx/<hex> directories behind; remove them, deepest first. Walks every
    blob directory: `remove_blob_dirs` does the same for the blobs a GC named, touching only theirs."""
    blobs = Layout(storage_root).blobs
    for depth in ("3", "2"):  # busybox find has no -delete
        checked(container, ["find", blobs, "-mindepth", depth, "-maxdepth", depth, "-type", "d",
                            "-empty", "-exec", "rmdir", "{}", "+"])


def remove_blob_dirs(container: RegistryContainer, storage_root: str, digests: list[str]) -> None:
    """The directories of blobs GC swept, and their two-hex-digit parents, when left empty. GC removes a
    blob's own directory; its parent stays behind, empty once its last blob went. Only these are touched:
    one rmdir, which leaves any directory that is not empty (a blob stored since) in place."""
    if not digests:
        return
    layout = Layout(storage_root)
    own = sorted({layout.blob(d) for d in digests})
    parents = sorted({posixpath.dirname(p) for p in own})
    for start in range(0, len(own) + len(parents), 500):
        part = (own + parents)[start:start + 500]  # own directories before their parents
        checked(container, ["rmdir", "--ignore-fail-on-non-empty", *part])


def active_uploads(container: RegistryContainer, storage_root: str, within: float, now: float) -> int:
    """Upload sessions written to within the last `within` seconds: pushes in the middle of a blob."""
    # Manifests and layer links are most of a repository's entries and never an upload: pruned.
    result = checked(container, ["find", Layout(storage_root).repositories, "(", "-name", "_manifests", "-o",
                                 "-name", "_layers", ")", "-prune", "-o", "-type", "f", "-path",
                                 "*/_uploads/*/data", "-exec", "stat", "-c", "%Y", "{}", "+"])
    return sum(1 for line in result.stdout.split() if line.isdigit() and int(line) >= now - within)


def remove_uploads(container: RegistryContainer, storage_root: str, name: str,
                   upload_ids: Iterable[str] | None = None) -> int:
    """Remove upload sessions of a repository: those named, or every one (run that only where no upload
    can be in progress: the janitor's own probe repository, inside the fence). A cancelled upload leaves
    `_uploads/<id>/hashstates` behind, and with upload purging off (3.x's default) nothing else ever
    removes it. Returns how many were removed."""
    layout = Layout(storage_root)
    if upload_ids is None:
        # One exec: `find` removes what it finds directly under this repository's `_uploads` and says what.
        result = checked(container, ["find", layout.uploads(name), "-mindepth", "1", "-maxdepth", "1", "-print",
                                     "-exec", "rm", "-rf", "{}", "+"], missing_ok=True)
        return sum(1 for line in result.stdout.splitlines() if line.strip())
    paths = [layout.upload(name, i) for i in upload_ids]
    if paths:
        checked(container, ["rm", "-rf", *paths], missing_ok=False)
    return len(paths)


def _entries(container: RegistryContainer, path: str) -> list[str]:
    """What a directory holds; [] when it does not exist; StorageCommandFailed when it cannot be read."""
    result = checked(container, ["find", path, "-mindepth", "1", "-maxdepth", "1"])
    return [line for line in result.stdout.splitlines() if line.strip()]


def remove_repository(container: RegistryContainer, storage_root: str, name: str) -> str | None:
    """Remove an emptied repository's directory (GC never does, so it stays in _catalog). Run it while the
    registry refuses writes. Returns why it was kept, or None when it is gone."""
    layout = Layout(storage_root)
    repo_dir = layout.repository(name)
    if _entries(container, layout.tags(name)):
        return "tags were pushed to it after the deletion"
    if _entries(container, layout.uploads(name)):
        return "an upload into it is in flight"
    checked(container, ["rm", "-rf", layout.manifests(name), layout.layers(name), layout.uploads(name)],
            missing_ok=False)
    # Nested repositories (team/app/sub) live inside team/app: remove only directories left empty.
    # rmdir failing is the answer here (not empty), not an error.
    path = repo_dir
    while path != layout.repositories and container.exec(["rmdir", path]).exit_code == 0:
        path = posixpath.dirname(path)
    return None


# Where a window keeps its reference files for `find -newer`: the container's own temporary directory.
MARK_DIR = "/tmp"


def marks(container: RegistryContainer, window_id: str, times: dict[str, float]) -> dict[str, str]:
    """Write one empty file per name, modified at the given time, and return name -> path. Empty when the
    container has no writable /tmp: callers then fall back to coarser filters."""
    named = {name: f"registry-janitor-{window_id}-{name}" for name in times}
    try:
        container.write_marks(MARK_DIR, {named[n]: t for n, t in times.items()})
    except errors.ContainerError:
        return {}
    return {n: f"{MARK_DIR}/{f}" for n, f in named.items()}


def drop_marks(container: RegistryContainer, paths: list[str]) -> None:
    if paths:
        container.exec(["rm", "-f", *paths])


def read_blobs(container: RegistryContainer, storage_root: str, digests: Iterable[str], limit: int) -> dict[str, bytes]:
    """The stored bytes of these blobs (manifests, image configs), in one exec per PATHS_PER_EXEC: `find` keeps
    the data files no larger than `limit` and archives them with `tar`. Only bytes that hash to their digest are
    returned: a blob missing, too large, or caught mid-write (distribution writes a manifest's data in place) is
    left out, for the registry's HTTP API to answer."""
    layout = Layout(storage_root)
    found: dict[str, bytes] = {}
    for part in _chunks(sorted(set(digests)), PATHS_PER_EXEC):
        # Paths relative to v2 (run there), as the archive names them. `-exec ... {} +` may run tar more than
        # once: the archives then follow each other (ignore_zeros).
        argv = ["find", *(layout.rel_blob_data(d) for d in part), "-type", "f", "-size", f"-{limit + 1}c",
                "-exec", "tar", "-c", "-f", "-", "{}", "+"]
        code, out, err = container.exec_bytes(argv, workdir=layout.v2)
        if code != 0 and not only_missing(ExecResult(code, "", err)):
            raise errors.StorageCommandFailed(
                f"storage command `find ... -exec tar` failed in container {container.name!r} (exit {code}): "
                f"{err.strip()[-1000:] or 'no output'}; nothing was assumed", argv=argv[:1], exit_code=code,
                stderr=err[-2000:])
        if not out:
            continue  # none of them there (or all too large)
        try:
            found.update(_verified_members(layout, out, limit))
        except tarfile.TarError as exc:
            raise errors.StorageCommandFailed(
                f"the archive of blobs from container {container.name!r} is unreadable ({exc}); nothing was "
                "assumed", argv=argv[:1], exit_code=code, stderr=err[-2000:]) from exc
    return found


def _verified_members(layout: Layout, archive: bytes, limit: int) -> dict[str, bytes]:
    """The blobs in a tar archive of their data files, each only if its bytes hash to its digest."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), ignore_zeros=True) as tar:
        for member in tar:
            digest = layout.parse_blob_data(f"{layout.v2}/{member.name}") if member.isfile() else None
            extracted = tar.extractfile(member) if digest and member.size <= limit else None
            if digest and extracted is not None:
                data = extracted.read()
                if sha256_digest(data) == digest:
                    found[digest] = data
    return found


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
