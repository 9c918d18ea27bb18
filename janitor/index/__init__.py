"""The listing index: what the registry holds, kept in Redis so listings never walk the registry.

`store` owns the Redis keys and the one guarded way to change them; `reading` fills them from the registry (a
repository, an event's claims, a whole reconcile); `listing` serves the API's listings (TagIndex, the class the
API and the worker use); `entries` and `events` are the pure parts (what a tag's entry shows, which events
name what). This module is the package's public face.

May import: `janitor.errors`, `janitor.config`, `janitor.registry`, `janitor.storage`, `janitor.planning`.
"""

from janitor.index.entries import (
    glob_filter,
    now_iso,
    query_glob,
    select_tags,
    sort_repositories,
    summary,
    tag_entry,
    usage,
)
from janitor.index.events import (
    EVENTS_URL,
    Confirm,
    events_to_check,
    notifications_configured,
)
from janitor.index.listing import TagIndex
from janitor.index.store import (
    MODES,
    NOTIFICATIONS,
    POLLING,
    manifest_deleted,
    pulls_restored,
    repository_removed,
    tag_removed,
    window_restarted,
)

__all__ = [
    "EVENTS_URL", "MODES", "NOTIFICATIONS", "POLLING", "Confirm", "TagIndex", "events_to_check", "glob_filter",
    "manifest_deleted", "notifications_configured", "now_iso", "pulls_restored", "query_glob", "repository_removed", "select_tags",
    "sort_repositories", "summary", "tag_entry", "tag_removed", "usage", "window_restarted",
]
