"""Every registry's resources under /v1/registries/{registry}/...: each resource blueprint is registered a
second time with that prefix (Flask allows it under another name), the `registry` path value goes to
`g.registry` (so `state()` answers with that registry's State), an unknown name answers 404
REGISTRY_UNKNOWN, `url_for` inside such a request names the same registry's paths (Location headers), and
the OpenAPI copies get operationIds of their own (listJobs -> listRegistryJobs) and the parameter documented.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import redis
from apispec import APISpec, BasePlugin
from flask import Flask, g, has_request_context
from flask_smorest import Api, Blueprint

from janitor import errors
from janitor.config import registries
from janitor.config.registries import Registries
from service.openapi import error_response
from service.state import DEFAULT, STATES, State

PREFIX = "/v1/registries/<registry>"
DOC_PREFIX = "/v1/registries/{registry}/"
SCOPED = "registry-"  # name of a blueprint's second registration: registry-jobs, registry-deletions, ...
PARAMETER: dict[str, Any] = {
    "in": "path", "name": "registry", "required": True,
    "description": "The registry's name, as GET /v1/registries lists them (REGISTRIES_FILE; `default` without it)",
    "schema": {"type": "string", "pattern": registries.NAME.pattern, "maxLength": 63}}
UNKNOWN = "No registry of that name (REGISTRY_UNKNOWN)"


class JanitorFlask(Flask):
    """Flask whose url_for, inside a /v1/registries/{registry}/... request, builds the same registry's URL:
    a job created under /v1/registries/eu/deletions is at /v1/registries/eu/jobs/{id}."""

    def url_for(self, endpoint: str, **values: Any) -> str:  # type: ignore[override]
        name = g.get("registry") if has_request_context() else None
        if name is not None and not endpoint.startswith(".") and "registry" not in values:
            scoped = SCOPED + endpoint
            if scoped in self.view_functions:
                return super().url_for(scoped, registry=name, **values)
        return super().url_for(endpoint, **values)


def build_states(known: Registries) -> dict[str, State]:
    """One State per registry; registries on the same Redis share one connection pool."""
    conns: dict[str, redis.Redis] = {}
    out = {}
    for settings in known:
        conn = conns.get(settings.redis_url)
        if conn is None:
            conn = conns[settings.redis_url] = redis.Redis.from_url(
                settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        out[settings.name] = State.build(settings, conn)
    return out


def install(app: Flask, known: Registries, states: dict[str, State]) -> None:
    """Before any blueprint: where state() finds the registries, and the hooks that read the path's name."""
    app.extensions[STATES] = states
    app.extensions[DEFAULT] = states[known.default]

    @app.url_value_preprocessor
    def take_registry(endpoint: str | None, values: dict[str, Any] | None) -> None:
        if values and "registry" in values:
            g.registry = values.pop("registry")


def check_registry() -> None:
    """Registered after the token check: an unauthenticated caller learns nothing about registry names."""
    name = g.get("registry")
    if name is not None and name not in app_states():
        raise errors.RegistryNotKnown(f"no registry named {name!r}; GET /v1/registries lists them", registry=name)


def app_states() -> dict[str, State]:
    from flask import current_app
    return current_app.extensions[STATES]


def register_scoped(api: Api, blueprints: Iterable[Blueprint]) -> None:
    """Each blueprint again under /v1/registries/<registry>/..., after its unprefixed registration."""
    for blp in blueprints:
        prefix = blp.url_prefix or ""
        if not prefix.startswith("/v1/"):
            raise ValueError(f"blueprint {blp.name} is not under /v1/: {prefix!r}")
        api.register_blueprint(blp, name=SCOPED + blp.name, url_prefix=PREFIX + prefix[len("/v1"):],
                               parameters=[PARAMETER])


def scoped_operation_id(op_id: str) -> str:
    """listJobs -> listRegistryJobs, createPolicyRun -> createRegistryPolicyRun."""
    return re.sub(r"^([a-z]+)", r"\1Registry", op_id, count=1)


class RegistryScopedDocs(BasePlugin):
    """An apispec plugin: the copies under /v1/registries/{registry}/ get their own operationIds, say so in
    their description, and list 404 REGISTRY_UNKNOWN."""

    def init_spec(self, spec: APISpec) -> None:
        self.spec = spec

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **kwargs: Any) -> None:
        if not path or not path.startswith(DOC_PREFIX):
            return
        for operation in (operations or {}).values():
            if "operationId" in operation:
                operation["operationId"] = scoped_operation_id(operation["operationId"])
            operation["description"] = (operation.get("description", "") +
                                        " For the registry named in the path.").strip()
            responses: dict[Any, Any] = operation.setdefault("responses", {})
            known = responses.get("404") or responses.get(404)
            if known is None:
                responses["404"] = error_response(UNKNOWN)
            elif "REGISTRY_UNKNOWN" not in known.get("description", ""):
                known["description"] = f"{known.get('description', '')}; or {UNKNOWN}".lstrip("; ")

