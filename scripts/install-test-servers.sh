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

# Run a command with its output kept aside; show the output only if it fails.
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

# Debian packages the tests need, each listed only when its program is missing:
#   openssh-server (sshd for the SFTP fixture), systemd (systemd-analyze verifies the unit), procps (ps).
missing=""
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v ps >/dev/null 2>&1 || missing="$missing procps"

apt_install_missing() {
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
}

if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when apt has none, or when the install fails without a refresh.
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
        quietly apt-get update -q
    fi
    if ! quietly apt_install_missing 2>/dev/null; then
        quietly apt-get update -q
        quietly apt_install_missing
    fi
    # Where an init system runs, the package also starts a system sshd on port 22. The fixtures start
    # their own on free ports, so the system one is left as the package set it up.
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
    quietly npm install --prefix "$tools" --no-audit --no-fund --loglevel=error --save-exact \
        "azurite@$azurite_version"
fi
