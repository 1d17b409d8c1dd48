#!/usr/bin/env bash
# Set up Garrison in .venv, load a small synthetic population into SQLite (var/) and serve it.
# Extra arguments go to `garrison demo` (e.g. --port 8080 --patients 500).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv -e .
exec .venv/bin/garrison demo "$@"
