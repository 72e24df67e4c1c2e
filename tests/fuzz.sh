#!/usr/bin/env bash
# Runs every fuzz target (decoders of bytes from a bus or the network) for a bounded time each:
#   tests/fuzz.sh [SECONDS]      (default 60 per target)
# Needs the nightly toolchain and cargo-fuzz: `rustup toolchain install nightly; cargo install cargo-fuzz`.
# A crash stops the run and leaves the input under <crate>/fuzz/artifacts/<target>/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
targets=(
    "plugins/dlt645 decode_frame"
    "plugins/modbus decode_frame"
    "plugins/modbus register_map"
    "plugins/znp decode_mt"
    "plugins/znp decode_zcl"
    "security envelope"
    "security token"
    "headend web_json"
    "headend web_live"
    "headend mpc_frames"
)
for entry in "${targets[@]}"; do
    read -r dir target <<<"$entry"
    echo "=== fuzzing $dir $target for ${seconds}s"
    (cd "$root/$dir" && cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=1024 2>&1 | tail -n 3)
done
echo "fuzz: every target ran ${seconds}s without a crash"
