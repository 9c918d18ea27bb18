"""docker-compose.yml and the Dockerfile, read as files: the deployment a user copies must wire the api and the
worker to the registry, Redis and the registry's container. No Docker needed."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

Compose = dict[str, Any]


# -- reading compose's several spellings ---------------------------------------------------------------------


def load_compose() -> Compose:
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    """`environment:` as a mapping or as a list of NAME=value."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """`volumes:` in short (src:dst[:mode]) or long syntax, as {source, target, read_only}."""
    found = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) == 1:
                found.append({"source": None, "target": parts[0], "read_only": False})
            else:
                mode = parts[2].split(",") if len(parts) > 2 else []
                found.append({"source": parts[0], "target": parts[1], "read_only": "ro" in mode})
        else:
            found.append({"source": vol.get("source"), "target": vol["target"],
                          "read_only": bool(vol.get("read_only", False))})
    return found


def mount_at(service: dict[str, Any], target: str) -> dict[str, Any] | None:
    return next((m for m in mounts(service) if m["target"].rstrip("/") == target), None)


def depends_on(service: dict[str, Any]) -> set[str]:
    deps = service.get("depends_on") or []
    return set(deps)  # a list of names or a mapping name -> {condition}


def dockerfile_cmd(text: str) -> list[str]:
    """The last CMD of the Dockerfile, exec form (JSON) or shell form."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    cmds = [line for line in lines if line.upper().startswith("CMD ")]
    assert cmds, "the Dockerfile has no CMD"
    body = cmds[-1][4:].strip()
    if body.startswith("["):
        return [str(a) for a in json.loads(body)]
    return ["/bin/sh", "-c", body]


def api_argv(compose: Compose, dockerfile: str) -> list[str]:
    """What the api container runs: its compose command, else the image's CMD."""
    api = compose["services"]["api"]
    if api.get("command") is not None:
        return argv(api["command"])
    return dockerfile_cmd(dockerfile)


def is_python_module(args: list[str], module: str) -> bool:
    return len(args) >= 3 and Path(args[0]).name.startswith("python") and args[1:3] == ["-m", module]


# -- the checks, each usable on a modified copy ----------------------------------------------------------------


def check_services(compose: Compose, dockerfile: str) -> None:
    services = compose.get("services") or {}
    missing = {"registry", "redis", "api", "worker"} - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def check_registry(compose: Compose, dockerfile: str) -> None:
    registry = compose["services"]["registry"]
    assert str(registry.get("image", "")).startswith("registry:"), "the registry service should run registry:2"
    assert registry.get("container_name"), "the registry needs a fixed container_name for REGISTRY_CONTAINER"
    delete = environment(registry).get("REGISTRY_STORAGE_DELETE_ENABLED", "")
    assert delete.lower() == "true", "the registry must run with REGISTRY_STORAGE_DELETE_ENABLED=true"
    data = mount_at(registry, "/var/lib/registry")
    assert data and data["source"], "registry data needs a volume at /var/lib/registry"
    config = mount_at(registry, "/etc/docker/registry")
    assert config and config["source"], ("the registry's config directory /etc/docker/registry must be a volume "
                                         "or bind mount (the janitor rewrites config.yml in it)")
    assert not config["read_only"], "the config directory must be mounted read-write"
    assert not mount_at(registry, "/etc/docker/registry/config.yml"), \
        "mount the config directory, not config.yml alone: the janitor writes config.yml.janitor-original next to it"
    declared = set(compose.get("volumes") or {})
    for m in (data, config):
        if not m["source"].startswith((".", "/", "~", "$")):
            assert m["source"] in declared, f"named volume {m['source']!r} is not declared under volumes:"


def registry_port(compose: Compose) -> int:
    addr = environment(compose["services"]["registry"]).get("REGISTRY_HTTP_ADDR", ":5000")
    return int(addr.rsplit(":", 1)[1])


def check_janitor_env(compose: Compose, dockerfile: str) -> None:
    registry = compose["services"]["registry"]
    for name in ("api", "worker"):
        env = environment(compose["services"][name])
        url = urlsplit(env.get("REGISTRY_URL", ""))
        assert url.scheme in ("http", "https") and url.hostname == "registry", \
            f"{name}: REGISTRY_URL must point at the registry service, got {env.get('REGISTRY_URL')!r}"
        assert (url.port or (443 if url.scheme == "https" else 80)) == registry_port(compose), \
            f"{name}: REGISTRY_URL's port is not the one the registry listens on"
        redis_url = urlsplit(env.get("REDIS_URL", ""))
        assert redis_url.scheme == "redis" and redis_url.hostname == "redis", \
            f"{name}: REDIS_URL must point at the redis service, got {env.get('REDIS_URL')!r}"
        assert env.get("REGISTRY_CONTAINER") == registry.get("container_name"), \
            f"{name}: REGISTRY_CONTAINER must be the registry's container_name {registry.get('container_name')!r}"
        assert {"redis", "registry"} <= depends_on(compose["services"][name]), \
            f"{name} should depend on redis and registry"
    assert environment(compose["services"]["api"]).get("API_TOKENS"), \
        "the api needs API_TOKENS, or every /v1 endpoint is open"


def check_worker(compose: Compose, dockerfile: str) -> None:
    worker = compose["services"]["worker"]
    assert "build" in worker or "image" in worker, "the worker needs the janitor image"
    assert is_python_module(argv(worker.get("command")), "worker"), "the worker must run `python -m worker`"
    sock = mount_at(worker, "/var/run/docker.sock")
    assert sock and sock["source"] == "/var/run/docker.sock", "the worker needs the Docker socket mounted"


def check_api(compose: Compose, dockerfile: str) -> None:
    api = compose["services"]["api"]
    assert "build" in api or "image" in api, "the api needs the janitor image"
    args = api_argv(compose, dockerfile)
    if args[:2] == ["/bin/sh", "-c"]:
        args = shlex.split(args[2])
    assert args and (Path(args[0]).name == "gunicorn" or is_python_module(args, "gunicorn")), \
        f"the api must run gunicorn, runs {args}"
    assert "service:create_app()" in args, "gunicorn must serve service:create_app()"
    bind = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-b", "--bind")), None) \
        or next((a.split("=", 1)[1] for a in args if a.startswith("--bind=")), None)
    assert bind and bind.rsplit(":", 1)[0] in ("0.0.0.0", "[::]"), \
        f"gunicorn must bind on every interface inside the container, binds {bind!r}"
    port = bind.rsplit(":", 1)[1]
    published = [str(p.get("target") if isinstance(p, dict) else str(p).rsplit(":", 1)[-1])
                 for p in api.get("ports") or []]
    assert port in published, f"the api's ports do not publish gunicorn's port {port}"


def dockerfile_base(text: str) -> str:
    """The image of the last FROM, with `${ARG}` / `$ARG` replaced by the default of an ARG before it."""
    args: dict[str, str] = {}
    base = ""
    for raw in text.splitlines():
        words = raw.split()
        if len(words) >= 2 and words[0].upper() == "ARG" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            args.setdefault(name, value.strip("\"'"))
        elif len(words) >= 2 and words[0].upper() == "FROM":
            base = words[1]
            for name, value in args.items():
                base = base.replace("${" + name + "}", value).replace("$" + name, value)
    return base


def check_dockerfile(compose: Compose, dockerfile: str) -> None:
    assert dockerfile_base(dockerfile).startswith("python:3"), \
        "the Dockerfile should build on a python:3 image (by default, when the base is a build argument)"
    assert "pip install" in dockerfile, "the Dockerfile should install the package with pip"


def check_notifications(compose: Compose, dockerfile: str) -> None:
    """The registry notifies the api's /v1/events of pushes, deletes and manifest pulls (for last_pulled and
    the pull policies), and leaves out blob events at the source."""
    raw = environment(compose["services"]["registry"]).get("REGISTRY_NOTIFICATIONS_ENDPOINTS", "")
    endpoints = yaml.safe_load(raw) if raw else None
    assert isinstance(endpoints, list) and endpoints, "the registry should send its notifications to the janitor"
    [janitor] = [e for e in endpoints if urlsplit(str(e.get("url", ""))).path.rstrip("/") == "/v1/events"]
    assert urlsplit(janitor["url"]).hostname == "api", "notifications go to the api service's /v1/events"
    ignore = janitor.get("ignore") or {}
    assert "application/octet-stream" in (ignore.get("mediatypes") or []), "blob events should be ignored at the source"
    assert "pull" not in (ignore.get("actions") or []), "manifest pulls must reach the janitor (keep_pulled_within)"


CHECKS = [check_services, check_registry, check_janitor_env, check_worker, check_api, check_dockerfile,
          check_notifications]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_compose_file(check: Any) -> None:
    check(load_compose(), DOCKERFILE.read_text())


# -- the checks reject what they are meant to reject -----------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    def mutate(compose: Compose) -> None:
        *parents, last = path.split(".")
        node = compose
        for key in parents:
            node = node[key]
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return mutate


def _env(service: str, name: str, value: str | None) -> Any:
    def mutate(compose: Compose) -> None:
        env = environment(compose["services"][service])
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
        compose["services"][service]["environment"] = env
    return mutate


def _volumes(service: str, keep: Any) -> Any:
    def mutate(compose: Compose) -> None:
        svc = compose["services"][service]
        svc["volumes"] = [v for v in svc.get("volumes") or [] if keep(v)]
    return mutate


_DELETE = object()

BROKEN = {
    "no worker service": (check_services, _set("services.worker", _DELETE)),
    "delete disabled": (check_registry, _env("registry", "REGISTRY_STORAGE_DELETE_ENABLED", "false")),
    "no data volume": (check_registry, _volumes("registry", lambda v: "/var/lib/registry" not in str(v))),
    "config read-only": (check_registry, _set("services.registry.volumes",
                                              ["registry-data:/var/lib/registry", "registry-config:/etc/docker/registry:ro"])),
    "config file mount": (check_registry, _set("services.registry.volumes",
                                               ["registry-data:/var/lib/registry",
                                                "./config.yml:/etc/docker/registry/config.yml"])),
    "registry url elsewhere": (check_janitor_env, _env("worker", "REGISTRY_URL", "http://localhost:5000")),
    "redis url elsewhere": (check_janitor_env, _env("api", "REDIS_URL", "redis://localhost:6379/0")),
    "container name mismatch": (check_janitor_env, _env("worker", "REGISTRY_CONTAINER", "other")),
    "no docker socket": (check_worker, _volumes("worker", lambda v: "docker.sock" not in str(v))),
    "worker runs api": (check_worker, _set("services.worker.command", _DELETE)),
    "api runs worker": (check_api, _set("services.api.command", ["python", "-m", "worker"])),
    "pulls ignored": (check_notifications, _env("registry", "REGISTRY_NOTIFICATIONS_ENDPOINTS",
                                                "- name: j\n  url: http://api:8000/v1/events\n  ignore:\n"
                                                "    mediatypes: [application/octet-stream]\n    actions: [pull]\n")),
    "blob events sent": (check_notifications, _env("registry", "REGISTRY_NOTIFICATIONS_ENDPOINTS",
                                                   "- name: j\n  url: http://api:8000/v1/events\n")),
    "no notifications": (check_notifications, _env("registry", "REGISTRY_NOTIFICATIONS_ENDPOINTS", None)),
    "api on loopback": (check_api, _set("services.api.command",
                                        'gunicorn -b 127.0.0.1:8000 "service:create_app()"')),
}


def test_dockerfile_base_reads_the_build_argument_default() -> None:
    assert dockerfile_base("FROM python:3.11-slim\n") == "python:3.11-slim"
    assert dockerfile_base("ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\n") == "python:3.11-slim"
    assert dockerfile_base("ARG BASE=debian:12\nFROM $BASE\n") == "debian:12"
    with pytest.raises(AssertionError):
        check_dockerfile({}, "ARG BASE_IMAGE=debian:12\nFROM ${BASE_IMAGE}\nRUN pip install .\n")


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_checks_catch_broken_compose(case: str) -> None:
    check, mutate = BROKEN[case]
    compose = copy.deepcopy(load_compose())
    mutate(compose)
    with pytest.raises(AssertionError):
        check(compose, DOCKERFILE.read_text())


def test_dockerfile_cmd_parsing() -> None:
    assert dockerfile_cmd('FROM x\nCMD ["gunicorn", "-b", "0.0.0.0:8000", "service:create_app()"]\n') == \
        ["gunicorn", "-b", "0.0.0.0:8000", "service:create_app()"]
    assert dockerfile_cmd("FROM x\nCMD gunicorn \\\n  app\n")[:2] == ["/bin/sh", "-c"]
    with pytest.raises(AssertionError):
        check_api({"services": {"api": {"build": ".", "ports": ["8000:8000"]}}}, 'FROM x\nCMD ["python", "-m", "worker"]\n')
