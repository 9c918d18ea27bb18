"""The Storage interface (janitor/storage/driver.py) on distribution's filesystem driver: busybox commands
exec'd in the registry's container (janitor/storage/files.py), holds written there with one archive."""

from __future__ import annotations

import io
import math
import posixpath
import tarfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import docker.errors

from janitor import errors
from janitor.registry import names
from janitor.registry.container import RegistryContainer
from janitor.registry.journal import Written
from janitor.storage import files
from janitor.storage.driver import HeldManifest, Mark
from janitor.storage.layout import Layout

# Paths per exec (find, rm): ~110 bytes each, far inside the kernel's argument limit.
PATHS_PER_EXEC = 500


class FilesystemStorage:
    driver = "filesystem"
    needs_journal = False  # `find -newer` reads only what changed

    def __init__(self, container: RegistryContainer, root: str) -> None:
        self.container = container
        self.root = root
        self.layout = Layout(root)

    @property
    def where(self) -> str:
        return self.root

    def requests(self) -> int | None:
        return None

    def requests_in_a_row(self) -> int | None:
        return None

    # -- reading -----------------------------------------------------------------------------------

    def revision_times(self) -> tuple[float, dict[str, dict[str, float]]]:
        return files.revision_times(self.container, self.root)

    def revisions_since(self, mark: Mark, known: dict[str, set[str]]) -> tuple[float, dict[str, set[str]]]:
        return files.revisions_since(self.container, self.root, str(mark), known)

    def revisions(self) -> dict[str, set[str]]:
        return files.revisions(self.container, self.root)

    def blob_sizes(self, newer_than: Mark | None = None) -> dict[str, int]:
        return files.blob_sizes(self.container, self.root, None if newer_than is None else str(newer_than))

    def layered_repositories(self, among: Iterable[str] | None = None, since: Mark | None = None) -> set[str]:
        """Every repository: one `find` that skips each repository's manifests and uploads and stops at its
        `_layers` (`since` changes nothing: no earlier read is kept). Among candidates: a `find -maxdepth 0` of
        their `_layers` directories only."""
        repos = self.layout.repositories
        if among is None:
            result = files.checked(self.container, [
                "find", repos, "(", "-name", "_manifests", "-o", "-name", "_uploads", ")", "-prune",
                "-o", "-type", "d", "-name", "_layers", "-print", "-prune"])
            return {n for line in result.stdout.splitlines() if (n := _layers_owner(repos, line.strip()))}
        wanted = sorted(set(among))
        found: set[str] = set()
        for start in range(0, len(wanted), PATHS_PER_EXEC):
            paths = [self.layout.layers(r) for r in wanted[start:start + PATHS_PER_EXEC]]
            result = files.checked(self.container, ["find", *paths, "-maxdepth", "0", "-type", "d"])
            found |= {n for line in result.stdout.splitlines() if (n := _layers_owner(repos, line.strip()))}
        return found

    def recent_links(self, grace: float, now: float | None = None,
                     newer_than: Mark | None = None) -> dict[str, set[str]]:
        """`find` skips the manifests and uploads of every repository and keeps only links newer than the file
        `newer_than` (a mark written with mtime `now - grace - 1`), or else younger than the grace to the
        minute, rounded up; only those are printed and stat-ed, and the cutoff is then exact."""
        if newer_than is not None:
            # A blob linked for the first time adds a directory to its repository's _layers/sha256, which makes
            # that directory newer than the mark: the layer links of every other repository are never looked
            # at. (A link rewritten in place, a blob uploaded again into a repository that had it linked
            # already, leaves the directory as it was: the registry answered that blob as present all along,
            # so clients skip its upload; such a blob is not held.)
            recent = ["-path", "*/_layers/sha256", "!", "-newer", str(newer_than), "-prune", "-o", "-type", "f",
                      "-path", "*/_layers/sha256/*/link", "-newer", str(newer_than)]
        else:
            recent = ["-type", "f", "-path", "*/_layers/sha256/*/link", "-mmin",
                      f"-{max(1, math.ceil(grace / 60) + 1)}"]
        result = files.checked(self.container, [
            "find", self.layout.repositories, "(", "-name", "_manifests", "-o", "-name", "_uploads", ")", "-prune",
            "-o", *recent, "-exec", "stat", "-c", "%Y %n", "{}", "+"])
        cutoff = (now or time.time()) - grace
        found: dict[str, set[str]] = {}
        for line in result.stdout.splitlines():
            mtime, _, path = line.strip().partition(" ")
            parsed = self.layout.parse_layer_link(path)
            if parsed and mtime.isdigit() and int(mtime) >= cutoff:
                found.setdefault(parsed[0], set()).add(parsed[1])
        return found

    def recent_links_and_sizes(self, grace: float, now: float, newer_than: Mark,
                               stored_since: Mark) -> tuple[dict[str, set[str]], dict[str, int]]:
        """One `find` over both trees while writes are refused, so a blob stored after the window's sizes were
        read (a push cut off between storing and linking it leaves one, which GC then sweeps) still has one."""
        layout = self.layout
        result = files.checked(self.container, [
            "find", layout.repositories, layout.blobs, "(", "-name", "_manifests", "-o", "-name", "_uploads", ")",
            "-prune",
            "-o", "-path", "*/_layers/sha256", "!", "-newer", str(newer_than), "-prune",
            "-o", "-type", "f", "-path", "*/_layers/sha256/*/link", "-newer", str(newer_than),
            "-exec", "stat", "-c", "%Y %n", "{}", "+",
            "-o", "-path", f"{layout.blobs}/sha256/??", "!", "-newer", str(stored_since), "-prune",
            "-o", "-type", "f", "-path", f"{layout.blobs}/sha256/*/data", "-newer", str(stored_since),
            "-exec", "stat", "-c", "%s %n", "{}", "+"])
        cutoff = now - grace
        found: dict[str, set[str]] = {}
        sizes: dict[str, int] = {}
        for line in result.stdout.splitlines():
            number, _, path = line.strip().partition(" ")
            if not number.isdigit():
                continue
            parsed = layout.parse_layer_link(path)
            if parsed:
                if int(number) >= cutoff:
                    found.setdefault(parsed[0], set()).add(parsed[1])
            elif (digest := layout.parse_blob_data(path)) is not None:
                sizes[digest] = int(number)
        return found, sizes

    def active_uploads(self, within: float, now: float) -> int:
        return files.active_uploads(self.container, self.root, within, now)

    def read_blobs(self, digests: Iterable[str], limit: int) -> dict[str, bytes]:
        return files.read_blobs(self.container, self.root, digests, limit)

    # -- marks ---------------------------------------------------------------------------------------

    def marks(self, window_id: str, times: dict[str, float]) -> dict[str, Mark]:
        return dict(files.marks(self.container, window_id, times))

    def drop_marks(self, marks: Iterable[Mark]) -> None:
        files.drop_marks(self.container, [str(m) for m in marks])

    # -- changes ---------------------------------------------------------------------------------------

    def write_manifests(self, manifests: list[HeldManifest]) -> None:
        """In a single archive: a blob and a revision link each (while writes are refused: one Docker call)."""
        if not manifests:
            return
        layout = self.layout
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for repository, digest, body in manifests:
                _add(tar, layout.rel_blob_data(digest), body)
                _add(tar, layout.rel_revision_link(repository, digest), digest.encode())
        try:
            try:
                ok = self.container.get().put_archive(layout.v2, buf.getvalue())
            except docker.errors.NotFound:  # no v2 yet (holds need a layer link there, so hardly ever): one more exec
                files.checked(self.container, ["mkdir", "-p", layout.v2], missing_ok=False)
                ok = self.container.get().put_archive(layout.v2, buf.getvalue())
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"cannot write the holds into {layout.v2}: {exc.explanation or exc}") from exc
        if not ok:
            raise errors.ContainerError(f"cannot write the holds into {layout.v2}")

    def remove_manifests(self, manifests: list[tuple[str, str]]) -> None:
        paths: list[str] = []
        for repository, digest in manifests:
            paths.append(self.layout.revision(repository, digest))
            paths.append(self.layout.blob(digest))
        for start in range(0, len(paths), 200):
            files.checked(self.container, ["rm", "-rf", *paths[start:start + 200]], missing_ok=False)

    def remove_repository(self, name: str) -> str | None:
        return files.remove_repository(self.container, self.root, name)

    def writes_refused(self, refused: bool) -> None:
        return None  # each read under the fence is a `find -newer` of what changed: nothing to keep

    def follow(self, written: Written | None) -> dict[str, Any] | None:
        return None

    carried_run: str | None = None  # `find -newer` needs no view carried between windows

    def carry(self) -> bytes | None:
        return None

    def resume(self, view: bytes, run: str, written: Written) -> bool:
        return False

    def rebase(self, written: Written) -> dict[str, Any] | None:
        return None

    def drop_carried(self) -> None:
        return None

    def remove_uploads(self, name: str, upload_ids: Iterable[str] | None = None) -> int:
        return files.remove_uploads(self.container, self.root, name, upload_ids)

    def link_blobs(self, name: str, digests: Iterable[str]) -> list[str]:
        """One `find` says which links and blob files exist; the missing links go in as one archive."""
        layout = self.layout
        wanted = sorted(set(digests))
        if not wanted:
            return []
        links = {f"{layout.layers(name)}/sha256/{d.removeprefix('sha256:')}/link": d for d in wanted}
        data = {layout.blob_data(d): d for d in wanted}
        existing = self._existing([*links, *data])
        missing = sorted(d for p, d in data.items() if p not in existing)
        to_write = [(p, d) for p, d in links.items() if p not in existing and d not in missing]
        if to_write:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for path, digest in to_write:
                    _add(tar, posixpath.relpath(path, layout.v2), digest.encode())
            try:
                ok = self.container.get().put_archive(layout.v2, buf.getvalue())
            except docker.errors.APIError as exc:
                raise errors.ContainerError(f"cannot link blobs into {name}: {exc.explanation or exc}") from exc
            if not ok:
                raise errors.ContainerError(f"cannot link blobs into {name}")
        return missing

    def _existing(self, paths: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(paths), PATHS_PER_EXEC):
            result = files.checked(self.container, ["find", *paths[start:start + PATHS_PER_EXEC], "-maxdepth", "0"])
            found |= {line.strip() for line in result.stdout.splitlines() if line.strip()}
        return found

    def delete_blobs(self, digests: list[str], before_each: Callable[[], None] | None = None) -> None:
        """`rm -rf` of each blob's `<hex>` directory, as distribution's vacuum does; their parents, empty once
        their last blob went, are left to `remove_blob_dirs`."""
        paths = sorted({self.layout.blob(d) for d in digests})
        for start in range(0, len(paths), PATHS_PER_EXEC):
            if before_each is not None:
                before_each()
            files.checked(self.container, ["rm", "-rf", *paths[start:start + PATHS_PER_EXEC]], missing_ok=False)

    def remove_blob_dirs(self, digests: list[str]) -> None:
        files.remove_blob_dirs(self.container, self.root, digests)


def _layers_owner(repositories: str, path: str) -> str | None:
    """The repository whose `_layers` directory `path` is, when it is one under `repositories`."""
    if not path.startswith(repositories + "/") or not path.endswith("/_layers"):
        return None
    name = path[len(repositories) + 1:-len("/_layers")]
    return name if names.is_repository(name) and posixpath.normpath(name) == name else None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))
