#!/usr/bin/env bash
# Install the external dependencies of hookd's integration and browser tests:
#   1. npm packages for the Express receiver  (tests/receivers/express/node_modules)
#   2. a Python venv for the Flask receiver    (tests/receivers/flask/.venv)
#   3. promtool (via apt-get install prometheus): the tests check metrics and alert rules with it
#   4. go (via apt-get install golang-go): the tests build docs/snippets/go_receiver.go
#   5. the dashboard's browser tests (tests/browser): Debian's chromium (apt-get install
#      chromium fonts-liberation, when /usr/bin/chromium is missing) and their npm packages
#      (playwright-core, which never downloads a browser, and axe-core)
#   6. the framework recipes of docs/receiving-webhooks.md (tests/it/recipes.rs): npm packages
#      (tests/receivers/recipes/node: fastify, hono, express, standardwebhooks), a Next.js app
#      (tests/receivers/recipes/nextjs, built for `next start` by its build.sh), a Python venv
#      (tests/receivers/recipes/python/.venv: fastapi, uvicorn, django, standardwebhooks), and
#      Debian's ruby-rails, ruby-sinatra, ruby-webrick, php-cli, php-symfony-http-foundation
#
# Idempotent: the npm and pip steps are skipped when a stamp file records that the
# current lockfile / requirements.txt (and node / python version) were already
# installed, so after a first successful run this needs no network.
# Force a reinstall with:
#   rm -rf tests/receivers/express/node_modules tests/receivers/flask/.venv tests/browser/node_modules
#   rm -rf tests/receivers/recipes/{node,nextjs}/node_modules tests/receivers/recipes/nextjs/.next \
#          tests/receivers/recipes/python/.venv
#
# Usage: scripts/test-deps.sh            all six steps (scripts/test.sh runs this)
#        scripts/test-deps.sh express    step 1 only: what the README's walkthrough needs
#        scripts/test-deps.sh browser    step 5 only: what `node --test tests/browser/` needs
#        scripts/test-deps.sh recipes    step 6 only: what `cargo test --test it -- recipes::` needs
#
# Env: PYTHON (default python3), SKIP_PROMTOOL=1 to skip step 3.
set -euo pipefail

ONLY="${1:-all}"
case "$ONLY" in
    all | express | browser | recipes) ;;
    *) printf 'usage: %s [express|browser|recipes]\n' "$0" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXPRESS_DIR="$ROOT/tests/receivers/express"
FLASK_DIR="$ROOT/tests/receivers/flask"
VENV="$FLASK_DIR/.venv"
BROWSER_DIR="$ROOT/tests/browser"
RECIPES_DIR="$ROOT/tests/receivers/recipes"
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

# ---------------------------------------------------------------- npm packages
command -v node >/dev/null 2>&1 || die "node not found (need Node.js >= 18; the browser tests need 20)"
command -v npm >/dev/null 2>&1 || die "npm not found"

# npm_ci NAME DIR PACKAGE: `npm ci` in DIR unless its stamp file records the current
# package.json, lockfile and node version and node_modules/PACKAGE is there.
npm_ci() {
    local name="$1" dir="$2" package="$3"
    [ -f "$dir/package-lock.json" ] || die "missing $dir/package-lock.json"
    local stamp="$dir/node_modules/.hookd-deps-stamp"
    local want
    want="node=$(node --version) lock=$(sha "$dir/package.json" "$dir/package-lock.json")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
        && [ -f "$dir/node_modules/$package/package.json" ]; then
        say "$name: node_modules up to date, skipped npm ci"
        return 0
    fi
    # playwright-core downloads nothing; the variable makes sure no browser download happens.
    (cd "$dir" && run env PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
        npm ci --prefer-offline --no-audit --no-fund --loglevel=error) \
        || die "npm ci failed in $dir"
    printf '%s' "$want" >"$stamp"
    say "$name: npm ci done ($package $(cd "$dir" && node -p "require('$package/package.json').version"))"
}

# ---------------------------------------------------------------- apt packages
# present CHECK: CHECK is a command name or path (found with command -v) or, when it has a
# space, a shell command that succeeds once the packages are installed.
present() {
    if [[ "$1" == *" "* ]]; then
        bash -c "$1" >/dev/null 2>&1
    else
        command -v "$1" >/dev/null 2>&1
    fi
}

# apt_install NAME CHECK PACKAGE...: installs PACKAGE... with apt-get (noninteractive, no
# recommends) unless CHECK is present; dies naming them when that is impossible or fails.
apt_install() {
    local name="$1" command="$2"
    shift 2
    if present "$command"; then
        say "$name: already installed, skipped"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "$name: missing and apt-get not available; install it (Debian: apt-get install $*)"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
            sudo=(sudo -n)
        else
            die "$name: not root and no passwordless sudo, cannot apt-get install $*"
        fi
    fi
    local apt_opts=(-o Acquire::Retries=1 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)
    # Only refresh package lists when apt does not know a candidate for the first package.
    # (grep without -q reads all of it: with -q, apt-cache may die of SIGPIPE and pipefail
    # would call the candidate missing.)
    if ! apt-cache policy "$1" 2>/dev/null | grep "Candidate: [0-9]" >/dev/null; then
        say "$name: no apt candidate for $1, running apt-get update"
        run "${sudo[@]}" apt-get "${apt_opts[@]}" update || die "$name: apt-get update failed"
    fi
    run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "$@" \
        || die "$name: installation failed (apt-get install $*)"
    present "$command" || die "$name: $* installed but $command not on PATH (or failing)"
    say "$name: installed via apt-get ($*)"
}

# ---------------------------------------------------------------- express
npm_ci express "$EXPRESS_DIR" express
if [ "$ONLY" = express ]; then
    say "express receiver ready: $EXPRESS_DIR/server.js"
    exit 0
fi

# ---------------------------------------------------------------- browser
# tests/browser drives Debian's chromium with playwright-core (executablePath /usr/bin/chromium);
# fonts-liberation gives its pages and screenshots real fonts.
if [ "$ONLY" != recipes ]; then
    apt_install chromium /usr/bin/chromium chromium fonts-liberation
    npm_ci browser "$BROWSER_DIR" playwright-core
fi
if [ "$ONLY" = browser ]; then
    say "browser tests ready: node --test tests/browser/ ($(/usr/bin/chromium --version 2>/dev/null))"
    exit 0
fi

# ---------------------------------------------------------------- python venvs
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (need CPython 3.11)"

# pip_venv NAME DIR IMPORTS PACKAGE: a venv in DIR/.venv with DIR/requirements.txt, unless its
# stamp file records the current requirements.txt and python version and IMPORTS import.
pip_venv() {
    local name="$1" dir="$2" imports="$3" package="$4"
    local venv="$dir/.venv"
    local vpy="$venv/bin/python"
    if [ -x "$vpy" ] && "$vpy" -c 'import sys' >/dev/null 2>&1; then
        :
    else
        rm -rf "$venv"
        run "$PYTHON" -m venv "$venv" || die "could not create venv at $venv (is python3-venv installed?)"
        say "$name: created venv $venv"
    fi
    local stamp="$venv/.hookd-deps-stamp"
    local want
    want="python=$("$vpy" -c 'import sys; print(sys.version.split()[0])') req=$(sha "$dir/requirements.txt")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
        && "$vpy" -c "import $imports" >/dev/null 2>&1; then
        say "$name: venv requirements already satisfied, skipped pip"
        return 0
    fi
    run "$vpy" -m pip install --disable-pip-version-check --no-input -q -r "$dir/requirements.txt" \
        || die "pip install failed for $dir/requirements.txt"
    printf '%s' "$want" >"$stamp"
    say "$name: pip install done ($package $("$vpy" -c "import importlib.metadata as m; print(m.version('$package'))"))"
}

pip_venv flask "$FLASK_DIR" 'flask, werkzeug' flask
VPY="$VENV/bin/python"

# promtool: the tests check metrics and alert rules with it.
if [ "${SKIP_PROMTOOL:-0}" = 1 ] || [ "$ONLY" = recipes ]; then
    say "promtool: skipped (SKIP_PROMTOOL=1 or recipes only)"
else
    apt_install promtool promtool prometheus
fi

# go: tests/it/receiving_docs.rs builds docs/snippets/go_receiver.go (standard library only)
# with `go build`; Debian's golang-go is enough.
apt_install go go golang-go

# ---------------------------------------------------------------- recipes
# The framework recipes of docs/receiving-webhooks.md (tests/it/recipes.rs). Next.js runs as a
# production build (`next start`): build.sh rebuilds it only when the recipe, the lockfile or
# node changed (its stamp), so that the tests start it in a fraction of a second.
npm_ci recipes-node "$RECIPES_DIR/node" fastify
npm_ci recipes-nextjs "$RECIPES_DIR/nextjs" next
(cd "$RECIPES_DIR/nextjs" && run ./build.sh) || die "building the Next.js recipe app failed"
say "recipes-nextjs: $(tail -n 1 "$LOG")"
pip_venv recipes-python "$RECIPES_DIR/python" 'fastapi, uvicorn, django, standardwebhooks' fastapi
apt_install ruby-rails "ruby -e 'require \"rails\"'" ruby-rails
apt_install ruby-sinatra "ruby -e 'require \"webrick\"; require \"sinatra/base\"'" ruby-sinatra ruby-webrick
apt_install php php php-cli
apt_install symfony-http-foundation "test -f /usr/share/php/Symfony/Component/HttpFoundation/autoload.php" \
    php-symfony-http-foundation
if [ "$ONLY" = recipes ]; then
    say "recipes ready: cargo test --test it -- recipes::"
    exit 0
fi

# ---------------------------------------------------------------- summary
say "chromium:       /usr/bin/chromium ($(/usr/bin/chromium --version 2>/dev/null))"
say "node:           $(command -v node) ($(node --version))"
say "express server: $EXPRESS_DIR/server.js"
say "venv python:    $VPY ($("$VPY" --version 2>&1))"
say "flask app:      $FLASK_DIR/app.py"
say "promtool:       $(command -v promtool || echo '(not installed)')"
say "go:             $(command -v go) ($(go version))"
