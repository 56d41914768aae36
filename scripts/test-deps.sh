#!/usr/bin/env bash
# Install the external dependencies of hookd's integration tests:
#   1. npm packages for the Express receiver  (tests/receivers/express/node_modules)
#   2. a Python venv for the Flask receiver    (tests/receivers/flask/.venv)
#   3. promtool (via apt-get install prometheus): the tests check metrics and alert rules with it
#   4. go (via apt-get install golang-go): the tests build docs/snippets/go_receiver.go
#
# Idempotent: steps 1 and 2 are skipped when a stamp file records that the
# current lockfile / requirements.txt (and node / python version) were already
# installed, so after a first successful run this needs no network.
# Force a reinstall with: rm -rf tests/receivers/express/node_modules tests/receivers/flask/.venv
#
# Usage: scripts/test-deps.sh            all four steps (scripts/test.sh runs this)
#        scripts/test-deps.sh express    step 1 only: what the README's walkthrough needs
#
# Env: PYTHON (default python3), SKIP_PROMTOOL=1 to skip step 3.
set -euo pipefail

ONLY="${1:-all}"
case "$ONLY" in
    all | express) ;;
    *) printf 'usage: %s [express]\n' "$0" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXPRESS_DIR="$ROOT/tests/receivers/express"
FLASK_DIR="$ROOT/tests/receivers/flask"
VENV="$FLASK_DIR/.venv"
PYTHON="${PYTHON:-python3}"

LOG="$(mktemp "${TMPDIR:-/tmp}/hookd-test-deps.XXXXXX")"
trap 'rm -f "$LOG"' EXIT

say()  { printf '[test-deps] %s\n' "$*"; }
warn() { printf '[test-deps] WARNING: %s\n' "$*" >&2; }
die()  { printf '[test-deps] ERROR: %s\n' "$*" >&2; exit 1; }

# run CMD...: run quietly, output to $LOG; on failure show the tail of the log.
run() {
    : >"$LOG"
    if ! "$@" >"$LOG" 2>&1; then
        printf '[test-deps] command failed: %s\n' "$*" >&2
        tail -n 40 "$LOG" >&2
        return 1
    fi
}

sha() { sha256sum "$@" | awk '{print $1}' | tr '\n' ' '; }

# ---------------------------------------------------------------- express
command -v node >/dev/null 2>&1 || die "node not found (need Node.js >= 18)"
command -v npm >/dev/null 2>&1 || die "npm not found"
[ -f "$EXPRESS_DIR/package-lock.json" ] || die "missing $EXPRESS_DIR/package-lock.json"

NODE_STAMP="$EXPRESS_DIR/node_modules/.hookd-deps-stamp"
node_want="node=$(node --version) lock=$(sha "$EXPRESS_DIR/package.json" "$EXPRESS_DIR/package-lock.json")"
if [ -f "$NODE_STAMP" ] && [ "$(cat "$NODE_STAMP")" = "$node_want" ] \
    && [ -f "$EXPRESS_DIR/node_modules/express/package.json" ]; then
    say "express: node_modules up to date, skipped npm ci"
else
    (cd "$EXPRESS_DIR" && run npm ci --prefer-offline --no-audit --no-fund --loglevel=error) \
        || die "npm ci failed in $EXPRESS_DIR"
    printf '%s' "$node_want" >"$NODE_STAMP"
    say "express: npm ci done (express $(cd "$EXPRESS_DIR" && node -p 'require("express/package.json").version'))"
fi

if [ "$ONLY" = express ]; then
    say "express receiver ready: $EXPRESS_DIR/server.js"
    exit 0
fi

# ---------------------------------------------------------------- flask
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (need CPython 3.11)"
VPY="$VENV/bin/python"
if [ -x "$VPY" ] && "$VPY" -c 'import sys' >/dev/null 2>&1; then
    :
else
    rm -rf "$VENV"
    run "$PYTHON" -m venv "$VENV" || die "could not create venv at $VENV (is python3-venv installed?)"
    say "flask: created venv $VENV"
fi

PY_STAMP="$VENV/.hookd-deps-stamp"
py_want="python=$("$VPY" -c 'import sys; print(sys.version.split()[0])') req=$(sha "$FLASK_DIR/requirements.txt")"
if [ -f "$PY_STAMP" ] && [ "$(cat "$PY_STAMP")" = "$py_want" ] \
    && "$VPY" -c 'import flask, werkzeug' >/dev/null 2>&1; then
    say "flask: venv requirements already satisfied, skipped pip"
else
    run "$VPY" -m pip install --disable-pip-version-check --no-input -q -r "$FLASK_DIR/requirements.txt" \
        || die "pip install failed for $FLASK_DIR/requirements.txt"
    printf '%s' "$py_want" >"$PY_STAMP"
    say "flask: pip install done (flask $("$VPY" -c 'import importlib.metadata as m; print(m.version("flask"))'))"
fi

# ---------------------------------------------------------------- promtool (optional)
# Returns non-zero on failure; the caller turns that into a warning.
install_promtool() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            say "promtool: not root and no passwordless sudo, cannot apt-get install"
            return 1
        fi
    fi
    local apt_opts=(-o Acquire::Retries=1 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)
    # Only refresh package lists when apt does not know a candidate for prometheus.
    # (grep without -q: with pipefail, -q's early exit makes apt-cache fail with SIGPIPE.)
    if ! apt-cache policy prometheus 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
        say "promtool: no apt candidate for prometheus, running apt-get update"
        run "${sudo[@]}" apt-get "${apt_opts[@]}" update || return 1
    fi
    run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_opts[@]}" install -y -q --no-install-recommends prometheus || return 1
    command -v promtool >/dev/null 2>&1 || { say "promtool: package installed but promtool not on PATH"; return 1; }
}

if [ "${SKIP_PROMTOOL:-0}" = 1 ]; then
    say "promtool: skipped (SKIP_PROMTOOL=1)"
elif command -v promtool >/dev/null 2>&1; then
    say "promtool: already installed, skipped"
elif ! command -v apt-get >/dev/null 2>&1; then
    die "promtool: missing and apt-get not available; install Prometheus' promtool (Debian: apt-get install prometheus)"
elif install_promtool; then
    say "promtool: installed via apt-get (prometheus)"
else
    die "promtool: installation failed (apt-get install prometheus)"
fi

# ---------------------------------------------------------------- go (for docs/snippets)
# tests/it/receiving_docs.rs builds docs/snippets/go_receiver.go (standard library only) with
# `go build`; Debian's golang-go is enough. Returns non-zero on failure.
install_go() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            say "go: not root and no passwordless sudo, cannot apt-get install"
            return 1
        fi
    fi
    local apt_opts=(-o Acquire::Retries=1 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)
    # Only refresh package lists when apt does not know a candidate for golang-go.
    # (grep without -q reads all of it: with -q, apt-cache may die of SIGPIPE and pipefail
    # would call the candidate missing.)
    if ! apt-cache policy golang-go 2>/dev/null | grep "Candidate: [0-9]" >/dev/null; then
        say "go: no apt candidate for golang-go, running apt-get update"
        run "${sudo[@]}" apt-get "${apt_opts[@]}" update || return 1
    fi
    run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_opts[@]}" install -y -q --no-install-recommends golang-go || return 1
    command -v go >/dev/null 2>&1 || { say "go: package installed but go not on PATH"; return 1; }
}

if command -v go >/dev/null 2>&1; then
    say "go: already installed, skipped"
elif ! command -v apt-get >/dev/null 2>&1; then
    die "go: missing and apt-get not available; install a Go toolchain (Debian: apt-get install golang-go)"
elif install_go; then
    say "go: installed via apt-get (golang-go)"
else
    die "go: installation failed (apt-get install golang-go)"
fi

# ---------------------------------------------------------------- summary
say "node:           $(command -v node) ($(node --version))"
say "express server: $EXPRESS_DIR/server.js"
say "venv python:    $VPY ($("$VPY" --version 2>&1))"
say "flask app:      $FLASK_DIR/app.py"
say "promtool:       $(command -v promtool || echo '(not installed)')"
say "go:             $(command -v go) ($(go version))"
