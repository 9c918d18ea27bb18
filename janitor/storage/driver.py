"""The one interface to the registry's storage that the window, the planner and the index use, whatever the
driver: `FilesystemStorage` (janitor/storage/filesystem.py) execs busybox in the registry's container,
`S3Storage` (janitor/storage/s3.py) talks to the bucket. Neither caller knows which.

Both read distribution's layout (janitor/storage/layout.py names every path): revisions and layer links with
the time they were written (file mtime, or object LastModified), blob sizes and bytes, uploads in progress;
and make the few changes a window needs while the registry refuses writes: hold manifests written and
removed, an emptied repository removed, the directories of swept blobs tidied.

Times read from storage are the storage's own clock (the container's, or the object store's), so ages never
mix two clocks. Times given to it (`marks`, `now`) are the worker's clock; the storage turns them into its own,
erring early (an object store's clock may differ from the worker's, and stamps whole seconds): what is "newer
than a mark" may hold more than what was written after it, never less. A `Mark` is a point in time the storage
can compare cheaply against: a reference file for `find -newer` on the filesystem, a time on the store's clock
on an object store. Adding another object store (GCS, Azure) is one module implementing this Protocol; see
docs/window.md, "Storage drivers".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from janitor.registry.journal import Written

Mark = str | float
# One hold manifest to write: (repository, digest, body).
HeldManifest = tuple[str, str, bytes]


class Storage(Protocol):
    driver: str
    # Whether reads under the fence list the whole store unless told what the registry wrote (`follow`): an
    # object store cannot list by time. The filesystem's `find -newer` reads only what changed.
    needs_journal: bool
    # The run of the registry whose access log the reads follow from a view an earlier window carried (`resume`);
    # None when they read the store itself.
    carried_run: str | None

    @property
    def where(self) -> str:
        """Where the registry's files are, for people: a path in the container, or s3://bucket/root."""

    def requests(self) -> int | None:
        """Requests made to the storage so far (what an object store bills); None when not counted."""

    def requests_in_a_row(self) -> int | None:
        """Of the listing requests so far, those that had to wait for one another; None when not counted."""

    # -- reading -----------------------------------------------------------------------------------

    def revision_times(self) -> tuple[float, dict[str, dict[str, float]]]:
        """(the storage's clock now, repository -> stored manifest digest -> when its revision was written)."""

    def revisions_since(self, mark: Mark, known: dict[str, set[str]]) -> tuple[float, dict[str, set[str]]]:
        """Every stored manifest, given `known` as read at `mark`; may list only what changed since."""

    def revisions(self) -> dict[str, set[str]]:
        """Every stored manifest of every repository, tagged or not."""

    def blob_sizes(self, newer_than: Mark | None = None) -> dict[str, int]:
        """digest -> size of every stored blob, or of (at least) those stored after `newer_than`."""

    def layered_repositories(self, among: Iterable[str] | None = None, since: Mark | None = None) -> set[str]:
        """Repositories with layer links (a `_layers` directory): the ones distribution's GC enumerates; only
        those of `among` when given (looking at theirs only). `since`: any read begun after this mark will do
        (an object store may answer from the listing it just made of the revisions)."""

    def recent_links(self, grace: float, now: float | None = None,
                     newer_than: Mark | None = None) -> dict[str, set[str]]:
        """Blobs linked into each repository (a layer link written) within `grace` seconds before `now`."""

    def recent_links_and_sizes(self, grace: float, now: float, newer_than: Mark,
                               stored_since: Mark) -> tuple[dict[str, set[str]], dict[str, int]]:
        """`recent_links`, and the size of every blob stored after `stored_since`, in one read."""

    def active_uploads(self, within: float, now: float) -> int:
        """Blob uploads written to within the last `within` seconds."""

    def read_blobs(self, digests: Iterable[str], limit: int) -> dict[str, bytes]:
        """Stored bytes of these blobs, each at most `limit` bytes and only when they hash to their digest."""

    # -- marks ---------------------------------------------------------------------------------------

    def marks(self, window_id: str, times: dict[str, float]) -> dict[str, Mark]:
        """One Mark per name at the given time (the worker's clock, which a filesystem's container shares),
        early rather than late on the storage's own; {} when they cannot be made."""

    def drop_marks(self, marks: Iterable[Mark]) -> None:
        """Remove what `marks` made."""

    def writes_refused(self, refused: bool) -> None:
        """The window says when its fence is proven (True) and before it comes down (False): nothing but the
        window writes meanwhile, so an object store lists each part of the bucket once for all the reads under
        the fence (the filesystem's reads are each a `find -newer`, and keep nothing)."""

    def follow(self, written: Written | None) -> dict[str, Any] | None:
        """Under the fence, what the registry's access log says it wrote since a point (janitor/registry/
        journal.py): the reads under this fence may take it instead of listing everything again. What they
        will read then, or None when they list as usual."""

    def carry(self) -> bytes | None:
        """Once the fence is down: what the reads under it found, with the window's own changes since, for the
        next window to start from (None: nothing worth carrying, or nothing exact)."""

    def resume(self, view: bytes, run: str, written: Written) -> bool:
        """Start from a carried view, true when `run` of the registry began, plus what that run logged since."""

    def rebase(self, written: Written) -> dict[str, Any] | None:
        """After the window's marker: the carried view brought up to it with what the run logged before it."""

    def drop_carried(self) -> None:
        """Stop following a carried view: reads list the store again."""

    # -- changes (only while the registry refuses writes) --------------------------------------------

    def write_manifests(self, manifests: list[HeldManifest]) -> None:
        """Store each body as a blob and link it as a revision of its repository (the holds)."""

    def remove_manifests(self, manifests: list[tuple[str, str]]) -> None:
        """Remove (repository, digest) revisions written by `write_manifests`, and their blobs."""

    def remove_repository(self, name: str) -> str | None:
        """Remove an emptied repository (GC never does, so it stays in the catalog). Returns why it was
        kept, or None when it is gone."""

    def remove_uploads(self, name: str, upload_ids: Iterable[str] | None = None) -> int:
        """Remove a repository's upload sessions: those named, or every one (only where no upload can be in
        progress: the janitor's probe repository, inside the fence). A cancelled upload leaves
        `_uploads/<id>/hashstates` behind, which nothing else removes with upload purging off (3.x's default).
        Returns how many were removed."""

    def link_blobs(self, name: str, digests: Iterable[str]) -> list[str]:
        """Link into a repository those of these blobs that are stored but not linked there (what a blob upload
        writes), so that a manifest PUT finds them. Returns the blobs missing from storage altogether."""

    def delete_blobs(self, digests: list[str], before_each: Callable[[], None] | None = None) -> None:
        """Delete these blobs as distribution's vacuum does (a blob's whole directory, or every object under
        it), in batches; `before_each` runs before every batch (the window's lease and time check)."""

    def remove_blob_dirs(self, digests: list[str]) -> None:
        """Tidy what GC leaves behind of blobs it swept (empty directories on a filesystem; nothing on S3)."""
