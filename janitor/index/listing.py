"""What the API lists: repositories, tags and usage, served from the index where it is current (notifications mode
after the first fill), read from the registry where it may not be (polling, or not filled yet)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from janitor import errors
from janitor.index.entries import glob_filter, sort_repositories, usage
from janitor.index.reading import IndexReader
from janitor.index.store import NOTIFICATIONS, POLLING
from janitor.planning.pulls import PullBook
from janitor.planning.snapshot import _again


class TagIndex(IndexReader):
    """One registry's index as the API and the worker use it: the store, the reader, and the listings."""

    def served_from_index(self, meta: Mapping[str, str]) -> bool:
        """Notifications mode after the first fill: the index is the listing. Otherwise the catalog is read
        (one request) and what the page shows is checked (polling) or filled on demand (before the fill)."""
        return self.mode(meta) == NOTIFICATIONS and self.filled(meta)

    def list_repositories(self, pattern: str | None, sort: str, start: int, count: int) -> tuple[list[dict[str, Any]], int]:
        """A page of repositories with tag_count and size, and how many match in all."""
        assert self.client is not None
        meta = self.meta()
        if self.served_from_index(meta):
            summaries = self.summaries()
            listed = glob_filter(sorted(summaries), pattern)
        else:
            listed = glob_filter(sorted(set(_again(self.client.catalog))), pattern)
            if sort == "name":
                page = listed[start:start + count]
                self._fresh(page, meta)
            else:  # the order needs every summary: missing ones are read now (bounded pool), once
                self.ensure(listed)
            summaries = self.summaries_of(listed if sort != "name" else listed[start:start + count])
        rows = [{"name": n, "tag_count": summaries.get(n, {}).get("tag_count", 0),
                 "size": summaries.get(n, {}).get("size", 0)} for n in listed]
        rows = sort_repositories(rows, sort)[start:start + count]
        if sort != "name" and not self.served_from_index(meta):
            self._fresh([r["name"] for r in rows], meta)
            fresh = self.summaries_of([r["name"] for r in rows])
            rows = [{**r, **{k: fresh[r["name"]][k] for k in ("tag_count", "size")}} if r["name"] in fresh else r
                    for r in rows]
        return rows, len(listed)

    def _fresh(self, repos: list[str], meta: Mapping[str, str]) -> None:
        """Those not indexed are read now; in polling mode the others' tag lists are checked."""
        summaries = self.summaries_of(repos)
        missing = [r for r in repos if r not in summaries]
        self.refresh_many(missing, listed=True)
        if self.mode(meta) == POLLING:
            self.verify([r for r in repos if r in summaries])

    def list_tags(self, repo: str) -> list[dict[str, Any]]:
        """Every tag of a repository with its details. Polling mode (or not indexed yet): the repository is read
        now (tag list, a HEAD per tag, details from the content cache) unless a read of it began less than
        RECENTLY_READ ago; notifications mode: from the index."""
        meta = self.meta()
        indexed = bool(self.conn.hexists(self.repos_key, repo))
        # Notifications: an indexed repository is kept current by events from the moment it was indexed (the
        # whole registry need not be filled yet). Polling: read again unless a read began within RECENTLY_READ.
        current = indexed and (self.mode(meta) == NOTIFICATIONS or self.read_recently(repo))
        if not current:
            if not self.refresh(repo):
                raise errors.RepositoryNotFound(f"repository {repo} unknown to the registry", repository=repo)
        found = self.tags(repo)
        if found is None:
            raise errors.RepositoryNotFound(f"repository {repo} unknown to the registry", repository=repo)
        pulled = PullBook(self.conn, self.prefix).times([repo])[repo]
        return [{"name": t, **e, "last_pulled": _iso(pulled.get(e["digest"]))} for t, e in found.items()]

    def usage_report(self) -> tuple[list[dict[str, Any]], int]:
        """Bytes per repository (size, shared, unique), largest unique first, and the registry's total."""
        assert self.client is not None
        meta = self.meta()
        if self.served_from_index(meta):
            listed = sorted(self.summaries())
        else:
            listed = sorted(set(_again(self.client.catalog)))
            self.ensure(listed)
        blobs = self.blobs()
        summaries = self.summaries_of(listed)
        rows, total = usage({n: blobs.get(n, {}) for n in listed})
        for row in rows:
            row["tag_count"] = summaries.get(row["name"], {}).get("tag_count", 0)
        return sorted(rows, key=lambda r: (-r["unique_bytes"], -r["size"], r["name"])), total


def _iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when else None
