#!/usr/bin/env bash
# Build a CNCF distribution registry image without pulling anything from a hub.
# Why: this machine cannot reach Docker Hub, so `registry:2` can't be pulled.
# We assemble an equivalent rootfs from Debian's docker-registry package
# (/usr/bin/docker-registry -> /bin/registry) plus busybox-static (shell and
# coreutils, needed by `docker exec ... find/stat/...`), laid out like the
# official registry:2 image, and `docker import` it.
# Usage: scripts/build-registry-image.sh [IMAGE_NAME]
set -euo pipefail

IMAGE="${1:-registry-janitor/test-registry:2.8.2}"
REGISTRY_BIN=/usr/bin/docker-registry
BUSYBOX=/bin/busybox

for f in "$REGISTRY_BIN" "$BUSYBOX"; do
    [ -x "$f" ] || { echo "missing $f (apt-get install docker-registry busybox-static)" >&2; exit 1; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"
mkdir -p "$ROOT"/{bin,etc/docker/registry,var/lib/registry,tmp,root,proc,sys,dev}
chmod 1777 "$ROOT/tmp"

# Registry binary and the shared libraries ldd reports (libc + dynamic loader).
cp "$REGISTRY_BIN" "$ROOT/bin/registry"
ldd "$REGISTRY_BIN" | grep -oE '/[^ ]+' | while read -r lib; do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done

# busybox with a symlink for every applet (sh, find, stat, wget, ...).
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
done

# Minimal passwd/group so `id`, `ls -l` etc. resolve root.
echo 'root:x:0:0:root:/root:/bin/sh' > "$ROOT/etc/passwd"
echo 'root:x:0:' > "$ROOT/etc/group"

# Same config and entrypoint as the official registry:2 image.
cat > "$ROOT/etc/docker/registry/config.yml" <<'YAML'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
YAML

cat > "$ROOT/entrypoint.sh" <<'SH'
#!/bin/sh

set -e

case "$1" in
    *.yaml|*.yml) set -- registry serve "$@" ;;
    serve|garbage-collect|help|-*) set -- registry "$@" ;;
esac

exec "$@"
SH
chmod 755 "$ROOT/entrypoint.sh"

tar -C "$ROOT" --numeric-owner --owner=0 --group=0 -cf "$WORK/rootfs.tar" .
docker import \
    --change 'ENTRYPOINT ["/entrypoint.sh"]' \
    --change 'CMD ["/etc/docker/registry/config.yml"]' \
    --change 'VOLUME ["/var/lib/registry"]' \
    --change 'EXPOSE 5000' \
    --change 'ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin' \
    "$WORK/rootfs.tar" "$IMAGE" >&2
echo "built $IMAGE" >&2
