"""The index's reconciler: a thread in each worker process, one reconcile per registry at a time (a Redis lock).

It fills the index at start, then reads the whole registry again every JANITOR_RECONCILE_INTERVAL seconds and
right after each maintenance window's restart (the window sets a flag, checked every second). Each round also
reads the registry container's config to tell whether the registry sends events to /v1/events (notifications
mode) or not (polling mode), for the API and /readyz.

While a window of the registry holds its lease, a reconcile waits (before its storage read and before each
repository): its reads, a HEAD per tag, would share the registry and this host with the window's work under
the fence, and a window's restarts would fail them anyway. No window waits for a reconcile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from janitor import errors
from janitor.index import TagIndex, notifications_configured
from janitor.storage import contents, drivers
from janitor.storage.driver import Storage
from janitor.window import preflight
from worker.context import Context

log = logging.getLogger(__name__)
TICK = 1.0
# The reconciler lock's time to live, renewed every third of it while a reconcile runs.
LOCK_TTL = 10.0
# How often a waiting reconcile looks whether the window's lease is gone.
WINDOW_POLL = 0.25


class Stopping(Exception):
    """The worker stops while a reconcile waits for a window: the reconcile ends there."""


def window_pause(conn: redis.Redis, lease_key: str, stop: threading.Event) -> Callable[[], None]:
    """What a reconcile calls before each read: returns at once unless a window holds the registry's lease, and
    then when it no longer does. Raises Stopping when the worker stops meanwhile."""
    said = threading.Event()  # the reconcile's threads all wait: one line in the log per wait

    def pause() -> None:
        while conn.exists(lease_key):
            if not said.is_set():
                said.set()
                log.info("index reconcile waits: a window of this registry holds its lease")
            if stop.wait(WINDOW_POLL):
                raise Stopping()
        said.clear()
    return pause


def index_for(ctx: Context) -> TagIndex:
    s = ctx.settings
    return TagIndex(ctx.conn, ctx.keys.prefix, ctx.client, s.index_read_concurrency, s.index_mode)


def read_container(ctx: Context, index: TagIndex) -> Storage | None:
    """The registry container's environment and config file, read once per reconcile for the two things it
    wants from them: whether the registry sends events to a janitor (the mode, for the API and /readyz) and,
    its storage (for `prefill`; None: not readable). Best effort: without
    Docker the last mode stays and prefill is skipped."""
    try:
        container = ctx.container
        env = container.env()
        try:
            config: dict[str, Any] | None = container.read_yaml(container.config_path())
        except errors.JanitorError:
            config = None
        index.note(configured="1" if notifications_configured(env, config) else "0")
    except errors.JanitorError as exc:
        log.info("index: cannot read the registry container's config (%s); mode unchanged", exc.message)
        return None
    except Exception:  # noqa: BLE001 - e.g. a config file that is not YAML: the reconcile goes on regardless
        log.exception("index: cannot read the registry container's config; mode unchanged")
        return None
    if config is None:
        return None
    try:
        return drivers.open_storage(container, preflight.storage_driver(env, config), env, config, ctx.settings.s3)
    except errors.JanitorError as exc:
        log.info("index: the registry's storage settings are unusable (%s); prefill skipped", exc.message)
        return None


def storage_catalog(store: Storage | None, began: float) -> list[str] | None:
    """On an object store, the catalog as the janitor lists it itself (the repositories with layer links, as
    distribution's catalog walk finds them); None: the registry's `_catalog`. That walk is one request listing
    the whole bucket (minutes at 4,000 tags through moto), and one in flight when a window's fence stops the
    registry holds up the registry's drain, then is cut, and the window lists the bucket whole under the fence
    (janitor/window/journal.py). The janitor's own listing is not a request to the registry: the prefill's,
    when it listed the repositories after `began` (the worker's clock), else one made now."""
    if store is None or not store.needs_journal:
        return None
    try:
        marks = store.marks("reconcile", {"began": began})
        try:
            return sorted(store.layered_repositories(since=marks.get("began")))
        finally:
            store.drop_marks(marks.values())
    except errors.JanitorError as exc:
        log.info("index: repositories not listed from storage (%s); the registry's catalog is read", exc.message)
        return None


def prefill(ctx: Context, index: TagIndex, store: Storage | None) -> None:
    """Manifests and config times from the registry's storage into the content cache, before the reconcile
    reads the registry (see `contents.prefill`). Best effort: without Docker or with a storage driver the
    janitor cannot read the reconcile reads everything over HTTP, as it always could."""
    if store is None:
        return
    try:
        started = time.monotonic()
        added = contents.prefill(index.contents, store)
        log.info("index: %s read from storage in %.2f s", added, time.monotonic() - started)
    except errors.JanitorError as exc:
        log.info("index: storage not read (%s); the reconcile reads the registry's API", exc.message)
    except Exception:  # noqa: BLE001 - an optimisation only: whatever goes wrong here must not stop the reconcile
        log.exception("index: storage not read; the reconcile reads the registry's API")


def reconcile_once(ctx: Context, index: TagIndex, pause: Callable[[], None] | None = None) -> bool:
    """One reconcile under the registry's index lock; False when another process holds it. The lock is renewed
    while the reconcile runs (and waits, see `window_pause`), so a worker killed mid-reconcile holds it up for
    LOCK_TTL at most."""
    owner = index.try_lock(LOCK_TTL)
    if owner is None:
        return False
    done_event = threading.Event()

    def keep() -> None:
        while not done_event.wait(LOCK_TTL / 3):
            try:
                index.extend_lock(owner, LOCK_TTL)
            except redis.RedisError:
                pass  # Redis away: the reconcile fails on its own
    threading.Thread(target=keep, name="index-lock", daemon=True).start()
    try:
        if pause is not None:
            pause()
        store = read_container(ctx, index)
        began = time.time()
        prefill(ctx, index, store)
        done = index.reconcile(catalog=storage_catalog(store, began), pause=pause)
        log.info("index reconciled: %s", done)
    finally:
        done_event.set()
        index.unlock(owner)
    return True


def loop(ctx: Context, stop: threading.Event) -> None:
    index = index_for(ctx)
    pause = window_pause(ctx.conn, ctx.keys.lock, stop)
    last = 0.0
    while not stop.is_set():
        try:
            requested = index.conn.getdel(index.reconcile_key) is not None
            if requested or time.monotonic() - last >= ctx.settings.index_reconcile_interval:
                if reconcile_once(ctx, index, pause):
                    last = time.monotonic()
                else:
                    # Another process holds the lock: a live one renews it, a killed one's lapses within
                    # LOCK_TTL. Look again then (a start's first reconcile must not wait a whole interval).
                    last = time.monotonic() - ctx.settings.index_reconcile_interval + LOCK_TTL
                    if requested:
                        index.request_reconcile()  # do it again after them
        except (errors.JanitorError, redis.RedisError) as exc:
            log.warning("index reconcile failed (%s); retrying in a few seconds", getattr(exc, "message", exc))
            last = time.monotonic() - ctx.settings.index_reconcile_interval + 5
        except Exception:  # noqa: BLE001 - the thread must outlive any one failure
            if stop.is_set():
                return  # the worker is stopping: whatever broke off the reconcile, the next start reconciles
            log.exception("index reconcile failed unexpectedly")
            last = time.monotonic() - ctx.settings.index_reconcile_interval + 5
        stop.wait(TICK)


def start(ctx: Context) -> threading.Event:
    """Start the reconciler thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=loop, args=(ctx, stop), name="index-reconciler", daemon=True).start()
    return stop
