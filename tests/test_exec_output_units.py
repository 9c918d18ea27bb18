"""janitor/registry/exec_output.py: an exec's frames are read through the reader http.client parsed the
engine's `101 UPGRADED` headers with, so frames that arrived in the same read are not lost."""

from __future__ import annotations

import http.client
import socket
import struct

from janitor.registry import exec_output


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def upgraded_response(payload: bytes) -> http.client.HTTPResponse:
    """The engine's answer to an exec start, headers and frames sent in one write (as a busy engine's answer
    reaches a slow reader), parsed by http.client as requests/urllib3 parse it."""
    server, client = socket.socketpair()
    server.sendall(b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n"
                   b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n" + payload)
    server.close()
    resp = http.client.HTTPResponse(client)
    resp.begin()
    return resp


def test_frames_that_came_with_the_headers_are_kept_and_split_by_stream() -> None:
    payload = frame(1, b"blob eligible for deletion: sha256:aa\n") + frame(2, b"warning\n") + frame(1, b"3 blobs marked\n")
    resp = upgraded_response(payload)
    assert resp.status == 101
    # What docker-py reads from: the raw socket under the buffered reader, where those frames no longer are.
    assert resp.fp.raw.read(8) == b""
    resp = upgraded_response(payload)
    assert exec_output._frames(resp.fp) == (b"blob eligible for deletion: sha256:aa\n3 blobs marked\n", b"warning\n")


def test_a_connection_that_ends_inside_a_frame_keeps_what_came() -> None:
    resp = upgraded_response(frame(1, b"whole\n") + struct.pack(">BxxxL", 1, 100) + b"cut")
    assert exec_output._frames(resp.fp) == (b"whole\ncut", b"")
