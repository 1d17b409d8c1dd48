# Shared by demo.sh and test.sh (sourced, not run): create or reuse .venv and install the project.
# Usage: ensure_venv <pip install arguments...>   e.g. ensure_venv -e .   or   ensure_venv -e ".[test]"
# Only PyPI (pip) and, when root, Debian's apt are contacted.

ensure_venv() {
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found; Garrison needs Python 3.11 or newer" >&2
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
        echo "error: $("$python" --version 2>&1) is too old; Garrison needs Python 3.11 or newer" >&2
        return 1
    fi
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        rm -rf .venv
        if ! "$python" -m venv .venv; then
            # Debian ships venv/ensurepip separately (python3-venv); install it when we may.
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                echo "installing python3-venv (apt)" >&2
                apt-get update -qq
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
                rm -rf .venv
                "$python" -m venv .venv
            else
                echo "error: could not create .venv; run: sudo apt-get install python3-venv" >&2
                return 1
            fi
        fi
    fi
    # Re-install only when the project metadata or the requested extras changed (keeps re-runs fast).
    local stamp=".venv/.garrison-installed"
    local want
    want="$* $(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || ! grep -qxF -- "$want" "$stamp"; then
        echo "installing Garrison into .venv (pip install $*)" >&2
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"
        echo "$want" >>"$stamp"
    fi
}
