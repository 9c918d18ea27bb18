"""Protected tags: rules stored in the service (or read-only in PROTECTIONS_FILE) naming tags that no deletion,
policy or window removes."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from janitor.planning import protections
from janitor.planning.protections import ProtectionStore
from service import pagination
from service.errors import ErrorSchema
from service.openapi import location_header
from service.protections.schemas import (
    EXAMPLES,
    ProtectionReplaceSchema,
    ProtectionSchema,
    ProtectionViewSchema,
)
from service.state import STATES, State, state

blp = Blueprint("protections", __name__, url_prefix="/v1/protections",
                description="Protected tags: rules naming tags that nothing removes")

ProtectionPageSchema = pagination.page_schema(ProtectionViewSchema, "ProtectionPage")
NAME_PARAMETER = [{"in": "path", "name": "name", "required": True, "description": "The rule's name",
                   "schema": {"type": "string", "pattern": "^[a-z0-9]+(?:-[a-z0-9]+)*$", "maxLength": 63}}]
FORBIDDEN = "The token lacks the scope (FORBIDDEN)"


def _store(st: State) -> ProtectionStore:
    return ProtectionStore(st.conn, st.keys, st.settings.protections_file)


@blp.route("")
class Protections(MethodView):
    @blp.doc(operationId="listProtections", summary="List protection rules",
             description="Every rule, from the API and from PROTECTIONS_FILE (`source`). Scope `read`.")
    @blp.arguments(pagination.PageQueryArgsSchema, location="query")
    @blp.response(200, ProtectionPageSchema, description="One page of rules")
    def get(self, args: dict[str, int]) -> dict[str, Any]:
        page, meta = pagination.window(_store(state()).all(), args)
        return pagination.envelope(page, meta)

    @blp.doc(operationId="createProtection", summary="Protect tags",
             description="Scope `admin`. Validated whole (globs, RE2 expression). From now on no deletion, policy "
                         "or window removes the tags it names, nor what they reach; requests already queued are "
                         "checked again inside their window.")
    @blp.arguments(ProtectionSchema, examples=EXAMPLES)
    @blp.response(201, ProtectionViewSchema, description="Created; the rule is at Location",
                  headers=location_header("the rule"))
    @blp.alt_response(403, schema=ErrorSchema, description=FORBIDDEN)
    @blp.alt_response(409, schema=ErrorSchema, description="A rule of that name exists (in the API or the file)")
    @blp.alt_response(422, schema=ErrorSchema, description="A field is wrong: details name it and say why")
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:  # scope: admin (default)
        rule = protections.validate(body)
        _store(state()).create(rule)
        return {**rule, "source": "api"}, 201, {"Location": url_for("protections.Protection", name=rule["name"])}


@blp.route("/<string:name>", parameters=NAME_PARAMETER)
class Protection(MethodView):
    @blp.doc(operationId="getProtection", summary="Show a protection rule",
             description="Its fields and `source`. Scope `read`.")
    @blp.response(200, ProtectionViewSchema, description="The rule")
    @blp.alt_response(404, schema=ErrorSchema, description="No such rule (PROTECTION_UNKNOWN)")
    @blp.alt_response(422, schema=ErrorSchema, description="Not a rule name (INVALID_REQUEST)")
    def get(self, name: str) -> dict[str, Any]:
        return _store(state()).get(name)

    @blp.doc(operationId="replaceProtection", summary="Replace a protection rule",
             description="Scope `admin`. The whole rule is replaced; file rules are read-only.")
    @blp.arguments(ProtectionReplaceSchema, examples=EXAMPLES)
    @blp.response(200, ProtectionViewSchema, description="The rule as it is now")
    @blp.alt_response(403, schema=ErrorSchema, description=FORBIDDEN)
    @blp.alt_response(404, schema=ErrorSchema, description="No such rule (PROTECTION_UNKNOWN)")
    @blp.alt_response(409, schema=ErrorSchema, description="The rule comes from PROTECTIONS_FILE (PROTECTION_READ_ONLY)")
    @blp.alt_response(422, schema=ErrorSchema, description="A field is wrong: details name it and say why")
    def put(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        store = _store(state())
        store.get(name)  # 404 and bad names before anything else
        rule = protections.validate(body, name=name)
        store.replace(rule)
        return {**rule, "source": "api"}

    @blp.doc(operationId="deleteProtection", summary="Delete a protection rule",
             description="Scope `admin`. The tags it protected may be deleted again. File rules are read-only.")
    @blp.response(204, description="Deleted")
    @blp.alt_response(403, schema=ErrorSchema, description=FORBIDDEN)
    @blp.alt_response(404, schema=ErrorSchema, description="No such rule (PROTECTION_UNKNOWN)")
    @blp.alt_response(409, schema=ErrorSchema, description="The rule comes from PROTECTIONS_FILE (PROTECTION_READ_ONLY)")
    @blp.alt_response(422, schema=ErrorSchema, description="Not a rule name (INVALID_REQUEST)")
    def delete(self, name: str) -> None:
        _store(state()).delete(name)


@blp.record_once
def _check_protections_file(setup: Any) -> None:
    """A broken PROTECTIONS_FILE stops the service at start, naming the entry and field, not at the first
    deletion."""
    for st in setup.app.extensions[STATES].values():  # REGISTRIES_FILE may give each registry its own
        if st.settings.protections_file:
            protections.load_file(st.settings.protections_file)
