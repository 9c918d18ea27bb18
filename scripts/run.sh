#!/usr/bin/env bash
# README command 1: run registry-janitor on this machine (Debian), with sensible defaults.
# - installs the project into .venv (python3 -m venv; pip install -e .);
# - without REDIS_URL, installs redis-server if missing and runs a private one on 127.0.0.1
#   (port 6379 if free, else any free port; no persistence; data in the state dir);
# - runs the worker (`python -m worker`) in the background and gunicorn in the foreground on
#   127.0.0.1:${PORT:-8000};
# - on exit (Ctrl-C, SIGTERM, or either process dying) stops the api, the worker and the private redis.
# - without REGISTRY_URL, also runs a local registry container for trying things out: deletes enabled, the
#   image scripts/provision.sh provides, network host on 127.0.0.1:${REGISTRY_PORT:-5000} (a free port if
#   that one is taken), named ${REGISTRY_CONTAINER:-registry-janitor-registry}. On exit it is stopped, not
#   removed, so what you pushed is still there next time (`docker rm -f -v <name>` throws it away).
#   With REGISTRY_URL set, no registry is started; nor with REGISTRIES_FILE (many registries, see docs/operations.md).
# Configuration is the environment: REGISTRY_URL, REGISTRY_CONTAINER, API_TOKENS, ... (see docs/operations.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${PORT:-8000}"
STATE="${REGISTRY_JANITOR_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/registry-janitor}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

log() { echo "run: $*" >&2; }

apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { log "need root (or sudo) to install: $*"; exit 1; }
        sudo=(sudo)
    fi
    log "installing with apt: $*"
    "${sudo[@]}" apt-get update >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "$@" >&2
}

port_free() {
    "$PY" - "$1" <<'PYEOF'
import socket, sys
with socket.socket() as s:
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sys.exit(1)
PYEOF
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# -- 1. Python environment --------------------------------------------------------------------------------------
if [ ! -x "$PY" ]; then
    if ! command -v python3 >/dev/null 2>&1; then
        apt_install python3 python3-venv
    elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
STAMP="$VENV/.registry-janitor-installed"
needs_install() { [ ! -e "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; }
if needs_install; then
    # Two run.sh started at once on a fresh clone would both install, and pip's writes into the venv collide
    # ("No such file or directory: .venv/bin/registry-janitor"): one installs, the other waits and then sees it done.
    exec 9>"$VENV/.registry-janitor-install.lock"
    flock 9
    if needs_install; then
        log "installing registry-janitor into $VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$ROOT"
        touch "$STAMP"
    fi
    exec 9>&-
fi

# -- 2. Processes we start, and how they stop --------------------------------------------------------------------
api_pid=""
worker_pid=""
redis_pid=""
local_registry=""  # the container this script started (and stops on exit)

# shellcheck disable=SC2317  # stop and cleanup run from the traps
stop() {  # stop PID NAME SECONDS: SIGTERM, then SIGKILL to its process group after SECONDS
    local pid="$1" name="$2" seconds="$3" i
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < seconds * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "$name did not stop within ${seconds}s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317
cleanup() {
    trap - EXIT INT TERM
    stop "$api_pid" "gunicorn" 30
    # A worker in the middle of a maintenance window finishes it first (GC included); if it has to be
    # killed, its next start makes the registry writable again.
    stop "$worker_pid" "worker" 120
    if [ -n "$local_registry" ]; then
        log "stopping the local registry container $local_registry (kept, with its data; remove it with: docker rm -f -v $local_registry)"
        docker stop -t 10 "$local_registry" >/dev/null 2>&1 || true
    fi
    stop "$redis_pid" "redis-server" 10
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -- 3. Redis ---------------------------------------------------------------------------------------------------
if [ -z "${REDIS_URL:-}" ]; then
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server
    fi
    redis_port=6379
    port_free "$redis_port" || redis_port="$(free_port)"
    mkdir -p "$STATE/redis"
    log "starting a private redis-server on 127.0.0.1:$redis_port (data: $STATE/redis, not persisted)"
    setsid redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
        --dir "$STATE/redis" --logfile "$STATE/redis/redis.log" &
    redis_pid=$!
    export REDIS_URL="redis://127.0.0.1:$redis_port/0"
    if ! "$PY" - "$REDIS_URL" <<'PYEOF'
import sys, time
import redis
conn = redis.Redis.from_url(sys.argv[1])
for _ in range(100):
    try:
        conn.ping()
        sys.exit(0)
    except redis.RedisError:
        time.sleep(0.1)
sys.exit(1)
PYEOF
    then
        log "redis-server did not start; see $STATE/redis/redis.log"
        exit 1
    fi
fi

# -- 4. The registry: a local one when REGISTRY_URL is unset, else hints about the given one -------------------
LOCAL_LABEL="registry-janitor.local-registry"
if [ -z "${REGISTRY_URL:-}" ] && [ -z "${REGISTRIES_FILE:-}" ]; then
    name="${REGISTRY_CONTAINER:-registry-janitor-registry}"
    image=""
    if ! { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && docker container inspect "$name" >/dev/null 2>&1; }; then
        # A fresh machine: install and start the Docker engine and build the local registry image (as the tests do).
        log "no REGISTRY_URL given: preparing a local registry (Docker engine and image; scripts/provision.sh)"
        if [ "$(id -u)" -eq 0 ]; then
            image="$("$ROOT/scripts/provision.sh" | tail -n 1)"
        elif command -v sudo >/dev/null 2>&1; then
            image="$(sudo "$ROOT/scripts/provision.sh" | tail -n 1)"
        else  # without root it works only where everything is installed and the engine runs
            image="$("$ROOT/scripts/provision.sh" | tail -n 1)" || {
                log "could not prepare Docker without root; run scripts/provision.sh as root, or set REGISTRY_URL"
                exit 1
            }
        fi
    fi
    if docker container inspect "$name" >/dev/null 2>&1; then
        # Only ever reuse a container this script made: never take over someone else's.
        if [ "$(docker container inspect -f "{{index .Config.Labels \"$LOCAL_LABEL\"}}" "$name")" != "1" ]; then
            log "a container named $name exists and was not started by this script; set REGISTRY_CONTAINER to another name"
            exit 1
        fi
        addr="$(docker container inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$name" \
            | sed -n 's/^REGISTRY_HTTP_ADDR=//p')"
        log "starting the local registry container $name again (on $addr; your earlier pushes are kept)"
        docker start "$name" >/dev/null
    else
        [ -n "$image" ] || image="$("$ROOT/scripts/provision.sh" | tail -n 1)"
        registry_port="${REGISTRY_PORT:-5000}"
        port_free "$registry_port" || registry_port="$(free_port)"
        addr="127.0.0.1:$registry_port"
        log "no REGISTRY_URL given: starting a local registry container $name on $addr (image $image, deletes enabled)"
        docker run -d --name "$name" --network host --label "$LOCAL_LABEL=1" \
            -e "REGISTRY_HTTP_ADDR=$addr" -e REGISTRY_STORAGE_DELETE_ENABLED=true "$image" >/dev/null
    fi
    local_registry="$name"
    export REGISTRY_URL="http://$addr" REGISTRY_CONTAINER="$name"
    if ! "$PY" - "$REGISTRY_URL" <<'PYEOF'
import sys, time
import requests
for _ in range(300):
    try:
        if requests.get(sys.argv[1] + "/v2/", timeout=1).status_code < 500:
            sys.exit(0)
    except requests.RequestException:
        pass
    time.sleep(0.1)
sys.exit(1)
PYEOF
    then
        log "the local registry did not answer on $REGISTRY_URL; see: docker logs $name"
        exit 1
    fi
    log "local registry ready: push with e.g. docker push $addr/team/app:1 (localhost registries need no TLS)"
fi
container="${REGISTRY_CONTAINER:-registry}"
[ -n "${REGISTRIES_FILE:-}" ] || "$PY" - "$container" <<'PYEOF' || true
import sys
import docker
try:
    docker.from_env().containers.get(sys.argv[1])
except Exception as exc:  # not found, or no engine: only a hint
    print(f"run: hint: registry container {sys.argv[1]!r} not usable ({type(exc).__name__}); maintenance "
          "windows will fail until REGISTRY_CONTAINER names the registry's container on the Docker engine "
          "(DOCKER_HOST) the worker can reach", file=sys.stderr)
    sys.exit(1)
PYEOF
if [ -z "${API_TOKENS:-}" ]; then
    log "hint: API_TOKENS is unset, so /v1 (deletions included) needs no token; set API_TOKENS=token1,token2"
fi

# -- 5. Worker and API ------------------------------------------------------------------------------------------
if [ -n "${REGISTRIES_FILE:-}" ]; then
    log "registries: those of $REGISTRIES_FILE, redis: $REDIS_URL"
else
    log "registry: ${REGISTRY_URL:-http://localhost:5000} (container $container), redis: $REDIS_URL"
fi
# In its own process group, so a stuck worker can be killed together with its RQ work horse.
setsid "$PY" -m worker &
worker_pid=$!

log "API on http://127.0.0.1:$PORT (docs: http://127.0.0.1:$PORT/docs)"
# Concurrency from gunicorn.conf.py (read from this directory): WEB_CONCURRENCY processes x GUNICORN_THREADS threads.
"$VENV/bin/gunicorn" -b "127.0.0.1:$PORT" "service:create_app()" &
api_pid=$!

# Return when either one ends: the service is not usable without both.
status=0
wait -n "$api_pid" "$worker_pid" || status=$?
if ! kill -0 "$api_pid" 2>/dev/null; then
    log "gunicorn exited (status $status)"
else
    log "the worker exited (status $status)"
fi
exit "$status"
