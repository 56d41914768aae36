#!/usr/bin/env bash
# Samples a running hookd beside a soak or a bench (docs/benchmarks.md quotes its lines).
#
# Usage: scripts/store-sampler.sh [SECONDS]   (every 30 s by default; Ctrl-C to stop)
#
# Every SECONDS it prints one line for the first process named `hookd`: the time, its RSS
# (KiB), the bytes it has written and read so far (MiB, /proc/PID/io: what reached the block
# layer, journal, flushes and compactions included) and, for a fjall store, the store's size and
# the files in each keyspace's directory (`ID:FILES`; fjall numbers its keyspaces in the order
# they were made). It waits for a hookd to appear, and follows the next one when it exits.
set -uo pipefail
every=${1:-30}
case "$every" in
    '' | *[!0-9]*)
        echo "store-sampler.sh: SECONDS must be a whole number, not '$every'" >&2
        exit 2
        ;;
esac
while true; do
    pid=$(pgrep -x hookd | head -1)
    if [ -z "$pid" ]; then
        sleep 1
        continue
    fi
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    written=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io" 2>/dev/null)
    read=$(awk '/^read_bytes/ {print $2}' "/proc/$pid/io" 2>/dev/null)
    line="$(date +%T) rss_kib=${rss:-0} write_mb=$((${written:-0} / 1048576)) read_mb=$((${read:-0} / 1048576))"
    keyspaces=$(readlink "/proc/$pid"/fd/* 2>/dev/null | grep -o '.*/keyspaces/' | head -1)
    if [ -n "$keyspaces" ]; then
        line="$line size=$(du -sm "${keyspaces%keyspaces/}" 2>/dev/null | cut -f1)M"
        for k in "$keyspaces"*/; do
            line="$line $(basename "$k"):$(find "$k" -type f | wc -l)"
        done
    fi
    echo "$line"
    sleep "$every"
done
