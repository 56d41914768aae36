#!/usr/bin/env bash
# Runs every test of hookd. First installs what the tests need (scripts/test-deps.sh): the node
# packages of the seed's Express receiver and of the browser tests, a Python venv for its Flask
# receiver, promtool (apt-get install prometheus), Go (apt-get install golang-go) and chromium
# (apt-get install chromium) when missing. Then checks formatting and lints, runs the unit and
# integration tests (the README walkthrough among them), the dashboard's browser tests
# (tests/browser, on the binary `cargo test` built), and builds and checks the Debian package
# (scripts/package-check.sh, which runs `cargo install cargo-deb` when cargo-deb is missing).
# Takes about 5 minutes on 2 cores once the dependencies are installed and the build is cached;
# a first run also compiles everything and installs the above.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/test-deps.sh
echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
echo "[test] cargo test"
cargo test --all-targets "$@"
echo "[test] browser tests (node --test tests/browser/)"
# `cargo test` has just built target/debug/hookd; HOOKD_BIN may name another binary.
HOOKD_BIN="${HOOKD_BIN:-$PWD/target/debug/hookd}" node --test tests/browser/
echo "[test] Debian package"
scripts/package-check.sh
