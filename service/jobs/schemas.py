from __future__ import annotations

from datetime import timezone

import marshmallow as ma

from service.pagination import PageQueryArgsSchema, page_schema

STATUSES = ["queued", "running", "succeeded", "failed", "awaiting_approval", "rejected", "expired", "cancelled"]
KINDS = ["deletion", "gc", "policy"]


class JobErrorSchema(ma.Schema):
    code = ma.fields.String(required=True)
    message = ma.fields.String(required=True, metadata={"description": "What happened and what to do about it"})
    step = ma.fields.String(allow_none=True, metadata={"description": "The step the job failed in"})
    details = ma.fields.Dict(metadata={"description": "The names involved, e.g. the tags of an index"})


class StepSchema(ma.Schema):
    name = ma.fields.String(required=True, metadata={
        "description": "preflight, delete, drain, fence, hold, remove_repositories, gc, restart, health or "
                       "verify"})
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["running", "succeeded", "failed"]))
    started_at = ma.fields.String(required=True)
    finished_at = ma.fields.String(allow_none=True)
    outcome = ma.fields.Dict(metadata={"description": "What the step did: manifests deleted, GC summary, ..."})
    error = ma.fields.Dict(allow_none=True)


class WindowSchema(ma.Schema):
    id = ma.fields.String(required=True)
    started_at = ma.fields.String(required=True)
    finished_at = ma.fields.String(allow_none=True)
    jobs = ma.fields.List(ma.fields.String(), metadata={"description": "Jobs that shared this window"})
    write_refused_seconds = ma.fields.Float(allow_none=True, metadata={
        "description": "How long the registry refused writes"})


class WebhookDeliverySchema(ma.Schema):
    url = ma.fields.String(required=True)
    event = ma.fields.String(required=True)
    delivery_id = ma.fields.String(required=True, metadata={"description": "Sent as X-Janitor-Delivery"})
    state = ma.fields.String(metadata={"description": "queued, retrying, delivered or failed"})
    attempts = ma.fields.Integer(required=True)
    last_status = ma.fields.Integer(allow_none=True, metadata={"description": "HTTP status of the last attempt"})
    last_error = ma.fields.String(allow_none=True)
    queued_at = ma.fields.String()
    updated_at = ma.fields.String()


class JobSchema(ma.Schema):
    id = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(KINDS))
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(STATUSES))
    request = ma.fields.Dict(required=True)
    created_at = ma.fields.String(required=True)
    started_at = ma.fields.String(allow_none=True)
    finished_at = ma.fields.String(allow_none=True)
    window = ma.fields.Nested(WindowSchema, allow_none=True)
    steps = ma.fields.List(ma.fields.Nested(StepSchema), required=True)
    result = ma.fields.Dict(metadata={"description": "manifests_deleted, tags_removed, repositories_removed, "
                                                     "planned, plan (dry run, or the plan awaiting approval), "
                                                     "approved_items, skipped (what a re-plan added after "
                                                     "approval, untouched), no_longer_planned, gc, bytes_freed, "
                                                     "integrity"})
    error = ma.fields.Nested(JobErrorSchema, allow_none=True)
    requested_by = ma.fields.String(allow_none=True, metadata={"description": "Name of the token that asked"})
    approval = ma.fields.String(allow_none=True, metadata={"description": "`required` when the job waits for "
                                                                          "approval before it changes anything"})
    approved_by = ma.fields.String(allow_none=True)
    approved_at = ma.fields.String(allow_none=True)
    rejected_by = ma.fields.String(allow_none=True)
    rejected_at = ma.fields.String(allow_none=True)
    cancelled_by = ma.fields.String(allow_none=True)
    cancelled_at = ma.fields.String(allow_none=True)
    expires_at = ma.fields.String(allow_none=True, metadata={
        "description": "While awaiting approval: when the job expires (JANITOR_APPROVAL_TTL)"})
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
