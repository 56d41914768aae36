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
#             on sled (tests/it, the README walkthrough among them) and the benches' smoke runs;
#             everything but the integration tests runs beside them, in a second process
#   browser   the dashboard's browser tests (node --test tests/browser/, on the binary built);
#             beside the postgres step when both run
#   fjall     the integration tests that depend on the embedded store's backend again on
#             fjall: faults, crashes, restarts, a full disk, a damaged store, retention, the
#             store's files (conformance::fjall already ran in the test step)
#   postgres  the integration tests again on PostgreSQL (127.0.0.1:5432, required), except
#             the modules whose behaviour does not depend on the store (ENGINE_INDEPENDENT below:
#             parsers, signatures, HTTP limits and headers, the docs' snippets), which the test
#             step ran already
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
# Takes about 10 minutes on 2 cores with a warm build cache (README.md, its first screen).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEFAULT_STEPS=(deps fmt clippy test browser fjall postgres package)
ALL_STEPS=(deps fmt clippy test unit tidy it browser fjall postgres package)
# The integration tests whose behaviour depends on the embedded backend (the fjall step).
# The integration test modules whose behaviour does not depend on the store's engine: parsers,
# signing and the receivers that check it, the listener's HTTP behaviour, tokens, the target
# guard, traces, and the docs run as written (README's walkthrough is on sled, the default). The
# postgres step skips them: on PostgreSQL they would repeat the test step's run. A module that
# reads or writes deliveries, subscriptions or state does not belong here.
ENGINE_INDEPENDENT=(fuzz:: receiving_docs:: recipes:: seed_receivers:: keepalive:: cross_site:: guard:: traces:: tokens:: limits:: readme::)
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
        test)
            # The same tests as `cargo test --all-targets`, in two processes at once: the
            # integration tests mostly wait on their receivers and daemons, and the unit tests,
            # tidy and the benches' smoke runs fill that time.
            cargo test --quiet --all-targets --no-run
            beside "unit, tidy, bins and benches' smoke runs" \
                cargo test --lib --bins --benches --test tidy ${cargo_args[@]+"${cargo_args[@]}"}
            cargo test --test it ${cargo_args[@]+"${cargo_args[@]}"}
            wait_beside
            ;;
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
            # already ran on PostgreSQL in the test step, ENGINE_INDEPENDENT on sled.
            if ! pg_answers; then
                echo "[test] FAILED: the postgres step needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres)" >&2
                return 1
            fi
            local skips=()
            for module in conformance:: postgres:: "${ENGINE_INDEPENDENT[@]}"; do
                grep -qx "mod ${module%::};" tests/it/main.rs || {
                    echo "[test] FAILED: ENGINE_INDEPENDENT names $module, not a module of tests/it/main.rs" >&2
                    return 1
                }
                skips+=(--skip "$module")
            done
            HOOKD_TEST_ENGINE=postgres cargo test --test it -- "${skips[@]}" ${cargo_args[@]+"${cargo_args[@]}"}
            ;;
        package) scripts/package-check.sh ;;
    esac
}

times=()

# beside NAME COMMAND...: runs COMMAND in the background while the step in hand runs (for work
# that mostly waits), its output kept in a log that wait_beside prints when it ended.
beside_pid=""
beside_name=""
beside_log=""
beside_started=0
beside() {
    beside_name=$1
    shift
    beside_log=$(mktemp "${TMPDIR:-/tmp}/hookd-test-beside.XXXXXX")
    beside_started=$SECONDS
    echo "[test] beside it: $beside_name (its output follows when it ends)"
    (
        rc=0
        "$@" || rc=$?
        echo "$((SECONDS - beside_started))" >"$beside_log.seconds"
        exit "$rc"
    ) >"$beside_log" 2>&1 &
    beside_pid=$!
}
wait_beside() {
    [ -n "$beside_pid" ] || return 0
    local rc=0
    wait "$beside_pid" || rc=$?
    echo "[test] output of $beside_name:"
    cat "$beside_log"
    times+=("($beside_name $(cat "$beside_log.seconds" 2>/dev/null || echo '?')s)")
    rm -f "$beside_log" "$beside_log.seconds"
    beside_pid=""
    if [ "$rc" -ne 0 ]; then
        echo "[test] FAILED: $beside_name (exit code $rc)" >&2
        return 1
    fi
}
stop_beside() {
    if [ -n "$beside_pid" ]; then
        kill "$beside_pid" 2>/dev/null || true
        rm -f "$beside_log" "$beside_log.seconds"
    fi
}
trap stop_beside EXIT

started_all=$SECONDS
browser_beside_postgres=false
for step in "${steps[@]}"; do
    # The browser tests run beside the postgres step when both are asked for: the PostgreSQL
    # tests mostly wait, and the browser step then costs no time of its own.
    if [ "$step" = browser ] && [[ " ${steps[*]} " == *" postgres "* ]]; then
        browser_beside_postgres=true
        continue
    fi
    echo "[test] step $step"
    started=$SECONDS
    if [ "$step" = postgres ] && $browser_beside_postgres; then
        # Build the binary the browser tests drive before the two steps share the target dir.
        cargo test --quiet --no-run --test it
        beside browser run_step browser
    fi
    run_step "$step"
    wait_beside
    times+=("$step $((SECONDS - started))s")
done
echo "[test] passed: ${times[*]}; total $((SECONDS - started_all))s"
