#!/usr/bin/env bash
# README command 2: provision a fresh Debian machine (packages, Docker engine, registry image), install the
# project in .venv, and run every test against the real registry, Redis and Docker engine, in parallel.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

image="$(scripts/provision.sh | tail -n 1)"
export TEST_REGISTRY_IMAGE="$image"

# The compose test's images (debootstrap and Debian packages: minutes on a fresh machine, mostly waiting on
# downloads) are built in the background from here, while the project installs and the first tests run; the
# test's own call waits for this one (a lock) and finds them built. Its janitor image is tagged as the test
# tags it, per checkout. A failure here is the test's to report: it builds again.
state="${REGISTRY_JANITOR_STATE:-/tmp/registry-janitor}"
mkdir -p "$state"
JANITOR_IMAGE="registry-janitor/janitor:compose-$(printf %s "$PWD" | sha1sum | cut -c1-10)" \
    nohup scripts/build-compose-images.sh >"$state/compose-build.log" 2>&1 &

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
# Where PYTHONDONTWRITEBYTECODE is set (this machine sets it), every process a test starts (API, worker, CLI)
# would compile the project's modules again: about 0.1 s of CPU each time. Compiled once here instead.
.venv/bin/python -m compileall -q -j 0 janitor service worker cli gunicorn.conf.py >/dev/null
# Tests run in parallel (pytest-xdist, TEST_WORKERS processes; `worksteal`: an idle process takes tests queued
# for a busy one, so a file of long tests never holds the run up alone). Every process has its own Redis
# server, and each test its own registry container and ports. Many tests wait part of the time (a schedule's
# period, a lease's TTL, a drain): five processes keep a 2-core machine's CPU 98% busy over a run, four left
# about 8% of it idle. The suite's time is then the CPU its real servers use. TEST_WORKERS=0: serial.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-5}" --dist worksteal "$@"
