#!/usr/bin/env bash
# Base images for hosts that cannot reach Docker Hub (air-gapped sites, mirrors-only networks):
# stand-ins for python:3.11-slim-bookworm and redis:7-alpine, built from the Debian mirror that
# apt on this host already uses. The project's Dockerfiles and compose file then build and run
# unchanged with
#   PYTHON_IMAGE=mlqueue-base-python:bookworm REDIS_IMAGE=mlqueue-base-redis:bookworm
# Needs root (debootstrap), a running Docker engine and about 2 minutes; installs debootstrap
# with apt when missing. An image that already exists is kept (FORCE=1 rebuilds it).
#
# Environment: OFFLINE_MIRROR (default: the first Debian URI in /etc/apt/sources.list*),
# OFFLINE_SUITE (bookworm: Python 3.11, Redis 7.0), OFFLINE_SCRATCH (default /tmp/mlqueue-bases),
# DOCKER (default docker).
set -euo pipefail

SUITE=${OFFLINE_SUITE:-bookworm}
PYTHON_TAG=mlqueue-base-python:$SUITE
REDIS_TAG=mlqueue-base-redis:$SUITE
SCRATCH=${OFFLINE_SCRATCH:-/tmp/mlqueue-bases}
DOCKER=${DOCKER:-docker}
# The bundle the host's own pip trusts (Debian's path); copied into the images so pip inside a
# build trusts the same certificate authorities (a TLS-inspecting proxy's included).
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

say() { echo "offline-bases: $*" >&2; }

[ "$(id -u)" = 0 ] || { say "needs root (debootstrap)"; exit 1; }
"$DOCKER" info >/dev/null 2>&1 || { say "no Docker engine answers; start dockerd first"; exit 1; }
if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

mirror() {
    # deb822 files ("URIs: ...") and one-line files ("deb [opts] URI suite ..."), Debian only.
    if [ -n "${OFFLINE_MIRROR:-}" ]; then
        echo "$OFFLINE_MIRROR"
        return
    fi
    { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null || true; } |
        awk '/^URIs:/ { print $2 } /^deb / { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' |
        { grep -E '/debian/?$' || true; } | head -n 1
}
MIRROR=$(mirror)
[ -n "$MIRROR" ] || { say "no Debian mirror in /etc/apt/sources.list*; set OFFLINE_MIRROR"; exit 1; }

# debootstrap a minimal root file system with PACKAGES into $SCRATCH/NAME (debs cached between runs).
bootstrap() {
    local name=$1 packages=$2 rootfs=$SCRATCH/$1
    rm -rf "$rootfs"
    mkdir -p "$rootfs" "$SCRATCH/debs"
    say "debootstrap $name ($packages)"
    debootstrap --variant=minbase --cache-dir="$SCRATCH/debs" --include="$packages" \
        "$SUITE" "$rootfs" "$MIRROR" >"$SCRATCH/$name.log" 2>&1 ||
        { tail -n 20 "$SCRATCH/$name.log" >&2; exit 1; }
    if [ -d "$rootfs${CA_BUNDLE%/*}" ]; then cp "$CA_BUNDLE" "$rootfs$CA_BUNDLE"; fi
    # What slim images drop too: package lists, caches, docs.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
}

# tar the root file system of NAME into image TAG, with Dockerfile-style --change lines.
import() {
    local name=$1 tag=$2
    shift 2
    local changes=()
    for change in "$@"; do changes+=(--change "$change"); done
    tar -C "$SCRATCH/$name" --numeric-owner -c . | "$DOCKER" import "${changes[@]}" - "$tag" >/dev/null
    rm -rf "${SCRATCH:?}/$name"
    say "built $tag ($("$DOCKER" image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
}

wanted() { [ "${FORCE:-0}" = 1 ] || ! "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

if wanted "$PYTHON_TAG"; then
    # passwd: the Dockerfiles create their user with groupadd/useradd.
    bootstrap python python3,python3-venv,ca-certificates,passwd
    ln -sf python3 "$SCRATCH/python/usr/bin/python"
    import python "$PYTHON_TAG" "ENV PIP_CERT=$CA_BUNDLE" 'CMD ["python3"]'
else
    say "$PYTHON_TAG exists"
fi

if wanted "$REDIS_TAG"; then
    bootstrap redis redis-server,redis-tools
    rootfs=$SCRATCH/redis
    # Like the official image: data in /data, owned by redis, and `--protected-mode no` appended
    # to redis-server, or other containers on the network are DENIED.
    mkdir -p "$rootfs/data"
    chroot "$rootfs" chown redis:redis /data
    cat >"$rootfs/usr/local/bin/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
set -e
if [ "${1:-}" = redis-server ]; then
    shift
    set -- redis-server "$@" --protected-mode no
fi
exec "$@"
ENTRYPOINT
    chmod 755 "$rootfs/usr/local/bin/docker-entrypoint.sh"
    import redis "$REDIS_TAG" 'WORKDIR /data' 'USER redis' 'EXPOSE 6379' \
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["redis-server"]'
else
    say "$REDIS_TAG exists"
fi

echo "PYTHON_IMAGE=$PYTHON_TAG"
echo "REDIS_IMAGE=$REDIS_TAG"
