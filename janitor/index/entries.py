"""What the listing shows, computed without I/O: a tag's entry (size, creation time, platforms, the blobs it
keeps alive), a repository's summary, the registry's usage, and the sorting and filtering of listings."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from janitor.planning import retention
from janitor.registry.manifests import Manifest


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tag_entry(manifest: Manifest, children: Mapping[str, Manifest], created: Mapping[str, str | None]) -> dict[str, Any]:
    """What the listing shows for a manifest (as the old per-request listing did) and the blobs it keeps alive:
    its own JSON, config and layers; for an index, its children's too. `children` and `created` hold what is
    known; a child missing from the registry counts for nothing."""
    blobs: dict[str, int] = {manifest.digest: len(manifest.raw)}
    platforms: list[str] = []
    if manifest.is_index:
        size, times = 0, []
        for child in manifest.children:
            found = children.get(child.digest)
            if found is None:
                continue
            size += found.image_size
            blobs.update(_image_blobs(found))
            when = created.get(found.config.digest) if found.config and not found.is_index else None
            if when:
                times.append(when)
        when_all = max(times, default=None)
        platforms = [c.platform for c in manifest.children if c.platform and c.platform != "unknown/unknown"]
    else:
        size = manifest.image_size
        blobs.update(_image_blobs(manifest))
        when_all = created.get(manifest.config.digest) if manifest.config else None
    return {"digest": manifest.digest, "media_type": manifest.media_type, "size": size, "created": when_all,
            "platforms": platforms, "blobs": blobs}


def _image_blobs(manifest: Manifest) -> dict[str, int]:
    found = {manifest.digest: len(manifest.raw)}
    if manifest.config:
        found[manifest.config.digest] = manifest.config.size
    for layer in manifest.layers:
        found[layer.digest] = layer.size
    return found


def summary(tags: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, int]]:
    """A repository's tag count and size: the unique bytes of its blobs (union over its tags, each blob once)."""
    blobs: dict[str, int] = {}
    for entry in tags.values():
        blobs.update(entry.get("blobs") or {})
    return {"tag_count": len(tags), "size": sum(blobs.values())}, blobs


def usage(blobs_by_repo: Mapping[str, Mapping[str, int]]) -> tuple[list[dict[str, Any]], int]:
    """Per repository: size, shared bytes (blobs another repository uses too) and unique bytes (what deleting
    the repository would free); and the registry's total, each blob counted once."""
    users: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for blobs in blobs_by_repo.values():
        for digest, size in blobs.items():
            users[digest] = users.get(digest, 0) + 1
            sizes[digest] = size
    rows = []
    for name, blobs in blobs_by_repo.items():
        shared = sum(s for d, s in blobs.items() if users[d] > 1)
        total = sum(blobs.values())
        rows.append({"name": name, "size": total, "shared_bytes": shared, "unique_bytes": total - shared})
    return rows, sum(sizes.values())


def sort_repositories(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """name, -size (largest first) or -tags (most tags first); ties by name."""
    if sort == "-size":
        return sorted(rows, key=lambda r: (-r["size"], r["name"]))
    if sort == "-tags":
        return sorted(rows, key=lambda r: (-r["tag_count"], r["name"]))
    return sorted(rows, key=lambda r: r["name"])


def glob_filter(names_: Iterable[str], pattern: str | None) -> list[str]:
    """Names matching a repository glob (janitor.planning.retention.compile_glob: RE2, `*` within one path segment,
    `**` across segments); every name without a pattern."""
    if not pattern:
        return list(names_)
    regex = query_glob(pattern)
    return [n for n in names_ if regex.match(n)]


def query_glob(pattern: str) -> Any:
    """A listing's `q`: janitor.planning.retention's repository glob, with runs of three or more `*` read as `**`.
    RuleError when it is not a glob."""
    return retention.compile_glob(re.sub(r"\*{3,}", "**", pattern))


def select_tags(rows: list[dict[str, Any]], sort: str, older_than: timedelta | None,
                at: datetime | None = None) -> list[dict[str, Any]]:
    """Sort tags by name, created (oldest first) or -created (newest first; tags without a creation time
    last either way), and keep those created before now - older_than (a tag with no time is never older)."""
    if older_than is not None:
        cutoff = (at or datetime.now(timezone.utc)) - older_than
        rows = [r for r in rows if (t := retention.parse_time(r.get("created"))) is not None and t < cutoff]
    if sort in ("created", "-created"):
        timed = [(retention.parse_time(r.get("created")), r) for r in rows]
        known = sorted(((t, r) for t, r in timed if t is not None), key=lambda p: (p[0], p[1]["name"]),
                       reverse=sort == "-created")
        if sort == "-created":  # newest first, ties still by name
            known = sorted(known, key=lambda p: (-p[0].timestamp(), p[1]["name"]))
        return [r for _, r in known] + sorted((r for t, r in timed if t is None), key=lambda r: r["name"])
    return sorted(rows, key=lambda r: r["name"])
