#!/usr/bin/env bash
# The fast tier: pure rules and units, no Docker engine and no Redis server (tests using a real-server fixture are
# marked e2e by tests/conftest.py and left out). Under a minute; run it while editing. scripts/test.sh runs all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
# Where PYTHONDONTWRITEBYTECODE is set (this machine sets it), every process a test starts (API, worker, CLI)
# would compile the project's modules again: about 0.1 s of CPU each time. Compiled once here instead.
.venv/bin/python -m compileall -q -j 0 janitor service worker cli gunicorn.conf.py >/dev/null
# Two processes: a third of the tier's time is waiting (lease expiries, the S3 endpoint, the TypeScript compiler).
exec .venv/bin/python -m pytest -m "not e2e" -q -n "${TEST_WORKERS:-2}" --dist worksteal "$@"
