"""The worker's figures for /metrics, kept in Redis: jobs by kind and outcome, windows by outcome, window
length, seconds writes were refused, GC duration and bytes freed.

The worker runs on its own (often in another container, and RQ forks a work horse per window), so its
counters cannot live in the API's memory or in a multiprocess directory the API can read. At the end of
each window the worker adds that window's figures, read from the job records, to one Redis hash; the API
reads the hash on every scrape and exposes it next to its own HTTP figures. Counters therefore survive
restarts of either process, as Prometheus counters should.

Histograms are stored as per-bucket counts (not cumulative), plus their sum and count.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from janitor.jobs.records import Keys

log = logging.getLogger(__name__)

INF = math.inf
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "janitor_jobs": ("Jobs finished by a maintenance window, by kind and outcome", ("kind", "outcome")),
    "janitor_windows": ("Maintenance windows run, by outcome (succeeded, failed, partial)", ("outcome",)),
    "janitor_gc_runs": ("garbage-collect runs, by outcome", ("outcome",)),
    "janitor_freed_bytes": ("Bytes of blobs garbage-collect removed", ()),
    "janitor_freed_blobs": ("Blobs garbage-collect removed", ()),
}
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "janitor_window_duration_seconds": (
        "Length of maintenance windows, from lock taken to registry writable and checked",
        (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, INF)),
    "janitor_write_refused_seconds": (
        "How long the registry refused writes in a window (fence to restart)",
        (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, INF)),
    "janitor_gc_duration_seconds": (
        "How long garbage-collect ran",
        (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, INF)),
}
# Label values shown as 0 before anything happened, so dashboards and rate() have a series from the start.
KNOWN_LABELS: dict[str, list[dict[str, str]]] = {
    "janitor_jobs": [{"kind": k, "outcome": o} for k in ("deletion", "gc") for o in ("succeeded", "failed")],
    "janitor_windows": [{"outcome": o} for o in ("succeeded", "failed", "partial")],
    "janitor_gc_runs": [{"outcome": o} for o in ("succeeded", "failed")],
    "janitor_freed_bytes": [{}],
    "janitor_freed_blobs": [{}],
}


@dataclass(frozen=True)
class Observation:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


def metrics_key(keys: Keys) -> str:
    return f"{keys.prefix}:metrics"


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = lambda ts: datetime.fromisoformat(ts.replace("Z", "+00:00"))  # noqa: E731
    return max(0.0, (parse(end) - parse(start)).total_seconds())


def _gc_step(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The window's one GC step (every job that took part carries the same record)."""
    for job in jobs:
        for step in job.get("steps") or []:
            if step.get("name") == "gc" and step.get("status") in ("succeeded", "failed"):
                return step
    return None


def observations(window: dict[str, Any], jobs: list[dict[str, Any]]) -> list[Observation]:
    """What one finished window adds to the figures, read from its records only."""
    out: list[Observation] = []
    for job in jobs:
        if job.get("status") in ("succeeded", "failed"):
            out.append(Observation("janitor_jobs", (("kind", job.get("kind", "unknown")),
                                                    ("outcome", job["status"])), 1))
    statuses = {j.get("status") for j in jobs}
    outcome = "succeeded" if statuses == {"succeeded"} else "failed" if "succeeded" not in statuses else "partial"
    out.append(Observation("janitor_windows", (("outcome", outcome),), 1))
    length = _seconds(window.get("started_at"), window.get("finished_at"))
    if length is not None:
        out.append(Observation("janitor_window_duration_seconds", (), length))
    refused = window.get("write_refused_seconds")
    if refused is not None:
        out.append(Observation("janitor_write_refused_seconds", (), float(refused)))
    gc = _gc_step(jobs)
    if gc is not None:
        out.append(Observation("janitor_gc_runs", (("outcome", gc["status"]),), 1))
        outcome_ = gc.get("outcome") or {}
        if gc["status"] == "succeeded":
            if outcome_.get("duration_seconds") is not None:
                out.append(Observation("janitor_gc_duration_seconds", (), float(outcome_["duration_seconds"])))
            out.append(Observation("janitor_freed_bytes", (), float(outcome_.get("bytes_freed") or 0)))
            out.append(Observation("janitor_freed_blobs", (), float(outcome_.get("blobs_deleted") or 0)))
    return out


def _field(name: str, labels: Iterable[tuple[str, str]], part: str = "") -> str:
    return json.dumps([name, sorted(labels), part], separators=(",", ":"))


def bucket_of(value: float, bounds: tuple[float, ...]) -> float:
    """The smallest upper bound the value fits under (Prometheus buckets are `le`, less or equal)."""
    return next(b for b in bounds if value <= b)


def record(conn: redis.Redis, keys: Keys, window: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    """Add a finished window to the figures. Never raises: metrics must not fail a window."""
    try:
        obs_list = observations(window, jobs)
        seen = {o.name: o.value for o in obs_list}
        outcome = next(o.labels[0][1] for o in obs_list if o.name == "janitor_windows")
        log.info("window %s %s in %.1fs (writes refused %ss, %d bytes freed): %s", window.get("id"), outcome,
                 seen.get("janitor_window_duration_seconds", 0.0), window.get("write_refused_seconds"),
                 seen.get("janitor_freed_bytes", 0), ", ".join(f"job {j['id']} {j.get('status')}" for j in jobs))
        key = metrics_key(keys)
        with conn.pipeline(transaction=True) as pipe:
            for obs in obs_list:
                if obs.name in HISTOGRAMS:
                    le = bucket_of(obs.value, HISTOGRAMS[obs.name][1])
                    pipe.hincrby(key, _field(obs.name, obs.labels, f"le={le}"), 1)
                    pipe.hincrbyfloat(key, _field(obs.name, obs.labels, "sum"), obs.value)
                    pipe.hincrby(key, _field(obs.name, obs.labels, "count"), 1)
                elif float(obs.value).is_integer():
                    pipe.hincrby(key, _field(obs.name, obs.labels), int(obs.value))
                else:
                    pipe.hincrbyfloat(key, _field(obs.name, obs.labels), obs.value)
            pipe.execute()
    except Exception:  # noqa: BLE001 - figures are best effort
        log.warning("could not record the window's metrics", exc_info=True)


@dataclass
class Histogram:
    buckets: dict[float, int]  # upper bound -> observations in that bucket alone
    sum: float = 0.0
    count: int = 0

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
        """Prometheus' form: for every bound, observations <= bound."""
        total, out = 0, []
        for b in bounds:
            total += self.buckets.get(b, 0)
            out.append(("+Inf" if b == INF else repr(float(b)), total))
        return out


@dataclass
class Figures:
    counters: dict[str, dict[tuple[tuple[str, str], ...], float]]
    histograms: dict[str, Histogram]


def read(conn: redis.Redis, keys: Keys) -> Figures:
    counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {
        name: {tuple(sorted(labels.items())): 0.0 for labels in KNOWN_LABELS[name]} for name in COUNTERS}
    histograms = {name: Histogram({}) for name in HISTOGRAMS}
    for raw_field, raw_value in conn.hgetall(metrics_key(keys)).items():
        try:
            name, labels, part = json.loads(raw_field)
            value = float(raw_value)
        except ValueError:
            continue
        if name in COUNTERS:
            counters[name][tuple((k, v) for k, v in labels)] = value
        elif name in HISTOGRAMS:
            hist = histograms[name]
            if part == "sum":
                hist.sum = value
            elif part == "count":
                hist.count = int(value)
            elif part.startswith("le="):
                hist.buckets[float(part[3:])] = int(value)
    return Figures(counters, histograms)
