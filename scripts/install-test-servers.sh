#!/bin/sh
# Install the programs the test-server fixtures (tests/servers/) start, on Debian 12, as root.
# Idempotent and quiet: each step runs only when its program is missing.
#   sshd         apt openssh-server  -> /usr/sbin/sshd
#   azurite-blob npm azurite@3.35.0  -> <repo>/.test-tools/node_modules/.bin/azurite-blob
#                (3.36+ needs Node > 20)
# The Python servers (moto, pyftpdlib, wsgidav, cheroot) come from the project's [test] extra.
set -eu

repo=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
tools="$repo/.test-tools"
azurite_version=3.35.0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-servers: run as root" >&2
    exit 1
fi

if [ ! -x /usr/sbin/sshd ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Only refresh the package lists when apt has none, or the install fails without a refresh.
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
        apt-get update -qq
    fi
    if ! apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
    fi
    # The package enables and starts a system sshd on port 22 where an init system runs;
    # the fixtures start their own, so leave the system one as the package left it.
fi

installed_version() {
    pkg="$tools/node_modules/azurite/package.json"
    [ -f "$pkg" ] && node -p "require('$pkg').version" 2>/dev/null || true
}

if [ ! -x "$tools/node_modules/.bin/azurite-blob" ] || [ "$(installed_version)" != "$azurite_version" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-test-servers: npm is missing (apt-get install nodejs npm, Node 18 or 20)" >&2
        exit 1
    fi
    mkdir -p "$tools"
    npm install --prefix "$tools" --no-audit --no-fund --loglevel=error --save-exact \
        "azurite@$azurite_version" >/dev/null
fi
