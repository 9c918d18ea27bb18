"""Check, don't assume: a real blob upload tells whether the registry refuses or accepts writes.

The config file can say read-only while the registry writes anyway (an environment variable overriding the
file's maintenance section, another config file). So before GC the window starts an upload and needs 405;
after the restart it starts one and needs 202, then cancels it. The probe uploads nothing: the upload is
created and deleted again, and a name with only an upload is never listed in the catalog.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from janitor import errors
from janitor.registry.client import RegistryClient

PROBE_REPOSITORY = "registry-janitor-probe"
# Between write probes after the restart: writes count as refused until one is accepted.
ACCEPT_POLL = 0.05


def _start_upload(client: RegistryClient, repository: str) -> tuple[int, str | None]:
    resp = client.request("POST", f"/v2/{repository}/blobs/uploads/", scope=f"repository:{repository}:pull,push",
                          ok=(202, 405))
    return resp.status_code, resp.headers.get("Location")


def _cancel(client: RegistryClient, repository: str, location: str | None) -> str | None:
    """Delete the probe's upload; only a location on the registry itself is followed. Returns the upload's
    id (the last path segment) once cancelled: its `hashstates` directory stays behind in storage."""
    if not location:
        return None
    parts = urlsplit(location)
    if parts.netloc and parts.netloc != urlsplit(client.base_url).netloc:
        return None  # never send credentials elsewhere; the upload expires on its own (upload purging)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    client.request("DELETE", path, scope=f"repository:{repository}:pull,push", ok=(204, 200, 404))
    return parts.path.rstrip("/").rpartition("/")[2] or None


def write_status(client: RegistryClient, repository: str = PROBE_REPOSITORY,
                 cancelled: list[str] | None = None) -> int:
    """202 (an upload was accepted, and is cancelled again; its id goes into `cancelled`) or 405 (writes
    refused)."""
    status, location = _start_upload(client, repository)
    if status == 202:
        upload_id = _cancel(client, repository, location)
        if upload_id and cancelled is not None:
            cancelled.append(upload_id)
    return status


def require_refused(client: RegistryClient, cause: str, repository: str = PROBE_REPOSITORY) -> None:
    """FenceNotEffective unless a blob upload is refused with 405. `cause` names the likely reasons."""
    status = write_status(client, repository)
    if status != 405:
        raise errors.FenceNotEffective(
            f"the registry accepted a blob upload (HTTP {status}) although its config was rewritten read-only, so "
            f"GC did not run and the original config was put back. {cause}", probe_status=status)


def require_accepted(client: RegistryClient, timeout: float, repository: str = PROBE_REPOSITORY,
                     cancelled: list[str] | None = None) -> float:
    """Seconds until a blob upload is accepted (202, then cancelled: its id goes into `cancelled`);
    RegistryNotWritable past `timeout`."""
    start = time.monotonic()
    last = "no answer"
    while True:
        try:
            status = write_status(client, repository, cancelled)
            if status == 202:
                return time.monotonic() - start
            last = f"HTTP {status}"
        except (errors.RegistryUnavailable, errors.RegistryError) as exc:
            last = exc.message
        if time.monotonic() - start > timeout:
            raise errors.RegistryNotWritable(
                f"the registry still refuses blob uploads {timeout:.0f}s after the window restarted it ({last}): "
                "pushes fail until this is fixed; check its config file and environment", last=last)
        time.sleep(ACCEPT_POLL)
