#!/bin/bash
# Build the .deb from the build tree into a temporary directory and check it with lintian
# (default profile): no error, no warning, no hardening tag (those are info-level), and a
# changelog whose latest version is the package's. Prints lintian's full output.
# Usage: test_lintian.sh BUILD_DIR. Exit 77 (skipped) without lintian, unless CI=true.
set -euo pipefail

build=${1:?usage: test_lintian.sh BUILD_DIR}

skip() {
    if [ "${CI:-}" = true ]; then
        echo "FAIL: $* (CI=true: missing tools fail the test)"
        exit 1
    fi
    echo "SKIP: $*"
    exit 77
}
command -v lintian >/dev/null || skip "lintian is not installed (apt-get install lintian)"
command -v cpack >/dev/null || skip "cpack is not installed"
command -v dpkg-deb >/dev/null || skip "dpkg-deb is not installed"

work=$(mktemp -d /tmp/clusterd-package.XXXXXX)
trap 'rm -rf "$work"' EXIT

cd "$build"
if ! cpack -G DEB -B "$work" >"$work/cpack.log" 2>&1; then
    cat "$work/cpack.log"
    echo "FAIL: cpack -G DEB"
    exit 1
fi
deb=$(ls "$work"/clusterd_*.deb)
echo "package: $(basename "$deb")"

failed=0
# The changelog (changelog.gz for a native version, changelog.Debian.gz with a Debian
# revision) must describe the version being packaged.
version=$(dpkg-deb -f "$deb" Version)
mkdir "$work/root"
dpkg-deb -x "$deb" "$work/root"
changelog=$(ls "$work"/root/usr/share/doc/clusterd/changelog*.gz)
top=$(zcat "$changelog" | head -1)
if [[ $top != "clusterd ($version) "* ]]; then
    echo "FAIL: $(basename "$changelog") starts with \"$top\", the package version is $version"
    failed=1
fi

# -I: info tags too, so the hardening tags (info) are seen; they fail the test as well.
echo "lintian -I --fail-on error,warning $(basename "$deb"):"
set +e
lintian -I --fail-on error,warning "$deb" >"$work/lintian.out" 2>"$work/lintian.err"
rc=$?
set -e
cat "$work/lintian.out"
grep -v "running with root privileges" "$work/lintian.err" || true
if [ $rc -ne 0 ]; then
    echo "FAIL: lintian exited $rc"
    failed=1
fi
if grep -q "hardening-" "$work/lintian.out"; then
    echo "FAIL: lintian reports missing hardening"
    failed=1
fi
if [ -s "$work/lintian.out" ] && grep -q '^[EW]: ' "$work/lintian.out"; then
    echo "FAIL: lintian errors or warnings"
    failed=1
fi
[ $failed -eq 0 ] && echo "PASS: lintian-clean"
exit $failed
