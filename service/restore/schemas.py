from __future__ import annotations

import marshmallow as ma

from janitor.planning.restore import MAX_SUBSET

# Per field, so that a body of the longest entries stays under JANITOR_MAX_BODY_BYTES' default (64 KiB).
MAX_PER_FIELD = MAX_SUBSET // 2
from service.jobs.schemas import time_field
from service.pagination import PageQueryArgsSchema, page_schema


class RestoreRequestSchema(ma.Schema):
    """What to put back: everything the job deleted (an empty body), or a subset of it."""

    class Meta:
        unknown = ma.RAISE

    tags = ma.fields.List(ma.fields.String(validate=ma.validate.Length(min=3, max=384)),
                          validate=ma.validate.Length(min=1, max=MAX_PER_FIELD), metadata={
        "description": "`repository:tag` entries of the job's `tags_removed`: each is PUT back where it pointed "
                       "(its manifest first, when the job deleted it), unless the tag was pushed anew since"})
    manifests = ma.fields.List(ma.fields.String(validate=ma.validate.Length(min=71, max=327)),
                               validate=ma.validate.Length(min=1, max=MAX_PER_FIELD), metadata={
        "description": "`sha256:...` entries of the job's `manifests_deleted` (or `repository@sha256:...`): each "
                       "is PUT back by digest, an index with the children the job deleted"})


class RestorableSchema(ma.Schema):
    """A job whose deletions can still be put back."""

    job = ma.fields.String(required=True, metadata={"description": "The deletion or policy run's id"})
    kind = ma.fields.String(allow_none=True, metadata={"description": "deletion or policy"})
    policy = ma.fields.String(allow_none=True)
    requested_by = ma.fields.String(allow_none=True)
    deleted_at = time_field("When its manifests and tags were deleted", required=True)
    restorable_until = time_field("When its restore window ends: GC keeps its blobs until then, and the first "
                                  "GC after it frees them", required=True)
    repositories = ma.fields.List(ma.fields.String(), required=True)
    manifests = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "`repository@digest` of every manifest it deleted"})
    tags = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "`repository:tag` of every tag it removed"})
    blobs_held = ma.fields.Integer(required=True, metadata={"description": "Blobs GC keeps for it"})
    bytes_held = ma.fields.Integer(allow_none=True, metadata={
        "description": "Bytes GC would have freed and keeps instead (the plan's); null when sizes were unknown"})
    restored_by = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "Restore jobs that put part or all of it back"})


RestorableQueryArgsSchema = PageQueryArgsSchema
RestorablePageSchema = page_schema(RestorableSchema, "RestorablePage")
