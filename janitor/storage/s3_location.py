"""Where distribution's s3 driver keeps a registry's files, read from the registry's config as distribution
reads it (environment first), and how the janitor reaches them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from janitor import errors


@dataclass(frozen=True)
class S3Location:
    """Where distribution's s3 driver keeps a registry's files, and how to reach them. Secrets are never
    shown (`as_dict`)."""

    bucket: str
    region: str = "us-east-1"
    endpoint: str | None = None  # regionendpoint: a URL, or host[:port] (scheme from `secure`)
    rootdirectory: str = ""
    forcepathstyle: bool = False
    secure: bool = True
    accesskey: str | None = None
    secretkey: str | None = field(default=None, repr=False)
    sessiontoken: str | None = field(default=None, repr=False)

    @property
    def root(self) -> str:
        """The storage root as an absolute path, the form Layout takes; keys are its paths without the '/'."""
        return "/" + self.rootdirectory.strip("/")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}{self.root.rstrip('/')}"

    @property
    def endpoint_url(self) -> str | None:
        if not self.endpoint:
            return None
        if "://" in self.endpoint:
            return self.endpoint
        return ("https://" if self.secure else "http://") + self.endpoint

    def as_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "region": self.region, "endpoint": self.endpoint_url,
                "rootdirectory": self.root, "forcepathstyle": self.forcepathstyle, "secure": self.secure,
                "credentials": "given" if self.accesskey else "default chain (environment, profile, role)"}


def _flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def location_from(env: dict[str, str], config: dict[str, Any]) -> S3Location:
    """The registry's s3 settings as distribution reads them: REGISTRY_STORAGE_S3_<KEY> first, then the config
    file's storage.s3 section. StorageConfigInvalid when no bucket is named."""
    section = (config.get("storage") or {}).get("s3") or {}
    section = {str(k).lower(): v for k, v in section.items()} if isinstance(section, dict) else {}
    prefix = "REGISTRY_STORAGE_S3_"
    section.update({k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)})

    def text(key: str) -> str | None:
        value = section.get(key)
        return None if value is None or str(value).strip() == "" else str(value).strip()

    bucket = text("bucket")
    if not bucket:
        raise errors.StorageConfigInvalid("the registry's config names the s3 driver but no bucket "
                                          "(storage.s3.bucket or REGISTRY_STORAGE_S3_BUCKET)")
    return S3Location(bucket=bucket, region=text("region") or "us-east-1", endpoint=text("regionendpoint"),
                      rootdirectory=text("rootdirectory") or "", forcepathstyle=_flag(section.get("forcepathstyle"), False),
                      secure=_flag(section.get("secure"), True), accesskey=text("accesskey"),
                      secretkey=text("secretkey"), sessiontoken=text("sessiontoken"))
