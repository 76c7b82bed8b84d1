#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages dockwatch's commands need, when missing and installable.
#   venv : python3-venv (Debian splits ensurepip out of python3)
#   test : mosquitto + clients (private broker per test run), tshark (LLRP/MQTT dissection),
#          mbpoll (independent Modbus client), openssl (throwaway TLS certificates)
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
    if [ ${#pkgs[@]} -gt 0 ]; then
        echo "install-system-deps: installing ${pkgs[*]}" >&2
        apt_install "${pkgs[@]}" || echo "install-system-deps: could not install ${pkgs[*]}; tests needing them will say so" >&2
    fi
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
