"""Distribution's notification envelope (notifications/event.go): only the fields the index uses are checked;
the rest (request, actor, source, ...) is accepted and ignored."""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma

from janitor.registry import names

# Distribution sends one event per envelope (2.8); 100 of its events fit in JANITOR_MAX_BODY_BYTES (64 KiB).
MAX_EVENTS = 100
DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{1,255}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _repository(name: str) -> None:
    if not names.is_repository(name):
        raise ma.ValidationError("not a valid repository name")


class TargetSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    mediaType = ma.fields.String(load_default="", validate=ma.validate.Length(max=255))  # noqa: N815 - the wire name
    digest = ma.fields.String(validate=ma.validate.Regexp(DIGEST_RE))
    # Documented as the names that always fit (as the tags path parameter is); any name the registry takes passes.
    repository = ma.fields.String(required=True, validate=lambda n: _repository(n), metadata={
        "pattern": names.REPOSITORY_RE.pattern, "maxLength": names.REPOSITORY_ALWAYS_FITS})
    tag = ma.fields.String(validate=ma.validate.Regexp(TAG_RE, error="not a valid tag"))
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

    def load(self, data: Any, **_: Any) -> dict[str, Any]:  # type: ignore[override]
        """Checked by `check_envelope`, by hand: the rules of the fields above (which document the envelope;
        tests/test_index_units.py holds the two to the same answers) at a fraction of marshmallow's cost, on
        the endpoint a registry calls once per event."""
        return check_envelope(data)


# -- the envelope checked by hand -------------------------------------------------------------------------


_Problems = dict[Any, Any]


def _text(obj: dict[str, Any], key: str, out: dict[str, Any], problems: _Problems, max_len: int | None = None,
          pattern: re.Pattern[str] | None = None, error: str = "String does not match expected pattern.") -> None:
    if key not in obj:
        return
    value = obj[key]
    if not isinstance(value, str):
        problems[key] = ["Not a valid string."]
    elif max_len is not None and len(value) > max_len:
        problems[key] = [f"Longer than maximum length {max_len}."]
    elif pattern is not None and pattern.match(value) is None:
        problems[key] = [error]
    else:
        out[key] = value


def _whole(obj: dict[str, Any], key: str, out: dict[str, Any], problems: _Problems) -> None:
    if key in obj:
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            problems[key] = ["Not a valid integer."]
        else:
            out[key] = value


def _target(raw: Any, problems: _Problems) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": ""}
    if not isinstance(raw, dict):
        problems["_schema"] = ["Invalid input type."]
        return out
    _text(raw, "mediaType", out, problems, max_len=255)
    _text(raw, "digest", out, problems, pattern=DIGEST_RE)
    if "repository" not in raw:
        problems["repository"] = ["Missing data for required field."]
    elif not isinstance(raw["repository"], str):
        problems["repository"] = ["Not a valid string."]
    elif not names.is_repository(raw["repository"]):
        problems["repository"] = ["not a valid repository name"]
    else:
        out["repository"] = raw["repository"]
    _text(raw, "tag", out, problems, pattern=TAG_RE, error="not a valid tag")
    _whole(raw, "size", out, problems)
    _whole(raw, "length", out, problems)
    _text(raw, "url", out, problems)
    return out


def _event(raw: Any, problems: _Problems) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(raw, dict):
        problems["_schema"] = ["Invalid input type."]
        return out
    _text(raw, "id", out, problems)
    _text(raw, "timestamp", out, problems, max_len=64)
    if "action" not in raw:
        problems["action"] = ["Missing data for required field."]
    elif not isinstance(raw["action"], str):
        problems["action"] = ["Not a valid string."]
    elif not 1 <= len(raw["action"]) <= 32:
        problems["action"] = ["Length must be between 1 and 32."]
    else:
        out["action"] = raw["action"]
    if "target" not in raw:
        problems["target"] = ["Missing data for required field."]
    elif raw["target"] is None:
        problems["target"] = ["Field may not be null."]
    else:
        inner: _Problems = {}
        out["target"] = _target(raw["target"], inner)
        if inner:
            problems["target"] = inner
    if "request" in raw and raw["request"] is None:
        problems["request"] = ["Field may not be null."]
    elif "request" in raw:
        inner = {}
        request = raw["request"]
        if not isinstance(request, dict):
            inner["_schema"] = ["Invalid input type."]
        else:
            out["request"] = {}
            _text(request, "method", out["request"], inner, max_len=16)
            _text(request, "useragent", out["request"], inner, max_len=1024)
        if inner:
            problems["request"] = inner
    return out


def check_envelope(data: Any) -> dict[str, Any]:
    """The envelope as EnvelopeSchema reads it (unknown fields left out, `mediaType` defaulting to ""), or
    ValidationError with the same messages, by field path."""
    if not isinstance(data, dict):
        raise ma.ValidationError({"_schema": ["Invalid input type."]})
    if "events" not in data:
        raise ma.ValidationError({"events": ["Missing data for required field."]})
    raw = data["events"]
    if not isinstance(raw, list):
        raise ma.ValidationError({"events": ["Not a valid list."]})
    problems: _Problems = {}
    events = []
    for i, item in enumerate(raw):
        if item is None:
            problems[i] = ["Field may not be null."]
            continue
        found: _Problems = {}
        events.append(_event(item, found))
        if found:
            problems[i] = found
    if problems:
        raise ma.ValidationError({"events": problems})
    if len(raw) > MAX_EVENTS:
        raise ma.ValidationError({"events": [f"Longer than maximum length {MAX_EVENTS}."]})
    return {"events": events}


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
