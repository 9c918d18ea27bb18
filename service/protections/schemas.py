"""Protection rule bodies. janitor.planning.protections.validate is the one validator (the API and
PROTECTIONS_FILE share it); the fields here describe the shape for OpenAPI and reject wrong types first."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from janitor import errors
from janitor.planning import protections


def _checked(data: Any, name_optional: bool) -> Any:
    probe = data
    if name_optional and isinstance(data, dict) and "name" not in data:
        probe = {**data, "name": "placeholder"}
    try:
        protections.validate(probe)
    except errors.InvalidProtection as exc:
        raise ma.ValidationError(exc.details) from None
    return data


def _name(required: bool) -> ma.fields.String:
    return ma.fields.String(required=required, validate=[
        ma.validate.Length(min=1, max=protections.NAME_MAX), ma.validate.Regexp(protections.NAME_RE.pattern)],
        metadata={"description": "Lowercase letters, digits and '-'; unique", "example": "releases"})


class ProtectionFields(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    name = _name(required=False)
    repositories = ma.fields.List(required=True, cls_or_instance=ma.fields.String(validate=[
        ma.validate.Length(min=1, max=255), ma.validate.Regexp(r"^[a-z0-9._/*-]+$")]),
        validate=ma.validate.Length(min=1, max=protections.MAX_REPOSITORY_GLOBS), metadata={
        "description": "Globs on the whole repository name, as in policies: * within one path segment, ** across "
                       "them", "example": ["**"]})
    tags = ma.fields.String(required=True, validate=ma.validate.Length(min=1), metadata={
        "description": "RE2 regular expression, searched (anchor it with ^...$ to match whole tags): the tags it "
                       "matches in those repositories are never removed", "example": "^v\\d+\\.\\d+\\.\\d+$"})


class ProtectionSchema(ProtectionFields):
    """A protection rule: the tags it names, in the repositories its globs name, are never removed. A deletion
    that would take one is refused (409 TAG_PROTECTED), a policy keeps it (reason `protected`), the window skips
    it (reason `protected`); only an admin's `"override_protection": true` on a deletion passes it by."""

    name = _name(required=True)

    @ma.pre_load
    def check(self, data: Any, **_: Any) -> Any:
        return _checked(data, name_optional=False)


class ProtectionReplaceSchema(ProtectionFields):
    """A whole rule replacing the one at its path; `name` may be left out (it cannot change)."""

    @ma.pre_load
    def check(self, data: Any, **_: Any) -> Any:
        return _checked(data, name_optional=True)


class ProtectionViewSchema(ProtectionFields):
    name = _name(required=True)
    source = ma.fields.String(required=True, validate=ma.validate.OneOf(["api", "file"]), metadata={
        "description": "api, or file: given in PROTECTIONS_FILE and read-only here"})


EXAMPLES = {
    "releases": {"summary": "Release tags everywhere", "value": {
        "name": "releases", "repositories": ["**"], "tags": "^v\\d+\\.\\d+\\.\\d+$"}},
    "team": {"summary": "One team's stable tags", "value": {
        "name": "team-stable", "repositories": ["team/*", "tools/ci"], "tags": "^(latest|stable)$"}},
}
