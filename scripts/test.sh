#!/usr/bin/env bash
# Install what the tests need, then lint, type-check and run the whole test suite on SQLite and
# PostgreSQL 15. Exits non-zero if any step fails. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv -e ".[test]"

if [ ! -d ../shared/testdata ]; then
    echo "warning: ../shared/testdata is missing; tests that read the shared test material will fail" >&2
fi

PG_BIN="${GARRISON_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [[ ",${GARRISON_TEST_BACKENDS:-sqlite,postgresql}," == *",postgresql,"* ]] && [ ! -x "$PG_BIN/initdb" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing PostgreSQL 15 server binaries (apt: postgresql-15)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
    else
        echo "error: PostgreSQL 15 is missing ($PG_BIN/initdb)." >&2
        echo "       Install it (sudo apt-get install postgresql-15) or run with GARRISON_TEST_BACKENDS=sqlite." >&2
        exit 1
    fi
fi

# The browser tests (tests/browser) drive Debian's Chromium through Playwright; Playwright's own
# browser download is never used. Without Chromium those tests fail and say so.
CHROMIUM="${GARRISON_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Chromium for the browser tests (apt: chromium)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "warning: Chromium is missing ($CHROMIUM); the browser tests will fail." >&2
        echo "         Install it (sudo apt-get install chromium) or set GARRISON_CHROMIUM." >&2
    fi
fi

failed=()
step() {
    local name="$1"
    shift
    echo "==> $name" >&2
    if ! "$@"; then
        failed+=("$name")
    fi
}

step "ruff" .venv/bin/ruff check src tests benchmarks
step "mypy" .venv/bin/mypy
step "mypy (benchmarks)" .venv/bin/mypy benchmarks
step "pytest" .venv/bin/pytest -n "${GARRISON_TEST_WORKERS:-2}" --durations=10 "$@"

if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all checks passed" >&2
