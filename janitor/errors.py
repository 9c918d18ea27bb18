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
