"""Before anything is deleted: the deployment traps the write fence cannot work around, and what the storage
driver lets the janitor do.

The fence rewrites the registry's config file (storage.maintenance.readonly) and restarts it. That only
works when the registry reads that file, the file can be rewritten in place with a backup next to it, and
nothing in the environment overrides the section it writes. Distribution lets REGISTRY_* variables override
the file: REGISTRY_STORAGE_MAINTENANCE='{"uploadpurging": ...}' replaces the whole maintenance section, and
REGISTRY_STORAGE=... the whole storage section, read-only switch included. Each trap gets its own error code
and a message that names the variable or file and the fix.

Everything here but `check` is pure (container attrs and parsed config in, findings out), so the rules are
unit-tested without Docker.
"""

from __future__ import annotations

import posixpath
import re
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from janitor import errors
from janitor.config.storage import S3Overrides
from janitor.registry.container import RegistryContainer, env_of, yaml_mapping
from janitor.storage import drivers
from janitor.storage.driver import Storage
from janitor.storage.s3 import S3Storage
from janitor.window import cache
from janitor.window.fence import ConfigReads

FILESYSTEM = "filesystem"
INMEMORY = "inmemory"
# Keys of the `storage` section that configure the registry, not a driver.
_NOT_DRIVERS = frozenset({"maintenance", "cache", "delete", "redirect", "tag"})
_DRIVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")

# What the janitor cannot do without reading the registry's files; said plainly on /readyz and every job.
PROTECTIONS: dict[str, str] = {
    "holds": "blob uploads in progress are neither waited for nor held from GC: a push in flight during GC "
             "can lose blobs",
    "untagged_listing": "untagged manifests cannot be listed: requests with \"untagged\": true are refused",
    "repository_removal": "emptied repositories cannot be removed: \"all_tags\" and \"all_repositories\" "
                          "requests are refused",
    "exact_bytes": "blob sizes cannot be read: no planned or freed bytes are reported",
}
NO_GC = ("garbage_collection", "garbage-collect is not run: the inmemory driver keeps every blob inside the "
         "registry process, where a separate garbage-collect cannot see them, and the restart a fenced GC "
         "needs would erase the registry")


@dataclass(frozen=True)
class StorageAccess:
    """What the registry's storage driver lets the janitor do."""

    driver: str

    @property
    def filesystem(self) -> bool:
        return self.driver == FILESYSTEM

    @property
    def readable(self) -> bool:
        """The janitor reads and changes this driver's storage itself (janitor.storage): every protection is on."""
        return self.driver in drivers.READABLE

    @property
    def gc_runs(self) -> bool:
        """The inmemory driver lives in the registry process: a restart erases it, a separate GC sees nothing."""
        return self.driver != INMEMORY

    @property
    def protections_off(self) -> dict[str, str]:
        if self.readable:
            return {}
        off = dict(PROTECTIONS)
        if not self.gc_runs:
            off[NO_GC[0]] = NO_GC[1]
        return off

    @property
    def message(self) -> str:
        if self.readable:
            return f"{self.driver} storage: every protection is on"
        return (f"storage driver {self.driver!r}: the janitor reads the registry's storage only with the "
                f"{' and '.join(sorted(drivers.READABLE))} drivers, so these protections are off: "
                f"{'; '.join(self.protections_off.values())}")

    def as_dict(self) -> dict[str, Any]:
        return {"driver": self.driver, "filesystem": self.filesystem, "readable": self.readable,
                "gc_runs": self.gc_runs,
                "protections_off": sorted(self.protections_off), "message": self.message}


@dataclass
class Report:
    """What preflight found: where the config is, what storage allows, and the traps (empty when safe)."""

    config_path: str
    storage: StorageAccess
    storage_root: str | None  # where the registry's files are (a path, s3://...); None: unreadable
    traps: list[errors.PreflightFailed] = field(default_factory=list)
    cache: cache.CacheTarget | None = None  # the registry's Redis blob cache, reached by `check`
    store: Storage | None = None  # the registry's storage, read and changed through janitor.storage.driver

    def raise_first(self) -> None:
        if self.traps:
            first = self.traps[0]
            if len(self.traps) > 1:
                first.details["also"] = [{"code": t.code, "message": t.message} for t in self.traps[1:]]
            raise first

    def as_dict(self) -> dict[str, Any]:
        return {"config_path": self.config_path, "storage_root": self.storage_root,
                "storage": self.storage.as_dict(),
                **({"blob_cache": self.cache.as_dict()} if self.cache is not None else {})}


# -- pure rules ----------------------------------------------------------------------------------------


def storage_driver(env: dict[str, str], config: dict[str, Any]) -> str:
    """The driver distribution will use: REGISTRY_STORAGE replaces the file's storage section."""
    section: Any = (config.get("storage") or {})
    if env.get("REGISTRY_STORAGE"):
        try:
            section = yaml.safe_load(env["REGISTRY_STORAGE"])
        except yaml.YAMLError:
            section = env["REGISTRY_STORAGE"]
        if isinstance(section, str):  # a driver's name; anything else is never echoed (it may hold secrets)
            name = section.strip().lower()
            return name if _DRIVER_NAME.match(name) else "unknown"
    drivers = sorted(k for k in (section if isinstance(section, dict) else {}) if str(k).lower() not in _NOT_DRIVERS)
    drivers = [d if _DRIVER_NAME.match(str(d).lower()) else "unknown" for d in drivers]
    return str(drivers[0]).lower() if len(drivers) == 1 else ("unknown" if not drivers else "+".join(drivers))


def env_traps(env: dict[str, str], config_path: str, access: StorageAccess) -> list[errors.PreflightFailed]:
    found: list[errors.PreflightFailed] = []
    maintenance = sorted(k for k in env if k.startswith("REGISTRY_STORAGE_MAINTENANCE"))
    if maintenance and access.gc_runs:
        found.append(errors.EnvOverridesMaintenance(
            f"the registry container's environment sets {', '.join(maintenance)}. Distribution lets the environment "
            f"override its config file, so the read-only switch the janitor writes into {config_path} for GC "
            "would be ignored (REGISTRY_STORAGE_MAINTENANCE replaces the file's whole maintenance section) and GC "
            f"would run on a writable registry. Fix: remove {', '.join(maintenance)} from the container's "
            f"environment, put the same settings in {config_path} under storage.maintenance (e.g. "
            "uploadpurging: {enabled: false}), and recreate the container. Nothing was deleted.",
            variables=maintenance, config_path=config_path))
    if env.get("REGISTRY_STORAGE") and access.gc_runs:
        found.append(errors.EnvOverridesStorage(
            "the registry container's environment sets REGISTRY_STORAGE, which replaces "
            f"the whole storage section of {config_path}, including the maintenance.readonly switch the janitor "
            "writes for GC: GC would run on a writable registry. Fix: remove REGISTRY_STORAGE from the container's "
            f"environment and name the driver in {config_path} (storage: {{{access.driver}: ...}}); variables for "
            "single keys such as REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY are fine. Nothing was deleted.",
            variables=["REGISTRY_STORAGE"], config_path=config_path))
    return found


def covering_mount(mounts: list[dict[str, Any]], path: str) -> dict[str, Any] | None:
    """The mount a path lives on: the one whose destination is the longest prefix of it."""
    best: dict[str, Any] | None = None
    for mount in mounts:
        dest = posixpath.normpath(str(mount.get("Destination") or ""))
        if path == dest or path.startswith(dest.rstrip("/") + "/"):
            if best is None or len(dest) > len(posixpath.normpath(str(best.get("Destination")))):
                best = mount
    return best


def mount_traps(attrs: dict[str, Any], config_path: str) -> list[errors.PreflightFailed]:
    """The janitor rewrites the config file in place and keeps a backup next to it: both need a writable
    directory, and a file bind-mounted on its own cannot be replaced from inside the container."""
    path = posixpath.normpath(config_path)
    mounts = attrs.get("Mounts") or []
    mount = covering_mount(mounts, path)
    found: list[errors.PreflightFailed] = []
    if mount is not None and posixpath.normpath(str(mount.get("Destination"))) == path:
        source = mount.get("Source") or mount.get("Name") or "?"
        found.append(errors.ConfigFileMount(
            f"the registry's config {path} is mounted as a single file (from {source}). The janitor switches the "
            "registry to read-only for GC by rewriting that file and keeps the original next to it; neither works "
            f"on a single-file mount. Fix: mount the directory that holds it instead, read-write (e.g. -v "
            f"{posixpath.dirname(str(source))}:{posixpath.dirname(path)}), and recreate the container. Nothing was "
            "deleted.", config_path=path, mount_source=source))
    if mount is not None and not mount.get("RW", True):
        dest = str(mount.get("Destination"))
        found.append(errors.ConfigReadOnly(
            f"the registry's config {path} is on a read-only mount ({dest}, from "
            f"{mount.get('Source') or mount.get('Name') or '?'}). The janitor switches the registry to read-only "
            "for GC by rewriting that file (and keeps a backup next to it). Fix: mount it read-write (drop :ro) "
            "and recreate the container. Nothing was deleted.", config_path=path, mount=dest))
    elif mount is None and (attrs.get("HostConfig") or {}).get("ReadonlyRootfs"):
        found.append(errors.ConfigReadOnly(
            f"the registry container runs with a read-only root filesystem and its config {path} is not on a "
            "mount: the janitor cannot rewrite it for GC. Fix: mount the config's directory read-write, and "
            "recreate the container. Nothing was deleted.", config_path=path))
    return found


def storage_source(attrs: dict[str, Any], root: str | None) -> str | None:
    """Where the filesystem storage root really lives: the mount covering it (volume name or host path), None
    when it is inside the container's own layer (which no other container can share)."""
    if root is None:
        return None
    mount = covering_mount(attrs.get("Mounts") or [], posixpath.normpath(root))
    if mount is None:
        return None
    sub = posixpath.relpath(posixpath.normpath(root), posixpath.normpath(str(mount.get("Destination"))))
    source = str(mount.get("Source") or mount.get("Name") or "?")
    return source if sub == "." else f"{source}/{sub}"


def replica_traps(first: str, first_attrs: dict[str, Any], first_report: Report, name: str,
                  attrs: dict[str, Any], report: Report) -> list[errors.PreflightFailed]:
    """A replica must serve the first container's storage: GC runs in that one only, so a replica on other
    storage would never be collected, and deletions through the registry's URL could reach either."""
    if report.storage.driver != first_report.storage.driver:
        return [errors.ReplicaStorageMismatch(
            f"replica {name!r} uses the {report.storage.driver!r} storage driver and {first!r} (the first replica, "
            f"where GC runs) {first_report.storage.driver!r}: replicas of one registry must share one storage. "
            "Fix: list only containers on the same storage under `replicas`. Nothing was deleted.",
            replica=name, driver=report.storage.driver, first_driver=first_report.storage.driver)]
    if not report.storage.filesystem:
        return []  # a bucket's identity is in the driver's settings: not compared
    mine = storage_source(attrs, report.storage_root)
    theirs = storage_source(first_attrs, first_report.storage_root)
    if mine is None or theirs is None or mine != theirs:
        return [errors.ReplicaStorageMismatch(
            f"replica {name!r} keeps its storage root {report.storage_root} on {mine or 'its own container layer'} "
            f"and {first!r} (the first replica, where GC runs) on {theirs or 'its own container layer'}: "
            "replicas of one registry must share one storage (the same volume or host directory). Fix: mount the "
            "same storage in every replica, or list them as separate registries. Nothing was deleted.",
            replica=name, storage=mine, first_storage=theirs)]
    return []


def find_traps(attrs: dict[str, Any], config_path: str, access: StorageAccess) -> list[errors.PreflightFailed]:
    found = env_traps(env_of(attrs), config_path, access)
    if access.gc_runs:  # without a fence the config is never rewritten
        found += mount_traps(attrs, config_path)
    return found


def needs_storage(request: dict[str, Any]) -> str | None:
    """Why a deletion request needs to read the registry's files, or None."""
    if request.get("untagged"):
        return "\"untagged\": true needs the stored revisions, which only the registry's files list"
    if request.get("all_repositories"):
        return "\"all_repositories\" removes repositories from the registry's files"
    if request.get("all_tags"):
        return "\"all_tags\" removes the repository from the registry's files"
    return None


def refuse_without_storage(request: dict[str, Any], access: StorageAccess | dict[str, Any]) -> None:
    """StorageAccessRequired when the request needs the registry's files and the janitor cannot read the
    driver's storage."""
    driver = access.driver if isinstance(access, StorageAccess) else str(access.get("driver"))
    readable = access.readable if isinstance(access, StorageAccess) else \
        bool(access.get("readable", access.get("filesystem")))
    reason = needs_storage(request)
    if reason and not readable:
        raise errors.StorageAccessRequired(
            f"the registry uses the {driver!r} storage driver and the janitor reads the registry's storage only "
            f"with the {' and '.join(sorted(drivers.READABLE))} drivers: {reason}. Delete by tags or digests "
            "instead", driver=driver)


# -- reading the container ------------------------------------------------------------------------------


def inspect(container: RegistryContainer, cache_url: str | None = None, s3: S3Overrides | None = None,
            reads: ConfigReads | None = None) -> Report:
    """Read the container once and find the config, the storage driver, the blob cache and the traps (raises
    nothing for a trap: see Report.raise_first). With an object store, its prefix must list: a store the
    janitor cannot read is a trap of its own (STORAGE_UNREACHABLE), never a quiet fall back to protections off.
    `reads`: where a config read before may be taken again while its stat is unchanged (the heartbeat's)."""
    path = container.config_path()
    attrs = container.attrs()
    env = env_of(attrs)
    config = container.read_yaml(path) if reads is None else yaml_mapping(reads.read(container, path))
    access = StorageAccess(storage_driver(env, config))
    traps = find_traps(attrs, path, access)
    target = None
    if access.gc_runs:  # without GC no blob is swept, so no key goes stale
        try:
            target = cache.locate(container, path, config, env, cache_url)
        except errors.PreflightFailed as exc:
            traps.append(exc)
    try:
        store = drivers.open_storage(container, access.driver, env, config, s3)
    except errors.StorageConfigInvalid as exc:
        return Report(path, access, None, [*traps, exc], cache=target)
    if isinstance(store, S3Storage):
        traps += reach_traps(store)
    return Report(path, access, store.where if store else None, traps, cache=target, store=store)


# An object store's prefix listed at most this often (seconds) per location: /readyz looks every few seconds.
REACH_TTL = 60.0
_reached: dict[str, tuple[float, errors.PreflightFailed | None]] = {}


def reach_traps(store: S3Storage, fresh: bool = False) -> list[errors.PreflightFailed]:
    """STORAGE_UNREACHABLE when the janitor cannot list the registry's prefix in its bucket."""
    loc = store.location
    key = f"{loc.endpoint_url}|{loc.bucket}|{loc.root}|{loc.accesskey}"
    seen = _reached.get(key)
    if seen is not None and not fresh and time.monotonic() - seen[0] < REACH_TTL:
        return [seen[1]] if seen[1] else []
    found: errors.PreflightFailed | None = None
    try:
        store.reachable()
    except errors.StorageCommandFailed as exc:
        found = errors.StorageUnreachable(
            f"the registry stores into {store.where} ({loc.endpoint_url or 'AWS S3'}, region {loc.region}) and the "
            f"janitor cannot list it: {exc.details.get('error') or exc.message}. Every protection needs that "
            "listing, so nothing was deleted. Fix: let the janitor reach that endpoint and give it credentials "
            "that may list, read, write and delete under the registry's rootdirectory (JANITOR_S3_ENDPOINT, "
            "JANITOR_S3_ACCESS_KEY/SECRET_KEY, or `storage: {s3: ...}` in REGISTRIES_FILE), or fix the registry's "
            "own storage.s3 settings", **loc.as_dict(), error=exc.details.get("error"))
    _reached[key] = (time.monotonic(), found)
    return [found] if found else []


def storage_of(container: RegistryContainer, config_path: str,
               s3: S3Overrides | None = None) -> tuple[str, Storage | None]:
    """(where, storage) of the registry, for a recovery that must release holds on whatever driver."""
    env = container.env()
    config = container.read_yaml(config_path)
    try:
        store = drivers.open_storage(container, storage_driver(env, config), env, config, s3)
    except errors.StorageConfigInvalid:
        return "", None
    return (store.where if store else ""), store


def check(container: RegistryContainer, cache_url: str | None = None, s3: S3Overrides | None = None) -> Report:
    """Preflight for a window: the container runs, no trap defeats the fence, the registry's Redis blob cache
    (if any) answers the worker, and an object store lists. Raises the first trap."""
    status = container.get().status
    if status != "running":
        raise errors.ContainerError(f"registry container {container.name!r} is {status}; start it, then ask again")
    _reached.clear()  # a window looks afresh
    report = inspect(container, cache_url, s3)
    report.raise_first()
    if report.cache is not None:
        cache.reach(report.cache).close()
    return report


def check_replicas(first: RegistryContainer, first_report: Report, others: list[RegistryContainer]) -> list[Report]:
    """Preflight for each further replica of a registry: its own deployment traps (config mount, environment),
    and that it shares the first container's storage. Raises the first trap found."""
    if not others:
        return []
    first_attrs = first.attrs()
    reports: list[Report] = []
    for container in others:
        report = check(container)
        found = replica_traps(first.name, first_attrs, first_report, container.name, container.attrs(), report)
        if found:
            raise found[0]
        reports.append(report)
    return reports
