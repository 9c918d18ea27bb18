"""When the registry's access log may stand in for listing the whole object store under the fence.

An object store cannot be listed by time: without help, the reads under the fence list every repository and
every blob again, and writes stay refused for as long as that takes (it grows with the bucket). The window's
mark listed all of it already, after a marker request of its own; janitor/registry/journal.py reads which
repositories the registry wrote to after that request. That is everything that changed only if the registry
logged every request it served until the fence stopped it. So `read` requires, or answers Unusable:

* one container (a replica the janitor does not read the log of could have written);
* no pull-through cache (`proxy.remoteurl`): its GETs store blobs and manifests;
* the same run of the container from the marker to the fence's stop (a restart in between may have cut a
  request short, after its writes and before its log line);
* that stop graceful, exit code 0: distribution with `http.draintimeout` stops taking requests on SIGTERM and
  exits 0 only once every request it had begun was answered, and so logged (without it, or past it, the exit
  code is not 0);
* the marker in the container's stdout, with every write after it attributed to a repository.

Anything less and the reads list the whole store, as before: the log only ever narrows what is read again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import yaml

from janitor import errors
from janitor.registry import journal
from janitor.registry.container import env_of, run_of
from janitor.window.fence import CONFIG_READS
from janitor.window.guard import WindowGuard

# Seconds of the container's output read before the marker's answer: the engine's clock may differ a little.
LOG_SLACK = 120.0


class Unusable(Exception):
    """Why the fenced reads list the whole store in this window."""


@dataclass(frozen=True)
class Marker:
    token: str
    run: str  # the container's run that answered it
    answered_at: float  # the worker's clock: listings begun after this are what the log completes


def begin(guard: WindowGuard) -> tuple[Marker | None, dict[str, Any] | None]:
    """Before the listings the fence's reads may build on: the marker, on a storage that cannot list by time
    (None on one that can); else why the fence will list whole (the fence step's `fenced_listing`)."""
    if guard.storage is None or not guard.storage.needs_journal:
        return None, None
    try:
        return place(guard), None
    except Unusable as exc:
        return None, {"whole": True, "why": str(exc)}


def follow(guard: WindowGuard, marker: Marker) -> dict[str, Any]:
    """Under the fence: the storage's reads list again only what the registry's log says it wrote, when it
    can say (the fence step's `fenced_listing`)."""
    assert guard.storage is not None  # a marker is placed only with one
    try:
        reads = guard.storage.follow(read(guard, marker))
    except Unusable as exc:
        return {"whole": True, "why": str(exc)}
    if reads is None:
        return {"whole": True, "why": "this window listed the store whole before its marker only"}
    return {"whole": False, **reads}


def place(guard: WindowGuard) -> Marker:
    """Before the mark's listings: check what can be checked now, then send the marker request."""
    if guard.several:
        raise Unusable("the registry runs as several containers: the log of one cannot say what all wrote")
    container = guard.container
    try:
        attrs = container.attrs()
        env = env_of(attrs)
        config = yaml.safe_load(CONFIG_READS.read(container, guard.config_path)) or {}
    except (errors.JanitorError, yaml.YAMLError) as exc:
        raise Unusable(f"the registry's config could not be read: {exc}") from exc
    if env.get("REGISTRY_PROXY_REMOTEURL") or _get(config, "proxy", "remoteurl"):
        raise Unusable("the registry is a pull-through cache: its reads store blobs, and its log shows them as reads")
    if not (env.get("REGISTRY_HTTP_DRAINTIMEOUT") or _get(config, "http", "draintimeout")):
        raise Unusable("the registry has no http.draintimeout: stopped, it cuts requests short without logging "
                       "them, so its log cannot say everything it wrote")
    token = f"{guard.window_id}-{uuid.uuid4().hex[:8]}"
    try:
        guard.client.answered(journal.marker_path(token))
    except errors.JanitorError as exc:
        raise Unusable(f"the marker request failed: {exc}") from exc
    return Marker(token, run_of(attrs), time.time())


def read(guard: WindowGuard, marker: Marker) -> journal.Written:
    """Under the fence: what the registry wrote since the marker, once its stop is proven graceful."""
    stopped = guard.fence.stopped
    if stopped is None:
        raise Unusable("the fence found the registry not running")
    if stopped != marker.run:
        raise Unusable("the registry was restarted between the mark and the fence")
    try:
        code = guard.container.exit_code(stopped)
    except errors.JanitorError as exc:
        raise Unusable(exc.message) from exc
    if code is None:
        raise Unusable("the engine's events no longer say how the registry's stop ended")
    if code != 0:
        raise Unusable(f"the registry's stop ended with exit code {code}, not 0: it may have cut requests short "
                       "(no http.draintimeout, or one longer than JANITOR_RESTART_STOP_TIMEOUT)")
    try:
        lines = guard.container.output_since(marker.answered_at - LOG_SLACK)
        return journal.read(lines, marker.token, marker.answered_at)
    except errors.JanitorError as exc:
        raise Unusable(exc.message) from exc
    except journal.Unreadable as exc:
        raise Unusable(str(exc)) from exc


def _get(config: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return config
