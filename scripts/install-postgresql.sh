#!/bin/sh
# Install PostgreSQL's server binaries for the tests (tests/pg.py starts a throwaway cluster of its own), on
# Debian 12, as root. Idempotent and quiet: nothing happens when an initdb is already there.
#   postgresql   apt postgresql -> /usr/lib/postgresql/<version>/bin/{initdb,pg_ctl,postgres}, user postgres
# Debian's package would also create and start a cluster "main" on port 5432; the tests do not need one,
# so postgresql-common is installed first and told not to (create_main_cluster = false).
set -eu

repo=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
tools="$repo/.test-tools"

me=install-postgresql
. "$repo/scripts/install-lib.sh"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql-common
    conf=/etc/postgresql-common/createcluster.conf
    if [ -f "$conf" ]; then
        sed -i 's/^#* *create_main_cluster *=.*/create_main_cluster = false/' "$conf"
    fi
    apt_install postgresql
fi
