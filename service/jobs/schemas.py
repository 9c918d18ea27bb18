from __future__ import annotations

import marshmallow as ma

from service.errors import code_field

STATUSES = ["queued", "running", "succeeded", "failed"]


def time_field(description: str, nullable: bool = False, required: bool = False) -> ma.fields.String:
    """An RFC 3339 UTC time as the records write it (e.g. 2026-01-31T12:00:00.000Z)."""
    return ma.fields.String(required=required, allow_none=nullable,
                            metadata={"format": "date-time", "description": description})


class JobErrorSchema(ma.Schema):
    """Why a job failed."""

    code = code_field(required=True, metadata={"description": (
        "Why the job failed, e.g. FENCE_NOT_EFFECTIVE (the read-only config did not stop writes; no GC ran), "
        "GC_TIMEOUT, WINDOW_TIMEOUT, LOCK_LOST, INTERRUPTED, REGISTRY_NOT_WRITABLE, or INTEGRITY_BROKEN "
        "(step verify: the window's work was done but a tagged image misses a manifest or blob; "
        "result.integrity lists them)")})
    message = ma.fields.String(required=True, metadata={"description": "What happened and what to do about it"})
    step = ma.fields.String(allow_none=True, metadata={"description": "The step the job failed in"})
    details = ma.fields.Dict(metadata={"description": "The names involved, e.g. the tags of an index"})


class StepSchema(ma.Schema):
    name = ma.fields.String(required=True, metadata={
        "description": "preflight, delete, drain, fence, hold, remove_repositories, gc, restart, health or "
                       "verify"})
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["running", "succeeded", "failed"]))
    started_at = time_field("When the step started", required=True)
    finished_at = time_field("When the step ended; null while it runs", nullable=True)
    outcome = ma.fields.Dict(metadata={"description": "What the step did: manifests deleted, GC summary, ..."})
    error = ma.fields.Dict(allow_none=True, metadata={"description": "code and message, when the step failed"})


class WindowSchema(ma.Schema):
    """The maintenance window a job ran in: writes refused, GC, restart."""

    id = ma.fields.String(required=True)
    started_at = time_field("When the window opened", required=True)
    finished_at = time_field("When the window closed; null while it is open", nullable=True)
    jobs = ma.fields.List(ma.fields.String(), metadata={"description": "Jobs that shared this window"})
    write_refused_seconds = ma.fields.Float(allow_none=True, metadata={
        "description": "How long the registry refused writes"})


class JobSchema(ma.Schema):
    """A request and its progress: queued, then running through its window's steps, then succeeded or failed."""

    id = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(["deletion", "gc"]))
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(STATUSES))
    request = ma.fields.Dict(required=True)
    created_at = time_field("When the request was accepted", required=True)
    started_at = time_field("When its window started it; null while queued", nullable=True)
    finished_at = time_field("When it ended; null until then", nullable=True)
    window = ma.fields.Nested(WindowSchema, allow_none=True, metadata={
        "description": "The window it ran in; null until one starts it"})
    steps = ma.fields.List(ma.fields.Nested(StepSchema), required=True)
    result = ma.fields.Dict(metadata={"description": "manifests_deleted, tags_removed, repositories_removed, "
                                                     "planned, plan (dry run), gc, bytes_freed, integrity "
                                                     "({manifests_checked, blobs_checked, broken}: when broken "
                                                     "is not empty the job is failed with INTEGRITY_BROKEN)"})
    error = ma.fields.Nested(JobErrorSchema, allow_none=True, metadata={
        "description": "Why it failed; null unless status is failed"})
