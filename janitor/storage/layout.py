"""The one place that knows distribution's filesystem storage layout.

    <root>/docker/registry/v2/blobs/sha256/<hex[:2]>/<hex>/data
    <root>/docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
    <root>/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/...
    <root>/docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link
    <root>/docker/registry/v2/repositories/<name>/_uploads/<id>/...

Every name and digest joined into a path is checked against distribution's grammar first (a name like
`../../etc` can never step outside the storage root), and paths read back from `find` are parsed here too,
so nothing else builds or splits a storage path by hand.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from janitor import errors
from janitor.registry import names

V2 = "docker/registry/v2"
_HEX = r"[a-f0-9]{64}"
_REVISION = re.compile(rf"/repositories/(.+)/_manifests/revisions/sha256/({_HEX})/link$")
_LAYER = re.compile(rf"/repositories/(.+)/_layers/sha256/({_HEX})/link$")
_BLOB = re.compile(rf"/blobs/sha256/[a-f0-9]{{2}}/({_HEX})/data$")
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


LayoutError = errors.StoragePathRefused  # a ValueError too


def _digest_hex(digest: str) -> str:
    if not names.is_digest(digest):
        raise LayoutError(f"not a sha256 digest: {digest!r}")
    return digest.split(":", 1)[1]


def _repository(name: str) -> str:
    if not names.is_repository(name):
        raise LayoutError(f"not a repository name: {name!r}")
    return name


def _tag(tag: str) -> str:
    if not names.is_tag(tag):
        raise LayoutError(f"not a tag: {tag!r}")
    return tag


@dataclass(frozen=True)
class Layout:
    """Paths under one storage root, absolute (for exec) or relative to v2 (for archives put into v2)."""

    root: str

    def __post_init__(self) -> None:
        if not self.root.startswith("/") or "\x00" in self.root:
            raise LayoutError(f"the storage root must be an absolute path: {self.root!r}")
        object.__setattr__(self, "root", posixpath.normpath(self.root))

    # -- absolute paths ---------------------------------------------------------------------------

    @property
    def v2(self) -> str:
        return posixpath.join(self.root, V2)

    @property
    def blobs(self) -> str:
        return f"{self.v2}/blobs"

    @property
    def repositories(self) -> str:
        return f"{self.v2}/repositories"

    def repository(self, name: str) -> str:
        path = posixpath.normpath(posixpath.join(self.repositories, _repository(name)))
        if not path.startswith(self.repositories + "/"):
            raise LayoutError(f"repository path escapes storage: {name!r}")
        return path

    def manifests(self, name: str) -> str:
        return f"{self.repository(name)}/_manifests"

    def tags(self, name: str) -> str:
        return f"{self.manifests(name)}/tags"

    def tag(self, name: str, tag: str) -> str:
        return f"{self.tags(name)}/{_tag(tag)}"

    def revisions(self, name: str) -> str:
        return f"{self.manifests(name)}/revisions/sha256"

    def revision(self, name: str, digest: str) -> str:
        """The directory holding a manifest revision's link."""
        return f"{self.revisions(name)}/{_digest_hex(digest)}"

    def layers(self, name: str) -> str:
        return f"{self.repository(name)}/_layers"

    def uploads(self, name: str) -> str:
        return f"{self.repository(name)}/_uploads"

    def upload(self, name: str, upload_id: str) -> str:
        """One upload session's directory; its id is distribution's (a UUID), checked like any name."""
        if not _UPLOAD_ID.match(upload_id):
            raise LayoutError(f"not an upload id: {upload_id!r}")
        return f"{self.uploads(name)}/{upload_id}"

    def blob(self, digest: str) -> str:
        """The directory holding a blob's data."""
        hexd = _digest_hex(digest)
        return f"{self.blobs}/sha256/{hexd[:2]}/{hexd}"

    def blob_data(self, digest: str) -> str:
        return f"{self.blob(digest)}/data"

    # -- relative to v2, for archives extracted into v2 ----------------------------------------------

    def rel_blob_data(self, digest: str) -> str:
        return posixpath.relpath(self.blob_data(digest), self.v2)

    def rel_revision_link(self, name: str, digest: str) -> str:
        return posixpath.relpath(f"{self.revision(name, digest)}/link", self.v2)

    # -- parsing what `find` prints -----------------------------------------------------------------

    def parse_revision_link(self, path: str) -> tuple[str, str] | None:
        """(repository, digest) of a revision link path under this root; None for anything else."""
        return self._parse(_REVISION, path)

    def parse_layer_link(self, path: str) -> tuple[str, str] | None:
        """(repository, digest) of a layer link path under this root; None for anything else."""
        return self._parse(_LAYER, path)

    def parse_blob_data(self, path: str) -> str | None:
        path = path.strip()
        if not path.startswith(self.blobs + "/"):
            return None
        match = _BLOB.search(path[len(self.v2):])
        return "sha256:" + match.group(1) if match else None

    def _parse(self, pattern: re.Pattern[str], path: str) -> tuple[str, str] | None:
        path = path.strip()
        if not path.startswith(self.repositories + "/"):
            return None
        match = pattern.search(path[len(self.v2):])
        if not match or not names.is_repository(match.group(1)):
            return None
        return match.group(1), "sha256:" + match.group(2)
