"""Many registries in one deployment: REGISTRIES_FILE (YAML) read and checked in one place, turned into one
`Settings` per registry (dataclasses.replace on the environment's settings, which stay every registry's
defaults). Without the file there is exactly one registry, `default`, from REGISTRY_URL and friends.

    registries:
      - name: eu                       # [a-z0-9][a-z0-9-]{0,62}: in URLs (/v1/registries/eu/...) and Redis keys
        url: http://127.0.0.1:5001
        username: janitor               # optional, with one of password / password_file / password_env
        password_file: /run/secrets/eu  # read once at start; password_env: NAME reads $NAME instead
        container: registry-eu          # the registry's container on...
        docker_host: tcp://127.0.0.1:2375  # ...this engine (default: DOCKER_HOST, else the local socket)
        # or, instead of `container`, several containers on one storage, each with its own address (the fence,
        # the write probes and the restarts apply to each; GC runs in the first):
        # replicas: [{container: registry-eu-1, url: http://10.0.0.1:5000}, {container: ..., url: ...}]
        default: true                   # the registry of /v1/repositories, /v1/jobs, ... (default: the first)
        namespace: registry.example:5000   # optional: Redis namespace (default: the name)
        cache_url: redis://:secret@127.0.0.1:6380/0  # optional: the registry's Redis blob cache as the worker
                                        # reaches it (default: the address in the registry's config)
        require_approval: true          # optional per-registry overrides, see OVERRIDES
        storage: {s3: {endpoint: ..., access_key: ..., secret_key_file: ...}}  # janitor/config/storage.py

A bad file stops the service and the worker at start with a message naming the entry and the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from janitor import errors
from janitor.config.settings import (
    Replica,
    Settings,
    cache_url,
    gc_mode,
    restore_window,
    without_credentials,
)
from janitor.config.storage import s3_from_entry

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Redis key part: no glob characters (JobStore.running scans `<prefix>:job:*`), no spaces.
NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
DOCKER_SCHEMES = ("unix", "tcp", "http", "https", "ssh", "npipe")
DEFAULT_NAME = "default"


class RegistriesFileError(ValueError):
    """REGISTRIES_FILE cannot be used: raised at start, so nothing runs against a half-read file."""


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    return value.strip()


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{what} must be a number of seconds >= 0")
    return float(value)


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false")
    return value


def _urls(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(u, str) and u.strip() for u in value):
        raise ValueError(f"{what} must be a list of URLs")
    return tuple(u.strip() for u in value)


# YAML key -> (Settings field, parser): settings that obviously differ from one registry to the next.
OVERRIDES: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "policies_file": ("policies_file", _text),
    "protections_file": ("protections_file", _text),
    "require_approval": ("require_approval", _flag),
    "approval_ttl": ("approval_ttl", _number),
    "webhook_urls": ("webhook_urls", _urls),
    "webhook_secret": ("webhook_secret", _text),
    "max_window": ("max_window", _number),
    "gc_timeout": ("gc_timeout", _number),
    "gc_mode": ("gc_mode", gc_mode),
    "upload_grace": ("upload_grace", _number),
    "upload_drain": ("upload_drain", _number),
    "untagged_min_age": ("untagged_min_age", _number),
    "registry_ready_timeout": ("registry_ready_timeout", _number),
    "restart_stop_timeout": ("restart_stop_timeout", lambda v, w: int(_number(v, w))),
    "cache_url": ("registry_cache_url", lambda v, w: cache_url(_text(v, w), w)),
    "restore_window": ("restore_window", restore_window),
}
KNOWN = {"name", "url", "username", "password", "password_file", "password_env", "container", "replicas",
         "docker_host", "default", "namespace", "storage", *OVERRIDES}
REPLICA_KNOWN = ("container", "url")


@dataclass(frozen=True)
class Registries:
    """Every registry this process knows, in file order, and which one the unprefixed paths serve."""

    by_name: dict[str, Settings]
    default: str

    def __iter__(self) -> Iterator[Settings]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def get(self, name: str) -> Settings:
        found = self.by_name.get(name)
        if found is None:
            raise errors.RegistryNotKnown(f"no registry named {name!r}; GET /v1/registries lists them",
                                          registry=name, known=self.names)
        return found

    def find(self, ident: str) -> Settings | None:
        """By name, or by Redis namespace: RQ jobs queued before an upgrade carry the registry's host."""
        return self.by_name.get(ident) or next((s for s in self if s.namespace == ident), None)

    def select(self, names: Iterable[str]) -> list[Settings]:
        """The subset a worker serves (WORKER_REGISTRIES); an unknown name is a configuration error."""
        wanted = [n.strip() for n in names if n.strip()]
        unknown = [n for n in wanted if n not in self.by_name]
        if unknown:
            raise RegistriesFileError(f"WORKER_REGISTRIES names unknown registries {unknown}; known: {self.names}")
        return [self.by_name[n] for n in wanted] if wanted else list(self)


def load(base: Settings, env: dict[str, str] | None = None) -> Registries:
    """The registries of this deployment. `env` (default os.environ) is where `password_env` looks."""
    if not base.registries_file:
        only = replace(base, name=DEFAULT_NAME)
        return Registries({DEFAULT_NAME: only}, DEFAULT_NAME)
    path = base.registries_file
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RegistriesFileError(f"REGISTRIES_FILE {path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        return parse(text, base, env, source=f"REGISTRIES_FILE {path}")
    except RegistriesFileError:
        raise
    except ValueError as exc:
        raise RegistriesFileError(f"REGISTRIES_FILE {path}: {exc}") from exc


def parse(text: str, base: Settings, env: dict[str, str] | None = None, source: str = "REGISTRIES_FILE") -> Registries:
    env = dict(os.environ) if env is None else env
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistriesFileError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict) or set(doc) != {"registries"}:
        raise RegistriesFileError(f"{source}: the file must be a mapping with one key, `registries`")
    entries = doc["registries"]
    if not isinstance(entries, list) or not entries:
        raise RegistriesFileError(f"{source}: `registries` must be a non-empty list")
    found: dict[str, Settings] = {}
    defaults: list[str] = []
    for n, entry in enumerate(entries):
        label = f"registries[{n}]"
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            label += f" ({entry['name']})"
        try:
            settings, is_default = _entry(entry, base, env)
        except ValueError as exc:
            raise RegistriesFileError(f"{source}: {label}: {exc}") from exc
        if settings.name in found:
            raise RegistriesFileError(f"{source}: {label}: name {settings.name!r} is used twice")
        found[settings.name] = settings
        if is_default:
            defaults.append(settings.name)
    _unique(found, source)
    if len(defaults) > 1:
        raise RegistriesFileError(f"{source}: only one registry may be `default: true`, not {defaults}")
    return Registries(found, defaults[0] if defaults else next(iter(found)))


def _unique(found: dict[str, Settings], source: str) -> None:
    """Two entries for one registry would run two windows on it at once: refused."""
    # Each registry's every address and container (its replicas' too) is its own.
    for what, of in (("namespace", lambda s: {s.namespace}), ("url", lambda s: {s.registry_url,
                                                                                *(r.url for r in s.replicas)}),
                     ("container", lambda s: {(s.docker_host, r.container) for r in s.replicas})):
        seen: dict[Any, str] = {}
        for name, settings in found.items():
            for value in sorted(of(settings), key=str):
                if value in seen:
                    raise RegistriesFileError(f"{source}: {seen[value]} and {name} have the same {what} ({value})")
                seen[value] = name


def _entry(entry: Any, base: Settings, env: dict[str, str]) -> tuple[Settings, bool]:
    if not isinstance(entry, dict):
        raise ValueError("each registry must be a mapping")
    unknown = sorted(set(map(str, entry)) - KNOWN)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; known: {sorted(KNOWN)}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"name {name!r} must match {NAME.pattern} (it is used in URLs and Redis keys)")
    url = _url(entry.get("url"), "url")
    replicas = _replicas(entry)
    container = replicas[0].container if replicas else _text(entry.get("container"), "container")
    docker_host = entry.get("docker_host")
    if docker_host is not None:
        docker_host = _text(docker_host, "docker_host")
        if urlsplit(docker_host).scheme not in DOCKER_SCHEMES:
            raise ValueError(f"docker_host {docker_host!r} must start with one of "
                             f"{', '.join(s + '://' for s in DOCKER_SCHEMES)}")
    namespace = entry.get("namespace", name)
    if not isinstance(namespace, str) or not NAMESPACE.match(namespace):
        raise ValueError(f"namespace {namespace!r} must match {NAMESPACE.pattern}")
    username = entry.get("username")
    if username is not None:
        username = _text(username, "username")
    fields: dict[str, Any] = {}
    for key, value in entry.items():
        if key in OVERRIDES:
            field, parse_ = OVERRIDES[key]
            fields[field] = parse_(value, key)
    fields.setdefault("registry_cache_url", None)  # one registry's cache, never every registry's default
    if entry.get("storage") is not None:
        fields["s3"] = s3_from_entry(entry["storage"], env)
    settings = replace(
        base, name=name, registry_url=url, registry_username=username, registry_password=_password(entry, env),
        registry_container=container, registry_replicas=replicas,
        docker_host=docker_host if docker_host is not None else base.docker_host,
        redis_namespace=namespace, **fields)
    if (settings.registry_username is None) != (settings.registry_password is None):
        raise ValueError("username and a password (password, password_file or password_env) go together")
    return settings, _flag(entry.get("default", False), "default")


def _url(value: Any, what: str) -> str:
    url = without_credentials(_text(value, what).rstrip("/"), what)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ValueError(f"{what} {url!r} must be http(s)://host[:port]")
    return url


def _replicas(entry: dict[str, Any]) -> tuple[Replica, ...]:
    """`replicas:` (several containers on one storage), or () for the one `container:`. Each replica needs
    its own address: a probe through a load balancer could reach any of them."""
    given = entry.get("replicas")
    if given is None:
        return ()
    if "container" in entry:
        raise ValueError("give `container` (one container) or `replicas` (several), not both; the first of "
                         "`replicas` is where GC runs")
    if not isinstance(given, list) or not given:
        raise ValueError("replicas must be a non-empty list of {container, url}")
    found: list[Replica] = []
    for n, item in enumerate(given):
        what = f"replicas[{n}]"
        if not isinstance(item, dict):
            raise ValueError(f"{what} must be a mapping with `container` and `url`")
        unknown = sorted(set(map(str, item)) - set(REPLICA_KNOWN))
        if unknown:
            raise ValueError(f"{what}: unknown field(s) {unknown}; known: {list(REPLICA_KNOWN)}")
        replica = Replica(_text(item.get("container"), f"{what}.container"), _url(item.get("url"), f"{what}.url"))
        for other in found:
            if replica.container == other.container:
                raise ValueError(f"{what}.container {replica.container!r} is named twice")
            if replica.url == other.url:
                raise ValueError(f"{what}.url {replica.url!r} is named twice: each replica is probed at its own "
                                 "address")
        found.append(replica)
    return tuple(found)


def _password(entry: dict[str, Any], env: dict[str, str]) -> str | None:
    given = [k for k in ("password", "password_file", "password_env") if entry.get(k) is not None]
    if len(given) > 1:
        raise ValueError(f"give one of password, password_file, password_env, not {given}")
    if not given:
        return None
    key = given[0]
    value = _text(entry[key], key)
    if key == "password":
        return value
    if key == "password_env":
        if not env.get(value):
            raise ValueError(f"password_env names {value}, which is not set")
        return env[value]
    try:
        secret = Path(value).read_text().strip()
    except OSError as exc:
        raise ValueError(f"password_file {value}: cannot read it ({exc.strerror or exc})") from exc
    if not secret:
        raise ValueError(f"password_file {value} is empty")
    return secret
