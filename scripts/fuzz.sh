#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [ctest args...]: build the libFuzzer targets with clang (ASan and
# UBSan on every object) in build-fuzz/ and run each for SECONDS (default 60, 600 for the
# long run: scripts/fuzz.sh 600). Needs clang and libclang-rt-dev (scripts/dev.sh test
# installs them). A failing input is left in build-fuzz/tests/fuzz/work/<target>/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
FUZZ_DIR=${FUZZ_DIR:-build-fuzz}
echo "== building the fuzz targets in $FUZZ_DIR"
CC=clang CXX=clang++ cmake -S . -B "$FUZZ_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCLUSTERD_FUZZ=ON -DCLUSTERD_UNITY=OFF -DCLUSTERD_FUZZ_SECONDS="$seconds" >/dev/null
cmake --build "$FUZZ_DIR" -j "$(nproc)" --target clusterd-fuzzers
echo "== fuzzing, ${seconds}s per target"
status=0
ctest --test-dir "$FUZZ_DIR" --output-on-failure -L fuzz -j "$(nproc)" "$@" || status=$?
# What each target did in this run, from libFuzzer's final stats.
echo "== fuzz summary (${seconds}s per target)"
for log in "$FUZZ_DIR"/tests/fuzz/work/*/last.log; do
    [ -f "$log" ] || continue
    name=$(basename "$(dirname "$log")")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "$(dirname "$log")/corpus" -type f | wc -l)
    printf '%-16s %12s runs %8s/s  corpus %6s inputs\n' "$name" "${runs:-?}" "${rate:-?}" "$corpus"
done
exit "$status"
