#!/usr/bin/env bash
# Runs every test of hookd, in steps; with step names, only those (a quick loop).
#
#   deps      install what the tests need (scripts/test-deps.sh): the node packages of the
#             provider's Express receiver and of the browser tests, a Python venv for its Flask
#             receiver, promtool, Go and chromium (apt-get, as root or with sudo) when missing,
#             and the frameworks of the receiving recipes (npm, PyPI, Debian's Ruby and PHP)
#   fmt       cargo fmt --check
#   clippy    cargo clippy --all-targets -- -D warnings
#   test      cargo test --all-targets: unit tests, tidy (tests/tidy.rs), the integration tests
#             on sled (tests/it, the README walkthrough among them) and the benches' smoke runs
#   browser   the dashboard's browser tests (node --test tests/browser/, on the binary built)
#   fjall     the integration tests that depend on the embedded store's backend again on
#             fjall: faults, crashes, restarts, a full disk, a damaged store, retention, the
#             store's files (conformance::fjall already ran in the test step)
#   postgres  the integration tests again on PostgreSQL (127.0.0.1:5432, required)
#   package   builds and checks the Debian package (scripts/package-check.sh; installs
#             cargo-deb when missing)
#   Quick-loop steps, not in the default run (`test` covers them): unit (cargo test --lib),
#   tidy (cargo test --test tidy), it (cargo test --test it).
#
# Usage: scripts/test.sh [STEP...] [-- CARGO TEST ARGS]
#   scripts/test.sh                   every default step, in the order above
#   scripts/test.sh it -- tenancy::   the sled integration tests whose name has tenancy::
#   scripts/test.sh --help
# Arguments after `--` go to each cargo test step run (test, unit, tidy, it, fjall, postgres).
# Takes about 12 minutes on 2 cores with a warm build cache (README.md, its first screen).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEFAULT_STEPS=(deps fmt clippy test browser fjall postgres package)
ALL_STEPS=(deps fmt clippy test unit tidy it browser fjall postgres package)
# The integration tests whose behaviour depends on the embedded backend (the fjall step).
FJALL_TESTS=(faults:: crash:: restart:: overload:: damaged_store:: limits:: retention:: systemd::empty_storage systemd::state_directory retries:: clock_jumps::)

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

steps=()
cargo_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --) shift; cargo_args=("$@"); break ;;
        *)
            if [[ " ${ALL_STEPS[*]} " == *" $1 "* ]]; then
                steps+=("$1")
            else
                echo "scripts/test.sh: unknown step '$1'; the steps are: ${ALL_STEPS[*]} (--help)" >&2
                exit 2
            fi
            ;;
    esac
    shift
done
[ ${#steps[@]} -gt 0 ] || steps=("${DEFAULT_STEPS[@]}")

# The PostgreSQL tests skip with "NOT RUN" when no server answers, outside this script; here a
# missing server is a failure.
export HOOKD_REQUIRE_POSTGRES=1
# The framework recipes (tests/it/recipes.rs) likewise fail, not "NOT RUN", without their
# dependencies (scripts/test-deps.sh installs them).
export HOOKD_REQUIRE_RECIPES=1

pg_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p 5432
    else
        timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5432' 2>/dev/null
    fi
}

run_step() {
    case "$1" in
        deps) scripts/test-deps.sh ;;
        fmt) cargo fmt --all -- --check ;;
        clippy) cargo clippy --quiet --all-targets -- -D warnings ;;
        test) cargo test --all-targets ${cargo_args[@]+"${cargo_args[@]}"} ;;
        unit) cargo test --lib ${cargo_args[@]+"${cargo_args[@]}"} ;;
        tidy) cargo test --test tidy ${cargo_args[@]+"${cargo_args[@]}"} ;;
        it) cargo test --test it ${cargo_args[@]+"${cargo_args[@]}"} ;;
        browser)
            # target/debug/hookd as `cargo test` builds it (with the dev-dependencies' features:
            # a plain `cargo build` would rebuild tokio and hookd twice); HOOKD_BIN may name another.
            cargo test --quiet --no-run --test it
            HOOKD_BIN="${HOOKD_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/hookd}" node --test tests/browser/
            ;;
        fjall)
            # Every hookd a test starts gets `engine = "fjall"` (tests/it/support/engine.rs);
            # sled-specific tests print "NOT RUN on fjall: <why>".
            HOOKD_TEST_ENGINE=fjall cargo test --test it -- "${FJALL_TESTS[@]}" ${cargo_args[@]+"${cargo_args[@]}"}
            ;;
        postgres)
            # Every hookd a test starts gets a database of its own (tests/it/support/engine.rs);
            # sled-specific tests print "NOT RUN on postgres: <why>". conformance:: and postgres::
            # already ran on PostgreSQL in the test step.
            if ! pg_answers; then
                echo "[test] FAILED: the postgres step needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres)" >&2
                return 1
            fi
            HOOKD_TEST_ENGINE=postgres cargo test --test it -- --skip conformance:: --skip postgres:: ${cargo_args[@]+"${cargo_args[@]}"}
            ;;
        package) scripts/package-check.sh ;;
    esac
}

times=()
started_all=$SECONDS
for step in "${steps[@]}"; do
    echo "[test] step $step"
    started=$SECONDS
    run_step "$step"
    times+=("$step $((SECONDS - started))s")
done
echo "[test] passed: ${times[*]}; total $((SECONDS - started_all))s"
