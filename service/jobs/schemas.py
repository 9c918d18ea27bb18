from __future__ import annotations

import marshmallow as ma

STATUSES = ["queued", "running", "succeeded", "failed"]


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


class JobSchema(ma.Schema):
    id = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(["deletion", "gc", "policy"]))
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(STATUSES))
    request = ma.fields.Dict(required=True)
    created_at = ma.fields.String(required=True)
    started_at = ma.fields.String(allow_none=True)
    finished_at = ma.fields.String(allow_none=True)
    window = ma.fields.Nested(WindowSchema, allow_none=True)
    steps = ma.fields.List(ma.fields.Nested(StepSchema), required=True)
    result = ma.fields.Dict(metadata={"description": "manifests_deleted, tags_removed, repositories_removed, "
                                                     "planned, plan (dry run), gc, bytes_freed, integrity"})
    error = ma.fields.Nested(JobErrorSchema, allow_none=True)
    policy = ma.fields.String(metadata={"description": "The retention policy a `policy` job ran (kind policy only)"})
