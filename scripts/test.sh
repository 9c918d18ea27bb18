#!/usr/bin/env bash
# README command 2: provision a fresh Debian machine (packages, Docker engine, registry image), install the
# project in .venv, and run every test against the real registry, Redis and Docker engine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

image="$(scripts/provision.sh | tail -n 1)"
export TEST_REGISTRY_IMAGE="$image"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"
