#!/usr/bin/env python3
"""Benchmark: one maintenance window on S3 (issue 18). For each size, a registry storing into a bucket of a
real S3 API (moto in server mode, on loopback) is filled through its API (scripts/populate.py: N repositories
x 10 tags; BENCH_FILL=bucket writes the objects those pushes leave straight into the bucket instead,
populate.BucketFill, for sizes the API fill into moto cannot reach in reasonable time, and pulls five of
them through the registry to check), then one tag is deleted through the service, twice per GC mode
(`cold`, then `warm`, as in bench_window.py;
`gc_mode` on the request; BENCH_GC_MODES, default `registry,incremental`).
Each step's duration and S3 requests come from the job record (outcome.storage_requests: the janitor's own
requests; GC's are the registry's and not counted; storage_requests_in_a_row: the listing pages that had to
follow one another, which a store answering requests at once takes one round trip each); GC's own duration is
the `garbage-collect` exec's; writes refused is the window's `write_refused_seconds`.

    TEST_REGISTRY_IMAGE=registry-janitor/test-registry:2.8.2 .venv/bin/python scripts/bench_s3_window.py --repos 50
    BENCH_GC_MODES=incremental TEST_REGISTRY_IMAGE=... .venv/bin/python scripts/bench_s3_window.py --repos 400
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import redis  # noqa: E402

from janitor.storage import freed  # noqa: E402
from scripts.bench_window import STEPS, window_figures  # noqa: E402
from scripts.benchstack import run_sizes  # noqa: E402
from scripts.populate import BucketFill, populate, verify_pulls  # noqa: E402
from tests import images  # noqa: E402
from tests.conftest import (  # noqa: E402
    Bucket,
    Registry,
    Stack,
    free_port,
    moto_server,
    pings,
    s3_config,
    start_registry,
    start_stack,
)


@contextlib.contextmanager
def s3_stack(**env: str) -> Iterator[tuple[Registry, Stack]]:
    """moto, a registry storing into a new bucket of it, a private redis-server and the service."""
    image = os.environ.get("TEST_REGISTRY_IMAGE") or subprocess.run(
        [str(ROOT / "scripts/provision.sh")], check=True, capture_output=True, text=True).stdout.split()[-1]
    port, workdir = free_port(), tempfile.mkdtemp(prefix="rj-bench-redis-")
    with contextlib.ExitStack() as cleanup:
        endpoint = cleanup.enter_context(moto_server())
        redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--dir", workdir], stdout=subprocess.DEVNULL)
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        cleanup.callback(redis_proc.terminate)
        bucket = Bucket(endpoint, endpoint.new_bucket(), "/registry")
        conn = redis.Redis(port=port)
        images.wait_until(lambda: pings(conn), 20)
        registry = start_registry(docker.from_env(), image, config=s3_config(bucket), bucket=bucket,
                                  REGISTRY_STORAGE_S3_ACCESSKEY=endpoint.access_key,
                                  REGISTRY_STORAGE_S3_SECRETKEY=endpoint.secret_key)
        cleanup.callback(registry.container.remove, force=True, v=True)
        stack = start_stack(registry, f"redis://127.0.0.1:{port}/0", conn, **env)
        cleanup.callback(stack.stop)
        yield registry, stack


def s3_figures(job: dict[str, Any], wall: float) -> dict[str, Any]:
    out = window_figures(job, wall)
    out["s3_requests"] = {s["name"]: s["outcome"].get("storage_requests") for s in job["steps"]
                          if s["name"] in STEPS}
    out["s3_requests_window"] = job["window"].get("storage_requests")
    out["s3_in_a_row"] = {s["name"]: s["outcome"].get("storage_requests_in_a_row") for s in job["steps"]
                          if s["name"] in STEPS}
    return out


def run_size(repos: int, tags: int, grace: float) -> dict[str, Any]:
    with s3_stack(JANITOR_UPLOAD_GRACE=str(grace)) as (registry, stack):
        start = time.monotonic()
        if FILL == "bucket":
            assert registry.bucket is not None
            bucket = registry.bucket
            pushed = BucketFill(bucket.endpoint.client(), bucket.name, bucket.rootdirectory).fill(repos, tags)
            verify_pulls(registry.url, pushed)  # what the registry serves from the filled bucket
        else:
            populate(registry.url, repos, tags)
        filled = time.monotonic() - start
        time.sleep(grace + freed.MARGIN_SECONDS + 5)  # measure a registry of this size, not a fill of it
        assert registry.bucket is not None
        out: dict[str, Any] = {"repositories": repos, "tags": repos * tags, "fill": FILL,
                               "fill_seconds": round(filled, 1),
                               "objects": len(registry.bucket.objects(""))}
        names = iter(f"v{i}" for i in range(tags))
        for mode in MODES:
            for when in ("cold", "warm"):
                label = f"{mode} {when}"
                start = time.monotonic()
                job = stack.wait(stack.delete({"repository": "bench/app-0000", "tags": [next(names)],
                                               "gc_mode": mode})["id"], timeout=3600)
                out[label] = s3_figures(job, time.monotonic() - start)
                out[label]["gc_mode_ran"] = (job["result"].get("gc") or {}).get("mode")
                if job["status"] != "succeeded":
                    out[label]["error"] = job["error"]
        return out


# The GC modes measured, each twice (cold, then warm) on the same registry: BENCH_GC_MODES=incremental skips the
# registry's own garbage-collect, which walks the whole bucket (through moto, minutes at 500 tags already).
MODES = [m for m in os.environ.get("BENCH_GC_MODES", "registry,incremental").split(",") if m]
FILL = os.environ.get("BENCH_FILL", "api")  # `api`: pushes through the registry; `bucket`: populate.BucketFill


def main() -> int:
    results = run_sizes(__doc__ or "", run_size, [50, 400])
    cols = [(r, w) for r in results for w in (f"{m} {when}" for m in MODES for when in ("cold", "warm"))]
    print("| step (seconds / S3 requests, of which in a row) | "
          + " | ".join(f"{r['tags']} tags ({w})" for r, w in cols) + " |")
    print("|---" * (1 + len(cols)) + "|")
    for name in STEPS:
        print(f"| {name} | " + " | ".join(
            f"{r[w]['steps'].get(name, '-')} / {r[w]['s3_requests'].get(name, '-')}, "
            f"{r[w]['s3_in_a_row'].get(name, '-')}" for r, w in cols) + " |")
    for key in ("gc_exec_seconds", "write_refused_seconds", "whole_window_seconds", "s3_requests_window"):
        print(f"| {key} | " + " | ".join(f"{r[w][key]}" for r, w in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
