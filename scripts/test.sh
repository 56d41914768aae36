#!/usr/bin/env bash
# Runs every test of hookd: installs what the tests need (node packages for the seed's Express
# receiver, a Python venv for its Flask receiver), checks formatting and lints, then runs the
# unit and integration tests. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/test-deps.sh
echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
echo "[test] cargo test"
cargo test --all-targets "$@"
echo "[test] Debian package"
scripts/package-check.sh
