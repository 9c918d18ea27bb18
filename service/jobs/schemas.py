from __future__ import annotations

from datetime import timezone

import marshmallow as ma

from service.errors import code_field
from service.pagination import PageQueryArgsSchema, page_schema

STATUSES = ["queued", "running", "succeeded", "failed", "awaiting_approval", "rejected", "expired", "cancelled"]
KINDS = ["deletion", "gc", "policy", "restore"]


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
    outcome = ma.fields.Dict(metadata={"description": (
        "What the step did: manifests deleted, GC summary, ...; on an object store storage_requests, and "
        "storage_requests_in_a_row: of its listing requests, how many had to wait for one another (a prefix "
        "listed before is read in key ranges at once). On an object store the `fence` step's fenced_listing "
        "says how the reads under the fence went: {whole: false, repositories, blobs_named, write_requests, "
        "and prefixes_listed_whole when one prefix's last listing was older than the mark} when they followed the registry's access log since the mark (the repositories written to listed "
        "again, the blobs named looked up), or {whole: true, why}. On S3 in incremental mode the view a fence "
        "read is carried to the next window: `restart` says carried_view {kept, bytes, verify} or {kept: false, "
        "why}; the next window's `preflight` carried_view {used: true, repositories, blobs_named, "
        "write_requests: what the registry logged since} or {used: false, why}, and its `drain` carried_view "
        "the same up to the mark (with storage_requests), when the reads before the fence start from that view "
        "instead of listing the bucket whole. For `verify`: `mode` (targeted or full), "
        "manifests_checked, blobs_checked, broken, broken_by_request; a targeted check adds "
        "surviving_manifests, affected_manifests and blobs_swept_checked; a full walk updates "
        "repositories_checked, repositories_total and manifests_checked as it goes")})
    error = ma.fields.Dict(allow_none=True, metadata={"description": "code and message, when the step failed"})


class WindowSchema(ma.Schema):
    """The maintenance window a job ran in: writes refused, GC, restart."""

    id = ma.fields.String(required=True)
    started_at = time_field("When the window opened", required=True)
    finished_at = time_field("When the window closed; null while it is open", nullable=True)
    jobs = ma.fields.List(ma.fields.String(), metadata={"description": "Jobs that shared this window"})
    write_refused_seconds = ma.fields.Float(allow_none=True, metadata={
        "description": "How long the registry refused writes"})
    storage_requests = ma.fields.Integer(allow_none=True, metadata={
        "description": "Requests the window made to the registry's object storage (s3), what the store bills; "
                       "each step's outcome has its own storage_requests. Absent on the filesystem"})


class WebhookDeliverySchema(ma.Schema):
    url = ma.fields.String(required=True)
    event = ma.fields.String(required=True)
    delivery_id = ma.fields.String(required=True, metadata={"description": "Sent as X-Janitor-Delivery"})
    state = ma.fields.String(metadata={"description": "queued, retrying, delivered or failed"})
    attempts = ma.fields.Integer(required=True)
    last_status = ma.fields.Integer(allow_none=True, metadata={"description": "HTTP status of the last attempt"})
    last_error = ma.fields.String(allow_none=True)
    queued_at = time_field("When the delivery was queued")
    updated_at = time_field("When it last changed")


class JobSchema(ma.Schema):
    """A request and its progress: queued, then running through its window's steps, then succeeded or failed."""

    id = ma.fields.String(required=True)
    registry = ma.fields.String(metadata={
        "description": "The registry it is for, by name (GET /v1/registries); absent on records made before "
                       "registries had names"})
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(KINDS))
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(STATUSES))
    request = ma.fields.Dict(required=True)
    created_at = time_field("When the request was accepted", required=True)
    started_at = time_field("When its window started it; null while queued", nullable=True)
    finished_at = time_field("When it ended; null until then", nullable=True)
    window = ma.fields.Nested(WindowSchema, allow_none=True, metadata={
        "description": "The window it ran in; null until one starts it"})
    steps = ma.fields.List(ma.fields.Nested(StepSchema), required=True)
    result = ma.fields.Dict(metadata={"description": "manifests_deleted, tags_removed, repositories_removed, "
                                                     "planned, plan (dry run, or the plan awaiting approval), "
                                                     "approved_items, skipped (what a re-plan added after "
                                                     "approval, untouched; reason `protected`: what a protection "
                                                     "rule keeps, checked again in the window), "
                                                     "override_protection (true: the request passed protection by), "
                                                     "no_longer_planned, gc, bytes_freed, "
                                                     "integrity ({manifests_checked, blobs_checked, broken}: when "
                                                     "broken is not empty the job is failed with INTEGRITY_BROKEN), "
                                                     "storage (driver and the protections it turns off); planned "
                                                     "and bytes_freed are absent when blob sizes cannot be read. "
                                                     "With a restore window: restorable_until and bytes_held (GC "
                                                     "keeps those bytes until then). A restore job: restored_from, "
                                                     "manifests_restored, tags_restored, skipped (tags pushed anew "
                                                     "since, left alone) and failed"})
    error = ma.fields.Nested(JobErrorSchema, allow_none=True, metadata={
        "description": "Why it failed; null unless status is failed"})
    requested_by = ma.fields.String(allow_none=True, metadata={"description": "Name of the token that asked"})
    approval = ma.fields.String(allow_none=True, metadata={"description": "`required` when the job waits for "
                                                                          "approval before it changes anything"})
    approved_by = ma.fields.String(allow_none=True)
    approved_at = time_field("When it was approved", nullable=True)
    rejected_by = ma.fields.String(allow_none=True)
    rejected_at = time_field("When it was rejected", nullable=True)
    cancelled_by = ma.fields.String(allow_none=True)
    cancelled_at = time_field("When it was cancelled", nullable=True)
    expires_at = time_field("While awaiting approval: when the job expires (JANITOR_APPROVAL_TTL)", nullable=True)
    policy = ma.fields.String(allow_none=True, metadata={"description": "The policy a policy run belongs to"})
    summary = ma.fields.String(allow_none=True, metadata={
        "description": "One line a bot can post as is, e.g. `team/app: 12 tags deleted, 1.2 GB freed; writes "
                       "paused 1.9 s (job 3f2a…)`"})
    webhooks = ma.fields.List(ma.fields.Nested(WebhookDeliverySchema), metadata={
        "description": "Webhook deliveries of this job's events: url, last status, attempts"})


class JobQueryArgsSchema(PageQueryArgsSchema):
    status = ma.fields.String(validate=ma.validate.OneOf(STATUSES))
    kind = ma.fields.String(validate=ma.validate.OneOf(KINDS))
    requested_by = ma.fields.String(validate=ma.validate.Length(min=1, max=64))
    repository = ma.fields.String(validate=ma.validate.Length(min=1, max=255))
    policy = ma.fields.String(validate=ma.validate.Length(min=1, max=128))
    since = ma.fields.AwareDateTime(default_timezone=timezone.utc, metadata={
        "description": "Only jobs created at or after this time (ISO 8601)"})


JobPageSchema = page_schema(JobSchema, "JobPage")
