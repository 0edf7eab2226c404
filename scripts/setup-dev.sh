#!/usr/bin/env bash
# Sets up a development machine from nothing: Debian packages the tests use, and .venv with
# the project (editable) and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup-dev: $PYTHON is $("$PYTHON" -V 2>&1); edgedetect needs Python 3.11 or newer" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if command -v apt-get >/dev/null; then
    mapfile -t packages < <(grep -v '^\s*#' .ci/apt-packages.txt | grep -v '^\s*$')
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
else
    echo "setup-dev: no apt-get; install by hand: $(grep -v '^\s*#' .ci/apt-packages.txt | tr '\n' ' ')" >&2
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 'setuptools>=77'  # PEP 639 licence metadata (pyproject.toml)
.venv/bin/python -m pip install -q -e '.[test,eval]'
echo "setup-dev: ready; run the tests with scripts/test.sh"
