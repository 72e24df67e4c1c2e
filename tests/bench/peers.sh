#!/usr/bin/env bash
# Side by side with the peers, in one sitting on one machine (issue 20): writes target/bench/peers.md and
# target/bench/peers.json, one row per figure with our figure, the peer's, the ratio, the goal and
# whether it is met, the machine it ran on, and under the table, for every goal missed, what limits it
# as measured in the same run.
#
#   bash tests/bench/peers.sh
#
# On a fresh Debian or Ubuntu machine it first installs what it needs with apt-get (only what is
# missing; through sudo when not root): a C toolchain, pkg-config, libssl-dev, openssl (the `openssl
# speed` peer), libosmocore-dev (the Milenage and GEA4 peer, linked into tests/bench/osmo.c), python3
# (the table), strace (fsync counts) and binutils; and for the aarch64 size row the cross toolchain
# (cross/setup.sh). Then it builds the release binaries and runs, in this order:
#
# - Zigbee: tests/bench/z2m.sh (Zigbee2MQTT against concentratord on the same emulated coordinator),
#   when that script exists; its rows are read from $BENCH_JSON (target/bench/z2m.json). Without the
#   script the table says the Zigbee rows were not run.
# - Security: Milenage vectors/s and KASUMI f8 MB/s (security/benches/crypto.rs `--lines`) beside
#   libosmocore's osmo_auth_gen_vec and GEA4 keystream (tests/bench/osmo.c against Debian's
#   libosmocore-dev); token verifications/s beside `openssl speed -elapsed ecdsap256` verify. Ours and
#   the peer's alternate round by round, and each figure is the best of BENCH_ROUNDS rounds (default 5)
#   of BENCH_SECS seconds (default 1), on both sides: on a shared machine the best round is the least
#   disturbed one, and alternating keeps a burst of load from landing on one side only.
# - Footprint: concentratord's stripped size for aarch64 (cross/build.sh; BENCH_AARCH64=0 skips it, and
#   the row says so) and x86_64, where the bytes go (tests/bench/sizes.py), the daemon's RSS with 1,024
#   RS485 and 64 Zigbee meters (tests/bench/rss.sh), the store's growth per year for 1,024 meters at
#   15-minute checkpoints with the audit log archived (ledger/benches/ledger.rs).
# - Durable top-ups/s through the daemon's ledger thread with a flush before every answer
#   (appliance/benches/topups.rs), and its fsyncs counted with strace.
#
# BENCH_MACHINE_NOTE adds a sentence about the machine to the table (e.g. that it was shared).
#
# Benchmarks print figures; nothing here passes or fails by the clock. The script fails only when
# something cannot be built or run. About 25 minutes on 2 cores once built (the aarch64 cross build
# from nothing adds 20-40 minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_INCREMENTAL=0
out=target/bench
mkdir -p "$out"
rows=$out/rows.jsonl
: > "$rows"
say() { echo "tests/bench/peers.sh: $*" >&2; }
ROUNDS=${BENCH_ROUNDS:-5}
SECS=${BENCH_SECS:-1}
started=$(date '+%Y-%m-%d %H:%M %Z')
load=$(cut -d' ' -f1-3 /proc/loadavg)

# --- Prerequisites -------------------------------------------------------------------------------------
declare -A packages=(
    [gcc]=/usr/bin/cc
    [pkg-config]=/usr/bin/pkg-config
    [libssl-dev]=/usr/include/openssl/ssl.h
    [openssl]=/usr/bin/openssl
    [libosmocore-dev]=/usr/include/osmocom/crypt/auth.h
    [python3]=/usr/bin/python3
    [strace]=/usr/bin/strace
    [binutils]=/usr/bin/nm
)
need=()
for pkg in "${!packages[@]}"; do
    [ -e "${packages[$pkg]}" ] || need+=("$pkg")
done
sudo=()
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
fi
if [ ${#need[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${need[*]} (Debian package names), and this is not a Debian or Ubuntu machine: install them by hand"
        exit 1
    fi
    if [ "$(id -u)" != 0 ] && [ ${#sudo[@]} -eq 0 ]; then
        say "missing ${need[*]}; run as root: apt-get install ${need[*]}"
        exit 1
    fi
    say "installing ${need[*]}"
    "${sudo[@]}" apt-get update -q >/dev/null || true
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
AARCH64=${BENCH_AARCH64:-1}
if [ "$AARCH64" = 1 ] && ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
    say "installing the aarch64 cross toolchain (cross/setup.sh)"
    "${sudo[@]}" bash cross/setup.sh >/dev/null
fi

# row GROUP ROW OURS PEER PEER_NAME UNIT GOAL BETTER [NOTE] [LIMIT]: one row for the table (OURS/PEER
# empty for "not measured").
row() {
    python3 - "$@" >> "$rows" <<'EOF'
import json, sys
a = sys.argv[1:] + [""] * (10 - len(sys.argv[1:]))
num = lambda s: float(s) if s not in ("", None) else None
print(json.dumps({"group": a[0], "row": a[1], "ours": num(a[2]), "peer": num(a[3]),
                  "peer_name": a[4] or None, "unit": a[5], "goal": a[6], "better": a[7],
                  "note": a[8] or None, "limit": a[9] or None}, ensure_ascii=False))
EOF
}
# fig FILE NAME: the value of {"figure": NAME} in FILE's JSON lines (empty when absent).
fig() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line)
        if d.get("figure") == sys.argv[2]:
            print(d["value"])
            break
EOF
}
# calc EXPR: a number from a Python expression.
calc() { python3 -c "print($1)"; }

# --- Builds --------------------------------------------------------------------------------------------
say "building the release binaries and the benches"
cargo build --release -q -p concentrator-appliance --bin concentratord --bin concentrator
cargo bench -q -p concentrator-security --bench crypto --no-run
cargo bench -q -p concentrator-ledger --bench ledger --no-run
cargo bench -q -p concentrator-appliance --bench topups --no-run
cc -O2 -Wall -o "$out/osmo" tests/bench/osmo.c $(pkg-config --cflags --libs libosmogsm libosmocore)
osmo_version=$(pkg-config --modversion libosmogsm)
openssl_version=$(openssl version | cut -d' ' -f1-2)

# --- Zigbee (tests/bench/z2m.sh, by its own author) ---------------------------------------------------
if [ -f tests/bench/z2m.sh ]; then
    export BENCH_JSON=${BENCH_JSON:-$out/z2m.json}
    say "Zigbee: tests/bench/z2m.sh (rows into $BENCH_JSON)"
    rm -f "$BENCH_JSON"
    if bash tests/bench/z2m.sh > "$out/z2m.log" 2>&1 && [ -s "$BENCH_JSON" ]; then
        printf '{"file": "%s"}\n' "$BENCH_JSON" > "$out/zigbee.json"
    else
        status=$?
        tail -5 "$out/z2m.log" >&2 || true
        printf '{"file": null, "status": "tests/bench/z2m.sh failed (exit %s) or wrote no rows to %s; its output is in %s"}\n' \
            "$status" "$BENCH_JSON" "$out/z2m.log" > "$out/zigbee.json"
    fi
else
    printf '{"file": null, "status": "tests/bench/z2m.sh does not exist in this checkout, so Zigbee2MQTT was not run against concentratord"}\n' \
        > "$out/zigbee.json"
fi

# --- Security ------------------------------------------------------------------------------------------
say "security: Milenage and KASUMI beside libosmocore $osmo_version"
errors=$out/stderr.log
: > "$errors"
crypto() { BENCH_ROUNDS=$1 BENCH_SECS=$2 cargo bench -q -p concentrator-security --bench crypto -- --lines "${@:3}" 2>>"$errors"; }
# best FILE...: the best value of each figure over the JSON lines of FILEs ("ns per" figures: the lowest).
best() {
    python3 - "$@" <<'EOF'
import json, sys
best = {}
for path in sys.argv[1:]:
    for line in open(path):
        if line.startswith("{"):
            d = json.loads(line)
            f, v = d["figure"], d["value"]
            lower = "_ns_per_" in f
            if f not in best or (v < best[f]["value"] if lower else v > best[f]["value"]):
                best[f] = d
for d in best.values():
    print(json.dumps(d))
EOF
}
# Ours and libosmocore's alternated round by round, so both see the same load.
for r in $(seq 1 "$ROUNDS"); do
    crypto 1 "$SECS" milenage kasumi > "$out/ours-crypto-$r.jsonl"
    "$out/osmo" 1 "$SECS" 1523 > "$out/osmo-$r.jsonl"
done
best "$out"/ours-crypto-[0-9]*.jsonl > "$out/ours-crypto.jsonl"
best "$out"/osmo-[0-9]*.jsonl > "$out/osmo.jsonl"
rm -f "$out"/ours-crypto-[0-9]*.jsonl "$out"/osmo-[0-9]*.jsonl
m_cached=$(fig "$out/ours-crypto.jsonl" milenage_vectors_per_s_cached_key)
m_setup=$(fig "$out/ours-crypto.jsonl" milenage_vectors_per_s_key_setup)
m_osmo=$(fig "$out/osmo.jsonl" milenage_vectors_per_s)
row "security" "Milenage vectors/s, one core, key schedule cached per subscriber" "$m_cached" "$m_osmo" \
    "libosmocore $osmo_version osmo_auth_gen_vec" "vectors/s" "" higher \
    "full vector (f1..f5*, AUTN inputs); libosmocore expands the key in every call, so the next row is the like-for-like one"
row "security" "Milenage vectors/s, one core, key expanded per vector" "$m_setup" "$m_osmo" \
    "libosmocore $osmo_version osmo_auth_gen_vec" "vectors/s" "" higher
f8=$(fig "$out/ours-crypto.jsonl" kasumi_f8_mb_per_s)
gea4=$(fig "$out/osmo.jsonl" gea4_keystream_mb_per_s)
chained=$(fig "$out/ours-crypto.jsonl" kasumi_ns_per_block_chained)
x4=$(fig "$out/ours-crypto.jsonl" kasumi_ns_per_block_4_independent)
row "security" "KASUMI f8 (UEA1), one 1,523-octet message" "$f8" "$gea4" \
    "libosmocore $osmo_version GEA4 keystream" "MB/s" "≥ 2× peer" higher \
    "1,523 octets is the longest message libosmocore's gprs_cipher_run takes; ours includes the XOR into the message, GEA4 writes keystream only" \
    "one message is one chain of KASUMI blocks (each block's input holds the previous output), so it runs at KASUMI's latency: $(calc "round($chained, 1)") ns per chained block against $(calc "round($x4, 1)") ns per block for 4 independent blocks in the same run; 2× libosmocore needs $(calc "round(8e3 / (2 * $gea4), 1)") ns per block"

say "security: token verification beside $openssl_version speed -elapsed ecdsap256"
tok=0 raw=0 ossl=0
osecs=$(calc "max(1, round($SECS))")
for _ in $(seq 1 "$ROUNDS"); do
    crypto 1 "$SECS" token > "$out/ours-token.jsonl"
    tok=$(calc "max($tok, $(fig "$out/ours-token.jsonl" token_verifications_per_s))")
    raw=$(calc "max($raw, $(fig "$out/ours-token.jsonl" raw_ecdsa_p256_verifications_per_s))")
    v=$(openssl speed -elapsed -seconds "$osecs" ecdsap256 2>/dev/null | awk '/nistp256/ && /ecdsa/ {print $NF}' | tail -1)
    ossl=$(calc "max($ossl, ${v:-0})")
done
row "security" "Token verifications/s (chain cached: decode, SHA-256, ECDSA P-256 verify, checks)" "$tok" "$ossl" \
    "$openssl_version speed -elapsed ecdsap256 verify" "verifications/s" "≥ 0.95× peer" higher \
    "best of $ROUNDS rounds each, ours and openssl's alternated" \
    "a token verification takes $(calc "round(1e6 / $tok, 1)") µs, of which the bare ECDSA P-256 verification through the openssl crate takes $(calc "round(1e6 / $raw, 1)") µs in the same rounds (the rest, decoding and checks: $(calc "round(1e6 / $tok - 1e6 / $raw, 1)") µs); openssl speed's verification takes $(calc "round(1e6 / $ossl, 1)") µs"

# --- Footprint: size -----------------------------------------------------------------------------------
# breakdown FILE: one line of where the bytes go, from tests/bench/sizes.py's output.
breakdown() {
    python3 - "$1" <<'EOF'
import json, sys
d = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")][0]
s = d["sections"]
crates = ", ".join(f"{c['crate']} {c['bytes'] / 1e6:.2f}" for c in d["crates"][:10])
unwind = (s.get(".eh_frame", 0) + s.get(".eh_frame_hdr", 0) + s.get(".gcc_except_table", 0)) / 1e6
print(f"by crate, MB of code and named data (generics of std that name no type of ours stay with std): {crates}; "
      f"besides symbols: unwind tables {unwind:.2f} MB (.eh_frame, .gcc_except_table: kept, panics are caught), "
      f"relocations (.rela.dyn, position-independent) {s.get('.rela.dyn', 0) / 1e6:.2f} MB")
EOF
}
say "footprint: binary sizes"
strip -o "$out/concentratord.x86_64" target/release/concentratord
x86=$(stat -c %s "$out/concentratord.x86_64")
python3 tests/bench/sizes.py target/release/concentratord > "$out/sizes-x86_64.txt"
top_x86=$(breakdown "$out/sizes-x86_64.txt")
size_note="stripped with strip(1); the release profile of Cargo.toml; breakdown in target/bench/sizes-*.txt"
if [ "$AARCH64" = 1 ]; then
    say "footprint: aarch64 cross build (cross/build.sh aarch64; slow the first time)"
    bash cross/build.sh aarch64 > "$out/cross.log" 2>&1 || { tail -20 "$out/cross.log" >&2; say "the aarch64 build failed (above)"; exit 1; }
    rm -rf target/aarch64-unknown-linux-gnu/release/incremental
    a64bin=target/aarch64-unknown-linux-gnu/release/concentratord
    aarch64-linux-gnu-strip -o "$out/concentratord.aarch64" "$a64bin"
    a64=$(stat -c %s "$out/concentratord.aarch64")
    python3 tests/bench/sizes.py "$a64bin" aarch64-linux-gnu-nm aarch64-linux-gnu-readelf > "$out/sizes-aarch64.txt"
    top_a64=$(breakdown "$out/sizes-aarch64.txt")
    row "footprint" "concentratord stripped, aarch64 (OpenSSL static)" "$(calc "$a64 / 1e6")" "" "" "MB" "≤ 10 MB" lower \
        "$size_note" "$top_a64"
else
    row "footprint" "concentratord stripped, aarch64" "" "" "" "MB" "≤ 10 MB" lower \
        "not built in this run (BENCH_AARCH64=0); see the x86_64 row" ""
fi
row "footprint" "concentratord stripped, x86_64 (OpenSSL from the system, dynamic)" "$(calc "$x86 / 1e6")" "" "" "MB" "≤ 10 MB" lower \
    "$size_note" "$top_x86"

# --- Footprint: RSS ------------------------------------------------------------------------------------
say "footprint: daemon RSS with 1,024 RS485 and 64 Zigbee meters (twice ${RSS_RUN_S:-60} s)"
RUN_S=${RSS_RUN_S:-60} bash tests/bench/rss.sh target/release/concentratord target/release/concentrator > "$out/rss.txt"
rss=$(fig "$out/rss.txt" rss_mib)
row "footprint" "daemon RSS, 1,024 RS485 meters on 32 simulated buses + 64 Zigbee meters, with the ledger" "$rss" "" "" "MiB" "≤ 16 MiB" lower \
    "$(fig "$out/rss.txt" meters_online) meters online when measured; peak $(fig "$out/rss.txt" rss_peak_mib) MiB" \
    "anonymous memory $(fig "$out/rss.txt" rss_anon_mib) MiB (the main heap $(fig "$out/rss.txt" rss_heap_mib) MiB, the rest malloc arenas and stacks of $(fig "$out/rss.txt" threads) threads; with MALLOC_ARENA_MAX=1 RSS is $(fig "$out/rss.txt" one_arena_rss_mib) MiB, anonymous $(fig "$out/rss.txt" one_arena_rss_anon_mib) MiB of which heap $(fig "$out/rss.txt" one_arena_rss_heap_mib) MiB; the heap is not broken down further here, and it holds the 1,088 emulated meters too, which run inside the daemon on the sim buses), file-backed pages $(fig "$out/rss.txt" rss_file_mib) MiB (of which the binary's own pages $(fig "$out/rss.txt" rss_binary_mib) MiB, the rest shared libraries)"

# --- Footprint: store growth, and the ledger engine's top-ups -------------------------------------------
archive_days=${BENCH_ARCHIVE_DAYS:-28}
say "footprint: store growth with the audit archive ($archive_days simulated days of 1,024 meters)"
BENCH_ARCHIVE_DAYS=$archive_days BENCH_ONLY=topups,archived cargo bench -q -p concentrator-ledger --bench ledger 2>>"$errors" > "$out/ledger.txt"
growth=$(fig "$out/ledger.txt" store_mib_per_year_archived)
row "footprint" "store growth per year, 1,024 meters, 15-minute checkpoints, audit archived daily" "$growth" "" "" "MiB/year" "≤ 300 MiB" lower \
    "least-squares slope of the store's size at the end of each day over the second half of $archive_days simulated days, times 365; over those days the store was between $(fig "$out/ledger.txt" store_mib_low_archived) and $(fig "$out/ledger.txt" store_mib_high_archived) MiB" \
    "live data at the end $(fig "$out/ledger.txt" store_live_mib_total) MiB (audit $(fig "$out/ledger.txt" store_live_mib_audit), accounts $(fig "$out/ledger.txt" store_live_mib_accounts), outbox $(fig "$out/ledger.txt" store_live_mib_outbox)) against $(fig "$out/ledger.txt" store_mib_at_end_archived) MiB of files: the growth is sled's log keeping replaced account records and archived entries until its segment cleaner reclaims them"

# --- Durable top-ups -----------------------------------------------------------------------------------
say "durable top-ups through the daemon's ledger thread"
n_topups=${BENCH_TOPUPS:-2000}
BENCH_CLIENTS=1,64 cargo bench -q -p concentrator-appliance --bench topups 2>>"$errors" > "$out/topups.txt"
t1=$(fig "$out/topups.txt" daemon_topups_per_s_1_senders)
t64=$(fig "$out/topups.txt" daemon_topups_per_s_64_senders)
topups_exe=$(cargo bench -q -p concentrator-appliance --bench topups --no-run --message-format=json 2>>"$errors" |
    python3 -c 'import json,sys
for l in sys.stdin:
    d = json.loads(l)
    if d.get("executable") and d.get("target", {}).get("name") == "topups": print(d["executable"])')
# fsync-family calls and their wall-clock time: a run of 64 top-ups (setup: 1,024 accounts) and one of
# $n_topups; the difference is what the top-ups cost.
syncs() {
    BENCH_CLIENTS=64 BENCH_TOPUPS=$1 strace -f -w -c -o "$out/topups-$1.strace" -e trace=fsync,fdatasync,sync_file_range,msync "$topups_exe" > /dev/null
    awk '$NF ~ /^(fsync|fdatasync|sync_file_range|msync)$/ {n += $4; t += $2} END {print n + 0, t + 0}' "$out/topups-$1.strace"
}
if ! BENCH_TOPUPS=1 BENCH_CLIENTS=1 strace -f -c -o /dev/null "$topups_exe" > /dev/null 2>&1; then
    say "strace cannot trace here (ptrace not permitted?); the fsync counts are left out"
    s0=0 w0=0 s1=0 w1=0
else
    read -r s0 w0 < <(syncs 64)
    read -r s1 w1 < <(syncs "$n_topups")
fi
syncs=$(calc "$s1 - $s0")
sync_s=$(calc "$w1 - $w0")
n_topups=${BENCH_TOPUPS:-2000}
row "top-ups" "durable top-ups/s through the ledger thread, 64 senders at once" "$t64" "" "" "top-ups/s" "≥ 2000/s" higher \
    "$n_topups tokens, 1,024 accounts on sled; each sender waits for the answer, given after the flush; ledger engine alone (group of 16): $(fig "$out/ledger.txt" ledger_topups_per_s_group_of_16)/s" \
    "under strace, $syncs fsync-family calls for $(calc "$n_topups - 64") top-ups ($(calc "round($syncs / ($n_topups - 64), 2)") per top-up) taking $(calc "round($sync_s / ($n_topups - 64) * 1e3, 2)") ms of wall-clock time per top-up, against $(calc "round(1e3 / $t64, 2)") ms per top-up in all; one flush per top-up costs $(calc "round(1e3 / $(fig "$out/ledger.txt" ledger_topups_per_s_one_flush_each), 2)") ms in the engine alone (one flush each: $(fig "$out/ledger.txt" ledger_topups_per_s_one_flush_each)/s)"
row "top-ups" "durable top-ups/s through the ledger thread, one sender" "$t1" "" "" "top-ups/s" "" higher

# --- The table -----------------------------------------------------------------------------------------
finished=$(date '+%Y-%m-%d %H:%M %Z')
python3 - "$out/machine.json" "$started" "$finished" "$load" "${BENCH_MACHINE_NOTE:-}" <<'EOF'
import json, os, platform, sys
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
json.dump({"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "started": sys.argv[2],
           "finished": sys.argv[3], "load": sys.argv[4], "shared": sys.argv[5]}, open(sys.argv[1], "w"))
EOF
python3 tests/bench/table.py "$out"
say "written $out/peers.md and $out/peers.json"
