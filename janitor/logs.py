"""Logging for the API and the worker: plain text, or one JSON object per line (LOG_FORMAT=json) that carries
the request, job and window it belongs to, so one deletion can be followed from its HTTP request through
its window in a log store.

The ids live in context variables (set by the API per request, by the worker per window), and a filter on
the handler copies them onto every record, including records of libraries (rq, gunicorn, urllib3).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from typing import Any

from pythonjsonlogger.json import JsonFormatter

CONTEXT_FIELDS = ("request_id", "job_id", "window_id")
_vars: dict[str, contextvars.ContextVar[Any]] = {
    name: contextvars.ContextVar(name, default=None) for name in CONTEXT_FIELDS}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"
_HANDLER_MARK = "_registry_janitor"


def bind(**ids: Any) -> None:
    """Set ids for what runs next in this context (a request's thread, a window). None clears one."""
    for name, value in ids.items():
        _vars[name].set(value)


def clear() -> None:
    for var in _vars.values():
        var.set(None)


@contextlib.contextmanager
def bound(**ids: Any) -> Iterator[None]:
    tokens = {name: _vars[name].set(value) for name, value in ids.items()}
    try:
        yield
    finally:
        for name, token in tokens.items():
            _vars[name].reset(token)


def current() -> dict[str, Any]:
    """The ids that apply here, without the unset ones."""
    return {name: var.get() for name, var in _vars.items() if var.get() is not None}


class ContextFilter(logging.Filter):
    """Copies the context ids onto the record (a record may already carry its own, e.g. `extra=`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current()
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None and name in ids:
                setattr(record, name, ids[name])
        present = {n: getattr(record, n) for n in CONTEXT_FIELDS if getattr(record, n, None) is not None}
        record.context = "".join(f" {k}={v}" for k, v in present.items())  # for the text format
        return True


class JanitorJsonFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message, the context ids that apply, any `extra=`
    fields, and the exception as text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", False)
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", *args, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("context", None)  # the text rendering of the ids, which are fields here
        for name in CONTEXT_FIELDS:
            if log_data.get(name) is None:
                log_data.pop(name, None)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        from datetime import datetime, timezone
        return datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JanitorJsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record comes (test runners and gunicorn swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def handler(fmt: str, stream: Any = None) -> logging.Handler:
    h = logging.StreamHandler(stream) if stream is not None else _Stderr()
    h.setFormatter(formatter(fmt))
    h.addFilter(ContextFilter())
    setattr(h, _HANDLER_MARK, True)
    return h


def configure(fmt: str, level: int | str = logging.INFO) -> None:
    """Send every log record (ours and libraries') to stderr in `fmt` ("text" or "json"). Idempotent: a
    second call replaces the handler it installed, so an app built twice in one process logs once."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler(fmt))
    root.setLevel(level)
