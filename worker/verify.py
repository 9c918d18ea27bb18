"""The window's last step: after writes resume, check what the window could have broken, or (on request,
`POST /v1/gc` with `"verify": "full"`) every tag of every repository.

The targeted check's scope is in janitor/integrity.py: the surviving stored manifests come from one read of
the storage's revision links and their content from the window's memory and the content cache in Redis (only
a manifest pushed since is read from the registry); only the affected ones are read through the API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from janitor import errors
from janitor.planning.snapshot import Reader
from janitor.registry import integrity
from janitor.registry.manifests import Manifest
from worker.state import WindowState

log = logging.getLogger("worker.window")

# How often a full walk writes its progress into the job records.
PROGRESS_EVERY = 1.0


def wanted_mode(jobs: list[dict[str, Any]]) -> str:
    """"full" when a job of the window asked for the full walk, else "targeted"."""
    return "full" if any(j["request"].get("verify") == "full" for j in jobs) else "targeted"


def full(window: WindowState, out: dict[str, Any], save: Callable[[], None]) -> dict[str, Any]:
    """Every tag of every repository, with its progress in the step's outcome as it goes."""
    client = window.ctx.client
    last = 0.0

    def progress(done: int, total: int, manifests: int) -> None:
        nonlocal last
        out.update(mode="full", repositories_total=total, repositories_checked=done, manifests_checked=manifests)
        if time.monotonic() - last >= PROGRESS_EVERY or done == total:
            last = time.monotonic()
            save()

    return integrity.check(client, sorted(set(client.catalog())), progress)


def targeted(window: WindowState, root: str) -> dict[str, Any]:
    """What this window deleted, let go and swept, checked against what survives."""
    ctx = window.ctx
    with Reader(ctx.client, window.manifests, contents=ctx.contents) as reader:
        surviving, unreadable = stored_manifests(reader, _stored_now(window, root))
        deleted = {d for digests in window.deleted.values() for d in digests}
        touched = {b for d in deleted if d in window.manifests for b in window.manifests[d].blob_digests}
        touched |= {b for blobs in window.released_blobs.values() for b in blobs}
        swept = set(window.swept or ())
        touched |= swept
        hit = integrity.affected(surviving, touched, deleted | swept)
        for repo, digests in unreadable.items():  # what they use is unknown: read as a pull would
            hit.setdefault(repo, set()).update(digests)
        tags = {repo: _tags(reader, repo) for repo in hit}
    report = integrity.check_targets(ctx.client, integrity.targets(hit, tags, surviving))
    seen = {(b["repository"], b["missing"]) for b in report["broken"]}
    for item in integrity.swept_still_used(surviving, swept):
        # Uploaded again since GC (a push cut off by the fence restart between storing a blob and linking it
        # leaves it unreferenced, and retries): there again, so nothing is broken.
        if (item["repository"], item["missing"]) not in seen and not _present(ctx, item):
            seen.add((item["repository"], item["missing"]))
            report["broken"].append({"repository": item["repository"], "tag": None, "manifest": item["manifest"],
                                     "missing": item["missing"], "kind": item["kind"]})
    return {"mode": "targeted", "surviving_manifests": sum(len(m) for m in surviving.values()),
            "blobs_swept_checked": len(swept), "affected_manifests": sum(len(h) for h in hit.values()), **report}


def _tags(reader: Reader, repo: str) -> dict[str, str | None]:
    """tag -> digest; None for a tag whose HEAD fails (it is read like a pull would, and reported)."""
    def head(tag: str) -> str | None:
        try:
            return reader.client.manifest_digest(repo, tag) or ""
        except (errors.RegistryError, errors.RegistryUnavailable) as exc:
            if isinstance(exc, errors.RegistryUnavailable) and "status" not in exc.details:
                raise
            return None

    names = reader.tag_names(repo)  # [] when only untagged manifests are left: checked by digest
    found = dict(zip(names, reader.pool.map(head, names), strict=True))
    return {t: d for t, d in found.items() if d != ""}  # "": removed since the tag list


def stored_manifests(reader: Reader, stored: dict[str, set[str]]) -> tuple[dict[str, dict[str, Manifest]],
                                                                           dict[str, set[str]]]:
    """The content of these stored manifests (repository -> digests): from memory and the content cache in
    one go, and from the registry for those never seen (each read once, then cached). One the registry
    cannot serve is left out and named in the second map, per repository."""
    reader.recall(d for digests in stored.values() for d in digests)
    found: dict[str, dict[str, Manifest]] = {}
    unreadable: dict[str, set[str]] = {}
    for repo, present in sorted(stored.items()):
        for digest in sorted(d for d in present if d not in reader.cache):
            try:
                reader.manifest(repo, digest)
            except (errors.RegistryError, errors.RegistryUnavailable) as exc:
                if isinstance(exc, errors.RegistryUnavailable) and "status" not in exc.details:
                    raise  # the registry itself is away
            if digest not in reader.cache:
                unreadable.setdefault(repo, set()).add(digest)
        found[repo] = {d: reader.cache[d] for d in present if d in reader.cache}
    return found, unreadable


def _stored_now(window: WindowState, root: str) -> dict[str, set[str]]:
    """Every stored manifest now: the repositories changed since this window read them are listed again,
    the others taken from that read (see storage.revisions_since); everything is read without one."""
    if window.stored is not None:
        # Made with the window's other marks before the fence, for the read then. A later read (incremental GC's
        # mark) only moves `stored` forward: listing again what changed since the earlier time stays exact.
        if "revisions" in window.marks:
            return window.storage.revisions_since(window.marks["revisions"], window.stored)[1]
        marks = window.storage.marks(window.guard.window_id, {"revisions": window.stored_read_at - 1})
        if marks:
            try:
                return window.storage.revisions_since(marks["revisions"], window.stored)[1]
            finally:
                window.storage.drop_marks(marks.values())
    _, stored = window.storage.revision_times()
    return {repo: set(times) for repo, times in stored.items()}


def _present(ctx: Any, item: dict[str, Any]) -> bool:
    """A swept blob (or child manifest) there again in its repository, as a pull would find it."""
    if item["kind"] == "manifest":
        return ctx.client.manifest_digest(item["repository"], item["missing"]) is not None
    return bool(ctx.client.blob_exists(item["repository"], item["missing"]))


def run(state: WindowState, everyone: list[dict[str, Any]], out: dict[str, Any]) -> None:
    """What this window could have broken (or everything, on request) is checked; a child of a tagged
    index deleted with `force` breaks that index on purpose, and is reported apart."""
    if wanted_mode(state.jobs) == "full" or not state.guard.root:
        # Without filesystem access the surviving manifests cannot be listed: everything is walked.
        report = full(state, out, lambda: state.save(everyone))
    else:
        report = targeted(state, state.guard.root)
    forced = {d for j in state.jobs if j["request"].get("force")
              for d in j["result"].get("manifests_deleted", [])}
    report["broken_by_request"] = [b for b in report["broken"] if b["missing"] in forced]
    report["broken"] = [b for b in report["broken"] if b["missing"] not in forced]
    out.update(report)
    for job in everyone:
        job["result"]["integrity"] = report
    if report["broken"]:
        log.error("integrity check after GC found %d missing items: %s", len(report["broken"]),
                  report["broken"][:20])
        raise errors.IntegrityBroken(
            f"after the window, {len(report['broken'])} manifests or blobs of tagged images are missing "
            "or unreadable (result.integrity lists them); pulls of those images fail",
            broken=len(report["broken"]))
