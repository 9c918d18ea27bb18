"""Policy bodies. janitor.planning.policies.validate is the one validator (the API and POLICIES_FILE share it); the
fields here describe the shape for OpenAPI and reject wrong types first."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from janitor import errors
from janitor.planning import policies
from service.jobs.schemas import WebhookDeliverySchema, time_field
from service.validators import gc_mode_field


def _checked(data: Any, name_optional: bool) -> Any:
    probe = data
    if name_optional and isinstance(data, dict) and "name" not in data:
        probe = {**data, "name": "placeholder"}
    try:
        policies.validate(probe)
    except errors.InvalidPolicy as exc:
        raise ma.ValidationError(exc.details) from None
    return data


class PolicyFields(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    name = ma.fields.String(validate=[ma.validate.Length(min=1, max=policies.NAME_MAX),
                                      ma.validate.Regexp(policies.NAME_RE.pattern)],
                            metadata={"description": "Lowercase letters, digits and '-'; unique", "example": "app-builds"})
    repositories = ma.fields.List(ma.fields.String(validate=[
        ma.validate.Length(min=1, max=255), ma.validate.Regexp(r"^[a-z0-9._/*-]+$")]),
        validate=ma.validate.Length(min=1, max=policies.MAX_REPOSITORY_GLOBS), metadata={
        "description": "Globs on the whole repository name: * within one path segment, ** across them",
        "example": ["team/*", "tools/ci"]})
    keep_last = ma.fields.Integer(allow_none=True, strict=True, metadata={
        "description": "Keep the N most recent tags of each repository (by image creation time, newest first, "
                       "ties by name; an index counts its newest child)", "example": 10})
    older_than = ma.fields.String(allow_none=True, metadata={
        "description": "Delete only tags older than this: 90m, 12h, 30d, 2w", "example": "30d"})
    delete_tags = ma.fields.String(allow_none=True, metadata={
        "description": "RE2 regular expression (searched): only matching tags may go; default every tag",
        "example": "^(dev|pr|build)-"})
    keep_tags = ma.fields.String(allow_none=True, metadata={
        "description": "RE2 regular expression (searched): matching tags always stay (keep wins)",
        "example": "^(latest|stable|v\\d+\\.\\d+\\.\\d+)$"})
    keep_pulled_within = ma.fields.String(allow_none=True, metadata={
        "description": "Keep tags whose image was pulled within this (90m, 12h, 30d, 2w), as the registry's "
                       "notifications tell (manifest pulls by others than the janitor). Until pulls have been "
                       "heard that long, a tag with no pull heard of stays (reason no_pull_data)",
        "example": "30d"})
    keep_last_pulled = ma.fields.Integer(allow_none=True, strict=True, metadata={
        "description": "Keep the N most recently pulled tags of each repository; until any pull has been heard, "
                       "every tag with no pull heard of stays (reason no_pull_data)", "example": 5})
    untagged = ma.fields.Boolean(metadata={
        "description": "Also delete manifests no tag reaches, as the untagged deletion does", "example": True})
    schedule = ma.fields.String(allow_none=True, metadata={
        "description": "Cron expression (5 fields, UTC) or an interval such as 15m; omitted: on demand only",
        "example": "0 3 * * *"})
    enabled = ma.fields.Boolean(metadata={"description": "false pauses the schedule", "example": True})
    restore_window = ma.fields.String(allow_none=True, metadata={
        "description": "How long what the policy's runs delete can be put back (POST /v1/jobs/{id}/restore), "
                       "overriding JANITOR_RESTORE_WINDOW: `0` (off) or a whole number and a unit s, m, h, d or w "
                       "(e.g. `7d`); null: the registry's", "example": "7d"})
    approval = ma.fields.String(allow_none=True, validate=ma.validate.OneOf(["required"]), metadata={
        "description": "`required`: the policy's scheduled runs are planned and wait as `awaiting_approval` "
                       "until a token with `approve` approves them", "example": "required"})
    notify_before = ma.fields.String(allow_none=True, metadata={
        "description": "Warn this long before each scheduled run (a duration: 30m, 24h, 2d): the run's plan is "
                       "read then, with no window, and sent as webhook event `policy.upcoming` with a one-line "
                       "`summary`. Needs a schedule, and is shorter than an interval schedule. The run plans again "
                       "when due", "example": "24h"})


class PolicySchema(PolicyFields):
    """A retention policy. A tag is deleted when every rule given lets it go; rules left out do not restrict.
    A tag whose image has no creation time is never deleted by a policy."""

    @ma.pre_load
    def check(self, data: Any, **_: Any) -> Any:
        return _checked(data, name_optional=False)


class PolicyReplaceSchema(PolicyFields):
    """A whole policy replacing the one at its path; `name` may be left out (it cannot change)."""

    @ma.pre_load
    def check(self, data: Any, **_: Any) -> Any:
        return _checked(data, name_optional=True)


class LastRunSchema(ma.Schema):
    job_id = ma.fields.String(required=True)
    status = ma.fields.String(required=True)
    at = time_field("When the run was asked for", required=True)
    finished_at = time_field("When the run ended; null while it waits or runs", nullable=True)


class PolicyUpcomingSchema(ma.Schema):
    """The last `policy.upcoming` warning of a policy (`notify_before`)."""

    due_at = time_field("The scheduled run the warning is about", required=True)
    sent_at = time_field("When the warning was planned and queued", required=True)
    summary = ma.fields.String(required=True, metadata={
        "example": "policy app-builds will delete 12 tags (9 manifests, 3.4 GB) in 24h at 2026-12-07T03:00Z"})
    webhooks = ma.fields.List(ma.fields.Nested(WebhookDeliverySchema), required=True, metadata={
        "description": "One delivery per WEBHOOK_URLS entry"})


class PolicyViewSchema(PolicyFields):
    source = ma.fields.String(required=True, validate=ma.validate.OneOf(["api", "file"]), metadata={
        "description": "api, or file: given in POLICIES_FILE and read-only here"})
    last_run = ma.fields.Nested(LastRunSchema, allow_none=True)
    next_run = time_field("When the schedule fires next (UTC); null without a schedule or when paused",
                          nullable=True)
    last_upcoming = ma.fields.Nested(PolicyUpcomingSchema, allow_none=True, metadata={
        "description": "The last `policy.upcoming` warning sent (`notify_before`); null if none"})


class PolicyRunSchema(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    dry_run = ma.fields.Boolean(required=True, metadata={
        "description": "true: report the plan and change nothing; false: carry it out in the next window"})
    approval = ma.fields.String(allow_none=True, validate=ma.validate.OneOf(["required"]), metadata={
        "description": "`required`: the run is planned and waits as `awaiting_approval` with its plan until "
                       "another token approves it (JANITOR_REQUIRE_APPROVAL makes it the rule for real runs)"})
    gc_mode = gc_mode_field()

    @ma.pre_load
    def strict(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict) and "dry_run" in data and not isinstance(data["dry_run"], bool):
            raise ma.ValidationError({"dry_run": ["must be true or false"]})
        return data


POLICY_EXAMPLES = {
    "builds": {"summary": "Keep the last 10 builds, nightly", "value": {
        "name": "app-builds", "repositories": ["team/*", "tools/ci"], "keep_last": 10, "older_than": "30d",
        "delete_tags": "^(dev|pr|build)-", "keep_tags": "^(latest|stable|v\\d+\\.\\d+\\.\\d+)$",
        "untagged": True, "schedule": "0 3 * * *", "enabled": True}},
    "approved": {"summary": "Scheduled runs wait for approval", "value": {
        "name": "old-previews", "repositories": ["previews/**"], "older_than": "2w", "schedule": "15m",
        "approval": "required"}},
    "warned": {"summary": "Nightly, with a warning a day before", "value": {
        "name": "nightly-prs", "repositories": ["team/*"], "delete_tags": "^pr-", "older_than": "7d",
        "schedule": "0 3 * * *", "notify_before": "24h"}},
}
RUN_EXAMPLES = {
    "dryRun": {"summary": "The plan only, nothing changed", "value": {"dry_run": True}},
    "run": {"summary": "Carry it out in the next window", "value": {"dry_run": False}},
    "approval": {"summary": "Plan now, delete once approved", "value": {"dry_run": False, "approval": "required"}},
}
