#!/usr/bin/env python3
"""Benchmark: a burst of deletion requests against the real stack (registry container, Redis, gunicorn API,
RQ worker), all on loopback. Reports total time, GC runs, restarts and how long writes were refused per
window. Run after scripts/provision.sh (scripts/test.sh does it):

    TEST_REGISTRY_IMAGE=$(scripts/provision.sh | tail -n1) .venv/bin/python scripts/bench_burst.py --requests 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from scripts.benchstack import bench_stack  # noqa: E402
from tests import images  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with bench_stack() as (registry, stack):
        pusher = stack.pusher()
        for i in range(args.requests):
            pusher.image("bench/app", images.image(layers=2, layer_size=8192), f"b{i}")
        bytes_before = registry.storage_bytes()

        def submit(i: int) -> tuple[str, float]:
            t = time.monotonic()
            job = stack.delete({"repository": "bench/app", "tags": [f"b{i}"]})
            return job["id"], time.monotonic() - t

        start = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            submitted = list(pool.map(submit, range(args.requests)))
        jobs = [stack.wait(job_id, timeout=600) for job_id, _ in submitted]
        total = time.monotonic() - start

        windows = {j["window"]["id"]: j for j in jobs}
        gc_runs = sum(1 for j in windows.values() if any(s["name"] == "gc" for s in j["steps"]))
        restarts = sum(sum(1 for s in j["steps"] if s["name"] in ("fence", "restart")) for j in windows.values())
        refused = [j["window"]["write_refused_seconds"] for j in windows.values()]
        latencies = sorted(t for _, t in submitted)
        report = {
            "requests": args.requests,
            "succeeded": sum(j["status"] == "succeeded" for j in jobs),
            "total_seconds": round(total, 3),
            "windows": len(windows),
            "gc_runs": gc_runs,
            "restarts": restarts,
            "write_refused_seconds_per_window": refused,
            "write_refused_seconds_total": round(sum(r or 0 for r in refused), 3),
            "post_latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "post_latency_max_ms": round(latencies[-1] * 1000, 1),
            "bytes_freed": bytes_before - registry.storage_bytes(),
        }
        print(json.dumps(report, indent=2))
        return 0 if report["succeeded"] == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
