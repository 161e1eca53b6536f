# Shared by the install-*.sh scripts (sourced, POSIX sh): root check, quiet runs, apt and npm installs that
# refresh the package lists only when they must. Each caller sets $me (its name) and $tools first.

if [ "$(id -u)" -ne 0 ]; then
    echo "$me: run as root" >&2
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

# apt_install PACKAGE...: refresh the lists only when apt has none, or when the install fails without one.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
        quietly apt-get update -q
    fi
    if ! quietly apt-get install -y -q --no-install-recommends "$@" 2>/dev/null; then
        quietly apt-get update -q
        quietly apt-get install -y -q --no-install-recommends "$@"
    fi
}

# npm_version PACKAGE: the version installed under $tools, or nothing.
npm_version() {
    pkg="$tools/node_modules/$1/package.json"
    [ -f "$pkg" ] && node -p "require('$pkg').version" 2>/dev/null || true
}

# npm_install PACKAGE@VERSION HINT: install into $tools (HINT says which Node is needed when npm is missing).
npm_install() {
    if ! command -v npm >/dev/null 2>&1; then
        echo "$me: npm is missing (apt-get install nodejs npm${2:+, $2})" >&2
        exit 1
    fi
    mkdir -p "$tools"
    quietly npm install --prefix "$tools" --no-audit --no-fund --loglevel=error --save-exact "$1"
}
