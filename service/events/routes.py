"""Registry notifications: distribution POSTs an envelope per push, delete and manifest pull, one at a time per
endpoint, so this answers at once: pulls are recorded (one Redis round trip), pushes and deletes queued to be
checked against the registry in the background (janitor/index/confirming.py; events are hints, not truth)."""

from __future__ import annotations

import time
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from janitor import index
from janitor.index import confirming
from janitor.planning.pulls import PullBook
from service import auth
from service.errors import ErrorSchema
from service.events.schemas import EnvelopeSchema, EventsResultSchema
from service.state import State, state

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
                         "scope). Answers at once: distribution sends one event per POST, in sequence, so the "
                         "answer time caps how many events a registry can send. Pushes and deletes of tagged "
                         "manifests are queued and checked against the registry in the background (a HEAD per tag; "
                         "a manifest only when its digest is not cached; claims on one repository merge while they "
                         "wait) before the index changes, so an event whose content is false changes nothing; a "
                         "push shows in the listing within 2 s. Manifest pulls are recorded per repository and "
                         "digest (`last_pulled` in tag listings, the policies' `keep_pulled_within` and "
                         "`keep_last_pulled`), except the janitor's own reads (User-Agent `registry-janitor`). "
                         "Mounts and blob events are ignored. "
                         "Takes application/vnd.docker.distribution.events.v1+json (v2 too) and application/json.")
    @blp.arguments(EnvelopeSchema(), example=EXAMPLE)  # an instance: webargs would build a class anew per request
    @blp.response(200, EventsResultSchema, description="Events taken: pulls recorded, claims queued for checking",
                  example={"received": 1, "ignored": 0, "pulls": 0, "repositories": ["team/app"], "changed": [],
                           "rechecking": []})
    @blp.alt_response(403, schema=ErrorSchema, description="The token lacks the events scope (FORBIDDEN)")
    @blp.alt_response(502, schema=ErrorSchema, description="The registry answered unexpectedly: REGISTRY_ERROR, "
                      "REGISTRY_AUTH_FAILED (its credentials were refused)")
    @blp.alt_response(503, schema=ErrorSchema, description="Registry unreachable (REGISTRY_UNAVAILABLE)")
    @auth.scope("events")
    def post(self, envelope: dict[str, Any]) -> dict[str, Any]:
        return take(state(), envelope["events"])


def take(st: State, events: list[dict[str, Any]]) -> dict[str, Any]:
    """What a checked envelope does, and the answer: here for this view and for the thin path that serves
    the same requests in front of Flask (service/events/fast.py). Everything it does may be done twice
    with the same outcome (a pull time only moves forward, a queued claim merges with itself), so the thin
    path can hand a request it failed on to this view."""
    pulls = PullBook.of(st.conn, st.keys.prefix).record(events)  # one Redis round trip at most
    checks, ignored = index.events_to_check(events)
    queue = confirming.queue()
    queued = [repo for repo, check in sorted(checks.items()) if queue.submit(st.index, repo, check)]
    _note_event(st.index)
    return {"received": len(events), "ignored": ignored - pulls, "pulls": pulls, "repositories": queued,
            "changed": [], "rechecking": []}


_noted: dict[int, float] = {}
NOTE_EVERY = 1.0  # seconds: last_event_at is written at most this often per process and registry


def _note_event(idx: index.TagIndex) -> None:
    """`last_event_at` for /readyz, without a Redis write per event."""
    now = time.monotonic()
    if now - _noted.get(id(idx), -NOTE_EVERY) >= NOTE_EVERY:
        _noted[id(idx)] = now
        idx.note(last_event_at=index.now_iso())
