#!/usr/bin/env bash
# The daemon's resident memory at the size of a large block: 1,024 RS485 meters on 32 simulated buses
# (16 buses of 32 DL/T 645 meters at 2400 baud, 16 of 32 Modbus SDM630 meters at 9600 baud) plus 64
# Zigbee meters behind the in-daemon coordinator emulator, with the prepayment ledger (1,088 accounts,
# 15-minute checkpoints) as a gateway runs it. Measured after RUN_S seconds (default 60), when every
# meter has been polled.
#
#   bash tests/bench/rss.sh DAEMON CLI         # release binaries of concentratord and concentrator
#
# Prints one text line and JSON lines ({"figure":...}) for tests/bench/peers.sh: RSS now and at its
# peak, and where it is (anonymous memory, file-backed pages of the binary and libraries, threads),
# then the same with MALLOC_ARENA_MAX=1 (figures prefixed one_arena_), which shows what the malloc
# arenas of its threads hold.
set -euo pipefail
cd "$(dirname "$0")/../.."
DAEMON=${1:?usage: tests/bench/rss.sh path/to/concentratord path/to/concentrator}
CLI=${2:?usage: tests/bench/rss.sh path/to/concentratord path/to/concentrator}
RUN_S=${RUN_S:-60}
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
"$CLI" demo init "$dir/pki" >/dev/null
cp appliance/examples/prepaid-ledger.toml "$dir/ledger.toml"
{
    printf '[gateway]\nid = "gw-rss"\nstore = "%s/store"\nlog_level = "warn"\n\n' "$dir"
    printf '[ledger]\nconfig = "%s/ledger.toml"\nutility_ca = "%s/pki/ca.pem"\n' "$dir" "$dir"
    printf 'gateway_key = "%s/pki/gateway.key"\ngateway_cert_chain = "%s/pki/gateway.pem"\n' "$dir" "$dir"
    printf 'checkpoint_s = 900\nrestore = "none"\n'
    for b in $(seq 1 32); do
        if [ "$b" -le 16 ]; then
            printf '\n[[bus]]\nname = "rs485-%d"\nbackend = "sim"\nbaud = 2400\nformat = "8E1"\npoll_interval_s = 30\n' "$b"
        else
            printf '\n[[bus]]\nname = "rs485-%d"\nbackend = "sim"\nbaud = 9600\nformat = "8N1"\npoll_interval_s = 30\n' "$b"
        fi
        for m in $(seq 1 32); do
            if [ "$b" -le 16 ]; then
                printf '\n[[meter]]\nbus = "rs485-%d"\naddress = "%06d%06d"\ndriver = "dlt645"\ndwelling = "B%d-%d"\npassword = "02123456"\nsim = { load_w = %d, start_kwh = 100.0 }\n' \
                    "$b" "$b" "$m" "$b" "$m" $((200 + 37 * m))
            else
                printf '\n[[meter]]\nbus = "rs485-%d"\naddress = "%d"\nmeter_id = "MB-%d-%d"\ndriver = "modbus"\nmodel = "sdm630"\ndwelling = "B%d-%d"\nsim = { load_w = %d, start_kwh = 100.0 }\n' \
                    "$b" "$m" "$b" "$m" "$b" "$m" $((200 + 37 * m))
            fi
        done
    done
    printf '\n[[zigbee]]\nname = "zb-1"\nbackend = "sim"\nsim_meters = 64\nsim_formed = true\nsim_paired = true\n'
    printf 'options = { report_min_s = 1, report_max_s = 10 }\n'
    for n in $(seq 1 64); do
        printf '\n[[meter]]\nzigbee = "zb-1"\nieee = "00124b00000000%02x"\ndwelling = "Z-%d"\n' "$n" "$n"
    done
} > "$dir/c.toml"
if ! "$DAEMON" validate "$dir/c.toml" > "$dir/validate.log" 2>&1; then
    cat "$dir/validate.log" >&2
    echo "tests/bench/rss.sh: the generated configuration is invalid (above)" >&2
    exit 1
fi
# measure PREFIX [ENV=VALUE...]: one run of the daemon on a fresh store; figures named PREFIX...
measure() {
    local prefix=$1
    shift
    rm -rf "$dir/store"
    env "$@" "$DAEMON" --config "$dir/c.toml" 2> "$dir/log" &
    pid=$!
    sleep "$RUN_S"
    if ! kill -0 "$pid" 2>/dev/null; then
        tail -20 "$dir/log" >&2
        echo "tests/bench/rss.sh: the daemon stopped (its log above)" >&2
        exit 1
    fi
    online=$(grep -c '"state": "online"' "$dir/store/status.json" || true)
    kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/$2"; }
    rss=$(kb VmRSS status)
    hwm=$(kb VmHWM status)
    threads=$(kb Threads status)
    anon=$(kb Anonymous smaps_rollup)
    file=$(kb Rss smaps_rollup)
    file=$((file - anon))
    # Resident pages of one mapping (by its name in smaps), in KiB.
    mapped() { awk -v m="$1" '/^[0-9a-f]+-/ {s = ($NF == m)} s && $1 == "Rss:" {t += $2} END {print t + 0}' "/proc/$pid/smaps"; }
    heap=$(mapped '[heap]')
    binary=$(mapped "$(readlink -f "/proc/$pid/exe")")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    awk -v p="$prefix" -v env="$*" -v o="$online" -v s="$RUN_S" -v r="$rss" -v h="$hwm" -v t="$threads" -v a="$anon" -v f="$file" -v hp="$heap" -v b="$binary" 'BEGIN {
        printf "concentratord%s, 1,024 RS485 + 64 Zigbee meters with the ledger, %s online after %s s: RSS %.1f MiB (peak %.1f MiB); anonymous %.1f MiB (main heap %.1f MiB), file-backed %.1f MiB (the binary %.1f MiB), %d threads\n", (env == "" ? "" : " with " env), o, s, r / 1024, h / 1024, a / 1024, hp / 1024, f / 1024, b / 1024, t
        printf "{\"figure\":\"%srss_mib\",\"value\":%.2f}\n", p, r / 1024
        printf "{\"figure\":\"%srss_peak_mib\",\"value\":%.2f}\n", p, h / 1024
        printf "{\"figure\":\"%srss_anon_mib\",\"value\":%.2f}\n", p, a / 1024
        printf "{\"figure\":\"%srss_heap_mib\",\"value\":%.2f}\n", p, hp / 1024
        printf "{\"figure\":\"%srss_file_mib\",\"value\":%.2f}\n", p, f / 1024
        printf "{\"figure\":\"%srss_binary_mib\",\"value\":%.2f}\n", p, b / 1024
        printf "{\"figure\":\"%sthreads\",\"value\":%d}\n", p, t
        printf "{\"figure\":\"%smeters_online\",\"value\":%d}\n", p, o
    }'
}
measure ""
# The same with one malloc arena instead of glibc's one per thread (up to 8 per core): how much of the
# anonymous memory is arenas rather than data.
measure one_arena_ MALLOC_ARENA_MAX=1
