"""The registry's notifications as the index reads them: which envelopes name something to check, and whether a
registry's config sends its events to the janitor at all. Events are hints; the index checks each against the
registry before changing anything."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from janitor.registry.client import USER_AGENT


@dataclass
class Confirm:
    """What events ask to check in one repository: tags pushed or deleted, digests deleted; and, per tag whose
    last event was a push, the digest it claims (a claim the index already shows needs no registry read)."""

    tags: set[str] = field(default_factory=set)
    digests: set[str] = field(default_factory=set)
    pushed: dict[str, str] = field(default_factory=dict)
    # Digests deleted by someone other than the janitor: their pull times go once the registry confirms them gone.
    # The janitor's own deletes drop theirs in the window, which keeps them for a restore: an event of one,
    # checked late, must not drop a time a restore has just put back.
    forget: set[str] = field(default_factory=set)

    def merge(self, other: Confirm) -> None:
        """Add later events' claims (in order: a later delete of a tag voids its earlier push claim)."""
        self.tags |= other.tags
        self.digests |= other.digests
        self.forget |= other.forget
        for tag in other.tags - set(other.pushed):
            self.pushed.pop(tag, None)
        self.pushed.update(other.pushed)

    def copy(self) -> Confirm:
        return Confirm(set(self.tags), set(self.digests), dict(self.pushed), set(self.forget))

    def already_shown(self, current: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """Pushed tags the index shows on the digest their push claims, with no delete of that digest named:
        nothing to check (a forged claim of what the index shows changes nothing either)."""
        return {t for t, d in self.pushed.items()
                if d not in self.digests and t in current and current[t].get("digest") == d}


def events_to_check(events: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Confirm], int]:
    """From distribution's events (notifications/event.go: action, target.repository/tag/digest/mediaType), what
    to confirm per repository; and how many events were ignored (pulls, mounts, blob pushes, pushes by digest).
    Events are hints: the caller checks each against the registry before changing anything."""
    found: dict[str, Confirm] = {}
    ignored = 0
    for event in events:
        action = event.get("action")
        target = event.get("target") or {}
        repo, tag, digest = target.get("repository"), target.get("tag"), target.get("digest")
        if not isinstance(repo, str):
            ignored += 1  # the schema requires it; never index under a non-name
            continue
        if action == "push" and tag:  # only a manifest push names a tag; blob pushes never do
            confirm = found.setdefault(repo, Confirm())
            confirm.tags.add(tag)
            if isinstance(digest, str) and digest:
                confirm.pushed[tag] = digest
            else:
                confirm.pushed.pop(tag, None)
        elif action == "delete" and (tag or digest):
            confirm = found.setdefault(repo, Confirm())
            if tag:
                confirm.tags.add(tag)
                confirm.pushed.pop(tag, None)
            if digest:
                confirm.digests.add(digest)
                if not _by_the_janitor(event):
                    confirm.forget.add(digest)
        else:
            ignored += 1
    return found, ignored


def _by_the_janitor(event: Mapping[str, Any]) -> bool:
    request = event.get("request")
    agent = request.get("useragent") if isinstance(request, Mapping) else None
    return isinstance(agent, str) and agent.startswith(USER_AGENT)


# The janitor's events endpoint: the default registry's, or one registry's under /v1/registries/{registry}.
EVENTS_URL = re.compile(r"/v1/(?:registries/[^/?#]+/)?events/?(?:[?#].*)?$")


def notifications_configured(env: Mapping[str, str], config: Mapping[str, Any] | None) -> bool:
    """Whether the registry's config (REGISTRY_NOTIFICATIONS_ENDPOINTS, which overrides config.yml, or
    config.yml's notifications.endpoints) sends events to a janitor's /v1/events (or
    /v1/registries/{registry}/events)."""
    endpoints: Any = None
    raw = env.get("REGISTRY_NOTIFICATIONS_ENDPOINTS")
    if raw:
        try:
            endpoints = yaml.safe_load(raw)
        except yaml.YAMLError:
            endpoints = None
    if endpoints is None and isinstance(config, Mapping):
        notifications = config.get("notifications")
        endpoints = notifications.get("endpoints") if isinstance(notifications, Mapping) else None
    if not isinstance(endpoints, list):
        return False
    return any(isinstance(e, Mapping) and not e.get("disabled") and EVENTS_URL.search(str(e.get("url", "")))
               for e in endpoints)
