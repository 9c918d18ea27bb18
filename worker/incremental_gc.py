"""The window's incremental GC (JANITOR_GC_MODE=incremental, or "gc_mode" on a request): the mark of the
whole registry is taken before the fence, and under it only what changed since is read before the sweep, so
writes are refused for time that grows with the change, not with the registry. The rules are in
janitor/window/mark.py, the reads and deletes in janitor/window/incremental.py; this module runs them in the
window's steps and falls back to the registry's own garbage-collect whenever the mark cannot be exact.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from janitor import errors
from janitor.config.settings import GC_MODES
from janitor.window import incremental
from janitor.window import mark as rules
from janitor.window.gc import GcSummary
from janitor.window.holds import Hold
from worker.state import WindowState

log = logging.getLogger("worker.window")


def wanted_mode(window: WindowState) -> str:
    """Each job's mode is its request's `gc_mode`, else the registry's setting; jobs that disagree share the
    stricter one, `registry`."""
    default = window.ctx.settings.gc_mode
    modes = {j["request"].get("gc_mode") or default for j in window.alive() or window.jobs}
    return "incremental" if modes == {"incremental"} else GC_MODES[0]


def premark(window: WindowState, root: str | None, out: dict[str, Any]) -> incremental.Premark | None:
    """Before the fence: the mark, or None (and why, in `out`) when this window runs the registry's GC."""
    if wanted_mode(window) != "incremental":
        return None
    if root is None or window.guard.storage is None:
        out["gc_mark"] = {"skipped": True, "reason": "no storage access: the registry's garbage-collect runs"}
        return None
    ctx, store = window.ctx, window.storage
    started = time.monotonic()
    try:
        # The mark first: whatever is written from now on is newer than it and read again under the fence, so
        # nothing changed during these reads is missed.
        since = store.marks(window.guard.window_id + "-gc", {"gc": time.time() - 1})
        if not since:
            raise rules.Unreadable("the registry container has no writable /tmp for the mark's reference file")
        window.marks["gc"] = since["gc"]  # dropped with the window's other marks
        window.read_stored(root, ages=False)  # the last window's list and what changed since: window.stored
        found = incremental.before_fence(store, ctx.contents, window.stored or {}, since["gc"])
    except (rules.Unreadable, errors.StorageCommandFailed) as exc:
        reason = str(exc) if isinstance(exc, rules.Unreadable) else exc.message
        log.warning("incremental GC not possible in this window (%s): the registry's garbage-collect runs", reason)
        out["gc_mark"] = {"skipped": True, "reason": reason}
        return None
    mark = found.mark
    out["gc_mark"] = {"seconds": round(time.monotonic() - started, 3), "repositories": len(mark.revisions),
                      "revisions_counted": len(mark.counted), "blobs": len(mark.blobs),
                      "blobs_marked": len(mark.marked), "manifests_read_from_files": found.read_from_files}
    return found


def collect(window: WindowState, root: str, found: incremental.Premark, sizes: dict[str, int] | None,
            out: dict[str, Any], unplaced: list[tuple[Hold, bytes]] | None = None) -> GcSummary:
    """Under the fence: the change since the mark, then the sweep, checked like the registry's GC (lease,
    time, a refused write) first. A manifest pushed since that cannot be read hands over to the registry's GC.

    `unplaced`: the window's holds, not written. A hold manifest would mark exactly its blobs (it always counts:
    its repository has the layer links it was built from), so the sweep leaving those blobs out frees what the
    placed holds would have let it free, without the writes and removals of hold manifests and their record
    while writes are refused. The registry's GC knows only what storage holds: for it they are placed first."""
    guard = window.guard
    guard.check("GC")
    if not guard.fenced:
        raise errors.FenceNotEffective("GC refused: this window has not fenced the registry")
    guard.require_refused()
    started = time.monotonic()
    try:
        sweep = incremental.under_fence(window.storage, window.ctx.contents, found, guard.placed)
    except rules.Unreadable as exc:
        log.warning("incremental sweep not possible (%s): the registry's garbage-collect runs", exc)
        out["mode"], out["incremental_refused"] = "registry", str(exc)
        guard.place_holds(unplaced or [])
        return guard.gc()
    if sizes is not None:
        sizes.update(found.sizes)
        sizes.update(sweep.sizes)
    kept = {blob for hold, _ in unplaced or () for blob in hold.blobs}
    swept = [blob for blob in sweep.blobs if blob not in kept]
    decided = time.monotonic()
    window.storage.delete_blobs(swept, lambda: guard.check("deleting blobs"))
    # Where the fenced time went: reading the change and deciding, then deleting.
    out["seconds"] = {"change_and_sweep": round(decided - started, 3), "delete": round(time.monotonic() - decided, 3)}
    out.update(mode="incremental", revisions_changed=sweep.revisions_changed, blobs_new=sweep.blobs_new,
               manifests_read=sweep.manifests_read, **({"blobs_kept_for_holds": len(sweep.blobs) - len(swept)}
                                                       if kept else {}))
    # Marked as a hold would have marked them.
    return GcSummary(blobs_marked=sweep.blobs_marked + len(sweep.blobs) - len(swept), blobs_deleted=len(swept),
                     manifests_deleted=0, deleted_blobs=swept)


def dirs_maybe_left(mode: dict[str, Any], found: incremental.Premark | None, swept: list[str],
                    held: list[str]) -> list[str]:
    """The blobs whose directories may be left behind empty by the sweep (swept blobs, and the holds' own
    blobs, which went with the holds). The registry's GC leaves each one's own directory: all of them. The
    incremental sweep removes those itself, so only a two-hex-digit parent can be left empty, and it cannot
    be while a blob the mark knows still lives in it: with a few thousand blobs none is, and the rmdir exec,
    done while writes are refused, is saved. (A parent thought empty that is not is left alone by the rmdir.)"""
    gone = [*swept, *held]
    if mode.get("mode") != "incremental" or found is None:
        return gone
    left, wanted = set(gone), {_parent(d) for d in gone}
    for blob in found.mark.blobs:  # stops once each parent is known to keep a blob: a few hundred looks, not all
        if blob not in left and _parent(blob) in wanted:
            wanted.discard(_parent(blob))
            if not wanted:
                break
    return [d for d in gone if _parent(d) in wanted]


def _parent(digest: str) -> str:
    return digest.partition(":")[2][:2]
