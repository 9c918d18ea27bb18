from __future__ import annotations

import marshmallow as ma

from service.errors import code_field


class HealthSchema(ma.Schema):
    status = ma.fields.String(required=True)


class CheckSchema(ma.Schema):
    ok = ma.fields.Boolean(required=True)
    code = code_field(metadata={"description": "Why the check failed"})
    message = ma.fields.String()
    at = ma.fields.String(metadata={"format": "date-time", "description": "When the worker last checked (docker only)"})
    driver = ma.fields.String(metadata={"description": "The registry's storage driver (storage only)"})
    filesystem = ma.fields.Boolean(metadata={"description": "Whether the registry uses the filesystem driver"})
    readable = ma.fields.Boolean(metadata={"description": "Whether the janitor reads and changes the registry's "
                                                          "storage itself (filesystem and s3): every protection on"})
    gc_runs = ma.fields.Boolean(metadata={"description": "Whether windows run garbage-collect"})
    protections_off = ma.fields.List(ma.fields.String(), metadata={
        "description": "Protections the storage driver turns off: holds, untagged_listing, repository_removal, "
                       "exact_bytes, garbage_collection"})
    read_only = ma.fields.Boolean(allow_none=True, metadata={
        "description": "Whether the registry refuses writes (writes only; null when no worker reported)"})
    source = ma.fields.String(allow_none=True, metadata={
        "description": "What told (writes only): `config marker` (a window's read-only config is in place), "
                       "`read-only config` (read-only mode set in the config or environment, or not) or "
                       "`write probe` (a window's blob upload was refused or accepted)"})
    window = ma.fields.String(allow_none=True, metadata={
        "description": "The maintenance window the read-only config or the restart belongs to"})
    mode = ma.fields.String(metadata={"description": "How the listing index is kept fresh (index only): "
                                                     "notifications or polling"})
    filled_at = ma.fields.String(metadata={"format": "date-time", "description": "When the index was first filled "
                                                                                 "(index only)"})
    reconciled_at = ma.fields.String(metadata={"format": "date-time", "description": "When the worker last read "
                                                                                     "the whole registry (index only)"})
    last_event_at = ma.fields.String(metadata={"format": "date-time", "description": "When a registry event last "
                                                                                     "came in (index only)"})


class ReadinessSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"description": "ready or unavailable"})
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(CheckSchema))
