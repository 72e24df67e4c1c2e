#!/usr/bin/env bash
# Hardware in the loop under QEMU: boots the appliance image in qemu-system-aarch64 (-M virt, software
# emulation) and checks, from the outside, what an installer would check on a real gateway:
#   sudo bash tests/hil/run.sh            (after: sudo bash image/build.sh)
#
# - a provisioning bundle (gateway identity, certificates, head-end address, one DL/T 645 meter) is
#   written into the image copy's boot partition with mtools, as an installer would copy it;
# - the guest's 16550 UART (-device pci-serial, /dev/ttyS0) is wired through a socat pty pair with
#   fixed names to a host-side simulated DL/T 645 meter (the `dlt645` package's meter service, PyPI);
# - a Mosquitto broker with TLS and client certificates listens on the host's loopback; the guest
#   reaches it as 10.0.2.2 through QEMU's user-mode network;
# - it asserts on the guest console that first boot provisioned the gateway, that systemd started
#   concentrator.service, that the daemon read the host-simulated meter, and on the broker that the
#   gateway's sealed readings arrived; it prints what it saw and the boot-to-first-reading time;
# - it powers the VM off hard over QMP (`quit`; QEMU stops at once, the guest gets no warning), checks
#   that no secret is left on the boot partition, boots the same disk again and checks that the daemon
#   starts on the store as the power cut left it, reads the meter and sends again, and that
#   provisioning did not run a second time.
# Output and logs: target/hil/ (console.log, mqtt.log, meter.log). Takes 2 to 4 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
out=$repo/target/hil
img=$repo/target/image/concentrator-arm64.img
boot_timeout=${HIL_BOOT_TIMEOUT:-420}
die() { echo "tests/hil/run.sh: $*" >&2; exit 1; }
[ -f "$img" ] || die "no image: build it first with 'sudo bash image/build.sh'"
for tool in qemu-system-aarch64 socat mosquitto mosquitto_sub mcopy openssl python3; do
    command -v "$tool" >/dev/null || die "$tool missing: run 'sudo bash image/setup.sh'"
done
bash tests/peers/setup.sh >/dev/null
py=$repo/target/peer-venv/bin/python

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
rm -rf "$out"
mkdir -p "$out/pki" "$out/bundle"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
gateway=hil-gw-1
meter=000000000001

echo "== PKI, broker, bundle"
pki=$out/pki
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=hil-utility-ca \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
issue() { # issue NAME CN [SAN]
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
        -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    local ext=$pki/$1.ext
    : >"$ext"
    [ -z "${3:-}" ] || echo "subjectAltName=$3" >"$ext"
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 30 \
        -extfile "$ext" -out "$pki/$1.pem" 2>/dev/null
}
issue broker hil-broker "IP:10.0.2.2,IP:127.0.0.1"
issue gateway "$gateway"
issue observer hil-observer
cat >"$out/mosquitto.conf" <<CONF
listener $port 127.0.0.1
cafile $pki/ca.pem
certfile $pki/broker.pem
keyfile $pki/broker.key
require_certificate true
use_identity_as_username true
persistence false
log_dest file $out/mosquitto.log
CONF
# Started as root, Mosquitto would switch to its own user, who cannot read this directory's keys.
[ "$(id -u)" != 0 ] || echo "user root" >>"$out/mosquitto.conf"
mosquitto -c "$out/mosquitto.conf" & pids+=($!)
hex() { openssl rand -hex "$1"; }
tid=$(hex 8)
cat >"$out/bundle/uplink-keys.toml" <<KEYS
mode = "aes"
[gateway]
ck = "$(hex 16)"
ik = "$(hex 16)"
[[meter]]
meter = "$meter"
tid = "$tid"
ck = "$(hex 16)"
ik = "$(hex 16)"
KEYS
cp "$pki/ca.pem" "$out/bundle/utility-ca.pem"
cp "$pki/gateway.pem" "$out/bundle/gateway.pem"
cp "$pki/gateway.key" "$out/bundle/gateway.key"
secrets=/var/lib/concentrator/secrets
cat >"$out/bundle/concentrator.toml" <<TOML
# Written by tests/hil/run.sh: what the utility's provisioning bundle holds.
[gateway]
id = "$gateway"
store = "/var/lib/concentrator"
log_level = "info"

[[bus]]
name = "rs485-1"
backend = "linux"
path = "/dev/ttyS0"        # QEMU's pci-serial 16550; on a Pi /dev/rs485-1
baud = 2400
format = "8E1"
direction = "adapter"
poll_interval_s = 5

[[meter]]
bus = "rs485-1"
address = "$meter"
driver = "dlt645"
dwelling = "HIL-1"

[uplink]
broker = "mqtts://10.0.2.2:$port"
ca = "$secrets/utility-ca.pem"
cert = "$secrets/gateway.pem"
key = "$secrets/gateway.key"
keys = "$secrets/uplink-keys.toml"
TOML

echo "== disk: a copy of the image with the bundle in the boot partition's concentrator/"
cp --sparse=always "$img" "$out/disk.img"
mmd -i "$out/disk.img@@1M" ::/concentrator
mcopy -i "$out/disk.img@@1M" "$out/bundle/"* ::/concentrator/
mdir -i "$out/disk.img@@1M" ::/concentrator | grep -E 'toml|pem|key' || true

echo "== the meter: socat pty pair, the dlt645 package's meter on the host end"
socat -d pty,raw,echo=0,link="$out/uart-guest" pty,raw,echo=0,link="$out/uart-meter" 2>"$out/socat.log" & pids+=($!)
for _ in $(seq 50); do [ -e "$out/uart-guest" ] && [ -e "$out/uart-meter" ] && break; sleep 0.1; done
[ -e "$out/uart-meter" ] || die "socat made no pty pair: $(cat "$out/socat.log")"
"$py" -u tests/peers/python/dlt645_meter.py "$out/uart-meter" "$meter" 00010000=12345.67 >"$out/meter.log" 2>&1 & pids+=($!)
for _ in $(seq 300); do grep -q ready "$out/meter.log" && break; sleep 0.1; done
grep -q ready "$out/meter.log" || die "the simulated meter did not start: $(cat "$out/meter.log")"

mosquitto_sub -h 127.0.0.1 -p "$port" --cafile "$pki/ca.pem" --cert "$pki/observer.pem" --key "$pki/observer.key" \
    -t "c/v1/$gateway/#" -F '%I %t %l bytes' >"$out/mqtt.log" 2>"$out/mqtt.err" & pids+=($!)

boot() { # boot LOG: starts the VM, console to LOG
    qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -display none -no-reboot \
        -kernel "$repo/target/image/vmlinuz" -initrd "$repo/target/image/initrd.img" \
        -append "root=LABEL=root console=ttyAMA0 net.ifnames=0 rootwait systemd.journald.forward_to_console=1 systemd.show_status=1" \
        -drive file="$out/disk.img",format=raw,if=none,id=disk -device virtio-blk-pci,drive=disk \
        -netdev user,id=net -device virtio-net-pci,netdev=net,romfile= \
        -chardev serial,id=rs485,path="$out/uart-guest" -device pci-serial,chardev=rs485 \
        -serial file:"$1" -qmp unix:"$out/qmp.sock",server=on,wait=off &
    qemu_pid=$!
    pids+=("$qemu_pid")
}
qmp_quit() { # the hard power-off: QEMU quits at once, the guest gets no warning
    python3 - "$out/qmp.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", "quit"):
    f.write(json.dumps({"execute": cmd}) + "\n"); f.flush(); f.readline()
PY
    wait "$qemu_pid" 2>/dev/null || true
}
wait_for() { # wait_for SECONDS FILE PATTERN WHAT
    local deadline=$((SECONDS + $1))
    while ! grep -qE "$3" "$2" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "FAIL: no $4 within $1 s (pattern: $3); tail of $2:" >&2; tail -n 40 "$2" >&2; exit 1; }
        kill -0 "$qemu_pid" 2>/dev/null || { echo "FAIL: QEMU exited; tail of $2:" >&2; tail -n 40 "$2" >&2; exit 1; }
        sleep 1
    done
    echo "seen ($((SECONDS - t0)) s): $4: $(grep -m1 -E "$3" "$2" | tr -d '\r' | cut -c1-160)"
}

echo "== boot 1 (software emulation; about a minute to the daemon)"
t0=$SECONDS
boot "$out/console.log"
wait_for "$boot_timeout" "$out/console.log" 'concentrator-firstboot: gateway .* provisioned' "first boot provisioned the gateway"
wait_for 120 "$out/console.log" 'Started concentrator.service' "systemd started the daemon"
wait_for 120 "$out/console.log" "meter $meter \(HIL-1\): energy-import-total" "the daemon read the host-simulated meter"
first_reading=$((SECONDS - t0))
wait_for 120 "$out/mqtt.log" "c/v1/$gateway/up/$tid/readings" "a sealed reading at the broker"
echo "broker saw:"; sort -k2,2 -u "$out/mqtt.log" | sed 's/^/  /' | head -n 10
qmp_quit
# After the power-off, the boot partition as an installer would see it: no secret left on the card.
left=$(mdir -b -i "$out/disk.img@@1M" ::/concentrator/ | tr 'A-Z' 'a-z')
echo "boot partition after first boot: $(echo "$left" | xargs -n1 basename | tr '\n' ' ')"
echo "$left" | grep -q 'provisioned.txt' || die "no PROVISIONED.txt on the boot partition"
! echo "$left" | grep -qE '\.(key|pem)$|uplink-keys' || die "secrets left on the boot partition: $left"
echo "seen: the secrets were deleted from the boot partition"

echo "== boot 2, after the hard power-off: the store reopens, provisioning is not repeated"
ups_before=$(grep -c "/up/$tid/readings" "$out/mqtt.log")
t0=$SECONDS
boot "$out/console2.log"
wait_for "$boot_timeout" "$out/console2.log" 'Started concentrator.service' "systemd started the daemon again"
wait_for 120 "$out/console2.log" "meter $meter \(HIL-1\): energy-import-total" "the daemon read the meter again"
deadline=$((SECONDS + 120))
while [ "$(grep -c "/up/$tid/readings" "$out/mqtt.log")" -le "$ups_before" ]; do
    [ $SECONDS -lt $deadline ] || die "no reading reached the broker after the second boot"
    sleep 1
done
echo "seen ($((SECONDS - t0)) s): readings reach the broker again ($(grep -c "/up/$tid/readings" "$out/mqtt.log") in all)"
! grep -q 'concentrator-firstboot: provisioning' "$out/console2.log" || die "provisioning ran again on the second boot"
echo "seen: provisioning did not run again (the bundle was applied once)"
qmp_quit
echo "boot to first reading under QEMU (TCG): ${first_reading} s"
echo "2 passed, 0 failed"
