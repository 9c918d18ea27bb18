"""Registry notifications: distribution POSTs an envelope per push and delete; the index is corrected after
checking each claim against the registry (events are hints, not truth)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from janitor import index
from service import auth
from service.errors import ErrorSchema
from service.events.schemas import EnvelopeSchema, EventsResultSchema
from service.state import state

blp = Blueprint("events", __name__, url_prefix="/v1/events", description="Registry notifications")
EXAMPLE = {"events": [{
    "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7", "timestamp": "2026-11-29T12:00:00.000Z", "action": "push",
    "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 708,
               "digest": "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
               "repository": "team/app", "tag": "v1"},
    "request": {"id": "3c5f2a8b", "addr": "127.0.0.1:40000", "host": "registry:5000", "method": "PUT",
                "useragent": "docker/24"},
    "actor": {}, "source": {"addr": "registry:5000", "instanceID": "b0ed3b8e"}}]}


@blp.route("")
class Events(MethodView):
    @blp.doc(operationId="receiveRegistryEvents", summary="Receive registry notifications",
             description="The endpoint for distribution's `notifications.endpoints` (send "
                         "`Authorization: Bearer <token>` in its `headers`; the token needs the `events` or `admin` "
                         "scope). Pushes and deletes of tagged manifests are checked against the registry (a HEAD "
                         "per tag; a manifest only when its digest is not cached) before the index changes, so an "
                         "event whose content is false changes nothing (distribution sends a push event just before "
                         "it writes the tag: a pushed tag not visible yet is checked again in the background for "
                         "about 1.5 s); pulls, mounts and blob events are ignored. "
                         "Takes application/vnd.docker.distribution.events.v1+json (v2 too) and application/json.")
    @blp.arguments(EnvelopeSchema, example=EXAMPLE)
    @blp.response(200, EventsResultSchema, description="Events checked and the index corrected",
                  example={"received": 1, "ignored": 0, "repositories": ["team/app"], "changed": ["team/app"],
                           "rechecking": []})
    @blp.alt_response(403, schema=ErrorSchema, description="The token lacks the events scope (FORBIDDEN)")
    @blp.alt_response(502, schema=ErrorSchema, description="The registry answered unexpectedly: REGISTRY_ERROR, "
                      "REGISTRY_AUTH_FAILED (its credentials were refused)")
    @blp.alt_response(503, schema=ErrorSchema, description="Registry unreachable (REGISTRY_UNAVAILABLE)")
    @auth.scope("events")
    def post(self, envelope: dict[str, Any]) -> dict[str, Any]:
        idx = state().index
        events = envelope["events"]
        checks, ignored = index.events_to_check(events)
        changed, pending = [], []
        for repo, check in sorted(checks.items()):
            committed, missing = idx.confirm(repo, check)
            if committed:
                changed.append(repo)
            if missing and idx.confirm_later(repo, missing):
                pending.append(repo)
        idx.note(last_event_at=index.now_iso())
        return {"received": len(events), "ignored": ignored, "repositories": sorted(checks), "changed": changed,
                "rechecking": pending}
