"""The janitor's own way to a registry's object storage, when it is not the registry's: another endpoint (the
worker runs elsewhere than the registry), its own credentials (least privilege, or the registry's come from
an instance role). Everything left empty is taken from the registry's own config (janitor/storage/s3.py reads
it the way distribution does); the bucket and its root directory are always the registry's.

For the single registry, from the environment:

    JANITOR_S3_ENDPOINT        http(s)://host[:port] of the S3 API
    JANITOR_S3_REGION
    JANITOR_S3_ACCESS_KEY      with JANITOR_S3_SECRET_KEY, or JANITOR_S3_SECRET_KEY_FILE (a file holding it)
    JANITOR_S3_SESSION_TOKEN

Per registry in REGISTRIES_FILE:

    storage:
      s3:
        endpoint: https://s3.internal:9000
        region: eu-west-1
        access_key: janitor
        secret_key_file: /run/secrets/s3      # or secret_key_env: NAME, or secret_key (discouraged)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class S3Overrides:
    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return any((self.endpoint, self.region, self.access_key, self.session_token))


def _endpoint(value: str | None, what: str) -> str | None:
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} {value!r} must be http(s)://host[:port]")
    return value.rstrip("/")


def _secret_file(path: str, what: str) -> str:
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from exc
    if not secret:
        raise ValueError(f"{what} {path} is empty")
    return secret


def _checked(found: S3Overrides, access: str, secret: str) -> S3Overrides:
    if (found.access_key is None) != (found.secret_key is None):
        raise ValueError(f"{access} and {secret} go together")
    return found


def s3_from_env(env: Mapping[str, str]) -> S3Overrides:
    secret = env.get("JANITOR_S3_SECRET_KEY") or None
    if env.get("JANITOR_S3_SECRET_KEY_FILE"):
        if secret:
            raise ValueError("give JANITOR_S3_SECRET_KEY or JANITOR_S3_SECRET_KEY_FILE, not both")
        secret = _secret_file(env["JANITOR_S3_SECRET_KEY_FILE"], "JANITOR_S3_SECRET_KEY_FILE")
    return _checked(S3Overrides(
        endpoint=_endpoint(env.get("JANITOR_S3_ENDPOINT") or None, "JANITOR_S3_ENDPOINT"),
        region=env.get("JANITOR_S3_REGION") or None, access_key=env.get("JANITOR_S3_ACCESS_KEY") or None,
        secret_key=secret, session_token=env.get("JANITOR_S3_SESSION_TOKEN") or None),
        "JANITOR_S3_ACCESS_KEY", "JANITOR_S3_SECRET_KEY")


S3_KEYS = {"endpoint", "region", "access_key", "secret_key", "secret_key_file", "secret_key_env", "session_token"}


def s3_from_entry(value: Any, env: Mapping[str, str]) -> S3Overrides:
    """A REGISTRIES_FILE entry's `storage:` mapping (only `s3` so far). ValueError names the bad field."""
    if not isinstance(value, dict) or set(map(str, value)) - {"s3"}:
        raise ValueError("storage must be a mapping with one key, `s3`")
    s3 = value.get("s3") or {}
    if not isinstance(s3, dict):
        raise ValueError("storage.s3 must be a mapping")
    unknown = sorted(set(map(str, s3)) - S3_KEYS)
    if unknown:
        raise ValueError(f"storage.s3: unknown field(s) {unknown}; known: {sorted(S3_KEYS)}")
    for key, item in s3.items():
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"storage.s3.{key} must be a non-empty string")
    given = [k for k in ("secret_key", "secret_key_file", "secret_key_env") if k in s3]
    if len(given) > 1:
        raise ValueError(f"storage.s3: give one of secret_key, secret_key_file, secret_key_env, not {given}")
    secret = None
    if given == ["secret_key"]:
        secret = s3["secret_key"].strip()
    elif given == ["secret_key_file"]:
        secret = _secret_file(s3["secret_key_file"].strip(), "storage.s3.secret_key_file")
    elif given == ["secret_key_env"]:
        secret = env.get(s3["secret_key_env"].strip()) or None
        if secret is None:
            raise ValueError(f"storage.s3.secret_key_env names {s3['secret_key_env']}, which is not set")
    return _checked(S3Overrides(
        endpoint=_endpoint(s3.get("endpoint"), "storage.s3.endpoint"), region=s3.get("region"),
        access_key=s3.get("access_key"), secret_key=secret, session_token=s3.get("session_token")),
        "storage.s3.access_key", "a secret key")
