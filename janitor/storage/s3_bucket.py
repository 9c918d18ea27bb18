"""The bucket under a registry, as the S3 driver of the janitor talks to it: one boto3 client, every request
counted (an object store bills them), the store's clock learnt from its answers, listings by prefix page by
page, deletes DELETE_BATCH keys a request. janitor/storage/s3.py builds the Storage interface on it.

An error from the store (unreachable, access denied, no such bucket) raises StorageCommandFailed: a listing
that failed must never pass for an empty one.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast, overload

from janitor import errors
from janitor.storage.layout import Layout
from janitor.storage.s3_location import S3Location

DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
READ_WORKERS = 8  # parallel GETs in read_blobs
# Seconds taken off a worker time turned into the store's: LastModified and Date are whole seconds, and the
# store's clock is known only to within a round trip. A mark too early reads more; one too late misses writes.
CLOCK_SLACK = 1.0
T = TypeVar("T")


class S3Bucket:
    """The registry's bucket under its root directory, reached with boto3."""

    def __init__(self, location: S3Location, client: Any | None = None) -> None:
        self.location = location
        self.layout = Layout(location.root)
        self._count = 0
        self._lock = threading.Lock()
        self._given = client
        self._offset: float | None = None  # a lower bound of (the store's clock - the worker's)
        self._made: Any | None = None
        self._making = threading.Lock()
        # What listings found while the registry refuses writes (S3Storage names each); None while it takes them.
        self._refused: dict[str, Any] | None = None

    @property
    def client(self) -> Any:
        """Made on first use: /readyz opens the storage every few seconds and rarely talks to it. Not a
        functools.cached_property: before Python 3.12 its lock is one for every instance, and a window's
        process forked while a thread of the worker held it (the heartbeat making its client) waited for it
        forever. This lock is the instance's own, and a window makes its own storage."""
        if self._made is None:
            with self._making:
                if self._made is None:
                    client = self._given or self._client()
                    client.meta.events.register("before-send.s3", self._counted)
                    client.meta.events.register("after-call.s3", self._dated)
                    self._made = client
        return self._made

    def _client(self) -> Any:
        # boto3 is imported where it is used: a janitor whose registries all sit on a filesystem never loads
        # it (about 0.1 s of CPU in every process the service starts, the CLI's included).
        import boto3
        import botocore.config

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

    def _dated(self, http_response: Any = None, **_: Any) -> None:
        """Learn the store's clock from an answer's Date: it was at least Date when the answer left, before
        now, so Date - now is a lower bound of the offset."""
        date = getattr(http_response, "headers", {}).get("Date") if http_response is not None else None
        try:
            offset = email.utils.parsedate_to_datetime(date).timestamp() - time.time() if date else None
        except (TypeError, ValueError):
            offset = None
        if offset is not None:
            with self._lock:
                self._offset = offset

    def store_time(self, worker_time: float) -> float:
        """A time on the worker's clock as a time on the store's, early rather than late: an object written
        after `worker_time` has a LastModified at or after the answer (one request learns the clock first)."""
        if self._offset is None:
            self.reachable()
        return worker_time + (self._offset or 0.0) - CLOCK_SLACK

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

    @overload
    def _call(self, what: str, call: Callable[[], T]) -> T: ...

    @overload
    def _call(self, what: str, call: Callable[[], T], absent: tuple[str, ...]) -> T | None: ...

    def _call(self, what: str, call: Callable[[], T], absent: tuple[str, ...] = ()) -> T | None:
        """The request, any failure raised as StorageCommandFailed; None for the error codes in `absent`, which
        answer the question (no such key, an upload committed since it was listed) rather than fail it."""
        import botocore.exceptions  # loaded by the client already: a dictionary lookup

        try:
            return call()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, botocore.exceptions.ClientError) \
                else type(exc).__name__
            if code in absent:
                return None
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
        self._written()
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

    def writes_refused(self, refused: bool) -> None:
        """Told by the window once its fence is proven (True) and before the fence comes down (False). In
        between, nothing but the window writes to the bucket: what a listing found then answers every later read
        of the same thing (the holds' read and the sweep's, each a listing of the whole bucket, become one), and
        any write of the window's own (`put`, `delete`) drops it all."""
        self._refused = {} if refused else None

    def while_refused(self, what: str, read: Callable[[], T]) -> T:
        """`read()`, or while writes are refused, what it returned the first time (see `writes_refused`)."""
        if self._refused is None:
            return read()
        if what not in self._refused:
            self._refused[what] = read()
        return cast(T, self._refused[what])

    def _written(self) -> None:
        if self._refused is not None:
            self._refused.clear()

    def put(self, path: str, body: bytes) -> None:
        self._written()
        self._call("PutObject", lambda: self.client.put_object(Bucket=self.location.bucket, Key=self.key(path),
                                                               Body=body))

    def exists(self, path: str) -> bool:
        """One HeadObject: whether the object is there (a 404 is the answer, any other failure raises)."""
        return self._call("HeadObject", lambda: self.client.head_object(Bucket=self.location.bucket,
                                                                         Key=self.key(path)),
                          absent=("404", "NoSuchKey", "NotFound")) is not None

    def reachable(self) -> None:
        """One listing of the registry's prefix (at most one key): raises when it is refused."""
        self._call("ListObjectsV2", lambda: self.client.list_objects_v2(
            Bucket=self.location.bucket, Prefix=self.key(self.layout.v2) + "/", MaxKeys=1))

    def _multipart(self, path: str) -> list[dict[str, Any]]:
        prefix = self.key(path).rstrip("/") + "/"
        pages = self._call("ListMultipartUploads", lambda: list(
            self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.location.bucket, Prefix=prefix)))
        return [u for page in pages for u in page.get("Uploads", [])]


def _clock(page: dict[str, Any]) -> float:
    """The store's clock, from the Date header of its answer."""
    date = (page.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return time.time()
