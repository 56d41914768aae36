#!/usr/bin/env bash
# The soak (issue 25): the real hookd binary under a steady offered load for a long time, on
# each embedded engine; fails on a stall, on an event not delivered, or on memory that grows.
#
# Usage: scripts/soak.sh [--engine sled|fjall|both] [--minutes M] [--rate R] [--body-bytes B]
#
# For each engine (both by default, sled first) it runs `cargo bench --bench soak` (benches/soak.rs
# says what it does and prints): without --rate it measures the batched rate of a fresh hookd on
# that engine (40,000 events, 16 clients, 100 per request) and offers half of it; with --rate,
# R events/s. The load is open loop, in batches of 100 events of B bytes (150), for M minutes
# (30), to one subscription whose receiver on loopback answers 200. Every 5 s it prints the
# events accepted, delivered and waiting, the delivery rate and hookd's RSS. An engine fails
# (and so this script, with status 1, after running the others) on a stall (5 s or more with no
# delivery while events wait), on any event not delivered within 2 minutes of the end, or on RSS
# growth over 10% after the warm-up (the last fifth's median against the second fifth's).
# Its last lines: one verdict per engine (PASS, or FAIL and why).
#
# Takes M minutes per engine plus a minute or two (a build first, if needed). Not part of the
# test run; `cargo test --all-targets` makes a smoke run of a few seconds (benches/soak.rs).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
}

engines=(sled fjall)
bench_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --engine)
            case "${2:-}" in
                sled | fjall) engines=("$2") ;;
                both) engines=(sled fjall) ;;
                *)
                    echo "soak.sh: --engine takes sled, fjall or both, not '${2:-}'" >&2
                    exit 2
                    ;;
            esac
            shift 2
            ;;
        --minutes | --rate | --body-bytes)
            if [ -z "${2:-}" ]; then
                echo "soak.sh: $1 needs a number" >&2
                exit 2
            fi
            bench_args+=("$1" "$2")
            shift 2
            ;;
        *)
            echo "soak.sh: unknown argument '$1' (see --help)" >&2
            exit 2
            ;;
    esac
done

cargo bench --bench soak --no-run --quiet || exit 1
verdicts=()
status=0
for engine in "${engines[@]}"; do
    echo "[soak] $engine: $(uptime)"
    out="$(mktemp)"
    cargo bench --quiet --bench soak -- --engine "$engine" "${bench_args[@]}" 2>&1 | tee "$out"
    code="${PIPESTATUS[0]}"
    line="$(grep "^soak $engine:" "$out" | tail -n 1)"
    # The bench stops at the first batch hookd refuses: name why.
    if [ -z "$line" ] && grep -q "hookd is overloaded" "$out"; then
        line="soak $engine: FAIL: delivery fell behind the offered rate until hookd refused ingest (503 at storage.max_pending)"
    fi
    rm -f "$out"
    if [ "$code" -ne 0 ]; then
        status=1
        verdicts+=("${line:-soak $engine: FAIL: the bench exited with status $code}")
    else
        verdicts+=("$line")
    fi
done
echo "[soak] verdicts:"
printf '%s\n' "${verdicts[@]}"
exit "$status"
