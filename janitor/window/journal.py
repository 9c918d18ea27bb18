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
from janitor.storage.views import Carried, ViewBook
from janitor.window.fence import CONFIG_READS
from janitor.window.guard import WindowGuard
from janitor.window.probe import PROBE_REPOSITORY

# Seconds of the container's output read before the marker's answer: the engine's clock may differ a little.
LOG_SLACK = 120.0


class Unusable(Exception):
    """Why the fenced reads list the whole store in this window."""


@dataclass(frozen=True)
class Marker:
    token: str
    run: str  # the container's run that answered it
    answered_at: float  # the worker's clock: listings begun after this are what the log completes
    kept_whole: bool = False  # the engine keeps all the container writes (_kept_whole)


def begin(guard: WindowGuard) -> tuple[Marker | None, dict[str, Any]]:
    """Before the listings the fence's reads may build on: the marker, on a storage that cannot list by time
    (None on one that can), and the carried view brought up to it; else why the fence will list whole (the
    drain step's `fenced_listing`, and `carried_view`)."""
    if guard.storage is None or not guard.storage.needs_journal:
        return None, {}
    try:
        marker = place(guard)
    except Unusable as exc:
        if guard.storage.carried_run is not None:
            guard.storage.drop_carried()
        return None, {"fenced_listing": {"whole": True, "why": str(exc)}}
    rebased = rebase(guard, marker)
    return marker, {} if rebased is None else {"carried_view": rebased}


def follow(guard: WindowGuard, marker: Marker) -> dict[str, Any]:
    """Under the fence: the storage's reads list again only what the registry's log says it wrote, when it
    can say (the fence step's `fenced_listing`)."""
    assert guard.storage is not None  # a marker is placed only with one
    try:
        reads = guard.storage.follow(read(guard, marker))
    except Unusable as exc:
        guard.storage.follow(None)
        return {"whole": True, "why": str(exc)}
    if reads is None:
        return {"whole": True, "why": "this window listed the store whole before its marker only"}
    return {"whole": False, **reads}


def resume(guard: WindowGuard, carried: Carried | None) -> dict[str, Any] | None:
    """Before the window's first read (and again once its fence is down): the view the last window carried, when
    the registry still runs the run that view is true at the start of, and that run's log says everything it
    wrote since. Then every read lists again only what it wrote, not the whole store. What was found
    (`carried_view`), or None on a storage that lists by time."""
    store = guard.storage
    if store is None or not store.needs_journal:
        return None
    if carried is None:
        return {"used": False, "why": "no view was carried from the last window (the first window, a window in "
                                      "registry GC mode, or one that wrote to the bucket after its fenced reads)"}
    try:
        if guard.several:
            raise Unusable("the registry runs as several containers: the log of one cannot say what all wrote")
        attrs = guard.container.attrs()
        _check_log_driver(attrs)
        run = run_of(attrs)
        if run != carried.run:
            raise Unusable("the registry was restarted since the view was carried: the log of the run in between "
                           "may not say everything it wrote")
        written = _run_written(guard, run, carried.since, whole=_kept_whole(attrs))
        if PROBE_REPOSITORY not in written.repositories:
            # The window that kept the view proved writes accepted in this run with a blob upload of its own:
            # a log without it is not the access log (off, or written elsewhere).
            raise Unusable("the run's log does not show the janitor's own write probe: its access log is off or "
                           "not on the container's output")
        if not store.resume(carried.view, run, written):
            raise Unusable("the carried view could not be read")
    except (Unusable, errors.JanitorError) as exc:
        return {"used": False, "why": _why(exc)}
    return {"used": True, "repositories": len(written.repositories), "blobs_named": len(written.blobs),
            "write_requests": written.requests}


def carry(guard: WindowGuard, book: ViewBook, swept: bool) -> dict[str, Any] | None:
    """Once the fence is down: keep what this fence read, with the sweep's deletes, for the next window, true at
    the start of the run the restart began; and let this window's own reads after the fence (verify) start
    from it. `swept`: the janitor's own sweep ran (the registry's garbage-collect deletes what the janitor
    does not see)."""
    store = guard.storage
    if store is None or not store.needs_journal:
        return None
    view = store.carry() if swept else None
    if view is None:
        return {"kept": False, "why": "the fence did not read the whole view, the registry's garbage-collect ran, "
                                      "or the window wrote to the bucket after its fenced reads"}
    try:
        stopped = guard.fence.stopped  # the fenced run, which refused every write
        if stopped is None or guard.several:
            raise Unusable("the registry was not running when the fence came down, or runs as several containers")
        run = run_of(guard.container.attrs())
        if guard.container.exit_code(stopped) is None:  # one stop since the fenced run began: this run followed it
            raise Unusable("the engine's events do not show the run after the fence following it at once")
    except (Unusable, errors.JanitorError) as exc:
        return {"kept": False, "why": _why(exc)}
    carried = Carried(run, time.time(), view)
    if not book.save(carried):
        return {"kept": False, "why": "Redis did not take the view"}
    return {"kept": True, "bytes": len(view), "verify": resume(guard, carried)}


def _run_written(guard: WindowGuard, run: str, since: float, token: str | None = None,
                 whole: bool = False) -> journal.Written:
    try:
        return journal.read_run(guard.container.run_output(run), since, token, from_start=not whole)
    except journal.Unreadable as exc:
        raise Unusable(str(exc)) from exc


def _why(exc: Exception) -> str:
    return exc.message if isinstance(exc, errors.JanitorError) else str(exc)


def _log_config(attrs: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The container's log driver and its options, as the engine recorded them at creation (its defaults too)."""
    config = (attrs.get("HostConfig") or {}).get("LogConfig") or {}
    return config.get("Type"), config.get("Config") or {}


def _kept_whole(attrs: dict[str, Any]) -> bool:
    """Whether the engine keeps all the container wrote, so that a run's output read back starts at its start
    without distribution's `listening on` line to prove it: json-file without rotation (`max-size`), which
    the engine never trims. (Non-blocking mode is refused earlier: it drops lines.)"""
    driver, options = _log_config(attrs)
    return driver == "json-file" and not options.get("max-size")


def _check_log_driver(attrs: dict[str, Any]) -> None:
    if _log_config(attrs)[1].get("mode") == "non-blocking":
        raise Unusable("the container's log runs in non-blocking mode, which drops lines when its buffer is full: "
                       "its access log cannot say everything the registry wrote")


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
    _check_log_driver(attrs)
    if not (env.get("REGISTRY_HTTP_DRAINTIMEOUT") or _get(config, "http", "draintimeout")):
        raise Unusable("the registry has no http.draintimeout: stopped, it cuts requests short without logging "
                       "them, so its log cannot say everything it wrote")
    token = f"{guard.window_id}-{uuid.uuid4().hex[:8]}"
    try:
        guard.client.answered(journal.marker_path(token))
    except errors.JanitorError as exc:
        raise Unusable(f"the marker request failed: {exc}") from exc
    return Marker(token, run_of(attrs), time.time(), _kept_whole(attrs))


def rebase(guard: WindowGuard, marker: Marker) -> dict[str, Any] | None:
    """Right after the marker, with a carried view: what the run wrote before the marker is read again, and
    the view becomes what a listing begun after the marker finds (the mark's reads, and the fence's base).
    What that read; None without a carried view; {"used": False, why} when the log no longer says it, and then
    the reads list the store whole."""
    store = guard.storage
    if store is None or store.carried_run is None:
        return None
    try:
        if store.carried_run != marker.run:
            raise Unusable("the registry was restarted since the window began")
        written = _run_written(guard, marker.run, marker.answered_at, marker.token, whole=marker.kept_whole)
    except (Unusable, errors.JanitorError) as exc:
        store.drop_carried()
        return {"used": False, "why": _why(exc)}
    return {"used": True, **(store.rebase(written) or {})}


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
