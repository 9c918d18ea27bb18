"""Distribution's notification envelope (notifications/event.go): only the fields the index uses are checked;
the rest (request, actor, source, ...) is accepted and ignored."""

from __future__ import annotations

import marshmallow as ma

from janitor.registry import names

# Distribution sends one event per envelope (2.8); 100 of its events fit in JANITOR_MAX_BODY_BYTES (64 KiB).
MAX_EVENTS = 100


def _repository(name: str) -> None:
    if not names.is_repository(name):
        raise ma.ValidationError("not a valid repository name")


class TargetSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    mediaType = ma.fields.String(load_default="", validate=ma.validate.Length(max=255))  # noqa: N815 - the wire name
    digest = ma.fields.String(validate=ma.validate.Regexp(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{1,255}$"))
    # Documented as the names that always fit (as the tags path parameter is); any name the registry takes passes.
    repository = ma.fields.String(required=True, validate=lambda n: _repository(n), metadata={
        "pattern": names.REPOSITORY_RE.pattern, "maxLength": names.REPOSITORY_ALWAYS_FITS})
    tag = ma.fields.String(validate=ma.validate.Regexp(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", error="not a valid tag"))
    size = ma.fields.Integer(strict=True)
    length = ma.fields.Integer(strict=True)
    url = ma.fields.String()


class RequestSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    method = ma.fields.String(validate=ma.validate.Length(max=16))
    useragent = ma.fields.String(validate=ma.validate.Length(max=1024), metadata={
        "description": "The client's User-Agent: the janitor's own reads (registry-janitor) are no pulls"})


class EventSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    id = ma.fields.String()
    timestamp = ma.fields.String(validate=ma.validate.Length(max=64), metadata={
        "description": "RFC 3339: a pull's time (never later than its arrival)"})
    action = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=32), metadata={
        "description": "push, pull, mount or delete"})
    target = ma.fields.Nested(TargetSchema, required=True)
    request = ma.fields.Nested(RequestSchema)


class EnvelopeSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE
        description = ("Distribution's notification envelope (media type "
                       "application/vnd.docker.distribution.events.v1+json, or v2 from distribution 3)")

    events = ma.fields.List(ma.fields.Nested(EventSchema), required=True,
                            validate=ma.validate.Length(max=MAX_EVENTS))


class EventsResultSchema(ma.Schema):
    received = ma.fields.Integer(required=True, metadata={"description": "Events in the envelope"})
    ignored = ma.fields.Integer(required=True, metadata={
        "description": "Mounts, blob events, pushes by digest and the janitor's own reads: they change no tag "
                       "and are no pull"})
    pulls = ma.fields.Integer(required=True, metadata={
        "description": "Manifest pulls recorded (by clients other than the janitor)"})
    repositories = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "Repositories queued to be checked against the registry (in the background)"})
    changed = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "Always empty: the checks run after the answer (kept for clients of the earlier answer)"})
    rechecking = ma.fields.List(ma.fields.String(), required=True, metadata={
        "description": "Always empty: the checks run after the answer (kept for clients of the earlier answer)"})
