"""The Storage interface (janitor/storage/driver.py) on distribution's s3 driver: the bucket (janitor/storage/
s3_bucket.py) read and changed under the registry's own layout (janitor/storage/layout.py builds and parses
every key); what its listings found, and the view a window carries to the next, in janitor/storage/s3_view.py.

Object LastModified stands in for a file's mtime, and the time of a listing is the store's own clock (the
Date of its answer), so ages never mix two clocks. There are no directories: a listing by prefix, page by
page, replaces `find`; a Mark is a time on the store's clock, and a worker's time given here is turned into
one early rather than late (S3Bucket.store_time), so "newer than" reads more, never less. Deletes go in
batches of DELETE_BATCH keys (DeleteObjects). Every HTTP request, retries included, is counted
(`requests`): an object store bills them.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import posixpath
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast


from janitor import errors
from janitor.registry import names
from janitor.registry.journal import Written
from janitor.storage.driver import HeldManifest, Mark
from janitor.storage.s3_bucket import DELETE_BATCH, READ_WORKERS, S3Bucket
from janitor.storage.s3_location import S3Location, location_from
from janitor.storage.s3_view import Blobs, Links, View

__all__ = ["DELETE_BATCH", "S3Location", "S3Storage", "location_from"]

T = TypeVar("T")
_UPLOAD = re.compile(r"/repositories/(.+)/_uploads/([^/]+)/")


class S3Storage(S3Bucket):
    """The Storage interface on the bucket."""

    driver = "s3"
    needs_journal = True
    _last_links: Links | None = None  # what the last whole listing of `repositories/` found
    _last_blobs: Blobs | None = None  # and of `blobs/`
    # The run of the registry whose log completes _last_links and _last_blobs, when they are the view an earlier
    # window carried (`resume`) rather than listings of this one.
    carried_run: str | None = None
    _view: View | None = None  # what the last reads under the fence found, with the window's own changes since
    _memo: dict[str, tuple[Written | None, Any]] | None = None  # see _once_per_log

    # -- reading -----------------------------------------------------------------------------------

    def _links(self) -> Links:
        """Every repository's links: one listing, or under the fence, the last one with the repositories the
        registry wrote to since listed again (`follow`). Read once while the registry refuses writes
        (S3Bucket.writes_refused): callers never change what it returns."""
        following = self.following(self._last_links) is not None
        links = self.while_refused("links", (lambda: self._once_per_log("links", self._links_since)) if following
                                   else self._list_links)
        if self._refused is not None:
            self._view = View(links, self._view.blobs if self._view else None)
        return links

    def _list_links(self) -> Links:
        began = time.time()
        read_at, objects = self.listing(self.layout.repositories)
        revisions, layers, layered = self._parse_links(objects)
        self._last_links = Links(read_at, revisions, layers, layered, began)
        return self._last_links

    def _parse_links(self, objects: Iterable[dict[str, Any]]) -> tuple[
            dict[str, dict[str, float]], dict[str, dict[str, float]], set[str]]:
        revisions: dict[str, dict[str, float]] = {}
        layers: dict[str, dict[str, float]] = {}
        layered: set[str] = set()
        prefix = self.layout.repositories + "/"
        for obj in objects:
            path = self.path(obj["Key"])
            if "/_layers/" in path and (name := _layers_owner(path[len(prefix):])) is not None:
                layered.add(name)
            if not path.endswith("/link"):
                continue
            when = obj["LastModified"].timestamp()
            if (rev := self.layout.parse_revision_link(path)) is not None:
                revisions.setdefault(rev[0], {})[rev[1]] = when
            elif (layer := self.layout.parse_layer_link(path)) is not None:
                layers.setdefault(layer[0], {})[layer[1]] = when
        return revisions, layers, layered

    def _links_since(self) -> Links:
        """The last whole listing, with each repository the registry wrote to since listed again (its
        revisions and layer links: two requests, all repositories at once)."""
        written, base = self.following(self._last_links), self._last_links
        assert written is not None and base is not None
        touched = sorted(written.repositories)
        began = time.time()
        read_at = self.store_time(began)
        listed = self.listings([p for name in touched for p in (self.layout.revisions(name), self.layout.layers(name))])
        revisions, layers, layered = self._parse_links(obj for objects in listed for obj in objects)
        gone = set(touched)
        return Links(
            read_at,
            {**{r: t for r, t in base.revisions.items() if r not in gone}, **revisions},
            {**{r: t for r, t in base.layers.items() if r not in gone}, **layers},
            (base.layered - gone) | layered, began)

    def follow(self, written: Written | None) -> dict[str, Any] | None:
        """Told under the fence what the registry's access log says it wrote since a point (None: nothing is
        known): reads under the fence then list again only the repositories written to, and look up only the
        blobs those writes may have stored, on top of the last whole listing of each prefix that began after
        that point, while the janitor writes nothing to the bucket. What that will read (and which prefix is
        listed whole all the same: its last listing is older than the point), or None when both are."""
        self._written_log = written
        parts = {"repositories": self._last_links, "blobs": self._last_blobs}
        whole = [name for name, listed in parts.items() if self.following(listed) is None]
        if written is None or len(whole) == len(parts):
            return None
        return {"repositories": len(written.repositories), "blobs_named": len(written.blobs),
                "write_requests": written.requests, **({"prefixes_listed_whole": whole} if whole else {})}

    def _once_per_log(self, what: str, read: Callable[[], T]) -> T:
        """What `read` gave for the log as last told (`_written_log`): before the fence, the delete step's and
        the mark's reads would otherwise list the same repositories again, each time."""
        memo = self._memo if self._memo is not None else {}
        self._memo = memo
        found = memo.get(what)
        if found is not None and found[0] is self._written_log:
            return cast(T, found[1])
        value = read()
        memo[what] = (self._written_log, value)
        return value

    def following(self, listed: Links | Blobs | None) -> Written | None:
        """The registry's log, when it says everything that changed since `listed` began."""
        written = self._written_log
        if written is None or listed is None or (self._refused is None and self.carried_run is None):
            return None
        return written if listed.began >= written.since and self._wrote_at < written.since else None

    # -- the view carried from one window to the next -------------------------------------------------------

    def carry(self) -> bytes | None:
        """What the last reads under the fence found, with the window's own changes since (the sweep's deletes,
        repositories removed), for the next window to start from instead of listing the bucket whole; None
        when this fence did not read both prefixes, or the window wrote something else since."""
        return None if self._view is None else self._view.dump()

    def resume(self, view: bytes, run: str, written: Written) -> bool:
        """Start from a view an earlier window carried, true when `run` of the registry started, and what that run
        logged since (`written`, from its start): every read lists again only what it wrote, until the janitor
        writes to the bucket itself. False (and nothing changed) when the view cannot be read."""
        loaded = View.load(view, self.store_time(written.since), written.since)
        if loaded is None:
            return False
        self._last_links, self._last_blobs = loaded
        self._written_log, self.carried_run = written, run
        return True

    def rebase(self, written: Written) -> dict[str, Any] | None:
        """After the window's marker: the carried view, with what the run wrote before the marker (`written`)
        read again, becomes what a whole listing begun after the marker would have found (the fence then follows
        the log from the marker). What was read; None when nothing is carried."""
        if self.carried_run is None:
            return None
        before = self.requests() or 0
        began = time.time()
        assert self._written_log is not None  # set with carried_run
        self._written_log = Written(self._written_log.since, written.repositories, written.blobs, written.requests)
        links = self._links_since()
        blobs = self._blobs_since(links)
        self._last_links, self._last_blobs = links._replace(began=began), Blobs(blobs, began)
        # Until the fence, every read is this one: nothing logged after the marker is read before it.
        self._written_log = Written(began, frozenset(), frozenset(), 0)
        return {"repositories": len(written.repositories), "blobs_named": len(written.blobs),
                "write_requests": written.requests, "storage_requests": (self.requests() or 0) - before}

    def drop_carried(self) -> None:
        """Reads list the store whole again (the carried view's log can no longer be followed)."""
        if self.carried_run is not None:
            self.carried_run, self._written_log = None, None
            self._last_links = self._last_blobs = None

    def writes_refused(self, refused: bool) -> None:
        super().writes_refused(refused)
        if not refused:
            self.carried_run = None  # its run ended with the fence: reads list whole until `resume` again

    def _written(self) -> None:
        """A write of the janitor's own: the carried view misses it (reads list whole again), and so does what
        the reads under the fence found (nothing to carry), unless the caller applies its change to that."""
        super()._written()
        self._view = None
        if self._refused is None:
            self.drop_carried()

    def revision_times(self) -> tuple[float, dict[str, dict[str, float]]]:
        links = self._links()
        return links.read_at, links.revisions

    def revisions_since(self, mark: Mark, known: dict[str, set[str]]) -> tuple[float, dict[str, set[str]]]:
        """A listing cannot skip what did not change: every revision is listed again."""
        read_at, revisions = self.revision_times()
        return read_at, {repo: set(times) for repo, times in revisions.items()}

    def revisions(self) -> dict[str, set[str]]:
        return {repo: set(times) for repo, times in self.revision_times()[1].items()}

    def blob_sizes(self, newer_than: Mark | None = None) -> dict[str, int]:
        since = None if newer_than is None else float(newer_than)
        following = self.following(self._last_blobs) is not None
        found = self.while_refused("blobs", (lambda: self._once_per_log("blobs", self._blobs_since)) if following
                                   else self._list_blobs)
        if self._refused is not None:
            self._view = View(self._view.links if self._view else None, found)
        return {digest: size for digest, (size, when) in found.items() if since is None or when >= since}

    def _list_blobs(self) -> dict[str, tuple[int, float]]:
        """digest -> (size, LastModified) of every blob."""
        began = time.time()
        found: dict[str, tuple[int, float]] = {}
        for obj in self.listing(self.layout.blobs)[1]:
            digest = self.layout.parse_blob_data(self.path(obj["Key"]))
            if digest:
                found[digest] = (int(obj["Size"]), obj["LastModified"].timestamp())
        self._last_blobs = Blobs(found, began)
        return found

    def _blobs_since(self, links: Links | None = None) -> dict[str, tuple[int, float]]:
        """The last whole listing of blobs, and those the registry may have stored since: named by the logged
        requests (uploads, manifests by digest), or a revision of a repository written to (a manifest PUT by
        tag stores its data under a digest the log does not show). A HeadObject each, at once. Only GC removes
        blob data, so none is gone. A manifest PUT that failed between its data and its revision link leaves a
        blob nothing names: it stays until a window lists every blob."""
        written, base = self.following(self._last_blobs), self._last_blobs
        assert written is not None and base is not None
        touched = written.repositories
        named = set(written.blobs) | {d for repo, found in (links or self._links()).revisions.items()
                                      if repo in touched for d in found}
        wanted = sorted(named - set(base.sizes))
        began = self.store_time(time.time())
        heads = self.heads([self.layout.blob_data(d) for d in wanted], READ_WORKERS)
        found = dict(base.sizes)
        for digest, head in zip(wanted, heads, strict=True):
            if head is not None:
                # Stored no earlier than this read, for `blob_sizes(newer_than)`: its data may have been written
                # before a mark taken after the log's point, by a request logged after that point (a listing
                # begun after the mark would have found it; this read stands in for one).
                found[digest] = (int(head["ContentLength"]), max(head["LastModified"].timestamp(), began))
        return found

    def layered_repositories(self, among: Iterable[str] | None = None, since: Mark | None = None) -> set[str]:
        """A repository has a `_layers` directory when an object lies under it (an object store has no empty
        directories). Every repository: one listing of them all, or what the last listing of revisions found
        when it began at or after `since` (the mark's reads list `repositories/` once, not twice); among
        candidates: one request each."""
        if among is not None:
            return {name for name in sorted(set(among)) if self._any(self.layout.layers(name))}
        last = self._last_links
        if since is None or last is None or last.read_at < float(since):
            last = self._links()
        return set(last.layered)

    def _any(self, path: str) -> bool:
        prefix = self.key(path).rstrip("/") + "/"
        answer = self._call("ListObjectsV2", lambda: self.client.list_objects_v2(
            Bucket=self.location.bucket, Prefix=prefix, MaxKeys=1))
        return bool(answer.get("KeyCount") or answer.get("Contents"))

    def recent_links(self, grace: float, now: float | None = None,
                     newer_than: Mark | None = None) -> dict[str, set[str]]:
        cutoff = self.store_time((now or time.time()) - grace)
        found = {repo: {d for d, t in links.items() if t >= cutoff} for repo, links in self._links().layers.items()}
        return {repo: digests for repo, digests in found.items() if digests}

    def recent_links_and_sizes(self, grace: float, now: float, newer_than: Mark,
                               stored_since: Mark) -> tuple[dict[str, set[str]], dict[str, int]]:
        return self.recent_links(grace, now), self.blob_sizes(stored_since)

    def active_uploads(self, within: float, now: float) -> int:
        """Uploads any of whose objects (hash states, data) or multipart parts of its data were
        written within `within` seconds. Distribution's s3 writer starts an upload's data as a multipart upload
        when the upload starts (after its `startedat`), and keeps it one until the upload is committed or
        cancelled: the multipart uploads in progress (one listing, as long as they are few) name every
        repository with an upload open, and only those repositories' `_uploads` are listed, not the bucket."""
        cutoff = self.store_time(now - within)
        active: set[tuple[str, str]] = set()
        started: set[tuple[str, str]] = set()
        multipart = self._multipart(self.layout.repositories)
        found = (_UPLOAD.search(self.path(u["Key"])[len(self.layout.v2):]) for u in multipart)
        open_in = sorted({m.group(1) for m in found if m is not None and names.is_repository(m.group(1))})
        listed = self.listings([self.layout.uploads(name) for name in open_in])
        for obj in (obj for found in listed for obj in found):
            match = _UPLOAD.search(self.path(obj["Key"])[len(self.layout.v2):])
            if not match:
                continue
            # `startedat` is written once, when the upload starts (its data then starts as a multipart upload,
            # seen below): like the filesystem's `data`, only what a push writes as it goes counts. But an
            # upload without it has ended: a cancelled one leaves `hashstates/` behind on S3 (its directory
            # delete misses them), which would otherwise look like a push in flight for `within` seconds.
            if obj["Key"].endswith("/startedat"):
                started.add((match.group(1), match.group(2)))
            elif obj["LastModified"].timestamp() >= cutoff:
                active.add((match.group(1), match.group(2)))
        for upload in multipart:
            match = _UPLOAD.search(self.path(upload["Key"])[len(self.layout.v2):])
            if match and (match.group(1), match.group(2)) not in active and self._written_since(upload, cutoff):
                active.add((match.group(1), match.group(2)))
        return len(active & started)

    def _written_since(self, upload: dict[str, Any], cutoff: float) -> bool:
        """A multipart upload started, or given a part, since `cutoff` (one ListParts for an older one)."""
        if upload["Initiated"].timestamp() >= cutoff:
            return True
        parts = self._call("ListParts", lambda: self.client.list_parts(
            Bucket=self.location.bucket, Key=upload["Key"], UploadId=upload["UploadId"]), absent=("NoSuchUpload",))
        if parts is None:
            return False  # committed or aborted since it was listed: no longer in progress
        return any(p["LastModified"].timestamp() >= cutoff for p in parts.get("Parts", []))

    def read_blobs(self, digests: Iterable[str], limit: int) -> dict[str, bytes]:
        """A GET each (the first limit+1 bytes), in parallel; a blob missing, larger than `limit` or whose
        bytes do not hash to its digest is left out, for the registry's HTTP API to answer."""
        wanted = sorted(set(digests))
        if not wanted:
            return {}
        assert self.client is not None  # made here, not by several threads at once
        with concurrent.futures.ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
            read = list(pool.map(lambda d: self._read_blob(d, limit), wanted))
        return {d: data for d, data in zip(wanted, read, strict=True) if data is not None}

    def _read_blob(self, digest: str, limit: int) -> bytes | None:
        data = self._call("GetObject", lambda: self.client.get_object(
            Bucket=self.location.bucket, Key=self.key(self.layout.blob_data(digest)),
            Range=f"bytes=0-{limit}")["Body"].read(), absent=("NoSuchKey", "404", "InvalidRange"))
        if data is None:
            return None
        if len(data) > limit or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return None
        return data

    # -- marks: a time is all an object store needs ----------------------------------------------------

    def marks(self, window_id: str, times: dict[str, float]) -> dict[str, Mark]:
        """Each time on the store's clock, early rather than late (S3Bucket.store_time)."""
        return {name: self.store_time(t) for name, t in times.items()}

    def drop_marks(self, marks: Iterable[Mark]) -> None:
        return None

    # -- changes -------------------------------------------------------------------------------------------

    def write_manifests(self, manifests: list[HeldManifest]) -> None:
        """The blob first, then the revision link that names it (distribution's own order)."""
        for repository, digest, body in manifests:
            self.put(self.layout.blob_data(digest), body)
            self.put(posixpath.join(self.layout.revision(repository, digest), "link"), digest.encode())

    def remove_manifests(self, manifests: list[tuple[str, str]]) -> None:
        keys: list[str] = []
        for repository, digest in manifests:
            keys.append(self.key(posixpath.join(self.layout.revision(repository, digest), "link")))
            keys.append(self.key(self.layout.blob_data(digest)))
        self.delete(keys)

    def remove_repository(self, name: str) -> str | None:
        """Its manifests, layer links and uploads deleted; a nested repository (team/app/sub, listed under
        team/app/) is another's and stays. With no object left under its name, the catalog no longer lists it."""
        if not names.is_repository(name):
            raise errors.StoragePathRefused(f"not a repository name: {name!r}")
        layout = self.layout
        if self._keys(layout.tags(name)):
            return "tags were pushed to it after the deletion"
        if self._keys(layout.uploads(name)) or self._multipart(layout.uploads(name)):
            return "an upload into it is in flight"
        keys = [k for part in (layout.manifests(name), layout.layers(name), layout.uploads(name))
                for k in self._keys(part)]
        view = self._view
        self.delete(keys)
        self._view = view and view.without_repository(name)
        return None

    def remove_uploads(self, name: str, upload_ids: Iterable[str] | None = None) -> int:
        if not names.is_repository(name):
            raise errors.StoragePathRefused(f"not a repository name: {name!r}")
        if upload_ids is None:
            keys = self._keys(self.layout.uploads(name))
            sessions = {self.path(k).split("/_uploads/", 1)[1].split("/", 1)[0] for k in keys}
        else:
            sessions = set(upload_ids)
            keys = [k for i in sorted(sessions) for k in self._keys(self.layout.upload(name, i))]
        self.delete(keys, unlisted=True)  # upload sessions: in no listing the janitor keeps
        return len(sessions)

    def link_blobs(self, name: str, digests: Iterable[str]) -> list[str]:
        """A HeadObject for each blob's data and link; each missing link then a PutObject (few blobs: those of
        one restored manifest)."""
        if not names.is_repository(name):
            raise errors.StoragePathRefused(f"not a repository name: {name!r}")
        missing: list[str] = []
        for digest in sorted(set(digests)):
            if not self.exists(self.layout.blob_data(digest)):
                missing.append(digest)
                continue
            link = f"{self.layout.layers(name)}/sha256/{digest.removeprefix('sha256:')}/link"
            if not self.exists(link):
                self.put(link, digest.encode())
        return missing

    def delete_blobs(self, digests: list[str], before_each: Callable[[], None] | None = None) -> None:
        """Each blob's one object, `data` (distribution deletes everything under the blob's path, and stores
        nothing else there), DELETE_BATCH a request."""
        keys = sorted({self.key(self.layout.blob_data(d)) for d in digests})
        view = self._view
        for start in range(0, len(keys), DELETE_BATCH):
            if before_each is not None:
                before_each()
            self.delete(keys[start:start + DELETE_BATCH])
        self._view = view and view.without_blobs(digests)

    def remove_blob_dirs(self, digests: list[str]) -> None:
        """Nothing to do: an object store has no directories, and GC deleted the blobs' objects."""
        return None


def _layers_owner(relative: str) -> str | None:
    """The repository whose `_layers` holds the object at `relative` (under repositories/), as distribution's
    catalog walk finds it: the first path component starting with `_` ends the name, and must be `_layers`."""
    parts = relative.split("/")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            name = "/".join(parts[:i])
            return name if part == "_layers" and i and names.is_repository(name) else None
    return None
