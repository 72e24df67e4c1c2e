#!/usr/bin/env bash
# Zigbee2MQTT 2.14.1 beside concentratord, in one sitting, on the same emulated Z-Stack coordinator and
# the same Metering reports (tests/bench/z2m/src/main.rs says how). Prints each side's reports/s at
# saturation, CPU seconds per 1,000 reports, RSS idle and at load, latency report->broker p50/p99, and
# writes them as JSON rows to $BENCH_JSON (default target/bench/z2m.json).
#
#   bash tests/bench/z2m.sh [--meters N] [--step-s S] [--only z2m|ours]
#
# Needs Mosquitto (bash tests/setup.sh) and npm (for tests/bench/z2m-setup.sh, run from here). Release
# builds of concentratord and the bench. A benchmark: it prints figures, nothing passes or fails by the
# clock; it exits non-zero only when a side could not be measured (and says why).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
mosquitto=$(command -v mosquitto || true)
[ -n "$mosquitto" ] || for m in /usr/sbin/mosquitto /usr/bin/mosquitto; do [ -x "$m" ] && mosquitto=$m; done
if [ -z "$mosquitto" ]; then
    echo "z2m.sh: Mosquitto is missing; install it: sudo apt-get install mosquitto (or: bash tests/setup.sh)" >&2
    exit 1
fi
mapfile -t z2m < <(bash tests/bench/z2m-setup.sh)
target=${CARGO_TARGET_DIR:-target}
# Two builds: built together, the bench's uplink testkit feature would be unified into the daemon.
CARGO_INCREMENTAL=0 cargo build --release -q -p concentrator-appliance --bin concentratord
CARGO_INCREMENTAL=0 cargo build --release -q -p concentrator-bench-z2m --bin z2m-bench
exec "$target/release/z2m-bench" \
    --node "${z2m[0]}" --z2m "${z2m[1]}" \
    --daemon "$target/release/concentratord" --mosquitto "$mosquitto" \
    --json "${BENCH_JSON:-$target/bench/z2m.json}" --work "$target/bench/z2m/run" "$@"
