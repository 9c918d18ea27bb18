#!/usr/bin/env python3
"""Benchmark: what one maintenance window costs as the registry grows (issue 12). For each size, a registry
of N repositories x 10 tags is filled through its API (scripts/populate.py), then one tag is deleted through
the service, twice: the first window after the fill (`cold`: nothing of the registry is known in Redis yet)
and the next one (`warm`: what every later window costs). The service runs with a short upload grace
(--grace, 10 s) and the windows start once the fill is older than it: see run_size. Per-step durations come from the job record; GC's
own duration is the `garbage-collect` exec's; writes refused is the window's `write_refused_seconds`.

    TEST_REGISTRY_IMAGE=registry-janitor/test-registry:2.8.2 .venv/bin/python scripts/bench_window.py --repos 50 400
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from janitor.storage import freed  # noqa: E402
from scripts.benchstack import bench_stack, run_sizes  # noqa: E402
from scripts.populate import populate  # noqa: E402

STEPS = ("preflight", "delete", "drain", "fence", "hold", "gc", "restart", "health", "verify")


def _seconds(step: dict[str, Any]) -> float:
    start = datetime.fromisoformat(step["started_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(step["finished_at"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def window_figures(job: dict[str, Any], wall: float) -> dict[str, Any]:
    steps = {s["name"]: s for s in job["steps"]}
    gc = steps.get("gc", {}).get("outcome", {})
    return {
        "status": job["status"],
        "steps": {name: round(_seconds(steps[name]), 3) for name in STEPS if name in steps},
        "gc_exec_seconds": gc.get("duration_seconds"),
        "write_refused_seconds": job["window"]["write_refused_seconds"],
        "whole_window_seconds": round(_seconds({"started_at": job["window"]["started_at"],
                                                "finished_at": job["window"]["finished_at"]}), 3),
        "request_to_done_seconds": round(wall, 3),
        "planned_bytes": (job["result"].get("planned") or {}).get("bytes"),
        "bytes_freed": job["result"].get("bytes_freed"),
        "verify": {k: v for k, v in steps.get("verify", {}).get("outcome", {}).items() if k != "broken"},
    }


def run_size(repos: int, tags: int, grace: float) -> dict[str, Any]:
    with bench_stack(JANITOR_UPLOAD_GRACE=str(grace)) as (registry, stack):
        start = time.monotonic()
        populate(registry.url, repos, tags)
        filled = time.monotonic() - start
        # Blobs linked within the upload grace are held from GC (pushes in flight), and blob files written
        # since the last GC (less the grace) are stat-ed: both follow what was pushed lately. Waiting past
        # them measures a registry of this size, not a fill of this size.
        time.sleep(grace + freed.MARGIN_SECONDS + 5)
        out: dict[str, Any] = {"repositories": repos, "tags": repos * tags, "fill_seconds": round(filled, 1)}
        for label, tag in (("cold", "v0"), ("warm", "v1")):
            start = time.monotonic()
            job = stack.wait(stack.delete({"repository": "bench/app-0000", "tags": [tag]})["id"], timeout=900)
            out[label] = window_figures(job, time.monotonic() - start)
            if job["status"] != "succeeded":
                out[label]["error"] = job["error"]
        return out


def main() -> int:
    results = run_sizes(__doc__ or "", run_size, [50, 400])
    header = "| step | " + " | ".join(f"{r['tags']} tags ({w})" for r in results for w in ("cold", "warm")) + " |"
    print(header)
    print("|---" * (1 + 2 * len(results)) + "|")
    for name in STEPS:
        print(f"| {name} | " + " | ".join(f"{r[w]['steps'].get(name, '-')}" for r in results
                                          for w in ("cold", "warm")) + " |")
    for key in ("gc_exec_seconds", "write_refused_seconds", "whole_window_seconds"):
        print(f"| {key} | " + " | ".join(f"{r[w][key]}" for r in results for w in ("cold", "warm")) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
