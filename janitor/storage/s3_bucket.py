"""The bucket under a registry, as the S3 driver of the janitor talks to it: one boto3 client, every request
counted (an object store bills them), the store's clock learnt from its answers, listings by prefix page by
page, deletes DELETE_BATCH keys a request. janitor/storage/s3.py builds the Storage interface on it.

A listing's pages come one after another (each names the next): a bucket of a million objects is a thousand
round trips in a row, and under the fence every one of them is refused writes. So a prefix listed once is
listed again in key ranges read at once (LIST_WORKERS): the first listing notes every SPLIT_EVERY-th key, and
the next lists (-inf, k1], (k1, k2], ..., (kn, +inf) in parallel, each range from `StartAfter` until a key
beyond its end. The ranges cover every key whatever was written or deleted since, so the result is the same
as one listing's; only the number of pages read in a row shrinks (a window's drain and mark list what its
fence lists again).

An error from the store (unreachable, access denied, no such bucket) raises StorageCommandFailed: a listing
that failed must never pass for an empty one.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import email.utils
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast, overload

from janitor import errors
from janitor.storage.layout import Layout
from janitor.storage.s3_location import S3Location

DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
READ_WORKERS = 8  # parallel GETs in read_blobs
LIST_WORKERS = 8  # key ranges of one listing read at once
LIST_PAGE = 1000  # keys a page (S3's most)
# Keys a range holds when its splits were noted: less than a page, so that a range grown a little since is
# still read in one request (its page then also holds the first keys of the next range, left out).
SPLIT_EVERY = 900
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
        self._splits: dict[str, list[str]] = {}  # prefix -> keys its last whole listing noted (SPLIT_EVERY)
        self._in_a_row = 0
        self._wrote_at = float("-inf")  # the worker's clock at the janitor's last write to the bucket
        self._written_log: Any = None  # what the registry wrote since a point (S3Storage.follow), under the fence

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
        import botocore.session

        loc = self.location
        # botocore parses every timestamp with dateutil: 71 ms of CPU for a 1,000-key listing page, 15 ms for
        # the rest of it. Its own hook for another parser (what the AWS CLI uses) reads the ISO 8601 of
        # listings directly and leaves any other form to botocore's.
        session = botocore.session.get_session()
        session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
        config = botocore.config.Config(
            s3={"addressing_style": "path" if loc.forcepathstyle else "auto"},
            retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60,
            max_pool_connections=max(READ_WORKERS, LIST_WORKERS) * 2)
        return boto3.session.Session(botocore_session=session).client(
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

    def requests_in_a_row(self) -> int | None:
        """Listing requests so far counted as a store that answers requests at once would take them: each
        listing adds the pages its threads read one after another (every page, for a listing in one range).
        Time spent listing is about this times a page's round trip, while the janitor's CPU keeps up."""
        return self._in_a_row

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
        """(the store's clock when the listing began, every object under the path in key order). A path that
        holds nothing lists nothing; a bucket that cannot be listed raises. In one range the first time, page by
        page as the caller reads; once its keys were noted, in ranges at once (see the module's docstring)."""
        prefix = self.key(path).rstrip("/") + "/"
        splits = self._splits.get(prefix)
        if not splits:
            read_at, pages = self._range(prefix, None, None)
            return read_at, self._noting(prefix, pages)
        bounds: list[str | None] = [None, *splits, None]
        read = self._at_once([(prefix, after, upto) for after, upto in itertools.pairwise(bounds)])
        objects = [obj for _, found in read for obj in found]
        self._note(prefix, objects)
        return min(at for at, _ in read), iter(objects)

    def listings(self, paths: list[str]) -> list[list[dict[str, Any]]]:
        """Every object under each of these paths (small ones: a repository's links), all listed at once."""
        return [found for _, found in self._at_once([(self.key(p).rstrip("/") + "/", None, None) for p in paths])]

    def _at_once(self, ranges: list[tuple[str, str | None, str | None]]) -> list[tuple[float, list[dict[str, Any]]]]:
        """(clock, objects) of each (prefix, after, upto) range, LIST_WORKERS read at once; the pages that had to
        follow one another counted (`requests_in_a_row`)."""
        if not ranges:
            return []
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(LIST_WORKERS, len(ranges))) as pool:
            read = list(pool.map(lambda r: self._whole_range(*r), ranges))
        with self._lock:
            self._in_a_row += _in_a_row([pages for _, _, pages in read], LIST_WORKERS)
        return [(at, found) for at, found, _ in read]

    def heads(self, paths: list[str], workers: int) -> list[dict[str, Any] | None]:
        """A HeadObject of each path, `workers` at once: its answer, or None where no object is."""
        if not paths:
            return []
        assert self.client is not None  # made here, not by several threads at once
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
            return list(pool.map(self._head, paths))

    def _head(self, path: str) -> dict[str, Any] | None:
        return self._call("HeadObject", lambda: self.client.head_object(Bucket=self.location.bucket, Key=self.key(path)),
                          absent=("404", "NoSuchKey", "NotFound"))

    def _range(self, prefix: str, after: str | None, upto: str | None) -> tuple[float, Iterator[list[dict[str, Any]]]]:
        """(the store's clock at the first page, the objects of each page in turn) with keys in (after, upto]."""
        config = {"PageSize": LIST_PAGE}
        pages = self._call("ListObjectsV2", lambda: iter(self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=prefix, PaginationConfig=config,
            **({"StartAfter": after} if after is not None else {}))))
        first = self._call("ListObjectsV2", lambda: next(pages, None))
        read_at = _clock(first) if first else time.time()

        def objects() -> Iterator[list[dict[str, Any]]]:
            page = first
            while page is not None:
                found = page.get("Contents", [])
                if upto is not None and found and found[-1]["Key"] > upto:
                    yield [obj for obj in found if obj["Key"] <= upto]
                    return
                yield found
                page = self._call("ListObjectsV2", lambda: next(pages, None))
        return read_at, objects()

    def _whole_range(self, prefix: str, after: str | None, upto: str | None) -> tuple[float, list[dict[str, Any]], int]:
        """(clock, the range's objects, pages read)."""
        read_at, pages = self._range(prefix, after, upto)
        found: list[dict[str, Any]] = []
        count = 0
        for page in pages:
            found.extend(page)
            count += 1
        return read_at, found, max(count, 1)

    def _noting(self, prefix: str, pages: Iterator[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        """The objects of these pages; their keys noted for the next listing once all were read."""
        seen: list[dict[str, Any]] = []
        for page in pages:
            with self._lock:
                self._in_a_row += 1
            seen.extend(page)
            yield from page
        self._note(prefix, seen)

    def _note(self, prefix: str, objects: list[dict[str, Any]]) -> None:
        """Every SPLIT_EVERY-th key (the last one never: nothing would follow it); none for a prefix that fits
        in one range, which is listed in one request."""
        splits = [objects[i]["Key"] for i in range(SPLIT_EVERY - 1, len(objects) - 1, SPLIT_EVERY)]
        if splits:
            self._splits[prefix] = splits
        else:
            self._splits.pop(prefix, None)

    def _keys(self, path: str) -> list[str]:
        return [obj["Key"] for obj in self.listing(path)[1]]

    def delete(self, keys: Iterable[str], unlisted: bool = False) -> int:
        """Delete these objects, DELETE_BATCH a request; every failure raises. Returns how many. `unlisted`:
        objects no listing the janitor keeps holds (upload sessions), so none of those goes stale."""
        keys = sorted(set(keys))
        if not unlisted:
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
        self._written_log = None  # under the fence, only what `follow` is told there may stand in for listings

    def while_refused(self, what: str, read: Callable[[], T]) -> T:
        """`read()`, or while writes are refused, what it returned the first time (see `writes_refused`)."""
        if self._refused is None:
            return read()
        if what not in self._refused:
            self._refused[what] = read()
        return cast(T, self._refused[what])

    def _written(self) -> None:
        self._wrote_at = time.time()  # the registry's log does not show this write: listings begun before miss it
        if self._refused is not None:
            self._refused.clear()

    def put(self, path: str, body: bytes) -> None:
        self._written()
        self._call("PutObject", lambda: self.client.put_object(Bucket=self.location.bucket, Key=self.key(path),
                                                               Body=body))

    def exists(self, path: str) -> bool:
        """One HeadObject: whether the object is there (a 404 is the answer, any other failure raises)."""
        return self._head(path) is not None

    def reachable(self) -> None:
        """One listing of the registry's prefix (at most one key): raises when it is refused."""
        self._call("ListObjectsV2", lambda: self.client.list_objects_v2(
            Bucket=self.location.bucket, Prefix=self.key(self.layout.v2) + "/", MaxKeys=1))

    def _multipart(self, path: str) -> list[dict[str, Any]]:
        prefix = self.key(path).rstrip("/") + "/"
        pages = self._call("ListMultipartUploads", lambda: list(
            self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.location.bucket, Prefix=prefix)))
        with self._lock:
            self._in_a_row += len(pages)  # pages of a listing, one after another
        return [u for page in pages for u in page.get("Uploads", [])]


def _in_a_row(pages: list[int], workers: int) -> int:
    """Pages of these ranges that follow one another on `workers` threads taking each range in turn, at one
    page a round trip (each range goes to the thread that is free first)."""
    loads = [0] * min(workers, len(pages))
    for count in pages:
        loads[loads.index(min(loads))] += count
    return max(loads, default=0)


def _timestamp(value: str) -> datetime.datetime:
    """An S3 timestamp as botocore would give it (aware, UTC): a listing's ISO 8601 read directly, any other
    form (an HTTP date in a header) by botocore."""
    try:
        found = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, TypeError, AttributeError):
        found = None
    if found is None or found.tzinfo is None:
        import botocore.utils

        return botocore.utils.parse_timestamp(value)
    return found


def _clock(page: dict[str, Any]) -> float:
    """The store's clock, from the Date header of its answer."""
    date = (page.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return time.time()
