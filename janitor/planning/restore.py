"""The restore window: what a deletion deleted, kept so it can be put back exactly as it was.

A deletion or policy run with a restore window (JANITOR_RESTORE_WINDOW, or `restore_window` on the request or
the policy) records, per job, the raw bytes of every manifest it deleted and the tags it removed (each with
the digest it pointed at). Until `restorable_until`, every window's hold step holds the blobs those manifests
need (their own JSON, config and layers), so GC keeps them; once it passes they are no longer held and the
next GC frees them (that window reports the bytes). A `restore` job PUTs the manifests back byte for byte,
children before indexes, then each tag where it pointed, unless the tag was pushed anew since.

The record's rules here are pure (what to record, what a restore puts back and in which order, what to
hold); `RestorableStore` keeps the records in Redis: `<prefix>:restorable` (sorted set: job id ->
restorable_until) and `<prefix>:restorable:<job id>` (the record, JSON), which outlives its window by
`KEEP_AFTER` so a late restore is told the window ended rather than that nothing was deleted.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from janitor import errors
from janitor.registry import manifests as mf
from janitor.registry import names

KEEP_AFTER = 7 * 24 * 3600  # seconds a record stays readable after its window (409, not "nothing deleted")
MAX_SUBSET = 200  # entries in a restore's `tags` plus `manifests`


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Deleted:
    """One manifest a job deleted, as it was stored."""

    repository: str
    manifest: mf.Manifest


def window_of(request: Mapping[str, Any], default: float, parse: Any) -> float:
    """The restore window of a deletion request or a policy run (its policy's), else the registry's."""
    policy = request.get("policy") if isinstance(request.get("policy"), Mapping) else {}
    raw = request.get("restore_window", policy.get("restore_window") if policy else None)
    return default if raw is None else float(parse(raw))


def needed_blobs(manifest: mf.Manifest) -> tuple[str, ...]:
    """What a restored manifest needs in storage: its own JSON, config and layers. An index's children are
    manifests: restored from the same record, or still stored."""
    return manifest.blob_digests


def record(job: Mapping[str, Any], deleted: Iterable[Deleted], tags: Iterable[tuple[str, str, str]],
           sizes: Mapping[str, int], freed: Mapping[str, int] | None, window: float,
           at: float | None = None, pulled: Mapping[tuple[str, str], int] | None = None) -> dict[str, Any] | None:
    """The record of what a job deleted, or None when it deleted nothing. `tags`: (repository, tag, digest it
    pointed at). `sizes`: known blob sizes; `freed`: the plan's blobs GC would free (None: sizes unknown).
    `pulled`: (repository, digest) -> last pull (epoch s) of the deleted manifests, dropped from the pull
    times at the delete and put back by a restore."""
    pulled = pulled or {}
    deleted, tags = list(deleted), sorted(set(tags))
    if not deleted and not tags:
        return None
    at = time.time() if at is None else at
    blobs: dict[str, int | None] = {}
    for d in deleted:
        for digest in needed_blobs(d.manifest):
            blobs[digest] = sizes.get(digest)
    return {
        "job": job["id"], "kind": job.get("kind"), "policy": job.get("policy"),
        "requested_by": job.get("requested_by"), "deleted_at": at, "restorable_until": at + window,
        "manifests": [{"repository": d.repository, "digest": d.manifest.digest, "media_type": d.manifest.media_type,
                       "raw": base64.b64encode(d.manifest.raw).decode(),
                       "last_pulled": pulled.get((d.repository, d.manifest.digest))} for d in deleted],
        "tags": [{"repository": r, "tag": t, "digest": dg} for r, t, dg in tags],
        "blobs": blobs,
        "bytes_held": None if freed is None else sum(s for d, s in freed.items() if d in blobs),
        "restored_by": [],
    }


def manifest_of(entry: Mapping[str, Any]) -> mf.Manifest:
    raw = base64.b64decode(entry["raw"])
    return mf.parse(raw, entry.get("media_type"), entry["digest"])


def held(records: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Repository -> blobs every still-restorable record needs kept from GC."""
    found: dict[str, set[str]] = {}
    for rec in records:
        for entry in rec.get("manifests") or ():
            found.setdefault(entry["repository"], set()).update(needed_blobs(manifest_of(entry)))
    return found


@dataclass(frozen=True)
class RestorePlan:
    manifests: list[dict[str, Any]]  # record entries, children before indexes
    tags: list[dict[str, Any]]  # {repository, tag, digest}


def _names(values: Any, what: str, check: Any) -> list[str]:
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise errors.InvalidRestore("the restore is not valid: see details", **{what: ["a list of strings"]})
    bad = [v for v in values if not check(v)]
    if bad:
        raise errors.InvalidRestore("the restore is not valid: see details",
                                    **{what: [f"not a valid entry: {v[:300]!r}" for v in bad[:20]]})
    return values


def _is_tag_ref(value: str) -> bool:
    repo, sep, tag = value.rpartition(":")
    return bool(sep) and names.is_repository(repo) and names.is_tag(tag)


def _is_manifest_ref(value: str) -> bool:
    repo, sep, digest = value.rpartition("@")
    return names.is_digest(digest) and (not sep or names.is_repository(repo))


def plan(rec: Mapping[str, Any], subset: Mapping[str, Any] | None = None) -> RestorePlan:
    """What a restore puts back: everything the job deleted, or the subset named (`tags`: `repo:tag` as in the
    job's `tags_removed`; `manifests`: `sha256:...` as in `manifests_deleted`, or `repo@sha256:...`). A tag
    brings its deleted manifest along, an index its deleted children. InvalidRestore names entries the job
    did not delete."""
    subset = subset or {}
    unknown_fields = sorted(set(subset) - {"tags", "manifests"})
    if unknown_fields:
        raise errors.InvalidRestore("the restore is not valid: see details",
                                    **{f: ["Unknown field."] for f in unknown_fields})
    want_tags = _names(subset.get("tags"), "tags", _is_tag_ref)
    want_manifests = _names(subset.get("manifests"), "manifests", _is_manifest_ref)
    if len(want_tags) + len(want_manifests) > MAX_SUBSET:
        raise errors.InvalidRestore("the restore is not valid: see details",
                                    _schema=[f"at most {MAX_SUBSET} tags and manifests"])
    entries = {(m["repository"], m["digest"]): m for m in rec.get("manifests") or ()}
    tags = {f"{t['repository']}:{t['tag']}": t for t in rec.get("tags") or ()}
    everything = not want_tags and not want_manifests
    chosen_tags = list(tags.values()) if everything else []
    chosen: set[tuple[str, str]] = set(entries) if everything else set()
    problems: dict[str, list[str]] = {}
    for ref in want_tags:
        if ref not in tags:
            problems.setdefault("tags", []).append(f"{ref}: job {rec['job']} did not remove this tag")
        elif tags[ref] not in chosen_tags:
            chosen_tags.append(tags[ref])
    for ref in want_manifests:
        repo, _, digest = ref.rpartition("@")
        found = [key for key in entries if key[1] == digest and (not repo or key[0] == repo)]
        if not found:
            problems.setdefault("manifests", []).append(f"{ref}: job {rec['job']} did not delete this manifest")
        chosen.update(found)
    if problems:
        raise errors.InvalidRestore("the restore names what the job did not delete: see details", **problems)
    chosen.update((t["repository"], t["digest"]) for t in chosen_tags if (t["repository"], t["digest"]) in entries)
    ordered: list[dict[str, Any]] = []
    done: set[tuple[str, str]] = set()

    def visit(key: tuple[str, str], path: frozenset[tuple[str, str]]) -> None:
        if key in done or key in path:
            return
        for child in manifest_of(entries[key]).children:
            child_key = (key[0], child.digest)
            if child_key in entries:
                visit(child_key, path | {key})
        done.add(key)
        ordered.append(entries[key])

    queue = sorted(chosen)
    for key in queue:  # an index brings its deleted children along
        visit(key, frozenset())
    return RestorePlan(ordered, sorted(chosen_tags, key=lambda t: (t["repository"], t["tag"])))


def summary(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A record as GET /v1/restorable lists it."""
    return {
        "job": rec["job"], "kind": rec.get("kind"), "policy": rec.get("policy"),
        "requested_by": rec.get("requested_by"),
        "deleted_at": iso(rec["deleted_at"]), "restorable_until": iso(rec["restorable_until"]),
        "repositories": sorted({m["repository"] for m in rec.get("manifests") or ()} |
                               {t["repository"] for t in rec.get("tags") or ()}),
        "manifests": [f"{m['repository']}@{m['digest']}" for m in rec.get("manifests") or ()],
        "tags": [f"{t['repository']}:{t['tag']}" for t in rec.get("tags") or ()],
        "blobs_held": len(rec.get("blobs") or {}),
        "bytes_held": rec.get("bytes_held"),
        "restored_by": list(rec.get("restored_by") or ()),
    }


class RestorableStore:
    """The records of one registry's restorable jobs."""

    def __init__(self, conn: redis.Redis, prefix: str) -> None:
        self.conn = conn
        self.index = f"{prefix}:restorable"
        self.prefix = f"{prefix}:restorable:"

    def save(self, rec: Mapping[str, Any]) -> None:
        with self.conn.pipeline(transaction=True) as pipe:
            pipe.set(self.prefix + rec["job"], json.dumps(rec), exat=int(rec["restorable_until"]) + KEEP_AFTER)
            pipe.zadd(self.index, {rec["job"]: rec["restorable_until"]})
            pipe.execute()

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.conn.get(self.prefix + job_id)
        return json.loads(raw) if raw else None

    def live(self, at: float | None = None) -> list[dict[str, Any]]:
        """Records still restorable at `at`, newest deletion first; index entries of records gone (or long
        past their window) are dropped on the way."""
        at = time.time() if at is None else at
        self.conn.zremrangebyscore(self.index, "-inf", at - KEEP_AFTER)
        ids = [i.decode() if isinstance(i, bytes) else str(i)
               for i in self.conn.zrangebyscore(self.index, f"({at}", "+inf")]
        found: list[dict[str, Any]] = []
        gone: list[str] = []
        for job_id in ids:
            rec = self.get(job_id)
            if rec is None:
                gone.append(job_id)
            elif rec["restorable_until"] > at:
                found.append(rec)
        if gone:
            self.conn.zrem(self.index, *gone)
        return sorted(found, key=lambda r: r["deleted_at"], reverse=True)

    def ended(self, at: float | None = None) -> list[dict[str, Any]]:
        """Records whose window has ended (and which are still kept): their blobs are let go."""
        at = time.time() if at is None else at
        ids = [i.decode() if isinstance(i, bytes) else str(i)
               for i in self.conn.zrangebyscore(self.index, at - KEEP_AFTER, at)]
        return [rec for job_id in ids if (rec := self.get(job_id)) is not None]

    def restored(self, job_id: str, by: str) -> None:
        """Note a restore job on the record (watched: two restores never lose each other's note)."""
        key = self.prefix + job_id
        with self.conn.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if not raw:
                        return
                    rec = json.loads(raw)
                    ttl = pipe.ttl(key)
                    rec["restored_by"] = [*rec.get("restored_by", []), by]
                    pipe.multi()
                    pipe.set(key, json.dumps(rec), ex=ttl if isinstance(ttl, int) and ttl > 0 else None)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
