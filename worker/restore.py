"""The restore window inside a window (rules and records: janitor/planning/restore.py).

- `remember`: a deletion or policy run with a restore window records what it deleted, right after deleting.
- `holds`: the hold step's holds for the blobs of every still-restorable deletion, so GC keeps them. They go
  into a repository that has a `_layers` directory (the only ones GC walks) and that this window does not
  remove: the deleted manifests' own, else another one (blobs are marked registry-wide).
- `run`: a `restore` job, before the fence (PUTs need a writable registry): each manifest PUT back byte for
  byte, children before indexes, the blobs it needs linked into its repository first when they are not (a
  repository the deletion removed lost its `_layers` links); then each tag PUT where it pointed, unless the
  tag exists now: pushed anew since, it is left alone and reported in `skipped`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from janitor import errors, index
from janitor.config.settings import restore_window
from janitor.jobs.records import SUCCEEDED, now
from janitor.planning import restore as rules
from janitor.planning.rules import Plan
from janitor.planning.snapshot import Snapshot
from janitor.storage.freed import known_sizes
from janitor.window import holds as holds_mod
from worker.state import WindowState

log = logging.getLogger("worker.window")


def store(state: WindowState) -> rules.RestorableStore:
    return rules.RestorableStore(state.ctx.conn, state.ctx.keys.prefix)


def remember(state: WindowState, job: dict[str, Any], snap: Snapshot, plan: Plan, gone: list[tuple[str, str]],
             removed: set[str]) -> None:
    """Record what the job deleted when its restore window is on; says `restorable_until` on the job."""
    window = rules.window_of(job["request"], state.ctx.settings.restore_window, restore_window)
    if window <= 0:
        return
    deleted = [rules.Deleted(repo, m) for repo, digest in gone
               if (m := snap.repos[repo].manifests.get(digest) or state.manifests.get(digest)) is not None]
    unreadable = [f"{repo}@{digest}" for repo, digest in gone
                  if not any(d.repository == repo and d.manifest.digest == digest for d in deleted)]
    tags = []
    for ref in removed:
        repo, _, tag = ref.rpartition(":")
        digest = snap.repos[repo].tags.get(tag) if repo in snap.repos else None
        if digest:
            tags.append((repo, tag, digest))
    rec = rules.record(job, deleted, tags, known_sizes(d.manifest for d in deleted), plan.blobs_freed, window,
                       pulled=state.pulled)
    if rec is None:
        return
    store(state).save(rec)
    job["result"].update(restorable_until=rules.iso(rec["restorable_until"]), bytes_held=rec["bytes_held"])
    if unreadable:  # never expected: the plan read every manifest it deleted
        job["result"]["not_restorable"] = unreadable


def holds(state: WindowState, out: dict[str, Any]) -> list[tuple[holds_mod.Hold, bytes]]:
    """The hold step's holds for every still-restorable deletion's blobs (says how many in `out`). The blobs
    of deletions whose window has ended count as let go, like those of this window's own deletions: their
    links are the deleted images' own, not a push in flight, so the upload grace does not hold them either."""
    for repo, blobs in rules.held(store(state).ended()).items():
        state.released_blobs.setdefault(repo, set()).update(blobs)
    records = store(state).live()
    wanted = rules.held(records)
    if not wanted:
        return []
    storage = state.storage
    removing = set(state.remove_repos)
    present = storage.layered_repositories(r for r in wanted if r not in removing)
    fallback = min(present) if present else None
    if fallback is None:
        others = sorted(storage.layered_repositories() - removing)
        fallback = others[0] if others else None
    targets: dict[str, set[str]] = {}
    unheld: set[str] = set()
    for repo, blobs in wanted.items():
        target = repo if repo in present else fallback
        if target is None:
            unheld |= blobs
        else:
            targets.setdefault(target, set()).update(blobs)
    built = holds_mod.build(targets)
    out["restorable"] = {"jobs": len(records), "holds": len(built),
                         "blobs_held": len(set().union(*targets.values())) if targets else 0}
    if unheld:
        out["restorable"]["blobs_not_held"] = len(unheld)
        log.error("%d blobs of restorable deletions could not be held: no repository with layers is left",
                  len(unheld))
    return built


def run(state: WindowState, job: dict[str, Any]) -> None:
    """Put back what the job names, then end it: a restore takes no part in the fence and GC."""
    ctx = state.ctx
    request = job["request"]
    with state.step([job], "restore") as out:
        state.guard.check("restoring")
        rec = store(state).get(request["job"])
        if rec is None:
            raise errors.NotRestorable(f"job {request['job']} has nothing left to restore", job=request["job"])
        if rec["restorable_until"] <= time.time():
            raise errors.RestoreWindowEnded(
                f"the restore window of job {request['job']} ended at {rules.iso(rec['restorable_until'])}",
                job=request["job"], restorable_until=rules.iso(rec["restorable_until"]))
        todo = rules.plan(rec, {k: request[k] for k in ("tags", "manifests") if request.get(k)})
        restored: list[str] = []
        tags_restored: list[str] = []
        skipped: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        out.update(manifests_restored=restored, tags_restored=tags_restored, skipped=skipped, failed=failed)
        raw_of: dict[tuple[str, str], tuple[bytes, str]] = {}
        pulled_back: dict[str, dict[str, int]] = {}
        for entry in todo.manifests:
            repo, digest = entry["repository"], entry["digest"]
            manifest = rules.manifest_of(entry)
            raw_of[(repo, digest)] = (manifest.raw, manifest.media_type)
            try:
                state.guard.check("restoring a manifest")
                missing = state.storage.link_blobs(repo, manifest.blob_digests[1:]) \
                    if state.guard.storage is not None else []
                if missing:
                    failed.append({"repository": repo, "digest": digest, "reason": "blobs gone from storage",
                                   "blobs": missing})
                    continue
                put = ctx.client.put_manifest(repo, digest, manifest.raw, manifest.media_type)
            except errors.RegistryError as exc:
                failed.append({"repository": repo, "digest": digest, "reason": exc.message})
                continue
            if put != digest:  # never expected: the bytes are the stored ones
                failed.append({"repository": repo, "digest": digest, "reason": f"the registry stored it as {put}"})
                continue
            restored.append(f"{repo}@{digest}")
            if entry.get("last_pulled") is not None:  # its pull time, dropped at the delete, comes back too
                pulled_back.setdefault(repo, {})[digest] = int(entry["last_pulled"])
        for tag in todo.tags:
            repo, name, digest = tag["repository"], tag["tag"], tag["digest"]
            ref = f"{repo}:{name}"
            try:
                state.guard.check("restoring a tag")
                current = ctx.client.manifest_digest(repo, name)
                if current == digest:
                    tags_restored.append(ref)  # already where it pointed
                    continue
                if current is not None:
                    skipped.append({"repository": repo, "tag": name, "now_at": current,
                                    "reason": "the tag was pushed anew since the deletion; left alone"})
                    continue
                raw, media_type = raw_of.get((repo, digest)) or _stored(ctx.client, repo, digest)
                put = ctx.client.put_manifest(repo, name, raw, media_type)
            except (errors.RegistryError, errors.NotFound) as exc:
                failed.append({"repository": repo, "tag": name, "digest": digest, "reason": exc.message})
                continue
            if put != digest:
                failed.append({"repository": repo, "tag": name, "digest": digest,
                               "reason": f"the registry stored it as {put}"})
                continue
            tags_restored.append(ref)
        job["result"].update(restored_from=request["job"], manifests_restored=list(restored),
                             tags_restored=list(tags_restored), skipped=list(skipped), failed=list(failed))
        store(state).restored(request["job"], job["id"])
        for repo, times in pulled_back.items():
            index.pulls_restored(ctx.conn, ctx.keys.prefix, repo, times)
        index.window_restarted(ctx.conn, ctx.keys.prefix)  # the listing reads the registry again
        if failed:
            raise errors.RestoreIncomplete(
                f"{len(failed)} of the manifests and tags could not be put back (result.failed says why); the "
                "rest was restored", failed=len(failed))
    job.update(status=SUCCEEDED, finished_at=now())


def _stored(client: Any, repo: str, digest: str) -> tuple[bytes, str]:
    """A manifest the job untagged but did not delete, read back as stored to PUT it by its tag."""
    manifest = client.manifest(repo, digest)
    return manifest.raw, manifest.media_type
