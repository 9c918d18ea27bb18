#!/usr/bin/env python3
"""Benchmark: a dry run of one retention policy over 100 repositories x 10 tags, against listing the same
tags through the API (GET /v1/repositories/{name}/tags for every repository, in parallel). Both read each
tag's manifest and image config; the policy also reads the registry's stored revisions. Real stack on
loopback (registry container, Redis, gunicorn API, RQ worker). Run after scripts/provision.sh:

    TEST_REGISTRY_IMAGE=$(scripts/provision.sh | tail -n1) .venv/bin/python scripts/bench_policy.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from janitor.config.settings import Settings  # noqa: E402
from scripts.benchstack import bench_stack  # noqa: E402
from tests import images  # noqa: E402


def _seconds(start: str, end: str) -> float:
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repositories", type=int, default=100)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="at least 2: one cold, the rest warm")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="parallel API listings (the API under test serves 2 workers x 4 threads)")
    parser.add_argument("--policy-concurrency", type=int, default=Settings().policy_read_concurrency,
                        help="the worker's JANITOR_POLICY_CONCURRENCY")
    parser.add_argument("--listing-first", action="store_true", help="measure the cold listing before the cold dry run")
    args = parser.parse_args()
    with bench_stack(JANITOR_POLICY_CONCURRENCY=str(args.policy_concurrency)) as (registry, stack):
        repos = [f"bench/r{i:03d}" for i in range(args.repositories)]
        now = datetime.now(timezone.utc)

        def push(repo: str) -> None:
            pusher = stack.pusher()
            for t in range(args.tags):
                img = images.image(layers=1, layer_size=1024, created=now - timedelta(days=t + 1))
                pusher.image(repo, img, f"t{t}")

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(push, repos))
        push_seconds = time.monotonic() - started

        def list_tags(repo: str) -> int:
            resp = stack.get(f"/v1/repositories/{repo}/tags", params={"page_size": 500})
            resp.raise_for_status()
            return len(resp.json()["items"])

        def listing() -> float:
            t = time.monotonic()
            with ThreadPoolExecutor(args.concurrency) as pool:
                assert sum(pool.map(list_tags, repos)) == args.repositories * args.tags
            return time.monotonic() - t

        resp = stack.post("/v1/policies", {"name": "bench", "repositories": ["bench/**"], "keep_last": 5,
                                           "older_than": "2d"})
        assert resp.status_code == 201, resp.text

        def dry_run() -> tuple[float, float, dict]:
            t = time.monotonic()
            job = stack.post("/v1/policies/bench/runs", {"dry_run": True}).json()
            job = stack.wait(job["id"], 600)
            total = time.monotonic() - t
            assert job["status"] == "succeeded", job
            step = next(s for s in job["steps"] if s["name"] == "delete")
            return total, _seconds(step["started_at"], step["finished_at"]), job

        # Cold first (the API caches image details by digest in memory, the worker creation times in Redis),
        # then warm rounds interleaved, so a busy moment on the machine does not favour either side.
        if args.listing_first:
            list_cold, runs = listing(), [dry_run()]
        else:
            runs, list_cold = [dry_run()], listing()
        list_warm = []
        for _ in range(args.rounds - 1):
            runs.append(dry_run())
            list_warm.append(listing())
        plan = runs[0][2]["result"]["plan"]
        report = {
            "repositories": args.repositories,
            "tags_per_repository": args.tags,
            "listing_concurrency": args.concurrency,
            "policy_concurrency": args.policy_concurrency,
            "push_seconds": round(push_seconds, 1),
            "api_listing_cold_seconds": round(list_cold, 3),
            "api_listing_warm_seconds_median": round(statistics.median(list_warm), 3),
            # Cold: nothing known; warm: creation times remembered in Redis (configs never change).
            "policy_dry_run_cold_job_seconds": round(runs[0][0], 3),
            "policy_dry_run_cold_plan_step_seconds": round(runs[0][1], 3),
            "policy_dry_run_warm_job_seconds_median": round(statistics.median(r[0] for r in runs[1:]), 3),
            "policy_dry_run_warm_plan_step_seconds_median": round(statistics.median(r[1] for r in runs[1:]), 3),
            "cold_order": "listing first" if args.listing_first else "dry run first",
            "policy_plan_tags_to_delete": len(plan["tags"]),
            "policy_plan_bytes": plan.get("bytes"),
        }
        print(json.dumps(report, indent=2))
        return 0


if __name__ == "__main__":
    sys.exit(main())
