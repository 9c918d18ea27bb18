"""The Storage interface (janitor/storage/driver.py) on distribution's s3 driver: the bucket read and changed
with boto3, under the registry's own layout (janitor/storage/layout.py builds and parses every key).

Object LastModified stands in for a file's mtime, and the time of a listing is the store's own clock (the
Date of its answer), so ages never mix two clocks. There are no directories: a listing by prefix, page by
page, replaces `find`, and a Mark is a plain time. Deletes go in batches of DELETE_BATCH keys (DeleteObjects).
Every HTTP request, retries included, is counted (`requests`): an object store bills them.

An error from the store (unreachable, access denied, no such bucket) stops the step: a listing that failed
must never pass for an empty one.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import functools
import hashlib
import posixpath
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from janitor import errors
from janitor.registry import names
from janitor.storage.driver import HeldManifest, Mark
from janitor.storage.layout import Layout

DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
READ_WORKERS = 8  # parallel GETs in read_blobs
_UPLOAD = re.compile(r"/repositories/(.+)/_uploads/([^/]+)/")
T = TypeVar("T")


@dataclass(frozen=True)
class S3Location:
    """Where distribution's s3 driver keeps a registry's files, and how to reach them. Secrets are never
    shown (`as_dict`)."""

    bucket: str
    region: str = "us-east-1"
    endpoint: str | None = None  # regionendpoint: a URL, or host[:port] (scheme from `secure`)
    rootdirectory: str = ""
    forcepathstyle: bool = False
    secure: bool = True
    accesskey: str | None = None
    secretkey: str | None = field(default=None, repr=False)
    sessiontoken: str | None = field(default=None, repr=False)

    @property
    def root(self) -> str:
        """The storage root as an absolute path, the form Layout takes; keys are its paths without the '/'."""
        return "/" + self.rootdirectory.strip("/")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}{self.root.rstrip('/')}"

    @property
    def endpoint_url(self) -> str | None:
        if not self.endpoint:
            return None
        if "://" in self.endpoint:
            return self.endpoint
        return ("https://" if self.secure else "http://") + self.endpoint

    def as_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "region": self.region, "endpoint": self.endpoint_url,
                "rootdirectory": self.root, "forcepathstyle": self.forcepathstyle, "secure": self.secure,
                "credentials": "given" if self.accesskey else "default chain (environment, profile, role)"}


def _flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def location_from(env: dict[str, str], config: dict[str, Any]) -> S3Location:
    """The registry's s3 settings as distribution reads them: REGISTRY_STORAGE_S3_<KEY> first, then the config
    file's storage.s3 section. StorageConfigInvalid when no bucket is named."""
    section = (config.get("storage") or {}).get("s3") or {}
    section = {str(k).lower(): v for k, v in section.items()} if isinstance(section, dict) else {}
    prefix = "REGISTRY_STORAGE_S3_"
    section.update({k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)})

    def text(key: str) -> str | None:
        value = section.get(key)
        return None if value is None or str(value).strip() == "" else str(value).strip()

    bucket = text("bucket")
    if not bucket:
        raise errors.StorageConfigInvalid("the registry's config names the s3 driver but no bucket "
                                          "(storage.s3.bucket or REGISTRY_STORAGE_S3_BUCKET)")
    return S3Location(bucket=bucket, region=text("region") or "us-east-1", endpoint=text("regionendpoint"),
                      rootdirectory=text("rootdirectory") or "", forcepathstyle=_flag(section.get("forcepathstyle"), False),
                      secure=_flag(section.get("secure"), True), accesskey=text("accesskey"),
                      secretkey=text("secretkey"), sessiontoken=text("sessiontoken"))


class S3Storage:
    driver = "s3"

    def __init__(self, location: S3Location, client: Any | None = None) -> None:
        self.location = location
        self.layout = Layout(location.root)
        self._count = 0
        self._lock = threading.Lock()
        self._given = client

    @functools.cached_property
    def client(self) -> Any:
        """Made on first use: /readyz opens the storage every few seconds and rarely talks to it."""
        client = self._given or self._client()
        client.meta.events.register("before-send.s3", self._counted)
        return client

    def _client(self) -> Any:
        loc = self.location
        config = botocore.config.Config(
            s3={"addressing_style": "path" if loc.forcepathstyle else "auto"},
            retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60,
            max_pool_connections=READ_WORKERS * 2)
        return boto3.session.Session().client(
            "s3", region_name=loc.region, endpoint_url=loc.endpoint_url, use_ssl=loc.secure,
            aws_access_key_id=loc.accesskey, aws_secret_access_key=loc.secretkey,
            aws_session_token=loc.sessiontoken, config=config)

    def _counted(self, **_: Any) -> None:
        with self._lock:
            self._count += 1

    @property
    def where(self) -> str:
        return self.location.url

    def requests(self) -> int | None:
        return self._count

    # -- keys ---------------------------------------------------------------------------------------

    @staticmethod
    def key(path: str) -> str:
        """The object key of a Layout path (distribution's s3 driver drops the leading '/')."""
        return path.lstrip("/")

    @staticmethod
    def path(key: str) -> str:
        return "/" + key

    # -- talking to the bucket ---------------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, botocore.exceptions.ClientError) \
                else type(exc).__name__
            raise errors.StorageCommandFailed(
                f"S3 request `{what}` on {self.where} failed ({code}: {exc}); nothing was assumed, the step "
                "stopped", bucket=self.location.bucket, request=what, error=str(code)) from exc

    def listing(self, path: str) -> tuple[float, Iterator[dict[str, Any]]]:
        """(the store's clock at the first page, every object under the path, page by page). A path that
        holds nothing lists nothing; a bucket that cannot be listed raises."""
        prefix = self.key(path).rstrip("/") + "/"
        pages = self._call("ListObjectsV2", lambda: iter(
            self.client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=prefix)))
        first = self._call("ListObjectsV2", lambda: next(pages, None))
        read_at = _clock(first) if first else time.time()

        def objects() -> Iterator[dict[str, Any]]:
            page = first
            while page is not None:
                yield from page.get("Contents", [])
                page = self._call("ListObjectsV2", lambda: next(pages, None))
        return read_at, objects()

    def _keys(self, path: str) -> list[str]:
        return [obj["Key"] for obj in self.listing(path)[1]]

    def delete(self, keys: Iterable[str]) -> int:
        """Delete these objects, DELETE_BATCH a request; every failure raises. Returns how many."""
        keys = sorted(set(keys))
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start:start + DELETE_BATCH]
            answer = self._call("DeleteObjects", lambda b=batch: self.client.delete_objects(  # type: ignore[misc]
                Bucket=self.location.bucket, Delete={"Objects": [{"Key": k} for k in b], "Quiet": True}))
            failed = answer.get("Errors") or []
            if failed:
                raise errors.StorageCommandFailed(
                    f"S3 DeleteObjects on {self.where} refused {len(failed)} of {len(batch)} keys (first: "
                    f"{failed[0].get('Key')}: {failed[0].get('Code')} {failed[0].get('Message')})",
                    bucket=self.location.bucket, request="DeleteObjects", failed=len(failed))
        return len(keys)

    def put(self, path: str, body: bytes) -> None:
        self._call("PutObject", lambda: self.client.put_object(Bucket=self.location.bucket, Key=self.key(path),
                                                               Body=body))

    def reachable(self) -> None:
        """One listing of the registry's prefix (at most one key): raises when it is refused."""
        self._call("ListObjectsV2", lambda: self.client.list_objects_v2(
            Bucket=self.location.bucket, Prefix=self.key(self.layout.v2) + "/", MaxKeys=1))

    # -- reading -----------------------------------------------------------------------------------

    def _links(self) -> tuple[float, dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        """One listing of every repository: (clock, revisions with times, layer links with times)."""
        read_at, objects = self.listing(self.layout.repositories)
        revisions: dict[str, dict[str, float]] = {}
        layers: dict[str, dict[str, float]] = {}
        for obj in objects:
            path = self.path(obj["Key"])
            if not path.endswith("/link"):
                continue
            when = obj["LastModified"].timestamp()
            if (rev := self.layout.parse_revision_link(path)) is not None:
                revisions.setdefault(rev[0], {})[rev[1]] = when
            elif (layer := self.layout.parse_layer_link(path)) is not None:
                layers.setdefault(layer[0], {})[layer[1]] = when
        return read_at, revisions, layers

    def revision_times(self) -> tuple[float, dict[str, dict[str, float]]]:
        read_at, revisions, _ = self._links()
        return read_at, revisions

    def revisions_since(self, mark: Mark, known: dict[str, set[str]]) -> tuple[float, dict[str, set[str]]]:
        """A listing cannot skip what did not change: every revision is listed again."""
        read_at, revisions = self.revision_times()
        return read_at, {repo: set(times) for repo, times in revisions.items()}

    def revisions(self) -> dict[str, set[str]]:
        return {repo: set(times) for repo, times in self.revision_times()[1].items()}

    def blob_sizes(self, newer_than: Mark | None = None) -> dict[str, int]:
        since = None if newer_than is None else float(newer_than)
        sizes: dict[str, int] = {}
        for obj in self.listing(self.layout.blobs)[1]:
            digest = self.layout.parse_blob_data(self.path(obj["Key"]))
            if digest and (since is None or obj["LastModified"].timestamp() >= since):
                sizes[digest] = int(obj["Size"])
        return sizes

    def recent_links(self, grace: float, now: float | None = None,
                     newer_than: Mark | None = None) -> dict[str, set[str]]:
        cutoff = (now or time.time()) - grace
        _, _, layers = self._links()
        found = {repo: {d for d, t in links.items() if t >= cutoff} for repo, links in layers.items()}
        return {repo: digests for repo, digests in found.items() if digests}

    def recent_links_and_sizes(self, grace: float, now: float, newer_than: Mark,
                               stored_since: Mark) -> tuple[dict[str, set[str]], dict[str, int]]:
        return self.recent_links(grace, now), self.blob_sizes(stored_since)

    def active_uploads(self, within: float, now: float) -> int:
        """Uploads any of whose objects (hash states, data) or multipart parts of its data were
        written within `within` seconds: distribution's s3 writer keeps an upload's data as a multipart upload
        until it is committed, which a listing of objects does not show."""
        cutoff = now - within
        active: set[tuple[str, str]] = set()
        started: set[tuple[str, str]] = set()
        for obj in self.listing(self.layout.repositories)[1]:
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
        for upload in self._multipart(self.layout.repositories):
            match = _UPLOAD.search(self.path(upload["Key"])[len(self.layout.v2):])
            if match and (match.group(1), match.group(2)) not in active and self._written_since(upload, cutoff):
                active.add((match.group(1), match.group(2)))
        return len(active & started)

    def _written_since(self, upload: dict[str, Any], cutoff: float) -> bool:
        """A multipart upload started, or given a part, since `cutoff` (one ListParts for an older one)."""
        if upload["Initiated"].timestamp() >= cutoff:
            return True
        try:
            parts = self.client.list_parts(Bucket=self.location.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return False  # committed or aborted since it was listed: no longer in progress
            raise errors.StorageCommandFailed(f"S3 ListParts on {self.where} failed: {exc}",
                                              bucket=self.location.bucket, request="ListParts") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise errors.StorageCommandFailed(f"S3 ListParts on {self.where} failed: {exc}",
                                              bucket=self.location.bucket, request="ListParts") from exc
        return any(p["LastModified"].timestamp() >= cutoff for p in parts.get("Parts", []))

    def _multipart(self, path: str) -> list[dict[str, Any]]:
        prefix = self.key(path).rstrip("/") + "/"
        pages = self._call("ListMultipartUploads", lambda: list(
            self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.location.bucket, Prefix=prefix)))
        return [u for page in pages for u in page.get("Uploads", [])]

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
        try:
            answer = self.client.get_object(Bucket=self.location.bucket, Key=self.key(self.layout.blob_data(digest)),
                                            Range=f"bytes=0-{limit}")
            data = answer["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "InvalidRange"):
                return None
            raise errors.StorageCommandFailed(f"S3 GetObject on {self.where} failed: {exc}",
                                              bucket=self.location.bucket, request="GetObject") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise errors.StorageCommandFailed(f"S3 GetObject on {self.where} failed: {exc}",
                                              bucket=self.location.bucket, request="GetObject") from exc
        if len(data) > limit or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return None
        return data

    # -- marks: a time is all an object store needs ----------------------------------------------------

    def marks(self, window_id: str, times: dict[str, float]) -> dict[str, Mark]:
        return dict(times)

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
        self.delete(keys)
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
        self.delete(keys)
        return len(sessions)

    def remove_blob_dirs(self, digests: list[str]) -> None:
        """Nothing to do: an object store has no directories, and GC deleted the blobs' objects."""
        return None


def _clock(page: dict[str, Any]) -> float:
    """The store's clock, from the Date header of its answer."""
    date = (page.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return time.time()
