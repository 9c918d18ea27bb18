"""The distribution reference grammar, so bad names are refused before they reach the registry or a path."""

from __future__ import annotations

import re

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
REPOSITORY_MAX = 255


def is_repository(name: str) -> bool:
    return len(name) <= REPOSITORY_MAX and REPOSITORY_RE.match(name) is not None


def is_tag(tag: str) -> bool:
    return TAG_RE.match(tag) is not None


def is_digest(digest: str) -> bool:
    return DIGEST_RE.match(digest) is not None
