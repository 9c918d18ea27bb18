"""The distribution reference grammar, so bad names are refused before they reach the registry or a path."""

from __future__ import annotations

import re

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
REPOSITORY_MAX = 255


# registry:2 (distribution 2.8) limits the name as docker normalises it, and answers 500 beyond that:
# "docker.io/library/" goes before a one-component name, "docker.io/" before a name whose first component
# is not a host (has no "." or ":" and is not localhost). So 237 characters always fit.
REPOSITORY_ALWAYS_FITS = REPOSITORY_MAX - len("docker.io/library/")


def normalized_length(name: str) -> int:
    first, slash, _ = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return len(name)
    return len(name) + len("docker.io/" if slash else "docker.io/library/")


def is_repository(name: str) -> bool:
    return normalized_length(name) <= REPOSITORY_MAX and REPOSITORY_RE.match(name) is not None


def is_tag(tag: str) -> bool:
    return TAG_RE.match(tag) is not None


def is_digest(digest: str) -> bool:
    return DIGEST_RE.match(digest) is not None
