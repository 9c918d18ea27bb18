"""Named entries an operator keeps in two places: made through the API (one Redis hash per registry) or listed
in a YAML file (read-only through the API, `"source": "file"`, re-read when the file changes). Policies and
protection rules are both kept this way; each says its nouns, file variable and errors in a Kind."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import yaml

from janitor import errors


@dataclass(frozen=True)
class Kind:
    short: str  # "policy", "rule": in messages about one entry
    noun: str  # "policy", "protection rule": in "no <noun> NAME", "a <noun> named NAME exists"
    plural: str  # "policies", "rules": in "expected a list of <plural>"
    file_key: str  # the file's top-level key: "policies", "protections"
    file_variable: str  # POLICIES_FILE, PROTECTIONS_FILE
    path: str  # /v1/policies, /v1/protections
    validate: Callable[[Any], dict[str, Any]]
    invalid: type[errors.JanitorError]
    not_found: type[errors.JanitorError]
    exists: type[errors.JanitorError]
    read_only: type[errors.JanitorError]
    is_name: Callable[[str], bool]


def check_name_and_repositories(data: dict[str, Any], name: str | None, fields: tuple[str, ...], short: str,
                                 is_name: Callable[[Any], bool], max_globs: int) -> dict[str, list[str]]:
    """The checks every named entry shares: no unknown field, a valid name that the path's (when given) does not
    contradict, and 1 to `max_globs` repository globs. Returns field -> what is wrong, for more checks to add to."""
    from janitor.planning import (
        retention,  # retention imports nothing of this package's stores
    )

    problems: dict[str, list[str]] = {}

    def bad(field: str, message: str) -> None:
        problems.setdefault(field, []).append(message)

    for key in data:
        if key not in fields:
            bad(str(key), "Unknown field.")
    given = data.get("name", name)
    if name is not None and "name" in data and data["name"] != name:
        bad("name", f"the body names {data['name']!r} but the path {name!r}; a {short} cannot be renamed")
    elif not is_name(given):
        bad("name", "required: lowercase letters, digits and single '-' between them, at most 63 characters")
    repos = data.get("repositories")
    if not isinstance(repos, list) or not repos or len(repos) > max_globs:
        bad("repositories", f"required: a list of 1 to {max_globs} repository globs")
    else:
        for i, glob in enumerate(repos):
            try:
                if not isinstance(glob, str):
                    raise retention.RuleError("not a string")
                retention.compile_glob(glob)
            except retention.RuleError as exc:
                bad("repositories", f"[{i}] {glob!r}: {exc}")
    return problems


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def load_file(path: str, kind: Kind) -> dict[str, dict[str, Any]]:
    """Entries in a YAML file: a list, or {<file_key>: [...]}. Any bad entry refuses the whole file."""
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    items = doc.get(kind.file_key) if isinstance(doc, dict) else doc
    if items is None:
        items = []
    if not isinstance(items, list):
        raise kind.invalid(f"{path}: expected a list of {kind.plural} (or {kind.file_key}: [...])", file=path)
    found: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        try:
            entry = kind.validate(item)
        except kind.invalid as exc:
            raise kind.invalid(f"{path}: {kind.short} #{i + 1} is not valid", file=path, index=i,
                               **{k: v for k, v in exc.details.items() if k not in ("file", "index")}) from None
        if entry["name"] in found:
            raise kind.invalid(f"{path}: {kind.short} {entry['name']!r} is given twice", file=path, index=i)
        found[entry["name"]] = {**entry, "source": "file"}
    return found


class NamedStore:
    """API entries in one Redis hash; file entries from disk. A file that cannot be read fails the caller."""

    def __init__(self, conn: redis.Redis, key: str, path: str | None, kind: Kind) -> None:
        self.conn = conn
        self.key = key
        self.path = path
        self.kind = kind
        self._file_cache: tuple[float, dict[str, dict[str, Any]]] | None = None
        self._file_lock = threading.Lock()

    def file_entries(self) -> dict[str, dict[str, Any]]:
        if not self.path:
            return {}
        mtime = os.stat(self.path).st_mtime
        with self._file_lock:
            if self._file_cache is None or self._file_cache[0] != mtime:
                self._file_cache = (mtime, load_file(self.path, self.kind))
            return self._file_cache[1]

    def all(self, with_file: bool = True) -> list[dict[str, Any]]:
        """Every entry, by name."""
        found = {_text(k): {**json.loads(v), "source": "api"} for k, v in self.conn.hgetall(self.key).items()}
        if with_file:
            found.update(self.file_entries())
        return [found[n] for n in sorted(found)]

    def get(self, name: str) -> dict[str, Any]:
        if not self.kind.is_name(name):
            raise self.kind.invalid(f"not a valid {self.kind.short} name",
                                    name=["lowercase letters, digits and '-'"])
        if name in self.file_entries():
            return self.file_entries()[name]
        raw = self.conn.hget(self.key, name)
        if raw is None:
            raise self.kind.not_found(f"no {self.kind.noun} {name}", name=name)
        return {**json.loads(raw), "source": "api"}

    def create(self, entry: dict[str, Any]) -> None:
        name = entry["name"]
        if name in self.file_entries() or not self.conn.hsetnx(self.key, name, json.dumps(entry)):
            raise self.kind.exists(
                f"a {self.kind.noun} named {name} exists already; PUT {self.kind.path}/{name} replaces it", name=name)

    def replace(self, entry: dict[str, Any]) -> None:
        name = entry["name"]
        if self.get(name)["source"] == "file":
            raise self.kind.read_only(f"{self.kind.short} {name} comes from {self.kind.file_variable}; change it "
                                      "there", name=name)
        self.conn.hset(self.key, name, json.dumps(entry))

    def delete(self, name: str) -> None:
        if self.get(name)["source"] == "file":
            raise self.kind.read_only(f"{self.kind.short} {name} comes from {self.kind.file_variable}; remove it "
                                      "there", name=name)
        self.conn.hdel(self.key, name)
