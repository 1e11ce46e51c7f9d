#!/usr/bin/env bash
# scripts/container.sh build   build the clusterd image here, with no image registry
# scripts/container.sh base    only the local Debian 12 base image
#
# build: the base, then the .deb (scripts/dev.sh package in $BUILD_DIR), then
# `podman build --build-arg BASE=<base> -f etc/container/Containerfile`, tagged
# localhost/clusterd:VERSION and localhost/clusterd:latest, labelled with a hash of what it
# is made of: when an image with that hash exists, nothing is built.
#
# base: a minbase Debian 12 rootfs debootstrapped from the mirror apt already uses (~2 min
# here, as tests/systemd/rootfs.sh does), cached as a zstd tarball in $CLUSTERD_ROOTFS_CACHE
# (default /var/cache/clusterd-test, beside the systemd test's) and imported once with
# `podman import` as $CLUSTERD_BASE_TAG (localhost/clusterd-base:bookworm).
#
# Environment:
#   BASE=debian:bookworm-slim  use that base instead of building one (a registry or a mirror)
#   ENGINE=docker              build with docker (default podman)
#   ENGINE_FLAGS="--runtime runc --cgroup-manager cgroupfs"
#                              the engine's global options (where crun refuses the host's
#                              cgroups, see README "Run in a container")
#   BUILD_DIR=build-container  where the .deb is built (default build-container, so that
#                              build/ is left alone)
#   CLUSTERD_IMAGE=TAG         the image's name (default localhost/clusterd)
#   SKIP_PACKAGE=1             use the .deb already in $BUILD_DIR/package
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${ENGINE:-podman}
read -r -a engine_flags <<<"${ENGINE_FLAGS:-}"
engine() { "$ENGINE" "${engine_flags[@]}" "$@"; }
export BUILD_DIR=${BUILD_DIR:-build-container}
CLUSTERD_IMAGE=${CLUSTERD_IMAGE:-localhost/clusterd}
CLUSTERD_BASE_TAG=${CLUSTERD_BASE_TAG:-localhost/clusterd-base:bookworm}
cache=${CLUSTERD_ROOTFS_CACHE:-/var/cache/clusterd-test}
tarball=$cache/bookworm-minbase-v1.tar.zst

need() { command -v "$1" >/dev/null || { echo "container.sh: $1 not found${2:+ ($2)}" >&2; exit 1; }; }

# The minbase rootfs tarball, debootstrapped once. Like debian:bookworm-slim: no docs, man
# pages or locales, no apt lists (the Containerfile runs apt-get update).
rootfs_tarball() {
    [ -f "$tarball" ] && return 0
    need debootstrap "apt-get install debootstrap"
    need zstd "apt-get install zstd"
    local mirror tmp
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null ||
             true)
    mirror=${mirror:-http://deb.debian.org/debian}
    tmp=$(mktemp -d /var/tmp/clusterd-minbase.XXXXXX)
    echo "== base: debootstrap --variant=minbase bookworm from $mirror (cached in $tarball)"
    debootstrap --variant=minbase bookworm "$tmp" "$mirror" >/dev/null
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* \
        "$tmp"/usr/share/doc "$tmp"/usr/share/man "$tmp"/usr/share/locale
    # The runtime provides these; the host's must not be baked in.
    : >"$tmp/etc/resolv.conf"
    rm -f "$tmp/etc/hostname"
    mkdir -p "$cache"
    tar -C "$tmp" --numeric-owner -I zstd -cf "$tarball.new" .
    mv "$tarball.new" "$tarball"
    rm -rf "$tmp"
}

# The base image: imported from the tarball unless the engine already has it.
base_image() {
    if engine image inspect "$CLUSTERD_BASE_TAG" >/dev/null 2>&1; then
        echo "== base: $CLUSTERD_BASE_TAG (already imported)"
        return 0
    fi
    rootfs_tarball
    echo "== base: $ENGINE import $tarball as $CLUSTERD_BASE_TAG"
    zstd -dc "$tarball" | engine import --quiet --change 'CMD ["bash"]' - "$CLUSTERD_BASE_TAG" >/dev/null
}

build_image() {
    local base=${BASE:-}
    if [ -z "$base" ]; then
        base_image
        base=$CLUSTERD_BASE_TAG
    fi
    [ -n "${SKIP_PACKAGE:-}" ] || ./scripts/dev.sh package
    local deb
    deb=$(ls -t "$BUILD_DIR"/package/clusterd_*.deb 2>/dev/null | head -1 || true)
    [ -n "$deb" ] || { echo "container.sh: no .deb in $BUILD_DIR/package" >&2; exit 1; }
    local version key
    version=$(dpkg-deb -f "$deb" Version)
    # What the image is made of: the package's files and fields (not the .deb's bytes, whose
    # timestamps change with every cpack), this folder's files and the base. An image that
    # carries the same key is up to date and is kept as it is.
    key=$({ dpkg-deb --fsys-tarfile "$deb" | tar -xOf -
            dpkg-deb -f "$deb"
            cat etc/container/Containerfile etc/container/clusterd.yaml etc/container/healthcheck.sh
            engine image inspect --format '{{.Id}}' "$base" 2>/dev/null || echo "$base"
          } | sha256sum | cut -c1-32)
    if [ "$(engine image inspect --format '{{index .Config.Labels "clusterd.build-key"}}' \
            "$CLUSTERD_IMAGE:$version" 2>/dev/null)" = "$key" ]; then
        engine tag "$CLUSTERD_IMAGE:$version" "$CLUSTERD_IMAGE:latest"
        echo "== $CLUSTERD_IMAGE:$version is up to date with $deb (build key $key)"
        return 0
    fi
    # A context of exactly what the Containerfile copies: nothing else of the tree is sent.
    local context=$BUILD_DIR/container-context
    rm -rf "$context"
    mkdir -p "$context"
    cp "$deb" "$context/clusterd.deb"
    cp etc/container/clusterd.yaml etc/container/healthcheck.sh "$context/"
    local format=()
    [ "$ENGINE" = podman ] && format=(--format docker)  # OCI images drop HEALTHCHECK
    echo "== $ENGINE build $CLUSTERD_IMAGE:$version from $base"
    engine build "${format[@]}" --build-arg "BASE=$base" --label "clusterd.build-key=$key" \
        -f etc/container/Containerfile -t "$CLUSTERD_IMAGE:$version" -t "$CLUSTERD_IMAGE:latest" \
        "$context"
    echo "== built $CLUSTERD_IMAGE:$version ($CLUSTERD_IMAGE:latest)"
}

case "${1:-}" in
    build) need "$ENGINE"; build_image ;;
    base) need "$ENGINE"; base_image ;;
    *)
        echo "usage: scripts/container.sh build | base" >&2
        exit 2
        ;;
esac
