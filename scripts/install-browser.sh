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

me=install-browser
. "$repo/scripts/install-lib.sh"

if [ ! -x /usr/bin/chromium ]; then
    # fonts-liberation: readable text in the screenshots (chromium recommends it; --no-install-recommends skips it).
    apt_install chromium fonts-liberation
fi

if [ "$(npm_version axe-core)" != "$axe_version" ]; then
    npm_install "axe-core@$axe_version"
fi
