"""Signed webhooks on job events, and the one-line summary a chatops bot posts as is.

Each event becomes one delivery per URL: a body fixed when the event happens (so every retry sends, and
signs, the same bytes), a unique delivery id, and a record on the job (url, last status, attempts). Sending
happens on a queue of its own (see worker/webhooks.py), never inside a window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any

import requests

from janitor.jobs.records import JobStore, now

EVENT_BY_STATUS = {
    "awaiting_approval": "job.awaiting_approval",
    "succeeded": "job.succeeded",
    "failed": "job.failed",
    "rejected": "job.rejected",
    "expired": "job.expired",
    "cancelled": "job.cancelled",
}
# (job id, delivery id, url, event, body): puts one delivery on the webhook queue
Enqueue = Callable[[str, str, str, str, str], None]


def human_bytes(n: int | float) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def subject(job: dict[str, Any]) -> str:
    """What the job is about, in a few words: the repository, the policy, or the whole registry."""
    request = job.get("request") or {}
    if job.get("policy"):
        return f"policy {job['policy']}"
    if request.get("repository"):
        return str(request["repository"])
    if request.get("all_repositories"):
        return "all repositories"
    return "garbage collection" if job.get("kind") == "gc" else str(job.get("kind", "job"))


def summary(job: dict[str, Any]) -> str:
    """One line, for example `team/app: 12 tags deleted, 1.2 GB freed; writes paused 1.9 s (job 3f2a…)`."""
    status = job.get("status")
    result = job.get("result") or {}
    tail = f" (job {job['id'][:4]}…)"
    head = subject(job) + ": "
    if status == "awaiting_approval":
        plan = result.get("plan") or {}
        what = [_count(len(plan.get("tags", [])), "tag"), _count(len(plan.get("manifests", [])), "manifest")]
        if "bytes" in plan:
            what.append(human_bytes(plan["bytes"]) + " to free")
        by = f", requested by {job['requested_by']}" if job.get("requested_by") else ""
        return head + "awaiting approval: " + ", ".join(what) + by + tail
    if status == "succeeded":
        if (job.get("request") or {}).get("dry_run"):
            plan = result.get("plan") or {}
            return (head + f"dry run: {_count(len(plan.get('tags', [])), 'tag')}, "
                    f"{_count(len(plan.get('manifests', [])), 'manifest')} would go"
                    + (f", {human_bytes(plan['bytes'])} freed" if "bytes" in plan else "") + tail)
        if job.get("kind") == "restore":
            return (f"restore of job {str(result.get('restored_from', ''))[:4]}…: "
                    f"{_count(len(result.get('manifests_restored', [])), 'manifest')}, "
                    f"{_count(len(result.get('tags_restored', [])), 'tag')} put back"
                    + (f", {len(result['skipped'])} tags left alone (pushed anew)" if result.get("skipped") else "")
                    + tail)
        parts = []
        if job.get("kind") != "gc":
            parts.append(_count(len(result.get("tags_removed", [])), "tag") + " deleted")
            if result.get("manifests_deleted"):
                parts.append(_count(len(result["manifests_deleted"]), "manifest") + " deleted")
        parts.append(human_bytes(result.get("bytes_freed") or 0) + " freed")
        skipped = result.get("skipped") or []
        protected = sum(1 for s in skipped if s.get("reason") == "protected")
        if len(skipped) > protected:
            parts.append(f"{len(skipped) - protected} skipped (not in the approved plan)")
        if protected:
            parts.append(f"{protected} kept by protection rules")
        if result.get("override_protection"):
            parts.append("protection overridden by the request")
        paused = (job.get("window") or {}).get("write_refused_seconds")
        line = head + ", ".join(parts)
        if paused is not None:
            line += f"; writes paused {paused:.1f} s"
        return line + tail
    if status == "failed":
        error = job.get("error") or {}
        message = " ".join(str(error.get("message", "")).split())
        if len(message) > 200:
            message = message[:199] + "…"
        step = f" in step {error['step']}" if error.get("step") else ""
        return head + f"failed{step}: {error.get('code', 'ERROR')}: {message}" + tail
    if status == "rejected":
        return head + f"rejected by {job.get('rejected_by')}, nothing deleted" + tail
    if status == "expired":
        return head + "not approved in time, expired; nothing deleted" + tail
    if status == "cancelled":
        return head + f"cancelled by {job.get('cancelled_by')}, nothing deleted" + tail
    return head + str(status) + tail


def body(event: str, job: dict[str, Any]) -> str:
    return json.dumps({"event": event, "delivered_at": now(), "job": job, "summary": job.get("summary"),
                       "registry": job.get("registry")}, sort_keys=True)


def signature(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def headers(event: str, delivery_id: str, raw: bytes, secret: str | None) -> dict[str, str]:
    out = {"Content-Type": "application/json", "User-Agent": "registry-janitor",
           "X-Janitor-Event": event, "X-Janitor-Delivery": delivery_id}
    if secret:
        out["X-Janitor-Signature-256"] = signature(secret, raw)
    return out


def announce(store: JobStore, urls: tuple[str, ...], job: dict[str, Any], enqueue: Enqueue) -> list[str]:
    """Queue one delivery per URL for the job's current status, if that status is an event. Returns the
    delivery ids. The job must already carry its summary."""
    event = EVENT_BY_STATUS.get(job.get("status", ""))
    if not event or not urls:
        return []
    shown = {**job, "webhooks": []}  # the job as GET shows it, minus delivery records still changing
    raw = body(event, shown)
    ids = {uuid.uuid4().hex: url for url in urls}
    for delivery_id, url in ids.items():  # every record first, so the job lists them all at once
        store.record_webhook(job["id"], delivery_id, {
            "url": url, "event": event, "delivery_id": delivery_id, "state": "queued", "attempts": 0,
            "last_status": None, "last_error": None, "queued_at": now(), "updated_at": now()})
    for delivery_id, url in ids.items():
        enqueue(job["id"], delivery_id, url, event, raw)
    return list(ids)


def send(url: str, event: str, delivery_id: str, raw: str, secret: str | None, timeout: float) -> int:
    """POST once; the HTTP status, or requests' exception when there was no answer."""
    data = raw.encode()
    resp = requests.post(url, data=data, headers=headers(event, delivery_id, data, secret), timeout=timeout,
                         allow_redirects=False)
    return resp.status_code
