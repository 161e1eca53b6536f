#!/bin/sh
# Install what the browser tests (tests/test_ui_*.py) and bench.ui need, on Debian 12, as root.
# Idempotent and quiet: each step runs only when its piece is missing.
#   chromium   apt chromium        -> /usr/bin/chromium (driven by Playwright for Python, from the [test] extra)
#   axe-core   npm axe-core@4.14.1 -> <repo>/.test-tools/node_modules/axe-core/axe.min.js (injected by the tests)
# Never `playwright install`: that downloads a browser of its own, which fails on these machines and is not
# needed; the tests launch Debian's chromium through Playwright's executable_path.
set -eu

repo=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
tools="$repo/.test-tools"
axe_version=4.14.1

if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: run as root" >&2
    exit 1
fi

quietly() {
    out=$(mktemp)
    status=0
    "$@" >"$out" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        cat "$out" >&2
    fi
    rm -f "$out"
    return "$status"
}

if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
        quietly apt-get update -q
    fi
    # fonts-liberation: readable text in the screenshots (chromium recommends it; --no-install-recommends skips it).
    if ! quietly apt-get install -y -q --no-install-recommends chromium fonts-liberation 2>/dev/null; then
        quietly apt-get update -q
        quietly apt-get install -y -q --no-install-recommends chromium fonts-liberation
    fi
fi

installed_axe() {
    pkg="$tools/node_modules/axe-core/package.json"
    [ -f "$pkg" ] && node -p "require('$pkg').version" 2>/dev/null || true
}

if [ "$(installed_axe)" != "$axe_version" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-browser: npm is missing (apt-get install nodejs npm)" >&2
        exit 1
    fi
    mkdir -p "$tools"
    quietly npm install --prefix "$tools" --no-audit --no-fund --loglevel=error --save-exact "axe-core@$axe_version"
fi
