"""S3Storage against a real S3 API (moto in server mode on loopback): distribution's layout read and changed
through boto3, each answer checked against objects written the way distribution writes them."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from types import SimpleNamespace

import botocore.utils
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janitor import errors
from janitor.registry.journal import Written
from janitor.storage import s3_bucket
from janitor.storage.s3 import S3Location, S3Storage, location_from
from tests.conftest import S3Endpoint


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hexd(digest: str) -> str:
    return digest.split(":", 1)[1]


class Store:
    """A bucket, the S3Storage under test on it, and a way to lay out objects as distribution does."""

    def __init__(self, endpoint: S3Endpoint, rootdirectory: str = "/registry") -> None:
        self.endpoint = endpoint
        self.bucket = endpoint.new_bucket()
        self.client = endpoint.client()
        self.location = S3Location(self.bucket, endpoint.region, endpoint.url, rootdirectory, True, False,
                                   endpoint.access_key, endpoint.secret_key)
        self.storage = S3Storage(self.location)
        root = rootdirectory.strip("/")
        self.v2 = (root + "/" if root else "") + "docker/registry/v2/"

    def put(self, key: str, body: bytes = b"") -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.v2 + key, Body=body)

    def blob(self, data: bytes) -> str:
        digest = digest_of(data)
        self.put(f"blobs/sha256/{hexd(digest)[:2]}/{hexd(digest)}/data", data)
        return digest

    def revision(self, repo: str, digest: str) -> None:
        self.put(f"repositories/{repo}/_manifests/revisions/sha256/{hexd(digest)}/link", digest.encode())

    def layer(self, repo: str, digest: str) -> None:
        self.put(f"repositories/{repo}/_layers/sha256/{hexd(digest)}/link", digest.encode())

    def tag(self, repo: str, tag: str, digest: str) -> None:
        self.put(f"repositories/{repo}/_manifests/tags/{tag}/current/link", digest.encode())
        self.put(f"repositories/{repo}/_manifests/tags/{tag}/index/sha256/{hexd(digest)}/link", digest.encode())

    def keys(self) -> set[str]:
        found: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            found.update(o["Key"][len(self.v2):] for o in page.get("Contents", []))
        return found


@pytest.fixture
def store(s3_server: S3Endpoint) -> Store:
    return Store(s3_server)


def test_revisions_and_layer_links_come_with_the_stores_times(store: Store) -> None:
    before = time.time() - 2
    a, b, layer = store.blob(b"manifest a"), store.blob(b"manifest b"), store.blob(b"layer")
    store.revision("team/app", a)
    store.revision("team/app/sub", b)  # nested: its own repository
    store.layer("team/app", layer)
    store.tag("team/app", "v1", a)

    read_at, times = store.storage.revision_times()
    after = time.time() + 2  # after the read, which can take seconds on a loaded machine

    assert set(times) == {"team/app", "team/app/sub"}
    assert set(times["team/app"]) == {a} and set(times["team/app/sub"]) == {b}
    assert all(before <= t <= after for repo in times.values() for t in repo.values())
    assert before <= read_at <= after
    assert store.storage.revisions() == {"team/app": {a}, "team/app/sub": {b}}
    assert store.storage.revisions_since(0.0, {})[1] == {"team/app": {a}, "team/app/sub": {b}}
    assert store.storage.recent_links(60) == {"team/app": {layer}}
    assert store.storage.recent_links(60, now=time.time() + 600) == {}  # linked longer ago than the grace


def test_blob_sizes_all_or_only_those_stored_since_a_mark(store: Store) -> None:
    old = store.blob(b"x" * 10)
    marks = store.storage.marks("w", {"since": time.time() + 60})
    assert store.storage.blob_sizes() == {old: 10}
    assert store.storage.blob_sizes(marks["since"]) == {}
    assert store.storage.blob_sizes(time.time() - 60) == {old: 10}
    links, sizes = store.storage.recent_links_and_sizes(60, time.time(), time.time() - 61, time.time() - 60)
    assert links == {} and sizes == {old: 10}


def test_under_the_fence_each_part_of_the_bucket_is_listed_once_until_the_window_writes(store: Store) -> None:
    """The holds' read and the sweep's list the whole bucket: with writes refused (only the window writes),
    the second is answered from the first; a write of the window's own, or the fence coming down, reads anew."""
    layer = store.blob(b"layer")
    store.layer("team/app", layer)
    s = store.storage

    def reads(fn) -> int:  # type: ignore[no-untyped-def]
        before = s.requests()
        fn()
        return s.requests() - before
    both = lambda: (s.recent_links_and_sizes(60, time.time(), 0.0, 0.0), s.revisions_since(0.0, {}))  # noqa: E731
    s.reachable()  # the store's clock learnt (one request, the first time a worker's time is converted)
    assert reads(both) == 3  # writes taken: every read lists (repositories twice, blobs once)
    s.writes_refused(True)
    assert reads(both) == 2 and reads(both) == 0 and s.blob_sizes() == {layer: 5}
    s.write_manifests([("team/app", digest_of(b"{}"), b"{}")])  # the window's own write: read again
    assert reads(lambda: s.blob_sizes()) == 1 and s.blob_sizes() == {layer: 5, digest_of(b"{}"): 2}
    assert s.revisions_since(0.0, {})[1] == {"team/app": {digest_of(b"{}")}}
    s.remove_manifests([("team/app", digest_of(b"{}"))])
    assert s.blob_sizes() == {layer: 5} and s.revisions() == {}
    s.writes_refused(False)
    store.blob(b"pushed once writes are back")
    assert reads(lambda: s.blob_sizes()) == 1 and len(s.blob_sizes()) == 2


def test_a_mark_on_the_workers_clock_misses_nothing_written_after_it(store: Store) -> None:
    """LastModified is whole seconds on the store's clock: a write right after a mark still reads as newer."""
    for n in range(3):
        marks = store.storage.marks("w", {"since": time.time()})
        fresh = store.blob(f"written after the mark {n}".encode())
        assert fresh in store.storage.blob_sizes(marks["since"])


def test_worker_times_become_the_stores_clock_early_rather_than_late(store: Store) -> None:
    """A store whose clock runs 100 s ahead of the worker's (its Date says so): a worker time is turned into
    the store's, less a second for whole-second stamps."""
    ahead = datetime.fromtimestamp(time.time() + 100, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    store.storage._dated(http_response=SimpleNamespace(headers={"Date": ahead}))
    now = time.time()
    assert now + 97 <= store.storage.store_time(now) <= now + 100
    assert store.storage.marks("w", {"m": now})["m"] == pytest.approx(store.storage.store_time(now), abs=1)


def test_layered_repositories_are_those_with_layer_links_as_distributions_catalog_walk_finds_them(
        store: Store) -> None:
    a, b = store.blob(b"a"), store.blob(b"b")
    store.layer("team/app", a)
    store.layer("team/app/sub", b)  # nested: a repository of its own
    store.revision("team/bare", a)  # manifests only: GC does not enumerate it
    store.tag("team/bare", "_layers", a)  # a tag named like the directory is not one
    assert store.storage.layered_repositories() == {"team/app", "team/app/sub"}
    assert store.storage.layered_repositories(["team/app", "team/bare", "nothing"]) == {"team/app"}
    assert store.storage.layered_repositories([]) == set()

    # The mark's reads: revisions listed after the mark answer for the layered repositories too, with no
    # request; a listing begun before the mark does not, and lists again.
    s = store.storage
    since = s.marks("w", {"gc": time.time() - 1})["gc"]
    s.revision_times()
    counted = s.requests()
    assert s.layered_repositories(since=since) == {"team/app", "team/app/sub"} and s.requests() == counted
    store.layer("team/bare", a)
    assert s.layered_repositories(since=s.marks("w", {"gc": time.time() + 5})["gc"]) == \
        {"team/app", "team/app/sub", "team/bare"}
    assert s.requests() == counted + 1


def test_blobs_are_linked_where_missing_and_deleted_a_thousand_at_a_time(store: Store) -> None:
    linked, stored = store.blob(b"linked"), store.blob(b"stored")
    store.layer("team/app", linked)
    gone = digest_of(b"never stored")
    before = store.keys()
    assert store.storage.link_blobs("team/app", [linked, stored, gone]) == [gone]
    assert store.keys() - before == {f"repositories/team/app/_layers/sha256/{hexd(stored)}/link"}
    with pytest.raises(errors.StoragePathRefused):
        store.storage.link_blobs("../x", [stored])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        many = list(pool.map(lambda i: store.blob(b"%d" % i), range(1001)))
    checks: list[int] = []
    counted = store.storage.requests()
    store.storage.delete_blobs([*many, linked], lambda: checks.append(1))
    assert len(checks) == 2 and store.storage.requests() == counted + 2
    assert not any(k.startswith("blobs/") and hexd(linked) in k for k in store.keys())
    assert store.storage.blob_sizes() == {stored: len(b"stored")}


def test_uploads_in_progress_are_seen_by_their_objects_and_their_multipart_data_cancelled_ones_not(store: Store) -> None:
    assert store.storage.active_uploads(60, time.time()) == 0
    # As distribution starts an upload: `startedat`, then its data as a multipart upload (open until committed).
    store.put("repositories/team/app/_uploads/11111111-aaaa/startedat", b"2026-01-01T00:00:00Z")
    store.client.create_multipart_upload(Bucket=store.bucket,
                                         Key=store.v2 + "repositories/team/app/_uploads/11111111-aaaa/data")
    assert store.storage.active_uploads(60, time.time() + 600) == 0  # started long ago, nothing written since
    store.put("repositories/team/app/_uploads/11111111-aaaa/hashstates/sha256/1024", b"state")
    assert store.storage.active_uploads(60, time.time()) == 1
    # An upload's objects with no multipart upload open: committed or cancelled, not in progress.
    store.put("repositories/team/done/_uploads/44444444-dddd/startedat", b"2026-01-01T00:00:00Z")
    store.put("repositories/team/done/_uploads/44444444-dddd/hashstates/sha256/1024", b"state")
    assert store.storage.active_uploads(60, time.time()) == 1
    store.put("repositories/team/other/_uploads/22222222-bbbb/startedat", b"2026-01-01T00:00:00Z")
    key = store.v2 + "repositories/team/other/_uploads/22222222-bbbb/data"
    started = store.client.create_multipart_upload(Bucket=store.bucket, Key=key)  # data in flight: not an object
    store.client.upload_part(Bucket=store.bucket, Key=key, UploadId=started["UploadId"], PartNumber=1, Body=b"d" * 64)
    assert store.storage.active_uploads(60, time.time()) == 2
    assert store.storage.active_uploads(60, time.time() + 600) == 0  # written longer ago than `within`
    # Cancelled: distribution removes `startedat` but on S3 leaves the hash states; that upload has ended.
    store.put("repositories/team/gone/_uploads/33333333-cccc/hashstates/sha256/0", b"state")
    assert store.storage.active_uploads(60, time.time()) == 2
    # Committed between the listing and its parts' listing: done, not an error.
    gone = store.storage._written_since({"Key": key, "UploadId": "no-such-upload",
                                         "Initiated": datetime.fromtimestamp(0, timezone.utc)}, time.time() - 60)
    assert gone is False


def test_read_blobs_returns_only_whole_verified_bytes(store: Store) -> None:
    good, large = store.blob(b'{"a": 1}'), store.blob(b"y" * 100)
    lying = digest_of(b"what the name promises")
    store.put(f"blobs/sha256/{hexd(lying)[:2]}/{hexd(lying)}/data", b"something else")
    missing = digest_of(b"never stored")

    assert store.storage.read_blobs([good, large, lying, missing], 50) == {good: b'{"a": 1}'}
    assert store.storage.read_blobs([large], 100) == {large: b"y" * 100}


def test_holds_are_written_as_manifests_and_removed_with_their_blob(store: Store) -> None:
    body = b'{"schemaVersion": 2, "hold": true}'
    digest = digest_of(body)
    store.storage.write_manifests([("team/app", digest, body)])

    assert store.storage.revisions() == {"team/app": {digest}}
    assert store.storage.read_blobs([digest], 1024) == {digest: body}

    store.storage.remove_manifests([("team/app", digest)])
    assert store.keys() == set()


def test_an_emptied_repository_is_removed_and_nothing_else(store: Store) -> None:
    a, b, c = store.blob(b"a"), store.blob(b"b"), store.blob(b"c")
    store.revision("team/app", a)
    store.layer("team/app", a)
    store.revision("team/app/sub", b)
    store.tag("team/app/sub", "v1", b)
    store.revision("team/apps", c)
    store.put("repositories/team/app/_uploads/old-upload/startedat", b"x")

    # An upload object is there: kept, nothing removed.
    assert store.storage.remove_repository("team/app") == "an upload into it is in flight"
    store.client.delete_object(Bucket=store.bucket, Key=store.v2 + "repositories/team/app/_uploads/old-upload/startedat")
    assert store.storage.remove_repository("team/app") is None

    assert store.storage.revisions() == {"team/app/sub": {b}, "team/apps": {c}}
    assert not any(k.startswith("repositories/team/app/_") for k in store.keys())
    assert store.storage.remove_repository("team/app/sub") == "tags were pushed to it after the deletion"
    with pytest.raises(errors.StoragePathRefused):
        store.storage.remove_repository("../../etc")


def test_listings_page_and_deletes_go_a_thousand_at_a_time_every_request_counted(store: Store) -> None:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: store.put(f"repositories/many/_layers/sha256/{i:064x}/link", b"x"), range(1001)))
    counted = store.storage.requests()
    keys = store.storage._keys(store.storage.layout.repositories)
    assert len(keys) == 1001
    assert store.storage.requests() == counted + 2  # two pages of 1,000

    counted = store.storage.requests()
    assert store.storage.delete(keys) == 1001
    assert store.storage.requests() == counted + 2  # DeleteObjects takes 1,000 keys
    assert store.keys() == set()


@contextlib.contextmanager
def small_pages(page: int, split_every: int) -> Iterator[None]:
    """Pages and ranges of a few keys, so that a few dozen objects take many of each."""
    was = s3_bucket.LIST_PAGE, s3_bucket.SPLIT_EVERY
    s3_bucket.LIST_PAGE, s3_bucket.SPLIT_EVERY = page, split_every
    try:
        yield
    finally:
        s3_bucket.LIST_PAGE, s3_bucket.SPLIT_EVERY = was


_KEYS = st.sets(st.text(alphabet="ab/-z", min_size=1, max_size=5), max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=_KEYS, added=_KEYS, removed=st.data(), page=st.integers(1, 4), split_every=st.integers(1, 6))
def test_a_listing_in_key_ranges_finds_exactly_what_one_listing_would(
        s3_server: S3Endpoint, before: set[str], added: set[str], removed: st.DataObject, page: int,
        split_every: int) -> None:
    """The second listing of a prefix reads the key ranges the first one noted, at once: whatever was written
    or deleted between the two, in any range, on a range's bound or beyond the last, it finds every object under
    the prefix in key order, nothing twice and nothing from beside the prefix."""
    store = Store(s3_server)
    gone = removed.draw(st.sets(st.sampled_from(sorted(before)), max_size=len(before)) if before else st.just(set()))
    with small_pages(page, split_every):
        for key in before:
            store.put("repositories/" + key)
        store.put("repositorieZ")  # beside the prefix, after it in key order
        first = [o["Key"] for o in store.storage.listing(store.storage.layout.repositories)[1]]
        for key in added:
            store.put("repositories/" + key)
        for key in gone - added:
            store.client.delete_object(Bucket=store.bucket, Key=store.v2 + "repositories/" + key)
        second = [o["Key"] for o in store.storage.listing(store.storage.layout.repositories)[1]]
    assert first == sorted(store.v2 + "repositories/" + k for k in before)
    assert second == sorted(store.v2 + "repositories/" + k for k in (before - gone) | added)


def test_a_prefix_listed_again_is_read_in_ranges_at_once_with_as_many_requests(store: Store) -> None:
    """30 keys in pages of 10, a range noted every 8: three pages in a row the first time; then four ranges read
    together, one request each (a store answering requests at once takes one page's time, not three)."""
    with small_pages(10, 8):
        for i in range(30):
            store.blob(b"blob %d" % i)
        s = store.storage
        counted, in_a_row = s.requests(), s.requests_in_a_row()
        assert len(s.blob_sizes()) == 30
        assert (s.requests() - counted, s.requests_in_a_row() - in_a_row) == (3, 3)
        store.blob(b"pushed between the two listings")
        counted, in_a_row = s.requests(), s.requests_in_a_row()
        assert len(s.blob_sizes()) == 31
        assert (s.requests() - counted, s.requests_in_a_row() - in_a_row) == (4, 1)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)),
       st.sampled_from(["%Y-%m-%dT%H:%M:%S.{ms}Z", "%Y-%m-%dT%H:%M:%SZ", "%a, %d %b %Y %H:%M:%S GMT",
                        "%Y-%m-%dT%H:%M:%S.{ms}+00:00", "%Y-%m-%d"]))
def test_timestamps_are_read_as_botocore_reads_them(when: datetime, form: str) -> None:
    """The janitor's client reads a listing's ISO 8601 itself (botocore's dateutil was most of a page's CPU);
    every form gives what botocore would."""
    text = when.strftime(form.replace("{ms}", f"{when.microsecond // 1000:03d}"))
    assert s3_bucket._timestamp(text) == botocore.utils.parse_timestamp(text)


def test_ranges_in_a_row_are_what_the_threads_read_one_after_another() -> None:
    assert s3_bucket._in_a_row([1] * 27, 8) == 4
    assert s3_bucket._in_a_row([1] * 8, 8) == 1
    assert s3_bucket._in_a_row([3, 1, 1, 1], 2) == 3
    assert s3_bucket._in_a_row([5], 8) == 5


def test_keys_follow_the_rootdirectory_as_distribution_does(s3_server: S3Endpoint) -> None:
    for root, prefix in (("", "docker/registry/v2/"), ("/", "docker/registry/v2/"), ("/a/b/", "a/b/docker/registry/v2/")):
        store = Store(s3_server, root)
        digest = store.blob(b"m")
        store.revision("r", digest)
        assert store.v2 == prefix
        assert store.storage.revisions() == {"r": {digest}}
        assert store.storage.where == f"s3://{store.bucket}" + ("/a/b" if root == "/a/b/" else "")


def test_a_store_that_cannot_be_listed_fails_instead_of_looking_empty(s3_server: S3Endpoint) -> None:
    gone = S3Storage(S3Location("no-such-bucket", "us-east-1", s3_server.url, "", True, False, "k", "s"))
    with pytest.raises(errors.StorageCommandFailed, match="NoSuchBucket"):
        gone.revisions()
    with pytest.raises(errors.StorageCommandFailed):
        gone.reachable()
    closed = S3Storage(S3Location("b", "us-east-1", "http://127.0.0.1:9", "", True, False, "k", "s"))
    with pytest.raises(errors.StorageCommandFailed):
        closed.blob_sizes()


def test_the_registrys_s3_settings_are_read_environment_first() -> None:
    config = {"storage": {"s3": {"bucket": "from-file", "region": "eu-west-1", "regionendpoint": "minio:9000",
                                 "rootdirectory": "/r", "forcepathstyle": "true", "secure": False,
                                 "accesskey": "file-key", "secretkey": "file-secret"}}}
    loc = location_from({"REGISTRY_STORAGE_S3_BUCKET": "from-env", "REGISTRY_STORAGE_S3_SECURE": "true"}, config)
    assert (loc.bucket, loc.region, loc.rootdirectory, loc.forcepathstyle, loc.secure) == \
        ("from-env", "eu-west-1", "/r", True, True)
    assert loc.endpoint_url == "https://minio:9000" and loc.accesskey == "file-key"
    assert "file-secret" not in repr(loc) and "file-secret" not in str(loc.as_dict())
    assert location_from({}, {"storage": {"s3": {"bucket": "b", "secure": "false", "regionendpoint": "h:1"}}}
                         ).endpoint_url == "http://h:1"
    assert location_from({}, {"storage": {"s3": {"bucket": "b"}}}).endpoint_url is None  # AWS itself
    with pytest.raises(errors.StorageConfigInvalid, match="no bucket"):
        location_from({}, {"storage": {"s3": {"region": "x"}}})


_REPOS = st.sampled_from(["a", "b/c", "b/c/d", "e"])
_CHANGES = st.lists(st.tuples(st.sampled_from(["revision", "layer", "unlink", "upload", "manifest"]), _REPOS,
                              st.integers(0, 9)), max_size=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(st.tuples(st.sampled_from(["revision", "layer"]), _REPOS, st.integers(0, 5)), max_size=12),
       changes=_CHANGES)
def test_under_the_fence_the_logged_repositories_listed_again_read_as_a_whole_listing(
        s3_server: S3Endpoint, before: list[tuple[str, str, int]], changes: list[tuple[str, str, int]]) -> None:
    """The mark lists the bucket whole after the window's marker; the registry then writes (each change into a
    repository its log names, with the digest an upload names, none for a manifest PUT by tag). Under the fence
    the view built from the log must be what a whole listing reads: revisions, layer links and their times,
    the repositories with layers, every blob and its size. (A manifest PUT by tag whose revision is deleted by
    digest before the fence: the DELETE names the digest, and its data is looked up.)"""
    s = Store(s3_server)
    blobs = [s.blob(f"blob {i}".encode()) for i in range(6)]
    for kind, repo, n in before:
        (s.revision if kind == "revision" else s.layer)(repo, blobs[n])
    since = time.time()
    storage = s.storage
    storage.revision_times()
    storage.blob_sizes()
    touched, named = _registry_writes(s, blobs, changes)

    storage.writes_refused(True)
    reads = storage.follow(Written(since, frozenset(touched), frozenset(named), len(changes)))
    assert reads == {"repositories": len(touched), "blobs_named": len(named), "write_requests": len(changes)}
    asked = storage.requests()
    followed = (storage.revision_times()[1], storage.recent_links(3600), storage.layered_repositories(),
                storage.blob_sizes())
    # Two listings per repository written to, a HeadObject per blob that may be new: nothing else.
    assert (storage.requests() or 0) - (asked or 0) <= 2 * len(touched) + len(named) + 2 * len(changes)
    whole = S3Storage(s.location)
    assert followed == (whole.revision_times()[1], whole.recent_links(3600), whole.layered_repositories(),
                        whole.blob_sizes())


def _registry_writes(s: Store, blobs: list[str], changes: list[tuple[str, str, int]]) -> tuple[set[str], set[str]]:
    """What the registry writes for each change, into a repository its log names; (those repositories, the
    digests the logged requests name)."""
    touched: set[str] = set()
    named: set[str] = set()
    for kind, repo, n in changes:
        touched.add(repo)
        if kind == "revision":
            s.revision(repo, blobs[n % len(blobs)])
        elif kind == "layer":
            s.layer(repo, blobs[n % len(blobs)])
        elif kind == "unlink":  # a DELETE of a manifest or a layer names its digest in the path
            links = sorted(k for k in s.keys() if k.startswith(f"repositories/{repo}/_") and k.endswith("/link")
                           and "/_manifests/tags/" not in k)
            if links:
                s.client.delete_object(Bucket=s.bucket, Key=s.v2 + links[n % len(links)])
                named.add("sha256:" + links[n % len(links)].split("/")[-2])
        elif kind == "upload":
            digest = s.blob(f"uploaded {n}".encode())
            s.layer(repo, digest)
            named.add(digest)
        else:  # a manifest PUT by tag: its data, then its revision link; the log names no digest
            s.revision(repo, s.blob(f"manifest {n}".encode()))
    return touched, named


def _whole(s: Store) -> tuple[object, ...]:
    whole = S3Storage(s.location)
    return whole.revision_times()[1], whole.recent_links(3600), whole.layered_repositories(), whole.blob_sizes()


def _read(storage: S3Storage) -> tuple[object, ...]:
    return (storage.revision_times()[1], storage.recent_links(3600), storage.layered_repositories(),
            storage.blob_sizes())


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(st.tuples(st.sampled_from(["revision", "layer"]), _REPOS, st.integers(0, 5)), max_size=10),
       swept=st.sets(st.integers(0, 5), max_size=3), early=_CHANGES, late=_CHANGES, fenced=_CHANGES)
def test_a_view_carried_to_the_next_window_and_brought_up_by_the_log_reads_as_a_whole_listing(
        s3_server: S3Endpoint, before: list[tuple[str, str, int]], swept: set[int],
        early: list[tuple[str, str, int]], late: list[tuple[str, str, int]],
        fenced: list[tuple[str, str, int]]) -> None:
    """One window's fence reads the bucket and sweeps; the view it carries, with the writes the next run of
    the registry logs (before the next window's first read, before its marker, then before its fence), must
    read as a whole listing at each of those points, listing only the repositories written to."""
    s = Store(s3_server)
    blobs = [s.blob(f"blob {i}".encode()) for i in range(6)]
    for kind, repo, n in before:
        (s.revision if kind == "revision" else s.layer)(repo, blobs[n])
    one = s.storage
    one.writes_refused(True)
    one.revision_times()
    one.blob_sizes()
    one.delete_blobs([blobs[i] for i in sorted(swept)])
    one.writes_refused(False)
    view = one.carry()
    assert view is not None

    started = time.time()  # the next run of the registry
    touched, named = _registry_writes(s, blobs, early)
    two = S3Storage(s.location)
    assert two.resume(view, "run-1", Written(started, frozenset(touched), frozenset(named), len(early)))
    asked = two.requests() or 0
    assert _read(two) == _whole(s)  # the delete step's reads
    assert (two.requests() or 0) - asked <= 2 * (2 * len(touched) + len(named) + 2 * len(early)) + 1

    more, more_named = _registry_writes(s, blobs, late)
    marker = time.time()
    rebased = two.rebase(Written(marker, frozenset(touched | more), frozenset(named | more_named),
                                 len(early) + len(late)))
    assert rebased is not None and rebased["repositories"] == len(touched | more)
    asked = two.requests() or 0
    assert _read(two) == _whole(s)  # the mark's reads: nothing listed again
    assert two.requests() == asked

    last, last_named = _registry_writes(s, blobs, fenced)
    two.writes_refused(True)
    assert two.follow(Written(marker, frozenset(last), frozenset(last_named), len(fenced))) is not None
    assert _read(two) == _whole(s)
    assert two.carry() is not None


def test_a_carried_view_is_dropped_by_the_janitors_own_write_and_not_kept_past_an_unseen_one(store: Store) -> None:
    a = store.blob(b"a")
    store.revision("team/app", a)
    one = store.storage
    one.writes_refused(True)
    one.revision_times()
    one.blob_sizes()
    one.write_manifests([("team/app", store.blob(b"b"), b"b")])  # a write the view does not follow
    assert one.carry() is None
    one.revision_times()
    one.blob_sizes()
    one.writes_refused(False)
    view = one.carry()
    assert view is not None

    two = S3Storage(store.location)
    assert two.resume(view, "run-1", Written(time.time(), frozenset(), frozenset(), 0))
    asked = two.requests()
    assert two.revisions() == {"team/app": {a, digest_of(b"b")}}
    assert two.requests() == asked  # nothing was logged: nothing listed
    two.link_blobs("team/app", [a])  # the janitor's own write, before any fence: the next read lists whole
    assert two.carried_run is None
    assert two.revisions() == {"team/app": {a, digest_of(b"b")}}
    assert (two.requests() or 0) > (asked or 0)
    assert not S3Storage(store.location).resume(b"not a view", "run-1", Written(0.0, frozenset(), frozenset(), 0))


def test_the_log_is_not_followed_past_the_janitors_own_writes_nor_for_listings_older_than_its_marker(
        store: Store) -> None:
    a = store.blob(b"a")
    store.revision("team/app", a)
    storage = store.storage
    storage.revision_times()
    storage.blob_sizes()
    since = time.time()
    store.revision("team/other", a)  # before the marker's point, after the listing: only a whole listing sees it
    storage.writes_refused(True)
    assert storage.follow(Written(since, frozenset(), frozenset(), 0)) is None
    assert storage.revisions() == {"team/app": {a}, "team/other": {a}}

    storage.writes_refused(False)
    since = time.time()
    storage.revision_times()
    storage.blob_sizes()
    storage.writes_refused(True)
    assert storage.follow(Written(since, frozenset(), frozenset(), 0)) is not None
    asked = storage.requests()
    assert storage.revisions() == {"team/app": {a}, "team/other": {a}}
    assert storage.requests() == asked  # nothing was written since: nothing is listed again
    storage.write_manifests([("team/held", a, b"a")])  # the window's own write: its log never shows it
    assert storage.revisions() == {"team/app": {a}, "team/other": {a}, "team/held": {a}}
    assert (storage.requests() or 0) > (asked or 0) + 2
