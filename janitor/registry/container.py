"""The registry's container, driven through the Docker SDK: exec with argument lists, files by archive, restart."""

from __future__ import annotations

import datetime
import io
import posixpath
import shlex
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import docker.utils
import yaml
from docker.models.containers import Container

from janitor import errors
from janitor.registry import exec_output

_CONFIG_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True)
class FileMeta:
    """What a rewritten file keeps of the original: owner, mode bits, modification time (epoch seconds)."""

    uid: int
    gid: int
    mode: int
    mtime: float


def command_of(attrs: dict[str, Any]) -> list[str]:
    """The argv the container runs: entrypoint (Path) then its arguments."""
    return [attrs.get("Path") or "", *(attrs.get("Args") or [])]


def env_of(attrs: dict[str, Any]) -> dict[str, str]:
    pairs = (attrs.get("Config") or {}).get("Env") or []
    return dict(e.split("=", 1) for e in pairs if "=" in e)


def yaml_mapping(raw: bytes) -> dict[str, Any]:
    """A YAML file read as distribution reads its config: a mapping, or nothing."""
    loaded = yaml.safe_load(raw)
    return loaded if isinstance(loaded, dict) else {}


def config_path_from(argv: list[str], env: dict[str, str]) -> str | None:
    """Distribution's rule (`registry serve [path]`): a path argument wins, else REGISTRY_CONFIGURATION_PATH.
    The official entrypoints turn `<path>.yml` as first argument into `registry serve <path>.yml`; a shell
    wrapper (`sh -c "registry serve ..."`) is split like a shell would. None when nothing names a file."""
    words: list[str] = []
    for arg in argv:
        try:
            words.extend(shlex.split(arg) if any(c.isspace() for c in arg) else [arg])
        except ValueError:
            words.append(arg)
    from_env = env.get("REGISTRY_CONFIGURATION_PATH") or None
    if "serve" in words:
        after = [w for w in words[words.index("serve") + 1:] if not w.startswith("-")]
        if after and after[0].startswith("$"):
            # `sh -c '... registry serve "$1"' sh <path>`: the path is a positional argument of the shell.
            return next((w for w in words if w.endswith(_CONFIG_SUFFIXES)), from_env)
        return after[0] if after and not after[0].startswith(("&", ";", "|")) else from_env
    for word in words[1:]:
        if word.endswith(_CONFIG_SUFFIXES):
            return word
    return from_env



@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


def docker_client(base_url: str | None = None) -> docker.DockerClient:
    """The engine at `base_url` (a registry's `docker_host`), else from DOCKER_HOST and friends, as the docker
    CLI reads them."""
    try:
        return docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
    except docker.errors.DockerException as exc:
        raise errors.DockerUnavailable(f"Docker engine {base_url or '(DOCKER_HOST)'} unreachable: {exc}") from exc


class RegistryContainer:
    """The engine is reached lazily, so an unreachable one fails the step that needs it, with a reason."""

    def __init__(self, name: str, client: docker.DockerClient | None = None, docker_host: str | None = None) -> None:
        self.name = name
        self._client = client
        self.docker_host = docker_host

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client(self.docker_host)
        return self._client

    def ping(self) -> None:
        """Raises DockerUnavailable unless the engine answers: a worker that cannot reach it leaves this
        registry's windows to one that can."""
        try:
            self.client.ping()
        except (docker.errors.DockerException, OSError) as exc:
            self._client = None  # a new connection next time (the engine may come back elsewhere)
            raise errors.DockerUnavailable(
                f"Docker engine {self.docker_host or '(DOCKER_HOST)'} unreachable: {exc}") from exc

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
        return env_of(self.get().attrs)

    def read_yaml(self, path: str) -> dict[str, Any]:
        return yaml_mapping(self.read_file(path))

    def attrs(self) -> dict[str, Any]:
        """The container as `docker inspect` shows it: command, environment, mounts."""
        return self.get().attrs

    def config_path(self) -> str:
        """The config file the registry reads, found the way distribution finds it."""
        attrs = self.attrs()
        path = config_path_from(command_of(attrs), env_of(attrs))
        if path is None:
            raise errors.ConfigPathUnknown(
                f"cannot tell which config file container {self.name!r} runs with: its command names none and "
                "REGISTRY_CONFIGURATION_PATH is not in its environment. Start it as `registry serve <path>` or set "
                "REGISTRY_CONFIGURATION_PATH", container=self.name)
        if not self.exists(path):
            raise errors.ConfigPathUnknown(
                f"container {self.name!r} is started with config {path}, which does not exist in it", path=path)
        return path

    def exec(self, argv: list[str]) -> ExecResult:
        code, out, err = self.exec_bytes(argv)
        return ExecResult(code, out.decode(errors="replace"), err)

    def exec_bytes(self, argv: list[str], workdir: str | None = None) -> tuple[int, bytes, str]:
        """Exit code, stdout as bytes (an archive, file contents) and stderr as text."""
        c = self.get()
        if c.status != "running":
            raise errors.ContainerError(f"registry container {self.name!r} is {c.status}, not running")
        try:
            code, out, err = exec_output.run(self.client, c.id, argv, workdir)
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"exec in {self.name!r} failed: {exc.explanation or exc}") from exc
        except OSError as exc:  # the engine went away mid-call (requests' errors are OSErrors)
            raise _unreachable(exc) from exc
        return code if code is not None else -1, out, err.decode(errors="replace")

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def stat(self, path: str, container_id: str | None = None) -> dict[str, Any] | None:
        """A path's name, size, mode and mtime as the engine reports them; None when it does not exist. A HEAD
        on the archive endpoint (`docker cp`'s stat): a GET would have the engine build the file's archive,
        about 50 ms of its CPU against 1 ms, for every look at the config and what sits next to it.
        `container_id`: the container as the caller just found it (no second inspect)."""
        api = self.client.api
        container_id = container_id or self.get().id
        try:
            resp = api.head(api._url("/containers/{0}/archive", container_id), params={"path": path},
                            timeout=api.timeout)
        except OSError as exc:  # requests' errors are OSErrors: the engine went away mid-call
            raise _unreachable(exc) from exc
        if resp.status_code == 404:
            return None
        api._raise_for_status(resp)
        header = resp.headers.get("X-Docker-Container-Path-Stat")
        return dict(docker.utils.decode_json_header(header)) if header else {}

    def read_file(self, path: str) -> bytes:
        return self.read_entry(path)[0]

    def read_entry(self, path: str) -> tuple[bytes, FileMeta]:
        """A file's bytes and its owner, mode and mtime, from the one archive Docker sends."""
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
            if extracted is None or member is None:
                raise errors.ContainerError(f"{path} in container {self.name!r} is not a regular file")
            return extracted.read(), FileMeta(member.uid, member.gid, member.mode & 0o7777, member.mtime)

    def write_file(self, path: str, data: bytes, mode: int = 0o644, meta: FileMeta | None = None) -> None:
        """Write (replace) a file; with `meta`, it gets that owner, mode and mtime (a config holding secrets
        must not turn world-readable, nor look modified, because the janitor rewrote it)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(posixpath.basename(path))
            info.size, info.mode = len(data), mode
            if meta is not None:
                info.uid, info.gid, info.mode, info.mtime = meta.uid, meta.gid, meta.mode, int(meta.mtime)
            tar.addfile(info, io.BytesIO(data))
        try:
            ok = self.get().put_archive(posixpath.dirname(path), buf.getvalue())
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"cannot write {path} in container {self.name!r}: {exc.explanation or exc}") from exc
        except OSError as exc:
            raise _unreachable(exc) from exc
        if not ok:
            raise errors.ContainerError(f"cannot write {path} in container {self.name!r}")

    def write_marks(self, directory: str, marks: dict[str, float]) -> None:
        """Empty files with the given modification times (epoch seconds), in one archive: references for
        `find -newer`."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, mtime in marks.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = 0, 0o644, int(mtime)
                tar.addfile(info, io.BytesIO(b""))
        try:
            ok = self.get().put_archive(directory, buf.getvalue())
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"cannot write into {directory} in container {self.name!r}: "
                                        f"{exc.explanation or exc}") from exc
        except OSError as exc:
            raise _unreachable(exc) from exc
        if not ok:
            raise errors.ContainerError(f"cannot write into {directory} in container {self.name!r}")

    def restart(self, stop_timeout: int) -> str | None:
        """Restart (or start, after a kill). One call the engine carries out whole, even if this process dies
        meanwhile (a stop and a start apart could leave the registry stopped, which the janitor never undoes:
        an operator may have stopped it). Returns the run it stopped (`run_of`), None when none was running."""
        c = self.get()
        try:
            if c.status != "running":
                c.start()
                return None
            run = run_of(c.attrs)
            c.restart(timeout=stop_timeout)
            return run
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"cannot restart {self.name!r}: {exc.explanation or exc}") from exc
        except OSError as exc:
            raise _unreachable(exc) from exc

    def exit_code(self, run: str) -> int | None:
        """The exit code `run` ended with, once the container runs again: the one `die` the engine's events
        show between that run's start and the current run's. None when not exactly one is there (the engine
        keeps its last events only, or the container died more than once)."""
        container_id, _, started = run.partition("@")
        try:
            c = self.get()
            now = (c.attrs.get("State") or {}).get("StartedAt", "")
            if c.id != container_id or c.status != "running" or not started or not now:
                return None
            since, until = _nanos(started), _nanos(now)
            events = self.client.events(since=since // 10**9, until=f"{until // 10**9}.{until % 10**9:09d}",
                                        filters={"container": container_id, "event": "die"}, decode=True)
            died = [e for e in events if since <= int(e.get("timeNano", 0)) <= until]
        except (docker.errors.DockerException, ValueError) as exc:
            raise errors.ContainerError(f"cannot read the engine's events for {self.name!r}: {exc}") from exc
        except OSError as exc:
            raise _unreachable(exc) from exc
        if len(died) != 1:
            return None
        code = (died[0].get("Actor") or {}).get("Attributes", {}).get("exitCode")
        return int(code) if code is not None and str(code).lstrip("-").isdigit() else None

    def output_since(self, since: float) -> list[str]:
        """Lines the container wrote to stdout since `since` (epoch seconds, the engine's clock), every run of
        it; raises ContainerError when its log driver keeps nothing the engine can read back."""
        try:
            raw = self.get().logs(stdout=True, stderr=False, since=int(since))
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"cannot read the output of {self.name!r}: {exc.explanation or exc}") from exc
        except OSError as exc:
            raise _unreachable(exc) from exc
        return raw.decode(errors="replace").splitlines()

    def run_output(self, run: str) -> Iterator[str]:
        """What one run of the container (`run_of`) and those after it wrote, both streams, in the order the
        engine received it, from the run's start on: the lines stamped before its StartedAt (the run before
        it, in the same second) are left out. Streamed: a run of days may have written much. Raises
        ContainerError (also while it is read) when the container is another by now or the engine fails."""
        container_id, _, started = run.partition("@")
        try:
            since = _nanos(started)
            c = self.get()
            if c.id != container_id:
                raise errors.ContainerError(f"container {self.name!r} is not the one whose run was named")
            # stream without follow: the SDK follows a stream unless told not to, and would never end.
            chunks = c.logs(stdout=True, stderr=True, timestamps=True, since=since // 10**9, stream=True,
                            follow=False)
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"cannot read the output of {self.name!r}: {exc.explanation or exc}") from exc
        except ValueError as exc:
            raise errors.ContainerError(f"the engine's time {started!r} cannot be read: {exc}") from exc
        except OSError as exc:
            raise _unreachable(exc) from exc
        return self._lines_from(chunks, since)

    def _lines_from(self, chunks: Iterator[bytes], since: int) -> Iterator[str]:
        begun = False
        pending = b""
        try:
            for chunk in chunks:
                pending += chunk
                *whole, pending = pending.split(b"\n")
                for raw in whole:
                    line = raw.decode(errors="replace")
                    stamp, _, text = line.partition(" ")
                    try:
                        begun = begun or _nanos(stamp) >= since
                        if begun:
                            yield text
                    except ValueError:
                        if begun:  # output with a newline of its own inside: the engine stamped its first part
                            yield line
        except docker.errors.APIError as exc:
            raise errors.ContainerError(f"cannot read the output of {self.name!r}: {exc.explanation or exc}") from exc
        except OSError as exc:
            raise _unreachable(exc) from exc
        if pending.strip() and begun:
            yield pending.decode(errors="replace").partition(" ")[2]


def run_of(attrs: dict[str, Any]) -> str:
    """A run of a container: its id and when it started (the engine's RFC 3339 time, nanoseconds)."""
    return f"{attrs.get('Id', '')}@{(attrs.get('State') or {}).get('StartedAt', '')}"


def _nanos(stamp: str) -> int:
    """An engine time ("2026-12-07T15:11:21.121516002Z") as nanoseconds since the epoch."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc).timestamp()
    return int(seconds) * 10**9 + int((fraction + "000000000")[:9])


def _unreachable(exc: Exception) -> errors.DockerUnavailable:
    return errors.DockerUnavailable(f"Docker engine unreachable: {exc}")
