#!/usr/bin/env bash
# Runs crates' tests for a Pi target under qemu-user (the runner in .cargo/config.toml):
#   cross/test.sh [aarch64|armv7|all] [CRATE...]
# Without crate names it runs every crate whose tests need neither root nor network namespaces (the
# list below), for the target given (default aarch64; `all`: aarch64 then armv7), and prints the time
# each target took. The peer tests (pymodbus, dlt645 run as host programs) are not in the list: they
# test our codecs against third-party code, which the native run already does.
set -euo pipefail
cd "$(dirname "$0")/.."
# Left out, with the reason:
#   concentrator-plugin-host, concentrator-appliance: their tests build plugin fixtures with a nested
#     host cargo and load them, or start concentratord; a foreign .so cannot be loaded into the test,
#     and the daemon tests take many minutes under emulation (the HIL test boots the real thing).
#   concentrator-uplink: network namespaces (link cuts) and a Mosquitto started by the test.
#   concentrator-ledger: its kill -9 test re-executes the test binary, which needs binfmt_misc;
#     name it explicitly on a machine where image/setup.sh has enabled the handlers.
# Skipped tests: the drivers' `the_cdylib_loads_through_dlopen_and_reads_a_meter` builds the plugin's
#   cdylib with a nested cargo for the host, which an emulated aarch64/armv7 process cannot dlopen
#   (the plugin host's fixture builder has no --target; on a Pi the test runs as it is).
skip=(--skip the_cdylib_loads_through_dlopen_and_reads_a_meter)
default_crates=(
    concentrator-hal
    concentrator-security
    concentrator-protocol
    concentrator-plugin-api
    concentrator-plugin-sdk
    concentrator-driver-dlt645
    concentrator-driver-modbus
    concentrator-driver-znp
)
arch=${1:-aarch64}
shift || true
case "$arch" in
    aarch64|armv7) archs=("$arch") ;;
    all) archs=(aarch64 armv7) ;;
    *) echo "cross/test.sh: unknown target '$arch'; use aarch64, armv7 or all" >&2; exit 2 ;;
esac
crates=("${@:-${default_crates[@]}}")
args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done
# OpenSSL for the target is built from source (cross/README.md): turn on openssl's `vendored` feature
# when a selected crate depends on openssl directly (cargo refuses the flag otherwise).
features=()
if cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
wanted = set(sys.argv[1:])
pkgs = json.load(sys.stdin)["packages"]
sys.exit(0 if any(p["name"] in wanted and any(d["name"] == "openssl" for d in p["dependencies"]) for p in pkgs) else 1)
' "${crates[@]}"; then
    features=(--features openssl/vendored)
fi
for a in "${archs[@]}"; do
    case "$a" in
        aarch64) target=aarch64-unknown-linux-gnu ;;
        armv7) target=armv7-unknown-linux-gnueabihf ;;
    esac
    start=$(date +%s)
    echo "cross/test.sh: ${crates[*]} on $target under qemu-user"
    cargo test --locked --no-fail-fast --target "$target" "${args[@]}" "${features[@]}" -- "${skip[@]}"
    echo "cross/test.sh: $target passed in $(($(date +%s) - start)) s"
done
