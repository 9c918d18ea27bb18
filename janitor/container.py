"""The registry's container, driven through the Docker SDK: exec with argument lists, files by archive, restart."""

from __future__ import annotations

import io
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Any

import docker
import yaml
import docker.errors
from docker.models.containers import Container

from janitor import errors

# Where the official images keep their config, newest first; used only when the command does not name one.
KNOWN_CONFIG_PATHS = ("/etc/distribution/config.yml", "/etc/docker/registry/config.yml")


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


def docker_client() -> docker.DockerClient:
    """From DOCKER_HOST and friends, as the docker CLI reads them."""
    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise errors.DockerUnavailable(f"Docker engine unreachable: {exc}") from exc


class RegistryContainer:
    """The engine is reached lazily, so an unreachable one fails the step that needs it, with a reason."""

    def __init__(self, name: str, client: docker.DockerClient | None = None) -> None:
        self.name = name
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def get(self) -> Container:
        try:
            return self.client.containers.get(self.name)
        except docker.errors.NotFound as exc:
            raise errors.ContainerNotFound(
                f"registry container {self.name!r} not found: set REGISTRY_CONTAINER to its name or id"
            ) from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise errors.DockerUnavailable(f"Docker engine unreachable: {exc}") from exc

    def env(self) -> dict[str, str]:
        """The container's environment: distribution lets REGISTRY_* variables override its config file."""
        pairs = self.get().attrs["Config"].get("Env") or []
        return dict(e.split("=", 1) for e in pairs if "=" in e)

    def read_yaml(self, path: str) -> dict[str, Any]:
        loaded = yaml.safe_load(self.read_file(path))
        return loaded if isinstance(loaded, dict) else {}

    def config_path(self) -> str:
        """The config file the registry was started with, read from the container's command."""
        c = self.get()
        argv = [c.attrs.get("Path") or "", *(c.attrs.get("Args") or [])]
        for arg in reversed(argv):
            if arg.endswith((".yml", ".yaml")):
                return arg
        for path in KNOWN_CONFIG_PATHS:
            if self.exists(path):
                return path
        raise errors.ContainerError(f"cannot tell which config file container {self.name!r} runs with")

    def exec(self, argv: list[str]) -> ExecResult:
        c = self.get()
        if c.status != "running":
            raise errors.ContainerError(f"registry container {self.name!r} is {c.status}, not running")
        try:
            code, (out, err) = c.exec_run(argv, demux=True)
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"exec in {self.name!r} failed: {exc.explanation or exc}") from exc
        except OSError as exc:  # the engine went away mid-call (requests' errors are OSErrors)
            raise _unreachable(exc) from exc
        return ExecResult(code if code is not None else -1, (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace"))

    def exists(self, path: str) -> bool:
        try:
            self.get().get_archive(path)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError:
            raise
        except OSError as exc:
            raise _unreachable(exc) from exc
        return True

    def read_file(self, path: str) -> bytes:
        try:
            stream, _ = self.get().get_archive(path)
            data = b"".join(stream)
        except docker.errors.NotFound as exc:
            raise errors.ContainerError(f"{path} not found in container {self.name!r}") from exc
        except docker.errors.APIError:
            raise
        except OSError as exc:
            raise _unreachable(exc) from exc
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member else None
            if extracted is None:
                raise errors.ContainerError(f"{path} in container {self.name!r} is not a regular file")
            return extracted.read()

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(posixpath.basename(path))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        try:
            ok = self.get().put_archive(posixpath.dirname(path), buf.getvalue())
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"cannot write {path} in container {self.name!r}: {exc.explanation or exc}") from exc
        except OSError as exc:
            raise _unreachable(exc) from exc
        if not ok:
            raise errors.ContainerError(f"cannot write {path} in container {self.name!r}")

    def restart(self, stop_timeout: int) -> None:
        c = self.get()
        try:
            if c.status == "running":
                c.restart(timeout=stop_timeout)
            else:
                c.start()
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"cannot restart {self.name!r}: {exc.explanation or exc}") from exc
        except OSError as exc:
            raise _unreachable(exc) from exc


def _unreachable(exc: Exception) -> errors.DockerUnavailable:
    return errors.DockerUnavailable(f"Docker engine unreachable: {exc}")
