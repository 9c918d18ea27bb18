"""A `deletion` job inside a window, and the untag/delete loop that a policy run shares with it: plan on a
fresh snapshot (stored revisions read before the tags), pass the approval gate, then untag and delete with
each guarded delete re-checked against the tags right before it."""

from __future__ import annotations

from typing import Any

from janitor import index
from janitor.jobs.records import SUCCEEDED, now
from janitor.planning import approval, protections
from janitor.planning.planner import TagWatch, delete_by_digest, read_and_plan
from janitor.planning.protections import ProtectionStore
from janitor.planning.rules import Graph, Plan
from janitor.planning.snapshot import Reader, Snapshot
from janitor.registry.untag import untag
from worker import restore
from worker.state import WindowState


def run(state: WindowState, job: dict[str, Any], root: str | None) -> None:
    """Plan on a fresh snapshot (stored revisions read before the tags), then untag and delete; a dry run
    stops after the plan. Right before each guarded delete by digest, the tags are read again: a tag that
    reaches the manifest now (pushed since the snapshot) keeps it, and the job reports it as skipped."""
    ctx = state.ctx
    request = job["request"]
    with state.step([job], "delete") as out, Reader(ctx.client, state.manifests, contents=ctx.contents) as reader:
        snap, plan = _snapshot_and_plan(state, reader, request, root)
        out.update(plan=plan.as_dict(), dry_run=bool(request.get("dry_run")))
        if plan.blobs_freed is not None:  # only with the stored revisions: never a figure it cannot compute
            job["result"]["planned"] = {"blobs": len(plan.blobs_freed), "bytes": sum(plan.blobs_freed.values())}
        gated = approval.gate(job, plan, lambda r, t: snap.repos[r].tags.get(t), ctx.settings.approval_ttl)
        if gated is None:  # planned only: it waits for approval, nothing changed
            return
        plan = gated
        if request.get("dry_run"):
            job["result"].update(plan=plan.as_dict())
            job.update(status=SUCCEEDED, finished_at=now())  # changes nothing: no part in GC
            return
        named = {(r.repository, t) for r in plan.repos for t in request.get("tags") or ()}
        carry_out(state, job, out, reader, snap, plan, named)


def carry_out(state: WindowState, job: dict[str, Any], out: dict[str, Any], reader: Reader, snap: Snapshot, plan: Plan,
              named: set[tuple[str, str]]) -> None:
    """Untag and delete what a plan says, for a deletion or a policy run alike. Right before each guarded
    delete by digest the tags are read again (TagWatch): a tag that reaches the manifest now (pushed since
    the snapshot) keeps it, and the job reports it as skipped; the (repository, tag) pairs in `named` (the
    request or the policy chose them) still go, alone. The protection rules are read again for each
    repository: a tag one protects now is never untagged, nor is a manifest it reaches deleted (both skipped
    with reason `protected`, the repository then stays), unless the request overrides protection. Blobs let
    go are noted per repository, so the hold step never keeps them from GC. What approval skipped before
    (result.skipped) stays listed."""
    ctx = state.ctx
    deleted: list[str] = []
    untagged: list[str] = []
    skipped: list[dict[str, Any]] = list(job["result"].get("skipped") or [])
    removed: set[str] = set()
    gone: list[tuple[str, str]] = []  # (repository, digest) deleted: what a restore window keeps
    out.update(manifests_deleted=deleted, untagged=untagged, skipped=skipped)
    override = bool(job["request"].get("override_protection"))
    store = ProtectionStore(ctx.conn, ctx.keys, ctx.settings.protections_file)

    def untag_alone(repo: str, tag: str, planned_digest: str) -> None:
        if ctx.client.manifest_digest(repo, tag) != planned_digest:
            skipped.append({"repository": repo, "tag": tag,
                            "reason": "the tag was moved or removed since the plan; left as it is"})
            return
        done = untag(ctx.client, repo, tag, planned_digest)
        state.released_blobs.setdefault(repo, set()).update(done.blobs)
        if not done.done:  # pushed again while it was being untagged: that push stands
            skipped.append({"repository": repo, "tag": tag, "now_at": done.moved_to or None,
                            "reason": "the tag was pushed again while it was being untagged; left as it is"})
            return
        index.tag_removed(ctx.conn, ctx.keys.prefix, repo, tag)  # the listing drops it now, for good
        untagged.append(f"{repo}:{tag}")
        removed.add(f"{repo}:{tag}")

    for repo_plan in plan.repos:
        repo = repo_plan.repository
        repo_snap = snap.repos[repo]
        guarding = {} if override else protections.protected_tags(repo, repo_snap.tags, store.all())
        graph = Graph(repo_snap.manifests, repo_snap.tags) if guarding else None
        kept_protected = False
        for tag in repo_plan.untag:
            if tag in guarding:
                skipped.append({"repository": repo, "tag": tag, "rule": guarding[tag], "reason": protections.REASON})
                kept_protected = True
                continue
            untag_alone(repo, tag, repo_snap.tags[tag])
        guarded, pairs, watch = set(repo_plan.guarded), repo_plan.planned_pairs, TagWatch(reader, repo_snap)
        for digest in repo_plan.delete:
            shielding = protections.reaching(graph, digest, guarding) if graph else {}
            if shielding:
                skipped.append({"repository": repo, "digest": digest, "tags": sorted(shielding),
                                "rules": sorted(set(shielding.values())), "reason": protections.REASON})
                kept_protected = True
                for tag in repo_plan.tags_removed.get(digest, []):
                    if (repo, tag) in named and tag not in guarding:  # named and unprotected: it goes alone
                        untag_alone(repo, tag, digest)
                continue
            holders = watch.reaching(digest, pairs) if digest in guarded else []
            if holders:
                skipped.append({"repository": repo, "digest": digest, "tags": holders,
                                "reason": "tagged since the plan; kept"})
                for tag in repo_plan.tags_removed.get(digest, []):
                    if (repo, tag) in named:  # the request named the tag: it goes, the manifest stays
                        untag_alone(repo, tag, digest)
                continue
            manifest = repo_snap.manifests.get(digest)
            state.released_blobs.setdefault(repo, set()).update(manifest.blob_digests if manifest else ())
            delete_by_digest(ctx.client, repo, digest)
            # Its tags leave the listing and its pull time goes (kept in the restore record, if any).
            for pulled_digest, second in index.manifest_deleted(ctx.conn, ctx.keys.prefix, repo, digest).items():
                state.pulled[(repo, pulled_digest)] = second
            deleted.append(digest)
            gone.append((repo, digest))
            state.deleted.setdefault(repo, set()).add(digest)
            removed |= {f"{repo}:{t}" for t in repo_plan.tags_removed.get(digest, [])}
        if repo_plan.remove_repository and kept_protected:
            skipped.append({"repository": repo, "reason": protections.REASON,
                            "note": "it still holds protected tags, so it stays"})
        elif repo_plan.remove_repository:
            state.remove_repos.setdefault(repo, []).append(job)
    job["result"].update(manifests_deleted=list(deleted), tags_removed=sorted(removed),
                         skipped=list(skipped), repositories_removed=[])
    if override:
        job["result"]["override_protection"] = True
    restore.remember(state, job, snap, plan, gone, removed)


def _snapshot_and_plan(state: WindowState, reader: Reader, request: dict[str, Any], root: str | None) -> tuple[Snapshot, Plan]:
    """A snapshot for this job (storage first, then tags, then manifests) and its plan. Every job reads
    afresh: only manifests, immutable by digest, are cached across the window. Without filesystem access
    (root None) the registry API alone is read: untagged manifests stay unseen, no bytes are computed."""
    ctx = state.ctx
    stored = None if root is None else (lambda: state.read_stored(root, bool(request.get("untagged"))))
    return read_and_plan(reader, request, ctx.settings.registry_host, stored, ctx.settings.untagged_min_age)

