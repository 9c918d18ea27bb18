from __future__ import annotations

import marshmallow as ma

from service.health.schemas import CheckSchema
from service.pagination import page_schema


class ReplicaSchema(ma.Schema):
    container = ma.fields.String(required=True, metadata={"description": "The replica's container"})
    url = ma.fields.String(required=True, metadata={
        "description": "The replica's own address, where its write probes go", "format": "uri"})


class RegistrySchema(ma.Schema):
    name = ma.fields.String(required=True, metadata={
        "description": "Its name in /v1/registries/{registry}/...", "example": "eu"})
    url = ma.fields.String(required=True, metadata={"description": "Where the registry answers", "format": "uri"})
    default = ma.fields.Boolean(required=True, metadata={
        "description": "Whether the unprefixed paths (/v1/repositories, /v1/jobs, ...) are this registry's"})
    container = ma.fields.String(required=True, metadata={"description": "The registry's container"})
    replicas = ma.fields.List(ma.fields.Nested(ReplicaSchema), required=True, metadata={
        "description": "Every container serving the registry's storage, each fenced, probed and restarted in a "
                       "window; the first is `container`, where GC runs. One unless REGISTRIES_FILE names "
                       "`replicas`"})
    docker_host = ma.fields.String(allow_none=True, required=True, metadata={
        "description": "The Docker engine that runs the container; null: the workers' DOCKER_HOST"})
    status = ma.fields.String(required=True, metadata={"description": "ready or unavailable, as /readyz says it"})
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(CheckSchema), required=True,
                            metadata={"description": "redis, registry, docker (and storage), as in /readyz"})


RegistryPageSchema = page_schema(RegistrySchema, "RegistryPage")
