#!/usr/bin/env bash
# tests/systemd/rootfs.sh DIR: a minimal Debian 12 root with systemd in DIR, for the
# real-systemd test. The first run debootstraps it from the mirror apt already uses
# (~1 min) and caches a zstd tarball under /var/cache/clusterd-test; later runs unpack that.
set -euo pipefail
dir=$1
cache=${CLUSTERD_ROOTFS_CACHE:-/var/cache/clusterd-test}
tarball=$cache/bookworm-systemd-v1.tar.zst
# What the packaged clusterd needs at run time, plus what the test drives it with.
include=systemd,dbus,procps,curl,ca-certificates,libyaml-cpp0.7,libspdlog1.10,libfmt9

if [ ! -f "$tarball" ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null ||
             true)
    mirror=${mirror:-http://deb.debian.org/debian}
    tmp=$(mktemp -d /var/tmp/clusterd-rootfs.XXXXXX)
    echo "rootfs: debootstrap bookworm from $mirror (cached afterwards in $tarball)"
    debootstrap --variant=minbase --include="$include" bookworm "$tmp" "$mirror" >/dev/null
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* \
        "$tmp"/usr/share/doc "$tmp"/usr/share/man "$tmp"/usr/share/locale
    mkdir -p "$cache"
    tar -C "$tmp" -I zstd -cf "$tarball.new" .
    mv "$tarball.new" "$tarball"
    rm -rf "$tmp"
fi
mkdir -p "$dir"
tar -C "$dir" -I zstd -xf "$tarball"
