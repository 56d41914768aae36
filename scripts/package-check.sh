#!/usr/bin/env bash
# Builds the Debian package with `cargo deb` (installing cargo-deb if missing) and checks it:
# its file list, conffiles, maintainer scripts, and that the packaged binary and unit work.
# Usage: scripts/package-check.sh            (prints "package-check: N passed, 0 failed")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "[package] installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked --quiet
fi
echo "[package] cargo deb --strip"
deb=$(cargo deb --strip --quiet 2>/dev/null | tail -n 1)
[ -f "$deb" ] || { echo "[package] cargo deb did not produce a .deb ($deb)"; exit 1; }

passed=0
failed=0
check() { # check NAME COMMAND...
    local name=$1; shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "[package] FAILED: $name"; fi
}

files=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' | grep -v '/$' | sort)
expected=$(sort <<'LIST'
/etc/hookd/hookd.toml
/usr/bin/hookd
/usr/lib/systemd/system/hookd.service
/usr/share/doc/hookd/ARCHITECTURE.md
/usr/share/doc/hookd/README.md
/usr/share/doc/hookd/api.md
/usr/share/doc/hookd/benchmarks.md
/usr/share/doc/hookd/configuration.md
/usr/share/doc/hookd/copyright
/usr/share/doc/hookd/dashboard.md
/usr/share/doc/hookd/grafana/hookd-dashboard.json
/usr/share/doc/hookd/hookd.example.toml
/usr/share/doc/hookd/install.md
/usr/share/doc/hookd/operations.md
/usr/share/doc/hookd/prometheus/hookd-alerts.test.yml
/usr/share/doc/hookd/prometheus/hookd-alerts.yml
/usr/share/doc/hookd/prometheus/prometheus.yml
/usr/share/doc/hookd/receiving-webhooks.md
/usr/share/doc/hookd/reliability.md
/usr/share/doc/hookd/scaling.md
/usr/share/doc/hookd/security.md
LIST
)
expected=$(sort <<LIST
$expected
$(for f in docs/snippets/*; do echo "/usr/share/doc/hookd/snippets/${f##*/}"; done)
$(for f in docs/img/*; do echo "/usr/share/doc/hookd/img/${f##*/}"; done)
LIST
)
same_files() { diff <(echo "$expected") <(echo "$files"); }
check "file list" same_files

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/control"
dpkg-deb -x "$deb" "$work/root"
check "conffiles lists /etc/hookd/hookd.toml" grep -qx /etc/hookd/hookd.toml "$work/control/conffiles"
check "postinst enables and starts hookd.service" grep -q 'deb-systemd-invoke $_dh_action hookd.service' "$work/control/postinst"
check "prerm stops hookd.service" grep -q 'hookd.service' "$work/control/prerm"
check "packaged binary runs" "$work/root/usr/bin/hookd" --version
check "packaged config is valid" env STATE_DIRECTORY="$work/state" "$work/root/usr/bin/hookd" check-config --config "$work/root/etc/hookd/hookd.toml"
check "packaged unit is the repo's" cmp -s deploy/systemd/hookd.service "$work/root/usr/lib/systemd/system/hookd.service"
check "binary is stripped" sh -c "! readelf -S '$work/root/usr/bin/hookd' | grep -q debug_info"

echo "[package] $deb"
echo "package-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
