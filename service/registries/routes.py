"""GET /v1/registries: the registries this deployment maintains (REGISTRIES_FILE), each with its readiness."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from service import pagination
from service.errors import ErrorSchema
from service.health.routes import readiness
from service.registries.schemas import RegistryPageSchema, RegistrySchema
from service.registry_scope import PARAMETER, UNKNOWN
from service.state import DEFAULT, State, state, states

blp = Blueprint("registries", __name__, url_prefix="/v1/registries",
                description="The registries this deployment maintains")


def describe(st: State, default: bool) -> dict[str, Any]:
    found, _ = readiness(st)
    s = st.settings
    return {"name": s.name, "url": s.registry_url, "default": default,
            "container": s.registry_container, "docker_host": s.docker_host,
            "replicas": [{"container": r.container, "url": r.url} for r in s.replicas], **found}


@blp.route("")
class Registries(MethodView):
    @blp.doc(operationId="listRegistries", summary="List registries",
             description="Every registry of REGISTRIES_FILE in the file's order (without the file, the one "
                         "registry named `default`), each with the checks /readyz makes for it: Redis, the "
                         "registry, and the workers' last report on its Docker host and container. Its resources "
                         "are under /v1/registries/{name}/...; the unprefixed paths are the default registry's.")
    @blp.arguments(pagination.PageQueryArgsSchema, location="query")
    @blp.response(200, RegistryPageSchema, description="A page of registries")
    def get(self, args: dict[str, int]) -> dict[str, Any]:
        page, meta = pagination.window(list(states().values()), args)
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(page)))) as pool:  # one slow registry at a time
            default = current_app.extensions[DEFAULT]
            return pagination.envelope(list(pool.map(lambda st: describe(st, st is default), page)), meta)


@blp.route("/<registry>", parameters=[PARAMETER])
class Registry(MethodView):
    @blp.doc(operationId="getRegistry", summary="Get a registry",
             description="One registry, with the checks /readyz makes for it.")
    @blp.response(200, RegistrySchema, description="The registry and its readiness")
    @blp.alt_response(404, schema=ErrorSchema, description=UNKNOWN)
    def get(self) -> dict[str, Any]:
        st = state()
        return describe(st, st is current_app.extensions[DEFAULT])
