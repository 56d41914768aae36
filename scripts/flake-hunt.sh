#!/usr/bin/env bash
# The flake hunt (issue 26): runs the integration suite on both engines N times in a row (3 by
# default) while as many busy loops as the machine has cores keep it loaded, as CI's machine is
# while builds run, and tallies every test that failed even once. A test that failed once is a
# finding: fix it at its cause, never with a longer sleep or a retried assertion.
#
# Usage: scripts/flake-hunt.sh [runs]      (writes target/flake-hunt/run-<i>-<engine>.log)
# Needs what scripts/test.sh installs (scripts/test-deps.sh) and, for the PostgreSQL runs, a
# server on 127.0.0.1:5432 (skipped with a notice otherwise). Takes about 12 minutes a run on
# 2 cores.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs="${1:-3}"
out="${CARGO_TARGET_DIR:-$PWD/target}/flake-hunt"
mkdir -p "$out"
cargo test --test it --no-run --quiet || exit 1

# The load: one busy loop per core, ended with this script.
cores="$(nproc)"
load=()
for _ in $(seq "$cores"); do
    (while :; do :; done) &
    load+=("$!")
done
trap 'kill "${load[@]}" 2>/dev/null' EXIT
echo "[flake-hunt] $runs runs, $cores busy loops beside them"

engines=(sled)
if timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5432' 2>/dev/null; then
    engines+=(postgres)
else
    echo "[flake-hunt] NOT RUN on postgres: nothing answers on 127.0.0.1:5432"
fi

declare -A failed=()
total_runs=0
for i in $(seq "$runs"); do
    for engine in "${engines[@]}"; do
        log="$out/run-$i-$engine.log"
        if [ "$engine" = postgres ]; then
            HOOKD_TEST_ENGINE=postgres cargo test --test it -- --skip conformance:: --skip postgres:: >"$log" 2>&1
        else
            cargo test --test it >"$log" 2>&1
        fi
        total_runs=$((total_runs + 1))
        summary="$(grep -E '^test result:' "$log" | tail -1)"
        echo "[flake-hunt] run $i on $engine: ${summary:-no result line (see $log)}"
        while read -r name; do
            [ -n "$name" ] && failed["$name@$engine"]=$(( ${failed["$name@$engine"]:-0} + 1 ))
        done < <(grep -E '^test .* \.\.\. FAILED$' "$log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/')
    done
done

echo "[flake-hunt] tests that failed at least once, with how often ($runs runs per engine):"
if [ "${#failed[@]}" -eq 0 ]; then
    echo "  none ($total_runs suite runs)"
    exit 0
fi
for key in "${!failed[@]}"; do
    echo "  ${failed[$key]}x ${key}"
done | sort
echo "[flake-hunt] ${#failed[@]} test(s) failed at least once in $total_runs suite runs"
exit 1
