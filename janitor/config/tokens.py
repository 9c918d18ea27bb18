"""Named API tokens with scopes, read from API_TOKENS_FILE (YAML) and re-read whenever the file changes.

The file holds no secret: each token is stored as its SHA-256. A request's token is hashed and compared in
constant time with every entry. Bare API_TOKENS keep working as `admin`. Neither a token nor its hash is ever
logged: entries are named by their position and `name` only.

    tokens:
      - name: chatops-bot
        token_sha256: 3f2a...   # sha256 of the token, 64 hex digits (`printf %s "$TOKEN" | sha256sum`)
        scopes: [read, delete]
      - name: alice
        token_sha256: 9c1e...
        scopes: [read, approve]
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

import yaml

log = logging.getLogger(__name__)

SCOPES = ("read", "delete", "approve", "admin", "events")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class Caller:
    """Who made a request: the token's name and what it may do."""

    name: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


ANONYMOUS = Caller("anonymous", frozenset({"admin"}))  # when no token is configured at all


@dataclass(frozen=True)
class Entry:
    caller: Caller
    digest: bytes  # sha256 of the token


def sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse(text: str) -> tuple[list[Entry], list[str]]:
    """Entries of a tokens file and a reason for each one skipped. A bad entry never hides the good ones;
    a file that is not YAML at all yields no entries and one problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return [], [f"the file is not valid YAML{where}"]
    if data is None:
        return [], []
    items = data.get("tokens") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return [], ["expected a list of tokens (or a mapping with a `tokens` list)"]
    entries: list[Entry] = []
    problems: list[str] = []
    seen: set[str] = set()
    for position, item in enumerate(items, 1):
        entry, problem = _entry(item)
        label = f"entry {position}" + (f" ({item['name']!r})" if isinstance(item, dict) and
                                        isinstance(item.get("name"), str) and _NAME.match(item["name"]) else "")
        if entry and entry.caller.name in seen:
            entry, problem = None, "duplicate name"
        if entry is None:
            problems.append(f"{label}: {problem}; skipped")
            continue
        seen.add(entry.caller.name)
        entries.append(entry)
    return entries, problems


def _entry(item: Any) -> tuple[Entry | None, str]:
    if not isinstance(item, dict):
        return None, "not a mapping with name, token_sha256 and scopes"
    unknown = sorted(set(item) - {"name", "token_sha256", "scopes"})
    if unknown:
        return None, f"unknown field(s) {', '.join(map(str, unknown))}"
    name, digest, scopes = item.get("name"), item.get("token_sha256"), item.get("scopes")
    if not isinstance(name, str) or not _NAME.match(name):
        return None, "name missing or not [A-Za-z0-9._@-], at most 64 characters"
    if not isinstance(digest, str) or not _HEX64.match(digest.strip().lower()):
        return None, "token_sha256 is not 64 hex digits"
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        return None, f"scopes must be a non-empty list out of {', '.join(SCOPES)}"
    bad = sorted(set(scopes) - set(SCOPES))
    if bad:
        return None, f"unknown scope(s) {', '.join(bad)}; known: {', '.join(SCOPES)}"
    return Entry(Caller(name, frozenset(scopes)), bytes.fromhex(digest.strip().lower())), ""


class Tokens:
    """Every token the API accepts. The file is checked (one stat) on each lookup and parsed again when it
    changed, so revoking a token needs no restart."""

    def __init__(self, bare: tuple[str, ...] = (), path: str | None = None, events: tuple[str, ...] = ()) -> None:
        self.bare = [Entry(Caller(f"api-token-{i}", frozenset({"admin"})), sha256(t)) for i, t in enumerate(bare, 1)]
        # EVENTS_TOKENS: what a registry sends with its notifications; they may POST /v1/events and nothing else.
        self.bare += [Entry(Caller(f"events-token-{i}", frozenset({"events"})), sha256(t)) for i, t in enumerate(events, 1)]
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._file: list[Entry] = []
        self._lock = threading.Lock()
        if path:
            self.reload(force=True)

    @property
    def enabled(self) -> bool:
        return bool(self.bare or self.path)

    def reload(self, force: bool = False) -> None:
        if not self.path:
            return
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            stamp = (-1, -1, -1)
            if force or stamp != self._stamp:
                log.error("API_TOKENS_FILE %s cannot be read (%s): no token from it is accepted",
                          self.path, exc.strerror)
        if stamp == self._stamp and not force:
            return
        with self._lock:
            if stamp == self._stamp and not force:
                return
            entries: list[Entry] = []
            if stamp[0] >= 0:
                try:
                    with open(self.path, encoding="utf-8") as f:
                        entries, problems = parse(f.read())
                except (OSError, UnicodeDecodeError) as exc:
                    entries, problems = [], [f"cannot be read ({exc.__class__.__name__})"]
                for problem in problems:
                    log.warning("API_TOKENS_FILE %s: %s", self.path, problem)
                log.info("API_TOKENS_FILE %s: %d token(s) loaded: %s", self.path, len(entries),
                         ", ".join(e.caller.name for e in entries) or "none")
            self._file = entries
            self._stamp = stamp

    def lookup(self, token: str) -> Caller | None:
        """The caller a token belongs to. Every entry is compared, in constant time, whatever matches."""
        self.reload()
        given = sha256(token)
        found: Caller | None = None
        for entry in [*self.bare, *self._file]:
            if hmac.compare_digest(given, entry.digest) and found is None:
                found = entry.caller
        return found
