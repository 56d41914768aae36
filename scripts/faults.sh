#!/usr/bin/env bash
# Runs the long version of the fault-injection suite (tests/it/faults.rs, issue 10) against the
# release build of hookd, one test at a time so that the figures are not disturbed by each
# other, and prints its FIGURE lines at the end (the table of docs/reliability.md).
#   HOOKD_FAULT_KILLS      SIGKILLs under load (default here 200; 20 in the short suite)
#   HOOKD_FAULT_TOLERANCE  what the healthy subscriber must keep beside bad ones (0.9 here)
#   HOOKD_FAULT_BACKLOG    events of the throughput backlog (20000 here, 2000 in the short suite)
#   HOOKD_FAULT_SEED       repeats a run's random kill schedule (each test prints its seed)
# Takes about 5 minutes on 2 cores once the release build is cached.
#   HOOKD_OVERLOAD_SECS    how long the overload test pushes (default here 120 s; 8 in the short suite)
# Usage: scripts/faults.sh [test filters, e.g. faults::crashes; default: every scenario]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export HOOKD_FAULT_KILLS="${HOOKD_FAULT_KILLS:-200}"
export HOOKD_FAULT_TOLERANCE="${HOOKD_FAULT_TOLERANCE:-0.9}"
export HOOKD_FAULT_BACKLOG="${HOOKD_FAULT_BACKLOG:-20000}"
export HOOKD_OVERLOAD_SECS="${HOOKD_OVERLOAD_SECS:-120}"
# The disk-full tests mount a tmpfs; here they fail rather than stop where that is not allowed.
export HOOKD_REQUIRE_MOUNT=1
# Every scenario of docs/reliability.md: the fault suite, overload and a full disk, a damaged
# store and the previous release's store, wall-clock jumps.
if [ "$#" -gt 0 ]; then filters=("$@"); else
    filters=(faults:: overload:: damaged_store:: upgrade:: clock_jumps::)
fi
log="$(mktemp -t hookd-faults.XXXXXX)"
trap 'rm -f "$log"' EXIT

echo "[faults] cargo test --release --test it ${filters[*]} (kills $HOOKD_FAULT_KILLS, tolerance $HOOKD_FAULT_TOLERANCE, overload $HOOKD_OVERLOAD_SECS s)"
set +e
cargo test --release --test it -- "${filters[@]}" --nocapture --test-threads=1 2>&1 | tee "$log" \
    | grep -E '^(test |running |test result|FIGURE )|: seed [0-9]+|panicked at'
status="${PIPESTATUS[0]}"
set -e

echo
echo "[faults] figures ($(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores):"
# The harness prints "test <name> ... " before a test's own output, on the same line.
grep -oE 'FIGURE .*' "$log" || echo "(no FIGURE lines: see the failures above)"
grep -oE '[a-z-]+: seed [0-9]+' "$log" || true
if [ "$status" -ne 0 ]; then
    echo "[faults] FAILED (cargo test exited $status); the panics:"
    grep -A6 -E 'panicked at' "$log" || true
fi
exit "$status"
