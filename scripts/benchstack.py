"""The real stack for the benchmarks in scripts/: a private redis-server, a registry container and the
service (gunicorn API and worker), all on loopback, torn down afterwards."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import redis  # noqa: E402

from tests import images  # noqa: E402
from tests.conftest import (  # noqa: E402
    Registry,
    Stack,
    free_port,
    pings,
    start_registry,
    start_stack,
)


@contextlib.contextmanager
def bench_stack(registry_env: Callable[[int], dict[str, str]] | None = None,
                **env: str) -> Iterator[tuple[Registry, Stack]]:
    """The registry image from TEST_REGISTRY_IMAGE, or as scripts/provision.sh provides it; `env` goes to the
    API and the worker. `registry_env(api_port)`: the registry's extra environment, for one that sends its
    notifications to the API (whose port is chosen first)."""
    image = os.environ.get("TEST_REGISTRY_IMAGE") or subprocess.run(
        [str(ROOT / "scripts/provision.sh")], check=True, capture_output=True, text=True).stdout.split()[-1]
    port, workdir = free_port(), tempfile.mkdtemp(prefix="rj-bench-redis-")
    redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--dir", workdir], stdout=subprocess.DEVNULL)
    registry: Registry | None = None
    stack: Stack | None = None
    try:
        conn = redis.Redis(port=port)
        images.wait_until(lambda: pings(conn), 20)
        api_port = free_port()
        registry = start_registry(docker.from_env(), image, **(registry_env(api_port) if registry_env else {}))
        stack = start_stack(registry, f"redis://127.0.0.1:{port}/0", conn, port=api_port, **env)
        yield registry, stack
    finally:
        try:
            if stack is not None:
                stack.stop()
            if registry is not None:  # a 40,000-tag volume takes the engine past docker-py's default 60 s
                docker.from_env(timeout=900).api.remove_container(registry.container.id, v=True, force=True)
        finally:
            redis_proc.terminate()
            shutil.rmtree(workdir, ignore_errors=True)


def load() -> str:
    """The 1- and 5-minute load averages, printed next to every figure (this machine is shared)."""
    one, five, _ = os.getloadavg()
    return f"{one:.2f} {five:.2f}"


def run_sizes(description: str, run_size: Callable[[int, int, float], dict[str, Any]],
              default_repos: list[int]) -> list[dict[str, Any]]:
    """The window benchmarks' command line (--repos N..., --tags, --grace) and their loop: one registry size
    after another, each result printed as a JSON line with the load before and after."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repos", type=int, nargs="+", default=default_repos)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--grace", type=float, default=10.0, help="JANITOR_UPLOAD_GRACE for the service")
    args = parser.parse_args()
    results = []
    for repos in args.repos:
        before = load()
        result = run_size(repos, args.tags, args.grace)
        result["loadavg_before_after"] = [before, load()]
        results.append(result)
        print(json.dumps(result), flush=True)
    print()
    return results
