#!/usr/bin/env bash
# Runs crates' tests for a Pi target under qemu-user (the runner in .cargo/config.toml):
#   cross/test.sh [aarch64|armv7|all] [CRATE...]
#   cross/test.sh [aarch64|armv7|all] device      (CI: the crates that run on the gateway, below)
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
# `device`: the appliance, ledger, uplink and plugin-host crates, as far as their tests run inside the
# emulated test binary. Without binfmt_misc (CI machines have none) the kernel cannot start an aarch64
# program, so tests that start one of ours are left to the native run and the QEMU HIL test: the
# appliance's integration tests (they start concentratord and concentrator), the plugin host's (its
# sandboxed child process; fixtures built for the host), the ledger's kill -9 test (it re-executes the
# test binary). The uplink's tests start only host programs (Mosquitto, ip, shell scripts) and run whole;
# link_cut needs root for its network namespaces, as CI is.
device_runs() {
    local ledger_tests=() t
    for t in ledger/tests/*.rs; do
        t=$(basename "$t" .rs)
        [ "$t" = crash_kill9 ] || ledger_tests+=(--test "$t")
    done
    runs=(
        "-p concentrator-appliance -p concentrator-plugin-host -p concentrator-ledger -p concentrator-uplink --lib"
        "-p concentrator-ledger ${ledger_tests[*]}"
        "-p concentrator-uplink --tests"
    )
}
crates=("${@:-${default_crates[@]}}")
args=()
runs=()
if [ "${crates[*]}" = device ]; then
    device_runs
    crates=(concentrator-appliance concentrator-plugin-host concentrator-ledger concentrator-uplink)
else
    for c in "${crates[@]}"; do args+=(-p "$c"); done
    runs=("${args[*]}")
fi
# OpenSSL for the target is built from source (cross/README.md): turn on openssl's `vendored` feature
# when a crate of the run depends on openssl directly (cargo refuses the flag otherwise).
metadata=$(cargo metadata --no-deps --format-version 1 --locked)
features_for() { # features_for RUN: the --features argument for the crates RUN names
    # shellcheck disable=SC2086
    if echo "$metadata" | python3 -c '
import json, sys
wanted = {a for a in sys.argv[1:] if not a.startswith("-")}
pkgs = json.load(sys.stdin)["packages"]
sys.exit(0 if any(p["name"] in wanted and any(d["name"] == "openssl" for d in p["dependencies"]) for p in pkgs) else 1)
' $1; then
        echo "--features openssl/vendored"
    fi
}
for a in "${archs[@]}"; do
    case "$a" in
        aarch64) target=aarch64-unknown-linux-gnu ;;
        armv7) target=armv7-unknown-linux-gnueabihf ;;
    esac
    start=$(date +%s)
    echo "cross/test.sh: ${crates[*]} on $target under qemu-user"
    for run in "${runs[@]}"; do
        # shellcheck disable=SC2086 # each run is a list of cargo arguments
        cargo test --locked --no-fail-fast --target "$target" $run $(features_for "$run") -- "${skip[@]}"
    done
    echo "cross/test.sh: $target passed in $(($(date +%s) - start)) s"
done
