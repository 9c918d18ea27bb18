"""What /metrics exposes, and how the API's own figures stay right under gunicorn with several workers.

- HTTP requests and their latency are counted in the process that served them, with prometheus-client's
  multiprocess mode: every gunicorn worker writes its counts to files in PROMETHEUS_MULTIPROC_DIR (set by
  gunicorn.conf.py before any worker starts) and a scrape, whichever worker answers it, sums them all.
  Without that variable (one process, e.g. Flask's test client) the process's own registry is used.
- The worker's figures (jobs, windows, GC, bytes freed) are in Redis (janitor/telemetry.py), written at the
  end of each window and read here on every scrape.
- Gauges of the present (queue depth, registry up, read-only, window in progress, worker up) are asked
  at scrape time.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import prometheus_client
import redis
import requests
from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector

from janitor.jobs import pending, telemetry
from janitor.window import heartbeat, leftovers
from service.state import State

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter("janitor_http_requests", "HTTP requests answered, by method, route and status",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("janitor_http_request_duration_seconds", "Time to answer an HTTP request, by route",
                         ["method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
# Steps during which the registry runs (or restarts into) its read-only config.
FENCED_STEPS = ("fence", "hold", "remove_repositories", "gc")


_PARAM = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def route_label() -> str:
    """The URL rule, not the path, written as in the OpenAPI document: /v1/jobs/{job_id} stays one series
    however many jobs there are; paths that match no route are all "unmatched"."""
    rule = request.url_rule
    return _PARAM.sub(r"{\1}", rule.rule) if rule is not None else "unmatched"


def count_request(method: str, route: str, status: int, started: float | None) -> None:
    """One answered request in janitor_http_requests and, with its start (perf_counter), in the latency
    histogram: for the hook below and for the events endpoint's thin path (service/events/fast.py)."""
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    if started is not None:
        HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)


def install(app: Flask) -> None:
    """Time every request from the first hook on (before the token check, so 401s count too)."""

    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        count_request(request.method, route_label(), response.status_code, started)
        return response

    # Run before every other before_request hook (the /v1 token check is registered earlier).
    funcs = app.before_request_funcs.setdefault(None, [])
    funcs.insert(0, funcs.pop())


def registry_is_up(st: State) -> bool:
    """/v2/ answering below 500 (401 included) means the registry serves; a short timeout keeps scrapes quick."""
    try:
        return requests.get(f"{st.settings.registry_url}/v2/", timeout=min(3.0, st.settings.http_timeout)).status_code < 500
    except requests.RequestException:
        return False


def reported_read_only(st: State) -> bool:
    """The worker's last look: a read-only marker in the registry's config, or a refused blob upload. This
    shows a registry left read-only by anything (a window that died, a config changed by hand), with or
    without a window running."""
    found = leftovers.read(st.conn, st.keys)
    return bool(found and found.get("read_only"))


def read_only(st: State) -> bool:
    """A window holds the lock and one of its jobs is between the fence and the restart: the registry runs
    its read-only config. Read from the job records, only while a window runs."""
    for job in st.store.running():
        steps = job.get("steps") or []
        if steps and steps[-1]["name"] in FENCED_STEPS:
            return True
        if steps and steps[-1]["name"] == "restart" and steps[-1]["status"] != "succeeded":
            return True
    return False


class JanitorCollector:
    """Collected on every scrape: the worker's figures from Redis, and gauges of the present. With
    REGISTRIES_FILE (`labelled`), every registry's series, each with a `registry` label; without it, the one
    registry's series without that label, as before there were several."""

    def __init__(self, st: State | list[State], labelled: bool = False) -> None:
        self.states = st if isinstance(st, list) else [st]
        self.labelled = labelled

    def collect(self) -> Iterator[Metric]:
        label = ["registry"] if self.labelled else []
        gauges: dict[str, tuple[str, list[tuple[list[str], float]]]] = {}
        figured: list[tuple[list[str], telemetry.Figures]] = []

        def gauge(name: str, doc: str, values: list[str], value: float) -> None:
            gauges.setdefault(name, (doc, []))[1].append((values, float(value)))

        for st in self.states:
            values = [st.settings.name] if self.labelled else []
            gauge("janitor_registry_up", "1 when the registry answers /v2/", values, registry_is_up(st))
            try:
                figures = telemetry.read(st.conn, st.keys)
                depth = pending.waiting(st.conn, st.keys)
                window_running = bool(st.conn.exists(st.keys.lock))
                fenced = reported_read_only(st) or (window_running and read_only(st))
                worker_ok = bool(heartbeat.read(st.conn, st.keys).get("ok"))
            except redis.RedisError:
                gauge("janitor_redis_up", "1 when Redis (queue, lock, job records) answers", values, False)
                continue
            gauge("janitor_redis_up", "1 when Redis (queue, lock, job records) answers", values, True)
            gauge("janitor_queue_depth", "Requests waiting for the next maintenance window", values, depth)
            gauge("janitor_window_in_progress", "1 while a maintenance window holds the lock", values, window_running)
            gauge("janitor_registry_read_only", "1 while the registry refuses writes: a window's read-only config "
                  "(fenced for GC, or left by a window that died) or a refused blob upload", values, fenced)
            gauge("janitor_worker_up", "1 when a worker reported in the last 15 s and reaches the registry "
                                       "container", values, worker_ok)
            figured.append((values, figures))
        for name, (doc, rows) in gauges.items():
            family = GaugeMetricFamily(name, doc, labels=label)
            for values, value in rows:
                family.add_metric(values, value)
            yield family
        if figured:
            yield from families_of(figured, label)


def families(figures: telemetry.Figures) -> Iterator[Metric]:
    """The worker's figures as Prometheus metric families."""
    return families_of([([], figures)], [])


def families_of(rows: list[tuple[list[str], telemetry.Figures]], extra: list[str]) -> Iterator[Metric]:
    """Several registries' figures, `extra` label names (e.g. registry) first on every series."""
    for name, (doc, label_names) in telemetry.COUNTERS.items():
        family = CounterMetricFamily(name, doc, labels=[*extra, *label_names])
        for head, figures in rows:
            for labels, value in sorted(figures.counters[name].items()):
                values = dict(labels)
                family.add_metric([*head, *(values.get(n, "") for n in label_names)], value)
        yield family
    for name, (doc, bounds) in telemetry.HISTOGRAMS.items():
        histogram = HistogramMetricFamily(name, doc, labels=extra)
        for head, figures in rows:
            hist = figures.histograms[name]
            histogram.add_metric(head, hist.cumulative(bounds), sum_value=hist.sum)
        yield histogram


def exposition(st: State | list[State], labelled: bool = False) -> bytes:
    """The whole scrape: HTTP figures (of every gunicorn worker in multiprocess mode) and JanitorCollector."""
    if os.environ.get(MULTIPROC_ENV):
        base: Any = CollectorRegistry()
        MultiProcessCollector(base)
    else:
        base = prometheus_client.REGISTRY
    extra = CollectorRegistry(auto_describe=False)
    extra.register(JanitorCollector(st, labelled))  # type: ignore[arg-type]
    return prometheus_client.generate_latest(base) + prometheus_client.generate_latest(extra)
