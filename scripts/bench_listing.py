#!/usr/bin/env python3
"""Benchmark (issue 11): listing a registry of N repositories x 10 tags, side by side, on the real stack on
loopback (a registry container, a private redis-server, the gunicorn API and the RQ worker).

Per size, on one registry grown in steps (100, then 200 more, then 700 more by default):
  registry-cli  andrey-pohilko/registry-cli `registry.py -r URL --order-by-date --layers` (every repository,
                its tags ordered by the config's date, each tag's layers), from a patched temporary copy run
                in a venv of its own under the state directory;
  walk          a plain parallel walk of the registry API (16 threads: catalog, tags/list per repository,
                manifest and config blob per tag);
  cold          a sequential client paging through the service (GET /v1/repositories, then every
                /v1/repositories/{name}/tags, all pages) right after the API and worker start on an empty
                Redis (no index, no content cache);
  warm          the same listing again with nothing changed (after the service's first fill);
  fresh         a tag pushed and another deleted straight through the registry API: seconds until
                GET /v1/repositories/{name}/tags shows it (polled every 50 ms), in each index mode: the
                registry sending its notifications as docker-compose.yml configures them (--ignore-pulls
                adds ignore.actions: [pull]), and polling (it sends the service nothing).
Pushes happen with the service up (its events flow as in production; the registry's queue is drained before
measuring); the walk and registry-cli run with it stopped, so no reconcile competes with them.
Every listing is checked against the walk (repositories, tags, digests); a listing that differs fails.
Goals from the issue: cold <= walk; warm <= registry-cli / 10; fresh <= 2 s.

    TEST_REGISTRY_IMAGE=$(scripts/provision.sh | tail -n1) .venv/bin/python scripts/bench_listing.py
    ... scripts/bench_listing.py --sizes 100 --json /tmp/listing.json

registry-cli's source: --registry-cli (a git directory, a checkout or its registry.py; REGISTRY_CLI in the
environment), by default the mirror at /work/.mirror/andrey-pohilko+registry-cli/repo. Its requirements come
from PyPI by name into $REGISTRY_JANITOR_STATE/bench/registry-cli-venv (default /tmp/registry-janitor). At
its HEAD `--order-by-date` raises TypeError (get_datetime_tags has no default for `plain`): the copy gets one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from threading import local
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import redis  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

from scripts.populate import DOCKER_MANIFEST, Populator, _layer  # noqa: E402
from tests.conftest import Registry, Stack, free_port, pings, start_registry, wait_http  # noqa: E402
from tests.images import wait_until  # noqa: E402

MIRROR = Path("/work/.mirror/andrey-pohilko+registry-cli/repo")
STATE = Path(os.environ.get("REGISTRY_JANITOR_STATE") or "/tmp/registry-janitor")
ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"])
LOGS = STATE / "bench" / "listing-logs"  # the API's and worker's output of the last run
GOAL_FRESH_SECONDS = 2.0
EVENTS_TOKEN = "bench-events-token"  # EVENTS_TOKENS of the service, sent by the registry
Truth = dict[str, dict[str, str]]  # repository -> tag -> digest


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- registry-cli ---------------------------------------------------------------------------------------------------

class RegistryCli:
    """registry-cli from a temporary, patched copy, in a venv of its own (made once, kept in the state dir)."""

    PATCH = ("def get_datetime_tags(registry, image_name, tags_list, plain):",
             "def get_datetime_tags(registry, image_name, tags_list, plain=False):")

    def __init__(self, source: Path) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="rj-bench-registry-cli-"))
        self.script = self.tmp / "registry.py"
        if (source / "HEAD").is_file() and (source / "objects").is_dir():  # a git directory (the mirror)
            text = subprocess.run(["git", "--git-dir", str(source), "show", "HEAD:registry.py"], check=True,
                                  capture_output=True, text=True).stdout
            self.revision = subprocess.run(["git", "--git-dir", str(source), "rev-parse", "--short", "HEAD"],
                                           check=True, capture_output=True, text=True).stdout.strip()
        else:
            text = (source / "registry.py" if source.is_dir() else source).read_text()
            self.revision = "checkout"
        self.patched = self.PATCH[0] in text
        self.script.write_text(text.replace(*self.PATCH))
        venv = STATE / "bench" / "registry-cli-venv"
        self.python = venv / "bin" / "python"
        if not self.python.exists():
            log(f"making {venv} for registry-cli (requests, python-dateutil, www-authenticate from PyPI)")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(self.python), "-m", "pip", "install", "-q", "requests", "python-dateutil",
                            "www-authenticate"], check=True, stdout=subprocess.DEVNULL)

    def run(self, url: str, expected_tags: int) -> float:
        argv = [str(self.python), str(self.script), "-r", url, "--order-by-date", "--layers"]
        start = time.monotonic()
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=3600)
        seconds = time.monotonic() - start
        listed = sum(1 for line in done.stdout.splitlines() if line.startswith("  tag: "))
        errors = [line for line in done.stdout.splitlines() if "not found" in line or line.startswith("error")]
        if done.returncode != 0 or listed != expected_tags or errors:
            raise RuntimeError(f"registry-cli: exit {done.returncode}, {listed} of {expected_tags} tags, "
                               f"errors {errors[:3]}; stderr: {done.stderr[-2000:]}")
        return seconds

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- the plain walk -------------------------------------------------------------------------------------------------

def plain_walk(base: str, threads: int = 16) -> Truth:
    """What a script would do: catalog, then tags/list per repository and manifest + config per tag in
    parallel over `threads` keep-alive sessions."""
    sessions = local()

    def session() -> requests.Session:
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
        return sessions.s

    repos: list[str] = []
    path: str | None = "/v2/_catalog?n=1000"
    while path:
        resp = session().get(base + path, timeout=60)
        resp.raise_for_status()
        repos += resp.json()["repositories"]
        link = resp.headers.get("Link")
        path = link.split(";")[0].strip("<> ") if link else None

    def tags(repo: str) -> list[tuple[str, str]]:
        resp = session().get(f"{base}/v2/{repo}/tags/list", timeout=60)
        resp.raise_for_status()
        return [(repo, t) for t in resp.json().get("tags") or []]

    def detail(item: tuple[str, str]) -> tuple[str, str, str]:
        repo, tag = item
        resp = session().get(f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=60)
        resp.raise_for_status()
        manifest = resp.json()
        if "config" in manifest:
            cfg = session().get(f"{base}/v2/{repo}/blobs/{manifest['config']['digest']}", timeout=60)
            cfg.raise_for_status()
            cfg.json().get("created")
        return repo, tag, resp.headers["Docker-Content-Digest"]

    truth: Truth = {r: {} for r in repos}
    with ThreadPoolExecutor(threads) as pool:
        items = [i for found in pool.map(tags, repos) for i in found]
        for repo, tag, digest in pool.map(detail, items):
            truth[repo][tag] = digest
    return {r: t for r, t in truth.items() if t}  # emptied repositories stay in the catalog


# -- the service ------------------------------------------------------------------------------------------------------

@dataclass
class Service:
    """The worker and the API on a port of our choosing (so the registry's notification endpoint can name it
    before the service starts), started as scripts/run.sh starts them: the worker, then gunicorn with
    gunicorn.conf.py (WEB_CONCURRENCY x GUNICORN_THREADS); started once /healthz answers. Restartable."""

    registry: Registry
    redis_url: str
    conn: redis.Redis
    env: dict[str, str] = field(default_factory=dict)
    stack: Stack | None = None

    def start(self, port: int) -> Stack:
        assert self.stack is None
        env = {**os.environ, "REGISTRY_URL": self.registry.url, "REGISTRY_CONTAINER": self.registry.name,
               "REDIS_URL": self.redis_url, "API_TOKENS": "test-token", **self.env}
        stack = Stack(f"http://127.0.0.1:{port}", self.registry, self.conn, env)
        self.stack = stack
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / "api.log", "ab") as api_log, open(LOGS / "worker.log", "ab") as worker_log:
            stack.procs["worker"] = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env,
                                                     start_new_session=True, stdout=worker_log, stderr=worker_log)
            stack.procs["api"] = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "service:create_app()"], cwd=ROOT,
                env=env, start_new_session=True, stdout=api_log, stderr=api_log)
            wait_http(f"{stack.api}/healthz", 60)
        return stack

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None


@dataclass
class Listing:
    """What a sequential client saw, and where its time went."""

    found: Truth
    seconds: float = 0.0
    breakdown: dict[str, Any] = field(default_factory=dict)


def service_listing(stack: Stack, page_size: int | None) -> Listing:
    """A sequential client: every page of /v1/repositories, then every page of each repository's tags."""
    s = requests.Session()
    s.headers.update(stack.headers)
    extra = {"page_size": page_size} if page_size else {}
    spent = {"repositories": [], "tags": []}  # type: dict[str, list[float]]

    def pages(path: str, kind: str) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            t = time.monotonic()
            resp = s.get(stack.api + path, params={"page": page, **extra}, timeout=600)
            spent[kind].append(time.monotonic() - t)
            if resp.status_code != 200:
                raise RuntimeError(f"GET {path} page {page}: {resp.status_code} {resp.text[:500]}")
            body = resp.json()
            yield from body["items"]
            if not body["items"] or page * body["page_size"] >= body["total"]:
                return
            page += 1

    start = time.monotonic()
    counts = {r["name"]: r["tag_count"] for r in pages("/v1/repositories", "repositories")}
    listed: Truth = {}
    for name, count in counts.items():
        listed[name] = {t["name"]: t["digest"] for t in pages(f"/v1/repositories/{name}/tags", "tags")}
        if count != len(listed[name]):
            listed[name]["<tag_count>"] = str(count)  # a count that disagrees with the tags shows as a difference
    seconds = time.monotonic() - start
    breakdown: dict[str, Any] = {f"{kind}_requests": len(times) for kind, times in spent.items()}
    for kind, times in spent.items():
        if times:
            breakdown[f"{kind}_seconds"] = round(sum(times), 3)
            breakdown[f"{kind}_max_ms"] = round(1000 * max(times), 1)
            breakdown[f"{kind}_median_ms"] = round(1000 * statistics.median(times), 1)
    return Listing({r: t for r, t in listed.items() if t}, seconds, breakdown)


def differences(listed: Truth, truth: Truth) -> int:
    diff = len(set(listed) ^ set(truth))
    for repo in set(listed) & set(truth):
        a, b = listed[repo], truth[repo]
        diff += len(set(a) ^ set(b)) + sum(a[t] != b[t] for t in set(a) & set(b))
    return diff


def timed(fn: Callable[[], Truth]) -> tuple[float, Truth]:
    start = time.monotonic()
    result = fn()
    return time.monotonic() - start, result


# -- freshness ------------------------------------------------------------------------------------------------------

def tag_state(stack: Stack, repo: str, tag: str) -> str | None:
    """The digest the service lists for `tag`, None when it lists no such tag, "<error>" when it fails."""
    resp = requests.get(f"{stack.api}/v1/repositories/{repo}/tags", params={"page_size": 500},
                        headers=stack.headers, timeout=30)
    if resp.status_code != 200:
        return "<error>"  # never what a check waits for
    return next((t["digest"] for t in resp.json()["items"] if t["name"] == tag), None)


def shows(stack: Stack, repo: str, tag: str, digest: str | None) -> bool:
    """The service lists `tag` on `digest` (None: does not list it)."""
    return tag_state(stack, repo, tag) == digest


def until(predicate: Callable[[], bool], start: float, timeout: float) -> float | None:
    while True:
        if predicate():
            return round(time.monotonic() - start, 3)
        if time.monotonic() - start > timeout:
            return None
        time.sleep(0.05)


def freshness(stack: Stack, pop: Populator, truth: Truth, label: str, rounds: int, timeout: float) -> dict[str, Any]:
    """Per round: push a new tag to one repository, then delete an old tag of another by its digest, both
    straight through the registry API; seconds from the registry's answer until the service's tag list agrees."""
    pushed, deleted = [], []
    repos = sorted(truth)
    for i in range(rounds):
        repo = repos[(7 * i) % len(repos)]
        tag = f"fresh-{label}-{i}"
        base_layer = _layer(512)
        pop.blob(repo, base_layer)
        image = pop.image(repo, tag, base_layer, datetime.now(timezone.utc).replace(microsecond=0))
        start = time.monotonic()
        pushed.append(until(partial(shows, stack, repo, tag, image.digest), start, timeout))
        truth[repo][tag] = image.digest

        victim_repo, victim = next((r, t) for k in range(len(repos))
                                   for r in [repos[(7 * i + 3 + k) % len(repos)]]
                                   for t in sorted(truth[r]) if not t.startswith("fresh-") and len(truth[r]) > 1)
        digest = truth[victim_repo][victim]
        # Each bench tag has its own manifest: deleting it by digest removes this one tag (as `regctl` would).
        resp = pop.session.delete(f"{pop.base}/v2/{victim_repo}/manifests/{digest}", timeout=60)
        resp.raise_for_status()
        start = time.monotonic()
        deleted.append(until(partial(shows, stack, victim_repo, victim, None), start, timeout))
        del truth[victim_repo][victim]
    seen = [x for x in pushed + deleted if x is not None]
    worst = max(seen) if len(seen) == len(pushed + deleted) else None
    return {"push_seconds": pushed, "delete_seconds": deleted, "max_seconds": worst,
            "pass": worst is not None and worst <= GOAL_FRESH_SECONDS}


# -- modes ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mode:
    """How the service keeps its listing: `events` true when the registry posts its notifications to it."""

    name: str
    env: dict[str, str]
    events: bool


def detect_modes() -> list[Mode]:
    """The listing in this checkout: with POST /v1/events, the index in its two modes (the registry sending its
    notifications to the service, JANITOR_INDEX_MODE=auto finding them in the registry's config; and polling,
    the registry sending nothing to it); otherwise the service reads the registry on every listing ("live", main
    before issue 11)."""
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    if "/v1/events" not in spec.get("paths", {}):
        return [Mode("live", {}, False)]
    return [Mode("notifications", {"JANITOR_INDEX_MODE": "auto", "EVENTS_TOKENS": EVENTS_TOKEN}, True),
            Mode("polling", {"JANITOR_INDEX_MODE": "polling", "EVENTS_TOKENS": EVENTS_TOKEN}, False)]


def notification_env(port: int, debug_port: int, ignore_pulls: bool = False) -> tuple[dict[str, str], str]:
    """The registry's notifications to the service's POST /v1/events on `port`, configured as docker-compose.yml
    configures them (its endpoint with the URL and token swapped), so the figures are the deployment's; without
    one there, a minimal endpoint. Distribution reads the list as YAML from the environment (JSON is YAML). The
    debug address serves /debug/vars, whose endpoint metrics say how many events are still pending."""
    endpoint: dict[str, Any] = {"name": "janitor", "timeout": "5s", "threshold": 5, "backoff": "1s"}
    source = "minimal"
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError, IndexError):
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        env = compose["services"]["registry"]["environment"]
        raw = env["REGISTRY_NOTIFICATIONS_ENDPOINTS"] if isinstance(env, dict) else next(
            e.split("=", 1)[1] for e in env if e.startswith("REGISTRY_NOTIFICATIONS_ENDPOINTS="))
        # Compose's ${VAR:?message} and ${VAR} interpolation: every one stands for the token here.
        endpoint = yaml.safe_load(re.sub(r"\$\{[^}]*\}", EVENTS_TOKEN, raw))[0]
        source = "docker-compose.yml"
    endpoint = {**endpoint, "url": f"http://127.0.0.1:{port}/v1/events",
                "headers": {**(endpoint.get("headers") or {}), "Authorization": [f"Bearer {EVENTS_TOKEN}"]}}
    if ignore_pulls:  # distribution 2.7+: no event for a pull (every manifest GET and HEAD, the service's own too)
        ignore = dict(endpoint.get("ignore") or {})
        ignore["actions"] = sorted({*ignore.get("actions", []), "pull"})
        endpoint["ignore"] = ignore
        source += " + ignore pulls"
    return {"REGISTRY_NOTIFICATIONS_ENDPOINTS": json.dumps([endpoint]),
            "REGISTRY_HTTP_DEBUG_ADDR": f"127.0.0.1:{debug_port}"}, source


def event_metrics(debug_port: int) -> dict[str, Any]:
    """The registry's counts for its notification endpoint: Pending (queued, not delivered yet), Events, Successes,
    Failures, Errors (a POST that failed or timed out is retried: Events can be fewer than the POSTs made)."""
    found = requests.get(f"http://127.0.0.1:{debug_port}/debug/vars", timeout=10).json()
    endpoints = found.get("registry", {}).get("notifications", {}).get("endpoints") or []
    totals: dict[str, Any] = {}
    for endpoint in endpoints:
        for k, v in (endpoint.get("Metrics") or {}).items():
            if isinstance(v, int):
                totals[k] = totals.get(k, 0) + v
    return totals


def index_state(stack: Stack) -> dict[str, Any]:
    """/readyz's checks.index (empty before issue 11)."""
    with contextlib.suppress(requests.RequestException, ValueError):
        return requests.get(f"{stack.api}/readyz", timeout=30).json().get("checks", {}).get("index") or {}
    return {}


# -- main -----------------------------------------------------------------------------------------------------------

def secs(x: float | None, tags: int | None = None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f} s" if tags is None else f"{x:.2f} s ({1000 * x / tags:.2f} ms/tag)"


def table(results: list[dict[str, Any]]) -> str:
    head = ["repos x tags", "registry-cli", "walk (16 thr)", "service cold", "service warm", "cold<=walk",
            "warm<=cli/10", "fresh max (mode)", "fresh<=2s"]
    rows = [head]
    for r in results:
        n = r["tags"]
        fresh = r.get("fresh", {})
        rows.append([
            f"{r['repositories']} x {r['tags_per_repository']} = {n}",
            secs(r.get("registry_cli_seconds"), n), secs(r["walk_seconds"], n),
            secs(r["cold_seconds"], n), secs(r["warm_seconds"], n),
            _pf(r["goals"]["cold_le_walk"]), _pf(r["goals"]["warm_le_cli_tenth"]),
            ", ".join(f"{secs(f['max_seconds'])} ({m})" for m, f in fresh.items()) or "-",
            _pf(r["goals"]["fresh_le_2s"]),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _pf(x: bool | None) -> str:
    return "-" if x is None else ("pass" if x else "FAIL")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,300,1000", help="repository counts, increasing (default 100,300,1000)")
    parser.add_argument("--tags", type=int, default=10, help="tags per repository")
    parser.add_argument("--page-size", type=int, default=None, help="page_size for the service listing "
                        "(default: the API's own defaults, as a plain client pages)")
    parser.add_argument("--warm-rounds", type=int, default=2, help="warm listings per size (median reported)")
    parser.add_argument("--fresh-rounds", type=int, default=3, help="pushes and deletes per size and mode")
    parser.add_argument("--fresh-timeout", type=float, default=30.0,
                        help="seconds to wait for a change to show (past 2 s is a fail; the wait gives the figure)")
    parser.add_argument("--walk-threads", type=int, default=16)
    parser.add_argument("--ignore-pulls", action="store_true", help="the registry sends no pull events (adds "
                        "ignore.actions: [pull] to the endpoint docker-compose.yml configures)")
    parser.add_argument("--drain-timeout", type=float, default=600.0,
                        help="seconds to wait for the registry to deliver its events after the pushes")
    parser.add_argument("--modes", default="auto", help="comma list of: live, events, polling (default: what "
                        "this checkout has; the first mode measures cold and warm)")
    parser.add_argument("--registry-cli", type=Path, default=Path(os.environ.get("REGISTRY_CLI") or MIRROR))
    parser.add_argument("--no-registry-cli", action="store_true", help="skip registry-cli (and its goal)")
    parser.add_argument("--label", default="", help="a note stored in the JSON (e.g. before/after)")
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes != sorted(set(sizes)) or sizes[0] < 1:
        parser.error("--sizes must be increasing")
    known = {m.name: m for m in detect_modes()}
    if args.modes != "auto":
        wanted = args.modes.split(",")
        modes = [known.get(w) or Mode(w, {}, w == "events") for w in wanted]
    else:
        modes = list(known.values())

    # SIGTERM unwinds like Ctrl-C, so the finally blocks remove the container and stop the processes.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    image = os.environ.get("TEST_REGISTRY_IMAGE") or subprocess.run(
        [str(ROOT / "scripts/provision.sh")], check=True, capture_output=True, text=True).stdout.split()[-1]
    cli = None if args.no_registry_cli else RegistryCli(args.registry_cli)
    report: dict[str, Any] = {
        "label": args.label, "commit": _git("rev-parse", "--short", "HEAD"), "branch": _git("branch", "--show-current"),
        "registry_image": image, "cpus": os.cpu_count(), "uptime_start": _uptime(), "modes": [m.name for m in modes],
        "registry_cli": None if cli is None else {"revision": cli.revision, "patched_plain_default": cli.patched},
        "goals": {"cold": "<= walk", "warm": "<= registry-cli / 10", "fresh": f"<= {GOAL_FRESH_SECONDS} s"},
        "sizes": [],
    }
    ports = {m.name: free_port() for m in modes}
    redis_port, redis_dir = free_port(), tempfile.mkdtemp(prefix="rj-bench-redis-")
    redis_proc = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", redis_dir], stdout=subprocess.DEVNULL)
    registry: Registry | None = None
    service: Service | None = None
    started = time.monotonic()
    shutil.rmtree(LOGS, ignore_errors=True)
    try:
        conn = redis.Redis(port=redis_port)
        if not wait_until(lambda: pings(conn), 20):
            raise RuntimeError("redis-server did not start")
        events_mode = next((m for m in modes if m.events), None)
        debug_port = free_port()
        registry_env: dict[str, str] = {}
        if events_mode:
            registry_env, source = notification_env(ports[events_mode.name], debug_port, args.ignore_pulls)
            report["notifications_endpoint"] = {"from": source,
                                                **json.loads(registry_env["REGISTRY_NOTIFICATIONS_ENDPOINTS"])[0]}
        registry = start_registry(docker.from_env(), image, **registry_env)  # type: ignore[arg-type]
        log(f"registry {registry.name} at {registry.url}; redis on {redis_port}; modes {[m.name for m in modes]}; "
            f"logs in {LOGS}")
        pop = Populator(registry.url, media_type=DOCKER_MANIFEST)
        main_mode = modes[0]
        service = Service(registry, f"redis://127.0.0.1:{redis_port}/0", conn)

        def switch(mode: Mode) -> Stack:
            assert service is not None
            service.stop()
            service.env = dict(mode.env)
            return service.start(ports[mode.name])

        have = 0
        for step, size in enumerate(sizes):
            entry: dict[str, Any] = {"repositories": size, "tags_per_repository": args.tags,
                                     "load_before": load()}
            # Pushes with the service up in the main mode, as in production (events flow as they happen).
            stack = switch(main_mode)
            t = time.monotonic()
            pop.fill(size - have, args.tags, prefix=f"bench/s{step}")
            entry["populate_seconds"] = round(time.monotonic() - t, 1)
            have = size
            log(f"{size} repositories: populated (+{entry['populate_seconds']} s)")
            if main_mode.events:
                t = time.monotonic()
                drained = wait_until(lambda: event_metrics(debug_port).get("Pending") == 0, args.drain_timeout, 0.5)
                entry["events_drain_seconds"] = round(time.monotonic() - t, 1) if drained else None
                entry["registry_event_metrics"] = event_metrics(debug_port)
                log(f"registry's events delivered {entry['events_drain_seconds']} s after the last push: "
                    f"{entry['registry_event_metrics']}")
            # The walk and registry-cli with the service stopped: no reconcile competes with them.
            service.stop()
            entry["walk_seconds"], truth = timed(lambda: plain_walk(registry.url, args.walk_threads))
            total = sum(len(t) for t in truth.values())
            entry["tags"] = total  # earlier sizes' freshness rounds added and removed tags
            log(f"walk {entry['walk_seconds']:.2f} s over {len(truth)} repositories, {total} tags")
            if cli is not None:
                entry["registry_cli_seconds"] = cli.run(registry.url, total)
                log(f"registry-cli {entry['registry_cli_seconds']:.2f} s")

            # Cold: the service started on an empty Redis (no index, no content cache).
            conn.flushdb()
            t = time.monotonic()
            stack = switch(main_mode)
            entry["service_start_seconds"] = round(time.monotonic() - t, 2)
            cold = service_listing(stack, args.page_size)
            entry["cold_seconds"], entry["cold_breakdown"] = cold.seconds, cold.breakdown
            entry["cold_differences"] = differences(cold.found, truth)
            log(f"cold {entry['cold_seconds']:.2f} s ({entry['cold_differences']} differences) {cold.breakdown}")
            if index_state(stack):  # warm means after the service's own first fill
                filled = wait_until(lambda s=stack: index_state(s).get("filled_at"), 900, 0.5)
                entry["index_filled_seconds_after_start"] = round(time.monotonic() - t, 1) if filled else None
                log(f"index filled {entry['index_filled_seconds_after_start']} s after the service started")
            warm = []
            for _ in range(args.warm_rounds):
                again = service_listing(stack, args.page_size)
                warm.append(round(again.seconds, 3))
                entry.setdefault("warm_differences", []).append(differences(again.found, truth))
                entry["warm_breakdown"] = again.breakdown
            entry["warm_rounds_seconds"] = warm
            entry["warm_seconds"] = statistics.median(warm)
            log(f"warm {warm} ({entry['warm_differences']} differences)")

            entry["fresh"] = {}
            for mode in modes:
                if mode is not main_mode:
                    stack = switch(mode)
                fresh = freshness(stack, pop, truth, f"{mode.name}-{size}", args.fresh_rounds, args.fresh_timeout)
                fresh["index"] = index_state(stack)
                entry["fresh"][mode.name] = fresh
                log(f"fresh ({mode.name}) {fresh}")
            service.stop()

            n = entry["tags"]
            listing_ok = entry["cold_differences"] == 0 and not any(entry["warm_differences"])
            entry["seconds_per_tag"] = {k: round(entry[f"{k}_seconds"] / n, 6) for k in
                                        ("walk", "cold", "warm", "registry_cli") if f"{k}_seconds" in entry}
            cli_s = entry.get("registry_cli_seconds")
            entry["goals"] = {
                "listing_equals_registry": listing_ok,
                "cold_le_walk": listing_ok and entry["cold_seconds"] <= entry["walk_seconds"],
                "warm_le_cli_tenth": None if cli_s is None else listing_ok and entry["warm_seconds"] <= cli_s / 10,
                "fresh_le_2s": all(f["pass"] for f in entry["fresh"].values()),
            }
            entry["load_after"] = load()
            for k in ("walk_seconds", "registry_cli_seconds", "cold_seconds", "warm_seconds"):
                if k in entry:
                    entry[k] = round(entry[k], 3)
            report["sizes"].append(entry)
    finally:
        if service is not None:
            service.stop()
        if registry is not None:
            registry.container.remove(force=True, v=True)
        redis_proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            redis_proc.wait(10)
        shutil.rmtree(redis_dir, ignore_errors=True)
        if cli is not None:
            cli.close()
    report["total_seconds"] = round(time.monotonic() - started, 1)
    report["uptime_end"] = _uptime()
    print(table(report["sizes"]))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(all(v is not False for v in e["goals"].values()) for e in report["sizes"]) else 1


def _git(*argv: str) -> str:
    return subprocess.run(["git", *argv], check=False, cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _uptime() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
