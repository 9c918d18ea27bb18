"""marshmallow validators for the distribution grammar (janitor.registry.names holds the grammar itself)."""

from __future__ import annotations

import marshmallow as ma

from janitor.config.settings import GC_MODES, restore_window
from janitor.registry import names


def repository(value: str) -> None:
    if not names.is_repository(value):
        raise ma.ValidationError("not a valid repository name: lowercase path components [a-z0-9] joined by "
                                 "'.', '_', '__' or '-', separated by '/', at most 255 characters counting the 'docker.io/library/' (one component) or "
                                 "'docker.io/' (first component not a host) the registry puts before it")


def tag(value: str) -> None:
    if not names.is_tag(value):
        raise ma.ValidationError(r"not a valid tag: [\w][\w.-]{0,127}")


def digest(value: str) -> None:
    if not names.is_digest(value):
        raise ma.ValidationError("not a valid digest: sha256: followed by 64 lowercase hex digits")


def gc_mode_field() -> ma.fields.String:
    """`gc_mode` on every request that joins a window (POST /v1/gc, deletions, policy runs)."""
    return ma.fields.String(validate=ma.validate.OneOf(GC_MODES), metadata={"description": (
        "How this request's window garbage-collects, overriding JANITOR_GC_MODE (gc_mode in REGISTRIES_FILE) for "
        "it: `registry` runs the registry's own garbage-collect while writes are refused; `incremental` marks "
        "before the fence and, while writes are refused, reads only what changed since and sweeps the same "
        "blobs. Requests of one window that disagree share `registry`. `result.gc.mode` says which ran")})


def _restore_window(value: str) -> None:
    try:
        restore_window(value, "restore_window")
    except ValueError as exc:
        raise ma.ValidationError(str(exc)) from exc


def restore_window_field() -> ma.fields.String:
    """`restore_window` on a deletion (a policy has its own, checked by janitor.planning.policies)."""
    return ma.fields.String(validate=_restore_window, metadata={"pattern": r"^(0|[1-9][0-9]{0,6}[smhdw])$",
                                                               "description": (
        "How long what this deletion deletes can be put back (POST /v1/jobs/{id}/restore), overriding "
        "JANITOR_RESTORE_WINDOW: `0` (off) or a whole number and a unit s, m, h, d or w (e.g. `7d`). Until then "
        "GC keeps its blobs; the first GC after it frees them. The job says `result.restorable_until`")})
