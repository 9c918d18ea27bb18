#!/usr/bin/env python3
"""Benchmark: how many registry notifications POST /v1/events takes a second, sent as distribution sends them
(one sender, one keep-alive connection, one event per envelope, each POST after the previous answer), and
whether pushes still reach the listing within 2 s meanwhile. The real stack on loopback (scripts/benchstack.py:
redis-server, a registry container sending its own notifications to the service, gunicorn API, worker).

    TEST_REGISTRY_IMAGE=$(scripts/provision.sh | tail -n1) .venv/bin/python scripts/bench_events.py --events 3000

Prints events/s for push envelopes (naming tags the registry holds, each claiming a digest the index does not
show for it, so that every one needs a registry check: the worst case)
and pull envelopes (manifest pulls by tag, as `docker pull` sends them), the push -> listing freshness measured
while each burst runs (a tag pushed through the registry, the listing polled every 50 ms), and the load
average, since the machine is shared.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from janitor.registry.manifests import OCI_MANIFEST  # noqa: E402
from scripts.benchstack import bench_stack  # noqa: E402
from tests import images  # noqa: E402
from tests.conftest import Registry, Stack, descendants  # noqa: E402
from tests.images import wait_until  # noqa: E402

EVENTS_TOKEN = "bench-events-token"
MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"


def endpoint(port: int) -> dict[str, str]:
    """The registry's notifications to the API, as docker-compose.yml configures them (blob events ignored)."""
    return {"REGISTRY_NOTIFICATIONS_ENDPOINTS": json.dumps([{
        "name": "registry-janitor", "url": f"http://127.0.0.1:{port}/v1/events",
        "headers": {"Authorization": [f"Bearer {EVENTS_TOKEN}"]}, "timeout": "5s", "threshold": 5,
        "backoff": "2s", "ignore": {"mediatypes": ["application/octet-stream"]}}])}


def event(action: str, repo: str, tag: str, digest: str, method: str) -> dict[str, Any]:
    """One event as distribution 2.8 writes it (notifications/event.go)."""
    return {"events": [{
        "id": str(uuid.uuid4()), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
        "action": action,
        "target": {"mediaType": OCI_MANIFEST, "size": 700, "digest": digest, "length": 700, "repository": repo,
                   "url": f"http://127.0.0.1:5000/v2/{repo}/manifests/{digest}", "tag": tag},
        "request": {"id": str(uuid.uuid4()), "addr": "127.0.0.1:40000", "host": "127.0.0.1:5000",
                    "method": method, "useragent": "docker/24.0.7 go/go1.20.10 os/linux arch/amd64"},
        "actor": {}, "source": {"addr": "bench:5000", "instanceID": "bench"}}]}


def send(stack: Stack, bodies: list[bytes]) -> tuple[float, float, dict[int, int]]:
    """POST each envelope in turn on one keep-alive connection, as distribution's endpoint does. http.client,
    not requests: a sender that costs little CPU itself (requests spends about 0.5 ms a POST here, as much as
    the service), as distribution's Go client does."""
    codes: dict[int, int] = {}
    headers = {"Content-Type": MEDIA_TYPE, "Authorization": f"Bearer {EVENTS_TOKEN}"}
    where = urlsplit(stack.api)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)

    def post(body: bytes) -> int:
        conn.request("POST", "/v1/events", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    try:
        for body in bodies[:50]:  # warm the connection and the workers
            post(body)
        start, cpu = time.perf_counter(), time.thread_time()
        for body in bodies:
            status = post(body)
            codes[status] = codes.get(status, 0) + 1
        return time.perf_counter() - start, time.thread_time() - cpu, codes
    finally:
        conn.close()


def tag_names(stack: Stack, repo: str, session: requests.Session) -> dict[str, dict[str, Any]]:
    resp = session.get(f"{stack.api}/v1/repositories/{repo}/tags", params={"page_size": 500},
                       headers=stack.headers, timeout=30)
    return {t["name"]: t for t in resp.json().get("items", [])} if resp.status_code == 200 else {}


class Freshness(threading.Thread):
    """While a burst runs: push a new tag through the registry, time until the listing shows it, repeat."""

    def __init__(self, stack: Stack, repo: str, img: images.Image, label: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.repo, self.img, self.label = stack, repo, img, label
        self.stop = threading.Event()
        self.seconds: list[float] = []

    def run(self) -> None:
        pusher = self.stack.pusher()
        with requests.Session() as session:
            session.trust_env = False
            n = 0
            while not self.stop.wait(0.3):
                tag = f"fresh-{self.label}-{n}"
                n += 1
                pusher.manifest(self.repo, tag, self.img.manifest, self.img.media_type)
                pushed = time.monotonic()
                if not wait_until(lambda t=tag: t in tag_names(self.stack, self.repo, session), 30, 0.05):
                    self.seconds.append(float("inf"))
                    continue
                self.seconds.append(time.monotonic() - pushed)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their descendants (from /proc): what the load cannot skew."""
    total = 0.0
    for pid in {p for root in pids for p in (root, *descendants(root))}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def burst(stack: Stack, registry: Registry, bodies: list[bytes], probe_repo: str, probe_img: images.Image,
          label: str) -> dict[str, Any]:
    fresh = Freshness(stack, probe_repo, probe_img, label)
    parts = {"api": [stack.procs["api"].pid], "worker": [stack.procs["worker"].pid],
             "registry": [registry.container.attrs["State"]["Pid"]]}
    before = {k: cpu_seconds(v) for k, v in parts.items()}
    fresh.start()
    load = os.getloadavg()[0]
    seconds, client_cpu, codes = send(stack, bodies)
    fresh.stop.set()
    fresh.join(60)
    cpu = {k: round((cpu_seconds(v) - before[k]) * 1000 / len(bodies), 3) for k, v in parts.items()}
    cpu["sender"] = round(client_cpu * 1000 / len(bodies), 3)
    return {"events": len(bodies), "seconds": round(seconds, 3), "events_per_s": round(len(bodies) / seconds),
            "statuses": codes, "cpu_ms_per_event": cpu, "freshness_probes": len(fresh.seconds),
            "freshness_median_s": round(statistics.median(fresh.seconds), 3) if fresh.seconds else None,
            "freshness_max_s": round(max(fresh.seconds), 3) if fresh.seconds else None,
            "load_avg_1m_at_start": round(load, 2), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000, help="envelopes of each kind (one event each)")
    parser.add_argument("--repos", type=int, default=10)
    parser.add_argument("--tags", type=int, default=10, help="tags per repository the events name")
    parser.add_argument("--kinds", default="shown,push,pull", help="which bursts: shown (push events claiming "
                        "what the index shows: re-deliveries, unchanged re-pushes), push (each claim needing a "
                        "registry check), pull")
    args = parser.parse_args()
    with bench_stack(endpoint, EVENTS_TOKENS=EVENTS_TOKEN, JANITOR_RECONCILE_INTERVAL="300") as (registry, stack):
        registry.container.reload()
        pusher = stack.pusher()
        named: list[tuple[str, str, str]] = []
        for r in range(args.repos):
            for t in range(args.tags):
                img = images.image(OCI_MANIFEST, layers=1, layer_size=512)
                repo, tag = f"bench/app{r}", f"t{t}"
                pusher.image(repo, img, tag)
                named.append((repo, tag, img.digest))
        probe = images.image(OCI_MANIFEST, layers=1, layer_size=512)
        pusher.image("bench/fresh", probe, "base")

        def ready() -> bool:
            index = requests.get(stack.api + "/readyz", timeout=10).json()["checks"]["index"]
            return index.get("mode") == "notifications" and bool(index.get("filled_at"))
        if not wait_until(ready, 120):
            print("the index did not fill in notifications mode", file=sys.stderr)
            return 1
        # `push`: each event claims the digest of another tag, so every one needs a registry check (the worst
        # case); `shown`: each claims what the index shows (a re-delivery, an unchanged re-push): none does.
        bodies = {
            "shown": [json.dumps(event("push", *named[i % len(named)], "PUT")).encode() for i in range(args.events)],
            "push": [json.dumps(event("push", *named[i % len(named)][:2], named[(i + 1) % len(named)][2], "PUT")).encode()
                     for i in range(args.events)],
            "pull": [json.dumps(event("pull", *named[i % len(named)], "GET")).encode() for i in range(args.events)],
        }
        report: dict[str, Any] = {"cpus": os.cpu_count(), "events_each": args.events,
                                  "tags_named": len(named)}
        for kind in args.kinds.split(","):
            report[kind] = burst(stack, registry, bodies[kind], "bench/fresh", probe, kind)
            time.sleep(2)  # the checks a burst queued end before the next burst
        with requests.Session() as session:
            shown = tag_names(stack, named[0][0], session)
        report["last_pulled_shown"] = {t: e.get("last_pulled") for t, e in sorted(shown.items())[:3]}
        print(json.dumps(report, indent=2))
        ok = all(report[k]["statuses"] == {200: args.events} for k in args.kinds.split(","))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
