"""A command's output from `docker exec`, read without losing what the HTTP client read ahead.

docker-py (7.x) sends the exec's start request, then reads the multiplexed output (8-byte frame headers, then
the bytes) from the raw socket under the HTTP response. When the engine's `101 UPGRADED` headers and the first
frames arrive in one read (a loaded machine, a command that prints at once), http.client's buffered reader
has already taken those frames along with the headers: docker-py never sees them, and reads output bytes as
a frame header (`ValueError: 102 is not a valid stream`, docker/docker-py#3160; seen in CI after a GC had
run, which failed the window), or, when whole frames were taken, silently returns the output without its
beginning. Here the frames are read through that same buffered reader, so nothing read ahead is lost.
"""

from __future__ import annotations

import struct
from typing import Any

import docker

_STDERR = 2


def run(client: docker.DockerClient, container_id: str, argv: list[str],
        workdir: str | None = None) -> tuple[int | None, bytes, bytes]:
    """Exit code (None if the engine has none), stdout and stderr of `argv` run in the container.
    Docker's errors are raised as the SDK raises them (APIError, requests' OSErrors)."""
    api = client.api
    exec_id = api.exec_create(container_id, argv, stdout=True, stderr=True, tty=False, workdir=workdir)["Id"]
    # The request docker-py's exec_start sends (Tty false: frames tell stdout from stderr).
    resp = api._post_json(api._url("/exec/{0}/start", exec_id), headers={"Connection": "Upgrade", "Upgrade": "tcp"},
                          data={"Tty": False, "Detach": False}, stream=True)
    try:
        api._raise_for_status(resp)
        reader = resp.raw._fp.fp  # http.client's buffered reader: the headers came through it, and maybe frames
        sock = getattr(reader.raw, "_sock", None)
        if sock is not None:  # a command may print nothing for minutes (a GC marking): its end is EOF, not a pause
            sock.settimeout(None)
        out, err = _frames(reader)
    finally:
        resp.close()
    return api.exec_inspect(exec_id)["ExitCode"], out, err


def _frames(reader: Any) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    while len(header := reader.read(8)) == 8:
        stream, size = struct.unpack(">BxxxL", header)
        data = reader.read(size)
        (err if stream == _STDERR else out).extend(data)
        if len(data) < size:  # the connection ended inside a frame
            break
    return bytes(out), bytes(err)
