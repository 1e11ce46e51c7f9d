#!/usr/bin/env bash
# run_fuzzer.sh FUZZER SEEDS WORKDIR SECONDS: run one libFuzzer target for SECONDS on a
# working corpus seeded from SEEDS. A crash, leak, sanitizer report or timeout fails the run;
# the input that caused it is left in WORKDIR/artifacts/ and printed in hex.
set -euo pipefail
fuzzer=$1 seeds=$2 work=$3 seconds=$4
mkdir -p "$work/corpus" "$work/artifacts"
[ -d "$seeds" ] && cp -n "$seeds"/* "$work/corpus/" 2>/dev/null || true
status=0
# libFuzzer reports on stderr; a copy stays in WORKDIR/last.log for scripts/fuzz.sh's summary.
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" \
    2> >(tee "$work/last.log" >&2) || status=$?
wait  # for tee
if [ "$status" -ne 0 ]; then
    for f in "$work"/artifacts/*; do
        [ -f "$f" ] || continue
        echo "== $f"
        od -A x -t x1z "$f" | head -40
    done
fi
exit "$status"
