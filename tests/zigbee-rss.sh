#!/usr/bin/env bash
# The daemon's resident memory with 64 emulated Zigbee meters (the in-daemon coordinator emulator), all
# paired and reporting every 2 s, after it has run for RUN_S seconds (default 20).
#
#   tests/zigbee-rss.sh                 # builds and measures the release binary
#   DAEMON=path/to/concentratord tests/zigbee-rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_S=${RUN_S:-20}
target=${CARGO_TARGET_DIR:-target}
if [ -z "${DAEMON:-}" ]; then
    cargo build --release --bin concentratord -p concentrator-appliance >&2
    DAEMON=$target/release/concentratord
fi
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
{
    printf '[gateway]\nid = "gw-rss"\nstore = "%s/store"\nlog_level = "warn"\n\n' "$dir"
    printf '[[zigbee]]\nname = "zb-1"\nbackend = "sim"\nsim_meters = 64\nsim_formed = true\nsim_paired = true\n'
    printf 'options = { report_min_s = 1, report_max_s = 2 }\n'
    for n in $(seq 1 64); do
        printf '\n[[meter]]\nzigbee = "zb-1"\nieee = "00124b00000000%02x"\ndwelling = "R-%d"\n' "$n" "$n"
    done
} > "$dir/c.toml"
"$DAEMON" --config "$dir/c.toml" 2> "$dir/log" &
pid=$!
sleep "$RUN_S"
online=$(grep -c '"state": "online"' "$dir/store/status.json" || true)
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
awk -v d="$DAEMON" -v o="$online" -v s="$RUN_S" -v r="$rss" -v h="$hwm" 'BEGIN {
    printf "concentratord %s with 64 emulated Zigbee meters, %s online after %s s: RSS %.1f MiB (peak %.1f MiB)\n", d, o, s, r / 1024, h / 1024
}'
