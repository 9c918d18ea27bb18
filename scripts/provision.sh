#!/usr/bin/env bash
# Prepare this machine for registry-janitor's integration tests. Idempotent.
# - installs missing Debian packages (docker engine, redis-server, skopeo,
#   docker-registry + busybox-static for the locally built registry image, docker-compose and debootstrap
#   for the compose test's stand-in images, scripts/build-compose-images.sh);
# - starts a Docker engine if none answers (never stops a running one);
# - makes sure a registry image exists (registry:2 if present locally,
#   otherwise one built by build-registry-image.sh, since no hub is reachable).
# Redis is only installed: tests start their own redis-server processes.
# Prints the registry image name as the last line of stdout; logs go to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${REGISTRY_JANITOR_STATE:-/tmp/registry-janitor}"
BUILT_IMAGE="registry-janitor/test-registry:2.8.2"
PACKAGES=(docker.io redis-server skopeo docker-registry busybox-static iptables docker-compose debootstrap)

log() { echo "provision: $*" >&2; }

# 1. Packages.
missing=()
for pkg in "${PACKAGES[@]}"; do
    # "install ok installed" only: a removed package keeps a dpkg record (config-files) that dpkg -s accepts.
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
else
    log "packages already installed"
fi

# 2. Docker engine. Without a running engine, start one with no bridge and no
#    iptables rules: test containers use --network host only.
if docker info >/dev/null 2>&1; then
    log "docker engine already running"
else
    mkdir -p "$STATE"
    log "starting dockerd (log: $STATE/dockerd.log)"
    nohup dockerd --bridge=none --iptables=false >"$STATE/dockerd.log" 2>&1 &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { log "dockerd did not come up; see $STATE/dockerd.log"; exit 1; }
    log "docker engine ready"
fi

# 3. Registry image.
if docker image inspect registry:2 >/dev/null 2>&1; then
    image=registry:2
elif docker image inspect "$BUILT_IMAGE" >/dev/null 2>&1; then
    image="$BUILT_IMAGE"
else
    log "building $BUILT_IMAGE"
    "$HERE/build-registry-image.sh" "$BUILT_IMAGE" >&2
    image="$BUILT_IMAGE"
fi
log "registry image: $image"
echo "$image"
