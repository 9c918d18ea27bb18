"""The one object that owns a window's changes to the registry: its lease, its fence and its holds record.

Every change goes through here and checks, first, that the lease is still this window's and that the
window is still within its time limit. The fence marker and the holds record name the window and the
lease's fencing token; a window only ever undoes a fence or holds that are its own, and only while it holds
the lease. Anything left by an owner whose lease is gone is undone by `recover()`, under the next lease.

Nothing is assumed: before GC a blob upload must be refused, and after the restart one must be accepted
before the config backup is removed.

A registry may run as several containers on one storage (REGISTRIES_FILE `replicas:`): the guard then fences,
probes and restarts each one, at its own address, and GC (in the first) runs only once every one refuses
writes. A replica the janitor is not told about cannot be fenced, nor detected in general.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from janitor import errors
from janitor.config.settings import Settings
from janitor.registry.client import RegistryClient
from janitor.registry.container import RegistryContainer
from janitor.storage.driver import Storage
from janitor.window import gc, holds, probe
from janitor.window.fence import WriteFence
from janitor.window.fence import cause as fence_cause_of
from janitor.window.lease import MaintenanceLock

log = logging.getLogger(__name__)
T = TypeVar("T")
# A container being killed says "running" a moment longer than its execs work: how long to let it settle.
RELEASE_SETTLE = 1.0


@dataclass(frozen=True)
class ReplicaParts:
    """One container of the registry: its fence, and a client at the container's own address, so each write
    probe answers for that container (a load balancer in front could answer from any)."""

    container: RegistryContainer
    fence: WriteFence
    client: RegistryClient


class WindowGuard:
    def __init__(self, settings: Settings, lease: MaintenanceLock, container: RegistryContainer,
                 fence: WriteFence, client: RegistryClient, window_id: str | None = None,
                 replicas: list[ReplicaParts] | None = None) -> None:
        """`container`, `fence`, `client`: the registry's first container (GC, holds and storage reads run in
        it). `replicas`: every container, that one first; default just that one."""
        self.settings = settings
        self.lease = lease
        self.container = container
        self.fence = fence
        self.client = client
        self.replicas = replicas or [ReplicaParts(container, fence, client)]
        if self.replicas[0].container is not container:
            raise ValueError("the first replica must be the container GC runs in")
        self.replica_paths = [""] * len(self.replicas)  # each replica's config file, as `locate` found it
        self.touched = [False] * len(self.replicas)  # this window began to fence that replica
        self.window_id = window_id or uuid.uuid4().hex
        self.config_path = ""
        self.root = ""
        self.storage: Storage | None = None  # the registry's storage (janitor.storage.driver); None: unreadable
        self.deadline = float("inf")
        self.fenced = False  # this window wrote (or began to write) the read-only config
        self.placed: list[holds.Hold] = []  # holds this window placed and has not released
        self.accepted_at: float | None = None  # monotonic: when `restore` saw a write accepted again
        self.recorded = False  # this window wrote a holds record (and has not removed it)
        self.stopped_at: float | None = None  # monotonic: when the fence began to stop the writable registry
        self.closed_under = ""  # the lease's token when this window fenced: the same one still owned in
        # `restore` means nobody else held the lease meanwhile

    # -- identity and limits ---------------------------------------------------------------------

    @property
    def owner(self) -> str:
        """What the fence marker and the holds record say: this window and its lease's fencing token."""
        return f"window-{self.window_id}/lease-{self.lease.fencing}"

    def is_own(self, owner: str | None) -> bool:
        return bool(owner) and str(owner).startswith(f"window-{self.window_id}/")

    def locate(self, config_path: str, root: str, replica_paths: list[str] | None = None,
               storage: Storage | None = None) -> None:
        """The first container's config, the storage root and the storage itself (janitor.storage.driver);
        `replica_paths`: the other replicas' configs, in order (read from their containers when not given)."""
        others = replica_paths if replica_paths is not None else \
            [r.container.config_path() for r in self.replicas[1:]]
        if len(others) != len(self.replicas) - 1:
            raise ValueError("one config path per further replica")
        self.config_path, self.root, self.storage = config_path, root, storage
        self.replica_paths = [config_path, *others]

    def _store(self) -> Storage:
        if self.storage is None:
            raise errors.StorageAccessRequired("holds need the registry's storage, which this window cannot read",
                                               driver="unknown")
        return self.storage

    @property
    def several(self) -> bool:
        return len(self.replicas) > 1

    def _label(self, i: int) -> str:
        r = self.replicas[i]
        return f"replica {r.container.name} ({r.client.base_url})"

    def start_clock(self) -> None:
        self.deadline = time.monotonic() + self.settings.max_window

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, action: str) -> None:
        """Before every change: still within the window's time, still the lease's owner."""
        if self.remaining() <= 0:
            raise errors.WindowTimeout(
                f"the window ran past JANITOR_MAX_WINDOW ({self.settings.max_window:.0f}s) before {action}; "
                f"{action} did not happen and the registry was made writable again",
                max_window_seconds=self.settings.max_window)
        self.lease.check(action)

    # -- the steps' changes ----------------------------------------------------------------------

    def close(self) -> dict[str, Any]:
        """Fence: restart every replica read-only, then prove that each refuses writes."""
        self.check("the fence")
        self.fenced = True  # before the first write: a failure halfway must still be undone
        self.closed_under = self.lease.token
        for r in self.replicas:
            r.fence.stopped_at = None
        readies: list[float] = []
        restarts: list[float] = []
        try:
            for i, r in enumerate(self.replicas):
                if i:
                    self.check(f"the fence of {self._label(i)}")
                self.touched[i] = True
                readies.append(r.fence.close(self.replica_paths[i], self.owner))
                restarts.append(r.fence.restart_seconds)
        finally:
            stops = [r.fence.stopped_at for r in self.replicas if r.fence.stopped_at is not None]
            self.stopped_at = min(stops) if stops else None
        self.require_refused()
        out: dict[str, Any] = {"restart_seconds": round(sum(restarts), 3), "ready_seconds": round(sum(readies), 3),
                               "write_probe": 405, "owner": self.owner}
        if self.several:
            out["replicas"] = [{"container": r.container.name, "url": r.client.base_url, "ready_seconds":
                                round(ready, 3), "write_probe": 405} for r, ready in zip(self.replicas, readies)]
        # What earlier probes left in storage is removed by `restore`, once writes are accepted again: every
        # exec here is time writes stay refused.
        return out

    def remove_probe_uploads(self, upload_ids: list[str] | None) -> int | None:
        """The probe's cancelled uploads (`_uploads/<id>/hashstates`): those named, or all of them. All of them
        may include a probe another process has just started: its cancel then answers 404, which probes take
        as cancelled, so nothing but the janitor's own probe repository is ever touched. Housekeeping only:
        without the registry's storage, or when it fails, nothing else is affected (None; the next window
        tries again)."""
        if self.storage is None or upload_ids == []:
            return None if self.storage is None else 0
        try:
            return self.storage.remove_uploads(probe.PROBE_REPOSITORY, upload_ids)
        except errors.JanitorError as exc:
            log.warning("probe uploads in %s not removed: %s", probe.PROBE_REPOSITORY, exc.message)
            return None

    def require_accepted(self, client: RegistryClient | None = None) -> float:
        """A write accepted again at this address (a probe upload, cancelled), and that upload's leftovers
        removed."""
        cancelled: list[str] = []
        seconds = probe.require_accepted(client or self.client, self.settings.registry_ready_timeout,
                                         cancelled=cancelled)
        self.remove_probe_uploads(cancelled)
        return seconds

    def require_refused(self) -> None:
        """Every replica, each at its own address: one that still writes would defeat GC for all."""
        for i, r in enumerate(self.replicas):
            probe.require_refused(r.client, (f"({self._label(i)}) " if self.several else "") + self.fence_cause(i))

    def fence_cause(self, i: int = 0) -> str:
        """Why a rewritten config may not take effect, from what the container shows, and the fix."""
        container, config_path = self.replicas[i].container, self.replica_paths[i] or self.config_path
        try:
            env = container.env()
        except errors.JanitorError:
            env = {}
        return fence_cause_of(env, config_path)

    def place_holds(self, built: list[tuple[holds.Hold, bytes]]) -> None:
        """Record, then place: a crash in between still lets the next owner remove them. Nothing to hold,
        nothing written: every write here happens while the registry refuses writes."""
        self.check("placing holds")
        if not built:
            return
        record = holds.encode_record(self.owner, [h for h, _ in built])
        self.container.write_file(self.config_path + holds.RECORD_SUFFIX, record)
        self.recorded = True
        self.placed = [h for h, _ in built]
        holds.place(self._store(), built)

    def release_holds(self) -> None:
        """Holds go once GC is done; the record of them goes last."""
        self.lease.check("releasing holds")
        if not self.placed and not self.recorded:
            return  # this window wrote neither
        if self.placed:
            holds.release(self._store(), self.placed)
        self.placed = []
        self._drop_own_record()
        self.recorded = False

    def gc(self, dry_run: bool = False) -> gc.GcSummary:
        """garbage-collect, only on a lease still owned, a registry proven read-only, within both limits."""
        self.check("GC")
        if not self.fenced:
            raise errors.FenceNotEffective("GC refused: this window has not fenced the registry")
        self.require_refused()
        window_left = self.remaining()
        limit = min(self.settings.gc_timeout, window_left)
        try:
            return gc.run(self.container, self.config_path, dry_run=dry_run, timeout=limit)
        except errors.GcTimeout as exc:
            if window_left < self.settings.gc_timeout:
                raise errors.WindowTimeout(
                    f"garbage-collect was stopped after {limit:.0f}s, at the end of the window (JANITOR_MAX_WINDOW "
                    f"{self.settings.max_window:.0f}s); the registry was made writable again",
                    max_window_seconds=self.settings.max_window) from exc
            raise errors.GcTimeout(
                f"garbage-collect ran past JANITOR_GC_TIMEOUT ({self.settings.gc_timeout:.0f}s) and was stopped; "
                "the registry was made writable again. Raise JANITOR_GC_TIMEOUT if the storage is that large",
                timeout_seconds=limit) from exc

    # -- undoing -----------------------------------------------------------------------------------

    def restore(self) -> dict[str, Any]:
        """Take down this window's own fence and holds, restart, prove writes are accepted, drop the backup.

        Only under the lease: a window that lost it takes the lease again if it is free (Redis came back and
        nobody else wanted it). If another owner holds it, nothing is touched here: that owner's recovery
        undoes this window's fence, and this window must not undo one that owner may have set since."""
        if not self.fenced and not self.placed and not self.recorded:
            return {"restored": False}
        owned = self.lease.owned()
        if not owned and not self._retake():
            raise errors.LockLost("the maintenance lock was lost and another worker holds it; the fence and holds "
                                  "of this window are left for that worker to undo (it does so before its own window)",
                                  lease=self.lease.fencing)
        held_throughout = owned and self.lease.token == self.closed_under  # nobody else held it since the fence
        found = [self._fence_in_place(i, held_throughout) for i in range(len(self.replicas))]
        foreign = [(i, f) for i, f in enumerate(found) if f is not None and not self.is_own(f)]
        if foreign:
            self.fenced, self.placed = False, []
            where = "".join(f" on {self._label(i)}" for i, _ in foreign) if self.several else ""
            raise errors.LockLost(f"the fence in place{where} is not this window's ({foreign[0][1]}); left untouched")
        # The replicas this window began to fence (every one once GC ran); just the one without replicas.
        undo = [i for i in range(len(self.replicas)) if self.touched[i] or found[i] is not None or not self.several]
        out: dict[str, Any] = {"restored": True}
        if (self.placed or self.recorded) and self._running():
            self._release_holds_while_running()
        readies: dict[int, float] = {}
        restarts = 0.0
        for i in undo:
            r, path = self.replicas[i], self.replica_paths[i]
            self._retry_docker(lambda r=r, path=path, i=i: r.fence.put_back(path, fenced=found[i] is not None))  # type: ignore[misc]
            readies[i] = self._retry_docker(r.fence.restart)
            restarts += r.fence.restart_seconds
        out["restart_seconds"], out["ready_seconds"] = round(restarts, 3), round(sum(readies.values()), 3)
        if self.placed or self.recorded:  # the container was down: its holds can only go now
            self._retry_docker(self.release_holds)
        probes: dict[int, float] = {}
        for i in undo:
            probes[i] = probe.require_accepted(self.replicas[i].client, self.settings.registry_ready_timeout)
        self.accepted_at = time.monotonic()  # from the last 202: what follows is done while writes are accepted
        out["write_probe_seconds"] = round(sum(probes.values()), 3)
        for i in undo:
            r, path = self.replicas[i], self.replica_paths[i]
            self._retry_docker(lambda r=r, path=path: r.fence.drop_backup(path))  # type: ignore[misc]
            self.touched[i] = False
        # Every probe's leftovers in storage, this restore's own and those of earlier windows (the replicas share
        # the storage: one removal serves them all).
        out["probe_uploads_removed"] = self.remove_probe_uploads(None)
        if self.several:
            out["replicas"] = [{"container": self.replicas[i].container.name, "url": self.replicas[i].client.base_url,
                                "ready_seconds": round(readies[i], 3), "write_probe_seconds": round(probes[i], 3)}
                               for i in undo]
        self.fenced = False
        return out

    def _fence_in_place(self, i: int, held_throughout: bool) -> str | None:
        """The owner named by replica i's config (None: not fenced). Read from the container, unless this
        window wrote that fence itself and has held its lease without a break since: nobody else may change
        the config then, and a read is a Docker round trip while writes are refused."""
        r, path = self.replicas[i], self.replica_paths[i]
        if held_throughout and r.fence.written.get(path) == self.owner:
            return self.owner
        return self._retry_docker(lambda: r.fence.owner(path))

    def write_refused_seconds(self) -> float | None:
        """From the moment the fence stopped the writable registry to the moment a write was accepted again
        (now, if none was yet); None when this window never stopped it."""
        if self.stopped_at is None:
            return None
        return (self.accepted_at or time.monotonic()) - self.stopped_at

    def recover(self) -> list[str]:
        """Under this lease: undo a fence and holds whose owner's lease is gone. Says what it did."""
        self.lease.check("recovery")
        holder = self.lease.token
        done: list[str] = []
        owners = [r.fence.owner(path) for r, path in zip(self.replicas, self.replica_paths)]
        restarted: list[int] = []
        for i, owner in enumerate(owners):
            # Whoever set a fence other than this window's own no longer holds the lease (this window does).
            if owner is not None and not self.is_own(owner):
                # The restart also ends a garbage-collect the dead window may have left running.
                r, path = self.replicas[i], self.replica_paths[i]
                r.fence.put_back(path)
                r.fence.restart()
                restarted.append(i)
                which = f" {self._label(i)}" if self.several else ""
                done.append(f"fence of {owner or 'an earlier version'} taken down, registry{which} restarted "
                            f"(lease now {holder})")
        record_path = self.config_path + holds.RECORD_SUFFIX
        if self.container.exists(record_path):
            record = holds.decode_record(self.container.read_file(record_path))
            if self.is_own(record.owner):
                pass  # this window's own: restore() handles it
            else:
                for why in record.rejected:
                    log.error("holds record %s: refused to act on %s", record_path, why)
                if record.holds:
                    holds.release(self._store(), list(record.holds))
                if record.rejected:
                    self.container.exec(["mv", "-f", record_path, record_path + ".rejected"])
                    done.append(f"holds record had {len(record.rejected)} invalid entries; kept as "
                                f"{record_path}.rejected")
                else:
                    self.container.exec(["rm", "-f", record_path])
                done.append(f"released {len(record.holds)} holds of {record.owner or 'an earlier version'}")
        for i, owner in enumerate(owners):
            r, path = self.replicas[i], self.replica_paths[i]
            if i in restarted:
                self.require_accepted(r.client)
                r.fence.drop_backup(path)
            elif owner is None and r.fence.has_backup(path):
                # Died after writing the backup but before fencing (the registry never stopped), or while
                # unfencing: the original config is back in the file, but the registry may still run the
                # read-only one until it restarts. A blob upload tells which.
                where = f" on {self._label(i)}" if self.several else ""
                if self._write_status(r.client) != 202:
                    r.fence.restart()
                    self.require_accepted(r.client)
                    done.append("registry still ran its read-only config: restarted with the original" + where)
                r.fence.drop_backup(path)
                done.append("stale config backup removed" + where)
        return done

    def _write_status(self, client: RegistryClient) -> int | None:
        """202 or 405 from a blob upload; None when the registry does not answer (stopped, restarting)."""
        try:
            return probe.write_status(client)
        except errors.JanitorError:
            return None

    # -- helpers -----------------------------------------------------------------------------------

    def _drop_own_record(self) -> None:
        path = self.config_path + holds.RECORD_SUFFIX
        if self.recorded and self.lease.valid() and self.lease.token == self.closed_under:
            # This window wrote it, and nobody else has held the lease since: no need to read it first (two Docker
            # calls while writes are refused).
            self.container.exec(["rm", "-f", path])
            return
        if self.container.exists(path):
            record = holds.decode_record(self.container.read_file(path))
            if self.is_own(record.owner):
                self.container.exec(["rm", "-f", path])

    def _retake(self) -> bool:
        """Take the lease again to undo this window's own changes; gives up if another worker has it."""
        deadline = time.monotonic() + max(self.settings.lock_ttl * 4, 30.0)
        while time.monotonic() < deadline:
            if self.lease.acquire(0):
                log.warning("maintenance lease taken again (%s) to undo this window's fence", self.lease.token)
                return True
            try:
                if self.lease.holder() is not None:
                    return False  # a live owner: its recovery is in charge now
            except redis.RedisError:
                pass  # Redis still away: keep trying until the deadline
            time.sleep(0.5)
        return False

    def _release_holds_while_running(self) -> None:
        """Holds go before writes resume, while the container still runs. A container being killed (during GC)
        still says "running" for a moment while its execs already fail: a failure counts only if the container
        still runs a moment later and a second try fails too. Once it stopped, the holds go after the restart."""
        for attempt in range(2):
            try:
                self._retry_docker(self.release_holds)
                return
            except (errors.StorageCommandFailed, errors.ContainerError):
                if not self._running():
                    return
                if attempt:
                    raise
                time.sleep(RELEASE_SETTLE)

    def _running(self) -> bool:
        try:
            return self.container.get().status == "running"
        except errors.JanitorError:
            return False

    def _retry_docker(self, action: Callable[[], T]) -> T:
        """Undoing must survive the engine being away for a while: retry within the ready timeout."""
        deadline = time.monotonic() + self.settings.registry_ready_timeout
        while True:
            try:
                return action()
            except errors.DockerUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("Docker engine unreachable while restoring the registry (%s); retrying", exc.message)
                time.sleep(1.0)
