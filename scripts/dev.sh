#!/usr/bin/env bash
# scripts/dev.sh run  [clusterd run args...]  install what is missing, build, run the daemon
# scripts/dev.sh test [ctest args...]         install what is missing, build, run every test
#
# Idempotent and non-interactive: Debian packages are installed only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(cmake make g++ pkgconf libboost1.81-dev libyaml-cpp-dev libspdlog-dev doctest-dev
          libcli11-dev nlohmann-json3-dev python3)
# Only for the tests: the systemd test builds a .deb (cpack needs file and dpkg-dev) and boots
# it in a container; the fault harness puts keep-alive load on the workers with wrk and counts
# each killed worker's connections with ss (iproute2).
TEST_PACKAGES=(systemd-container debootstrap zstd dpkg-dev file wrk iproute2)
BUILD_DIR=${BUILD_DIR:-build}

install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "== installing missing packages: ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -ne 0 ] && sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}

build() {
    echo "== building in $BUILD_DIR"
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLUSTERD_WERROR=ON >/dev/null
    cmake --build "$BUILD_DIR" -j "$(nproc)"
}

case "${1:-}" in
    run)
        shift
        install_missing "${PACKAGES[@]}"
        build
        echo "== $BUILD_DIR/bin/clusterd run $*"
        exec "$BUILD_DIR/bin/clusterd" run "$@"
        ;;
    test)
        shift
        install_missing "${PACKAGES[@]}" "${TEST_PACKAGES[@]}"
        build
        echo "== ctest"
        exec ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" "$@"
        ;;
    *)
        echo "usage: scripts/dev.sh run [clusterd run options] | test [ctest options]" >&2
        exit 2
        ;;
esac
