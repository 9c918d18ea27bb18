#!/usr/bin/env python3
"""Benchmark: POST /v1/events through gunicorn alone (no registry, no worker, no freshness probe), pull
envelopes sent as distribution sends them (one keep-alive connection, one event per envelope, each POST after
the previous answer). scripts/bench_events.py measures the whole stack; this isolates the API and its gunicorn
worker class, so that runs of two versions or two worker classes can alternate quickly on a loaded machine.

    .venv/bin/python scripts/bench_events_api.py --events 3000 --runs 3
    .venv/bin/python scripts/bench_events_api.py --worker-class gthread   # stock gthread, for comparison

Run from another tree (a worktree of main) with `--root`, to compare versions. Prints one JSON line per run:
events/s, the API's CPU ms per event (all gunicorn processes, from /proc) and the sender's, and the load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from scripts.bench_events import MEDIA_TYPE, cpu_seconds, event  # noqa: E402
from tests.conftest import free_port, pings  # noqa: E402
from tests.images import wait_until  # noqa: E402

TOKEN = "bench-events-token"


def run_once(root: Path, redis_url: str, events: int, worker_class: str | None) -> dict[str, object]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "REGISTRY_URL": "http://127.0.0.1:9", "EVENTS_TOKENS": TOKEN,
           "API_TOKENS": "bench-admin-token"}
    args = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "service:create_app()"]
    if worker_class:
        args[3:3] = ["-k", worker_class]
    api = subprocess.Popen(args, cwd=root, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        def up() -> bool:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                probe.request("GET", "/healthz")
                return probe.getresponse().status < 500
            except OSError:
                return False
        if not wait_until(up, 90):
            raise RuntimeError("gunicorn did not come up")
        digests = [f"sha256:{i:064x}" for i in range(100)]
        bodies = [json.dumps(event("pull", f"bench/app{i % 10}", f"t{i % 10}", digests[i % 100], "GET")).encode()
                  for i in range(events)]
        headers = {"Content-Type": MEDIA_TYPE, "Authorization": f"Bearer {TOKEN}"}
        codes: dict[int, int] = {}

        def post(body: bytes) -> int:
            conn.request("POST", "/v1/events", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        for body in bodies[:300]:  # warm the connection and the process
            post(body)
        before, load = cpu_seconds([api.pid]), os.getloadavg()[0]
        start, sender = time.perf_counter(), time.thread_time()
        for body in bodies:
            status = post(body)
            codes[status] = codes.get(status, 0) + 1
        seconds, sender = time.perf_counter() - start, time.thread_time() - sender
        return {"root": str(root), "worker_class": worker_class or "gunicorn.conf.py's", "events": events,
                "events_per_s": round(events / seconds),
                "cpu_ms_per_event": {"api": round((cpu_seconds([api.pid]) - before) * 1000 / events, 3),
                                     "sender": round(sender * 1000 / events, 3)},
                "statuses": codes, "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)]}
    finally:
        conn.close()
        api.terminate()
        api.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--worker-class", help="gunicorn -k (default: gunicorn.conf.py's)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree whose service and gunicorn.conf.py run")
    args = parser.parse_args()
    port, workdir = free_port(), tempfile.mkdtemp(prefix="rj-bench-redis-")
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--dir", workdir], stdout=subprocess.DEVNULL)
    ok = True
    try:
        if not wait_until(lambda: pings(redis.Redis(port=port)), 20):
            raise RuntimeError("redis-server did not start")
        for _ in range(args.runs):
            result = run_once(args.root.resolve(), f"redis://127.0.0.1:{port}/0", args.events, args.worker_class)
            ok = ok and result["statuses"] == {200: args.events}
            print(json.dumps(result), flush=True)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
