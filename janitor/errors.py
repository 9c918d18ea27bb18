"""Domain errors. Each carries a machine-readable code; the API maps classes to HTTP statuses in one place."""

from __future__ import annotations

from typing import Any


class JanitorError(Exception):
    code = "ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InternalError(JanitorError):
    """Something no step expected; the message names the exception, the log has the traceback."""

    code = "INTERNAL_ERROR"


class NotFound(JanitorError):
    code = "NOT_FOUND"


class RepositoryNotFound(NotFound):
    code = "REPOSITORY_UNKNOWN"


class TagNotFound(NotFound):
    code = "TAG_UNKNOWN"


class ManifestNotFound(NotFound):
    code = "MANIFEST_UNKNOWN"


class JobNotFound(NotFound):
    code = "JOB_UNKNOWN"


class Conflict(JanitorError):
    code = "CONFLICT"


class ReferencedByIndex(Conflict):
    code = "REFERENCED_BY_INDEX"


class ConfirmationMismatch(JanitorError):
    code = "CONFIRMATION_MISMATCH"


class RegistryError(JanitorError):
    """The registry answered, but not as expected."""

    code = "REGISTRY_ERROR"


class DeleteDisabled(RegistryError):
    code = "REGISTRY_DELETE_DISABLED"


class RegistryUnavailable(JanitorError):
    code = "REGISTRY_UNAVAILABLE"


class RegistryAuthFailed(RegistryError):
    code = "REGISTRY_AUTH_FAILED"


class QueueUnavailable(JanitorError):
    code = "QUEUE_UNAVAILABLE"


class ContainerError(JanitorError):
    code = "CONTAINER_ERROR"


class ContainerNotFound(ContainerError):
    code = "REGISTRY_CONTAINER_NOT_FOUND"


class DockerUnavailable(ContainerError):
    code = "DOCKER_UNAVAILABLE"


class GarbageCollectFailed(ContainerError):
    code = "GC_FAILED"


class LockLost(JanitorError):
    code = "LOCK_LOST"


class FenceNotEffective(JanitorError):
    """The config says read-only but the registry still accepts writes: GC must not run."""

    code = "FENCE_NOT_EFFECTIVE"


class RegistryNotWritable(JanitorError):
    """After the window the registry still refuses writes."""

    code = "REGISTRY_NOT_WRITABLE"


class GcTimeout(GarbageCollectFailed):
    """garbage-collect ran past JANITOR_GC_TIMEOUT and was stopped."""

    code = "GC_TIMEOUT"


class WindowTimeout(JanitorError):
    """The window ran past JANITOR_MAX_WINDOW; what was left of it was skipped."""

    code = "WINDOW_TIMEOUT"


class IntegrityBroken(JanitorError):
    """After the window, a tagged image is missing a manifest or blob: result.integrity lists them."""

    code = "INTEGRITY_BROKEN"


# -- preflight: deployments the write fence cannot work around (janitor/preflight.py) ---------------


class PreflightFailed(ContainerError):
    """The registry's deployment defeats the fence; nothing was deleted. The message names the cause and
    the fix."""

    code = "PREFLIGHT_FAILED"


class ConfigPathUnknown(PreflightFailed):
    code = "REGISTRY_CONFIG_UNKNOWN"


class EnvOverridesMaintenance(PreflightFailed):
    code = "REGISTRY_ENV_OVERRIDES_MAINTENANCE"


class EnvOverridesStorage(PreflightFailed):
    code = "REGISTRY_ENV_OVERRIDES_STORAGE"


class ConfigReadOnly(PreflightFailed):
    code = "REGISTRY_CONFIG_READ_ONLY"


class ConfigFileMount(PreflightFailed):
    code = "REGISTRY_CONFIG_FILE_MOUNT"


class CacheUnreachable(PreflightFailed):
    """The registry caches blob descriptors in Redis and the worker cannot reach that Redis: GC would leave
    the swept blobs' keys behind, so the window stops before deleting anything."""

    code = "REGISTRY_CACHE_UNREACHABLE"


class CacheUnsupported(PreflightFailed):
    """The registry's Redis blob cache is a cluster or Sentinel, which the janitor cannot clean."""

    code = "REGISTRY_CACHE_UNSUPPORTED"


class CacheConfigAmbiguous(PreflightFailed):
    """The config names the cache with both the 2.x and the 3.x spelling, differently, and the version is unknown."""

    code = "REGISTRY_CACHE_AMBIGUOUS"


class CacheNotCleaned(ContainerError):
    """After GC the swept blobs' keys could not be removed from the registry's Redis blob cache."""

    code = "REGISTRY_CACHE_NOT_CLEANED"


class ReplicaStorageMismatch(PreflightFailed):
    """Replicas named for one registry do not share its storage: GC in one would not serve the others."""

    code = "REGISTRY_REPLICA_STORAGE_MISMATCH"


class StorageAccessRequired(JanitorError):
    """The request needs to read the registry's storage, which its storage driver does not allow."""

    code = "STORAGE_ACCESS_REQUIRED"


class RegistryResponseTooLarge(RegistryError):
    code = "REGISTRY_RESPONSE_TOO_LARGE"


class StorageCommandFailed(ContainerError):
    code = "STORAGE_COMMAND_FAILED"


class StorageUnreachable(PreflightFailed):
    """The janitor cannot list the registry's bucket (endpoint, credentials, permissions): every protection
    needs it, so the window stops before anything is deleted."""

    code = "STORAGE_UNREACHABLE"


class StorageConfigInvalid(PreflightFailed):
    """The registry's storage settings (or the janitor's own for it) are incomplete or invalid."""

    code = "STORAGE_CONFIG_INVALID"


class StoragePathRefused(JanitorError, ValueError):
    """A name or digest that must never become a storage path (janitor/layout.py)."""

    code = "STORAGE_PATH_REFUSED"


# Codes sent without a class of their own: a job its window's recovery ended (INTERRUPTED), and the
# readiness checks of /readyz. service/errors.py ERROR_CODES adds them to every class's code.
OTHER_CODES = ("INTERRUPTED", "MAINTENANCE_RESTART", "NO_WORKER", "REGISTRY_CONTAINER_NOT_RUNNING",
               "REGISTRY_READ_ONLY", "UNKNOWN")


class Forbidden(JanitorError):
    """The token is valid but lacks the scope this needs (or may not approve its own request)."""

    code = "FORBIDDEN"


class NotAwaitingApproval(Conflict):
    code = "JOB_NOT_AWAITING_APPROVAL"


class ApprovalExpired(Conflict):
    code = "APPROVAL_EXPIRED"


class JobNotCancellable(Conflict):
    code = "JOB_NOT_CANCELLABLE"


class InvalidPolicy(JanitorError):
    """A policy field that cannot be used; details name each field and what is wrong with it."""

    code = "INVALID_REQUEST"  # the code every other 422 for a bad field carries


class PolicyNotFound(NotFound):
    code = "POLICY_UNKNOWN"


class PolicyExists(Conflict):
    code = "POLICY_EXISTS"


class PolicyReadOnly(Conflict):
    """Policies from POLICIES_FILE change in the file, not through the API."""

    code = "POLICY_READ_ONLY"


class RegistryNotKnown(NotFound):
    """A /v1/registries/{registry}/... path naming a registry REGISTRIES_FILE does not list."""

    code = "REGISTRY_UNKNOWN"


class InvalidProtection(JanitorError):
    """A tag protection rule field that cannot be used; details name each field and what is wrong with it."""
    code = "INVALID_REQUEST"


class NotRestorable(Conflict):
    """Nothing of that job can be put back: it deleted nothing, was a dry run, or had no restore window."""

    code = "NOT_RESTORABLE"


class RestoreWindowEnded(Conflict):
    """The job's restore window is over: GC may have freed what it deleted."""

    code = "RESTORE_WINDOW_ENDED"


class InvalidRestore(JanitorError):
    """A restore naming tags or manifests the job did not delete; details name them."""

    code = "INVALID_REQUEST"


class ProtectionNotFound(NotFound):
    code = "PROTECTION_UNKNOWN"


class ProtectionExists(Conflict):
    code = "PROTECTION_EXISTS"


class ProtectionReadOnly(Conflict):
    """Rules from PROTECTIONS_FILE change in the file, not through the API."""

    code = "PROTECTION_READ_ONLY"


class TagProtected(Conflict):
    """The deletion would remove a protected tag, or a manifest one reaches; details name the tags and rules.
    An admin may pass `"override_protection": true`."""

    code = "TAG_PROTECTED"


class RestoreIncomplete(JanitorError):
    """A restore job put back what it could; the rest (result.failed) could not be PUT."""

    code = "RESTORE_INCOMPLETE"
