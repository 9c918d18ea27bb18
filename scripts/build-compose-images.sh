#!/usr/bin/env bash
# Build local stand-ins for the images docker-compose.yml names, without pulling anything from a hub.
# Idempotent: the Debian base images are built once and reused; the janitor image is rebuilt each time
# (Docker's build cache makes that quick while the code is unchanged).
#
#   registry-janitor/debian-base:bookworm    debootstrap --variant=minbase, `docker import`ed
#   registry-janitor/debian-python:bookworm  + Debian's python3, python3-venv, ca-certificates
#                                            (and the CA certificates this machine trusts, so pip inside
#                                            `docker build` reaches PyPI the way pip on this machine does)
#   registry-janitor/redis:bookworm          + Debian's redis-server          (stand-in for redis:7)
#   registry-janitor/test-registry:2.8.2     scripts/build-registry-image.sh  (stand-in for registry:2)
#   registry-janitor/janitor:compose         the project's Dockerfile, BASE_IMAGE=debian-python above
#
# Every build runs with --network host: this engine has no bridge network (dockerd --bridge=none).
# Packages come from the Debian mirror of this machine's apt sources (DEBIAN_MIRROR overrides it) and from
# PyPI as this machine's pip is configured (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and PIP_TRUSTED_HOST are
# passed on as build arguments when set).
#
# Usage: scripts/build-compose-images.sh   (prints `NAME=image` lines for the compose override on stdout)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SUITE="${DEBIAN_SUITE:-bookworm}"
BASE_IMAGE="registry-janitor/debian-base:$SUITE"
PYTHON_IMAGE="registry-janitor/debian-python:$SUITE"
REDIS_IMAGE="registry-janitor/redis:$SUITE"
REGISTRY_IMAGE="${TEST_REGISTRY_IMAGE:-registry-janitor/test-registry:2.8.2}"
JANITOR_IMAGE="${JANITOR_IMAGE:-registry-janitor/janitor:compose}"

log() { echo "build-compose-images: $*" >&2; }
exists() { docker image inspect "$1" >/dev/null 2>&1; }

# One build at a time on this machine: scripts/test.sh starts one in the background while it installs the
# project, and the compose test's own call waits here for it, then finds every image built.
STATE="${REGISTRY_JANITOR_STATE:-/tmp/registry-janitor}"
mkdir -p "$STATE"
exec 9>"$STATE/compose-build.lock"
flock 9

# The first deb URI of this machine's apt sources (one-line or deb822 format), else Debian's default.
debian_mirror() {
    local uri
    uri="$( (grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                 | grep -E '/debian/? ' | awk '{print $2}';
             grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
                 | awk '{print $2}' | grep -E '/debian/?$') | head -n 1)"
    echo "${DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# 1. Debian base from debootstrap.
if exists "$BASE_IMAGE"; then
    log "$BASE_IMAGE exists"
else
    command -v debootstrap >/dev/null || { log "debootstrap missing (apt-get install debootstrap)"; exit 1; }
    mirror="$(debian_mirror)"
    log "debootstrap $SUITE from $mirror"
    start=$SECONDS
    debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$mirror" >&2
    # Daemons installed later (redis-server) must not be started by their maintainer scripts.
    printf '#!/bin/sh\nexit 101\n' > "$WORK/rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$WORK/rootfs/usr/sbin/policy-rc.d"
    rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
    tar -C "$WORK/rootfs" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        - "$BASE_IMAGE" >&2
    rm -rf "$WORK/rootfs"
    log "built $BASE_IMAGE in $((SECONDS - start))s"
fi

apt_dockerfile() {  # apt_dockerfile PACKAGE... : a Dockerfile installing Debian packages on the base
    cat <<EOF
FROM $BASE_IMAGE
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \\
    && apt-get install -y --no-install-recommends $* \\
    && rm -rf /var/lib/apt/lists/*
EOF
}

# 2. Python base for the janitor's Dockerfile: Debian's python3 with venv, and this machine's extra CAs.
if exists "$PYTHON_IMAGE"; then
    log "$PYTHON_IMAGE exists"
else
    ctx="$WORK/python"
    mkdir -p "$ctx/ca"
    # Certificates this machine added to its trust store (e.g. an egress proxy's CA): pip in the image
    # must trust what pip here trusts.
    for crt in /usr/local/share/ca-certificates/*.crt; do
        [ -e "$crt" ] && cp "$crt" "$ctx/ca/"
    done
    { apt_dockerfile python3 python3-venv ca-certificates
      echo 'COPY ca/ /usr/local/share/ca-certificates/'
      echo 'RUN update-ca-certificates'
      # Debian's pip trusts the system store; say so for any other TLS client too.
      echo 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt'
      echo 'CMD ["python3"]'
    } > "$ctx/Dockerfile"
    start=$SECONDS
    docker build --network host -t "$PYTHON_IMAGE" "$ctx" >&2
    log "built $PYTHON_IMAGE in $((SECONDS - start))s"
fi

# 3. Redis stand-in, laid out like redis:7 (data in /data, redis-server the command).
if exists "$REDIS_IMAGE"; then
    log "$REDIS_IMAGE exists"
else
    ctx="$WORK/redis"
    mkdir -p "$ctx"
    { apt_dockerfile redis-server
      echo 'RUN mkdir -p /data'
      echo 'WORKDIR /data'
      echo 'VOLUME /data'
      echo 'EXPOSE 6379'
      # Debian's /etc/redis/redis.conf daemonizes and binds to localhost: run with the defaults, like redis:7.
      echo 'CMD ["redis-server"]'
    } > "$ctx/Dockerfile"
    start=$SECONDS
    docker build --network host -t "$REDIS_IMAGE" "$ctx" >&2
    log "built $REDIS_IMAGE in $((SECONDS - start))s"
fi

# 4. Registry stand-in.
if exists "$REGISTRY_IMAGE"; then
    log "$REGISTRY_IMAGE exists"
else
    "$HERE/build-registry-image.sh" "$REGISTRY_IMAGE"
fi

# 5. The janitor image from the project's Dockerfile, on the Debian python base.
build_args=(--build-arg "BASE_IMAGE=$PYTHON_IMAGE")
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
    # The environment's value, else pip.conf's [global] index-url / extra-index-url / trusted-host.
    value="${!var:-}"
    if [ -z "$value" ] && command -v pip3 >/dev/null; then
        key="$(echo "${var#PIP_}" | tr 'A-Z_' 'a-z-')"
        value="$(pip3 config get "global.$key" 2>/dev/null || true)"
    fi
    # Indexes on this machine's disk (file://) do not exist inside the build: only network ones go in.
    [ "$var" = PIP_TRUSTED_HOST ] || value="$(tr ' ' '\n' <<<"$value" | grep -E '^https?://' | xargs || true)"
    if [ -n "$value" ]; then build_args+=(--build-arg "$var=$value"); fi
done
start=$SECONDS
docker build --network host "${build_args[@]}" -t "$JANITOR_IMAGE" "$ROOT" >&2
log "built $JANITOR_IMAGE in $((SECONDS - start))s"

echo "BASE_IMAGE=$BASE_IMAGE"
echo "PYTHON_IMAGE=$PYTHON_IMAGE"
echo "REDIS_IMAGE=$REDIS_IMAGE"
echo "REGISTRY_IMAGE=$REGISTRY_IMAGE"
echo "JANITOR_IMAGE=$JANITOR_IMAGE"
