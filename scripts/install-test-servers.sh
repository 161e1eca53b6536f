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

me=install-test-servers
. "$repo/scripts/install-lib.sh"

# Debian packages the tests need, each listed only when its program is missing:
#   openssh-server (sshd for the SFTP fixture), systemd (systemd-analyze verifies the unit), procps (ps).
missing=""
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v ps >/dev/null 2>&1 || missing="$missing procps"
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    apt_install $missing
    # Where an init system runs, the package also starts a system sshd on port 22. The fixtures start
    # their own on free ports, so the system one is left as the package set it up.
fi

if [ ! -x "$tools/node_modules/.bin/azurite-blob" ] || [ "$(npm_version azurite)" != "$azurite_version" ]; then
    npm_install "azurite@$azurite_version" "Node 18 or 20"
fi
