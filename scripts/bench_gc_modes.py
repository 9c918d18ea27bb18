#!/usr/bin/env python3
"""Benchmark: writes refused and GC time per window, registry GC against incremental GC (issue 19), side by side
on the same registry. For each size a registry of N repositories x 10 tags is written straight into the
registry's storage, as distribution writes those pushes (scripts/populate.py StorageFill: about a minute for
40,000 tags, where pushing them through the API takes 40), and a few tags are pulled through the API to check
that the registry reads it as its own; once the fill is older than the upload grace, one tag is deleted per window, with
`gc_mode` on the request: registry (cold: the first window after the fill), registry (warm), incremental (its
first mark, which reads from the registry's files the manifests the content cache lacks), incremental (warm).
Writes refused is the window's `write_refused_seconds`; GC is the gc step's exec or sweep (in the incremental
mode split into the change read and the sweep decided, then the deletes: `result.gc.seconds`); the mark is
`gc_mark.seconds` of the drain step (before the fence).

Fence + restart is the two steps around GC: the restart read-only and its write probe, then the original config
back, the restart, the write probe that must be accepted and the tidying after it; restarts is the two
container restarts alone, each until /v2/ answered.

    TEST_REGISTRY_IMAGE=registry-janitor/test-registry:2.8.2 .venv/bin/python scripts/bench_gc_modes.py --repos 400 4000
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from janitor.storage import freed  # noqa: E402
from scripts.bench_window import window_figures  # noqa: E402
from scripts.benchstack import bench_stack, load, run_sizes  # noqa: E402
from scripts.populate import populate_storage, verify_pulls  # noqa: E402

RUNS = (("registry (cold)", "registry"), ("registry", "registry"), ("incremental (first)", "incremental"),
        ("incremental", "incremental"))
ROWS = ("write_refused_seconds", "gc_seconds", "change_and_sweep", "delete", "mark_seconds", "fence_and_restart",
        "restarts", "fence", "hold", "gc", "restart", "drain", "whole_window_seconds", "bytes_freed", "planned_bytes",
        "loadavg")


def run_size(repos: int, tags: int, grace: float) -> dict[str, Any]:
    with bench_stack(JANITOR_UPLOAD_GRACE=str(grace)) as (registry, stack):
        start = time.monotonic()
        pushed = populate_storage(registry.container, repos, tags)
        out: dict[str, Any] = {"repositories": repos, "tags": len(pushed), "fill_seconds": round(time.monotonic() - start, 1),
                               "pulled": verify_pulls(registry.url, pushed)}
        time.sleep(grace + freed.MARGIN_SECONDS + 5)  # a registry of this size, not a fill of this size
        for i, (label, mode) in enumerate(RUNS):
            begun = time.monotonic()
            job = stack.wait(stack.delete({"repository": "bench/app-0000", "tags": [f"v{i}"], "gc_mode": mode})["id"],
                             timeout=1800)
            figures = window_figures(job, time.monotonic() - begun)
            steps = {s["name"]: s for s in job["steps"]}
            gc = job["result"].get("gc") or {}
            figures.update(mode=gc.get("mode"), gc_seconds=gc.get("duration_seconds"),
                           mark_seconds=(steps["drain"]["outcome"].get("gc_mark") or {}).get("seconds"),
                           blobs_deleted=gc.get("blobs_deleted"), bytes_freed=job["result"].get("bytes_freed"),
                           change_and_sweep=(gc.get("seconds") or {}).get("change_and_sweep"),
                           delete=(gc.get("seconds") or {}).get("delete"),
                           **{name: figures["steps"].get(name) for name in ("drain", "fence", "hold", "gc", "restart")})
            figures["fence_and_restart"] = round((figures["fence"] or 0) + (figures["restart"] or 0), 3)
            # The two container restarts, each until /v2/ answered: what no change under the fence can shorten.
            figures["restarts"] = round(sum(steps[n]["outcome"].get(k) or 0 for n in ("fence", "restart") if n in steps
                                            for k in ("restart_seconds", "ready_seconds")), 3)
            figures["loadavg"] = load()
            if job["status"] != "succeeded":
                figures["error"] = job["error"]
            out[label] = figures
        return out


def main() -> int:
    results = run_sizes(__doc__ or "", run_size, [400, 4000])
    print("| | " + " | ".join(f"{r['tags']} tags: {label}" for r in results for label, _ in RUNS) + " |")
    print("|---" * (1 + len(RUNS) * len(results)) + "|")
    for row in ROWS:
        print(f"| {row} | " + " | ".join(str(r[label].get(row, "-")) for r in results for label, _ in RUNS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
