"""What one Docker operation the janitor makes costs this machine, with and without the engine's default
seccomp filter on the registry container.

The whole suite is CPU-bound, and a window reads and writes the registry's storage through execs (`find`,
`rm`, `garbage-collect`) and restarts the container twice; the machine's CPU (/proc/stat busy time: the engine,
containerd, runc and the process itself) is what each costs. The tests' registries run without the filter
(tests/conftest.TEST_SECURITY_OPT); this shows why.

    .venv/bin/python scripts/bench_docker_ops.py [--image IMAGE] [--execs 40] [--restarts 10]
"""

from __future__ import annotations

import argparse
import time

import docker


def busy() -> float:
    """Seconds of CPU the whole machine spent (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / 100


def measure(client: docker.DockerClient, image: str, execs: int, restarts: int, security_opt: list[str] | None) -> dict[str, float]:
    container = client.containers.run(image, detach=True, network_mode="host", security_opt=security_opt,
                                      environment={"REGISTRY_HTTP_ADDR": "127.0.0.1:0"})
    try:
        time.sleep(1)
        b0, t0 = busy(), time.monotonic()
        for _ in range(execs):
            container.exec_run(["true"])
        b1, t1 = busy(), time.monotonic()
        for _ in range(restarts):
            container.restart(timeout=5)
        b2 = busy()
        return {"exec_cpu_ms": (b1 - b0) / execs * 1000, "exec_wall_ms": (t1 - t0) / execs * 1000,
                "restart_cpu_ms": (b2 - b1) / restarts * 1000}
    finally:
        container.remove(force=True, v=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="registry-janitor/test-registry:2.8.2")
    parser.add_argument("--execs", type=int, default=40)
    parser.add_argument("--restarts", type=int, default=10)
    args = parser.parse_args()
    client = docker.from_env()
    for label, opt in (("default seccomp filter", None), ("seccomp=unconfined", ["seccomp=unconfined"])):
        r = measure(client, args.image, args.execs, args.restarts, opt)
        print(f"{label:24} exec {r['exec_cpu_ms']:4.0f} ms CPU ({r['exec_wall_ms']:.0f} ms wall), "
              f"restart {r['restart_cpu_ms']:4.0f} ms CPU")


if __name__ == "__main__":
    main()
