#!/usr/bin/env bash
# Hardware in the loop under QEMU: boots the appliance image in qemu-system-aarch64 (-M virt, software
# emulation) and checks, from the outside, what an installer would check on a real gateway:
#   sudo bash tests/hil/run.sh            (after: sudo bash image/build.sh)
#
# - the host runs a pilot's head-end (`concentrator-headend init`, `provision`, `run`): its provisioning
#   bundle for the gateway (identity, certificates, AKA credentials, head-end address, one DL/T 645
#   meter, the ledger's rules) is written into the image copy's boot partition with mtools, as an
#   installer would copy it; a customer registers the phone client `mpc` with the authorization code;
# - the guest's 16550 UART (-device pci-serial, /dev/ttyS0) is wired through a socat pty pair with
#   fixed names to a host-side simulated DL/T 645 meter (the `dlt645` package's meter service, PyPI);
# - the guest's 3G modem is simulated on the host (tests/hil/modem3g.py): its AT port and its data port
#   are two more virtual UARTs of the guest (-device pci-serial-2x: /dev/ttyS1 and /dev/ttyS2); it
#   answers the AT dialogue (SIM PIN, registration, signal, operator, APN), and after ATD*99# it is the
#   network's end of PPP, in a network namespace the test makes (addresses 10.64.0.1/10.64.0.2), routed
#   over a veth pair to the host; it watches the guest's power-key GPIO line (the virt machine's PL061,
#   read over QMP) and reboots on a pulse;
# - a Mosquitto broker with TLS and client certificates listens only on the host's end of that veth pair
#   (10.99.0.1): the guest's only way there is ppp0 (its user-mode network is restrict=on, closed to the
#   host), and the test checks that every connection of the gateway came from its PPP address;
# - the outage: the modem drops the PPP session without a word and stops answering; the test waits for
#   the daemon's staged recovery (re-dial, reset by AT, power cycle through the power key), measures the
#   time until readings reach the broker again, and checks that every reading taken during the outage
#   arrived;
# - it asserts on the guest console that first boot provisioned the gateway, that systemd started
#   concentrator.service, that the daemon read the host-simulated meter, and on the broker that the
#   gateway attached with AKA and its sealed readings arrived; it prints what it saw and the
#   boot-to-first-reading time;
# - the customer tops up with `mpc`; the moment the head-end's sealed top-up command passes the broker it
#   powers the VM off hard over QMP (`quit`; QEMU stops at once, the guest gets no warning), checks that
#   no secret is left on the boot partition, boots the same disk again and checks that the daemon starts
#   on the store as the power cut left it, reads the meter and sends again, that provisioning did not run
#   a second time, and that the top-up was applied exactly once (the customer's receipt, and the balance
#   the gateway reports: the opening balance plus the top-up, the simulated meter consuming nothing).
# Output and logs: target/hil/ (console.log, mqtt.log, meter.log, modem.log, mosquitto.log). Takes 5 to 8
# minutes. Needs root (the network namespace, the veth pair, the TUN device).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
out=$repo/target/hil
img=$repo/target/image/concentrator-arm64.img
boot_timeout=${HIL_BOOT_TIMEOUT:-420}
die() { echo "tests/hil/run.sh: $*" >&2; exit 1; }
[ -f "$img" ] || die "no image: build it first with 'sudo bash image/build.sh'"
[ "$(id -u)" = 0 ] || die "run as root: the test makes a network namespace, a veth pair and a TUN device for the 3G link"
for tool in qemu-system-aarch64 socat mosquitto mosquitto_sub mcopy openssl python3 ip; do
    command -v "$tool" >/dev/null || die "$tool missing: run 'sudo bash image/setup.sh'"
done
bash tests/peers/setup.sh >/dev/null
py=$repo/target/peer-venv/bin/python

pids=()
ns=hil3g-$$
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    ip link del hil3g-h 2>/dev/null || true
    ip route del 10.64.0.2/32 2>/dev/null || true
}
trap cleanup EXIT
rm -rf "$out"
mkdir -p "$out"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
gateway=hil-gw-1
meter=000000000001
meter_no=MTR-HIL-1
opening=1000

echo "== the 3G network: namespace $ns, veth 10.99.0.1 (host, the broker) - 10.99.0.2 (namespace), PPP 10.64.0.1 - 10.64.0.2 (the gateway)"
ip link del hil3g-h 2>/dev/null || true
ip netns add "$ns"
ip link add hil3g-h type veth peer name hil3g-n netns "$ns"
ip addr add 10.99.0.1/30 dev hil3g-h
ip link set hil3g-h up
ip -n "$ns" addr add 10.99.0.2/30 dev hil3g-n
ip -n "$ns" link set hil3g-n up
ip -n "$ns" link set lo up
ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
ip route replace 10.64.0.2/32 via 10.99.0.2
broker_ip=10.99.0.1

echo "== the pilot: head-end keys, broker, provisioning bundle, a registered customer"
cargo build -q -p concentrator-headend -p concentrator-mpc --bins
headend=$repo/target/debug/concentrator-headend
mpc=$repo/target/debug/mpc
pilot=$out/pilot
pki=$pilot/pki
phone_port=$(free_port)
# The broker listens on the host's end of the 3G network's veth pair only: the guest reaches it over PPP.
"$headend" init "$pilot" --host "$broker_ip" --broker-port "$port" --broker "mqtts://$broker_ip:$port" \
    --phone-listen "127.0.0.1:$phone_port" >"$out/init.log"
cat >"$out/mosquitto.conf" <<CONF
listener $port $broker_ip
cafile $pki/ca.pem
certfile $pki/broker.pem
keyfile $pki/broker.key
require_certificate true
use_identity_as_username true
acl_file $out/acl
persistence false
log_dest file $out/mosquitto.log
CONF
# The pilot's ACL, and an observer that sees every message (this test's eyes on the broker).
{ cat "$pilot/acl"; printf '\nuser hil-observer\ntopic read c/v1/#\n'; } >"$out/acl"
# Started as root, Mosquitto would switch to its own user, who cannot read this directory's keys.
[ "$(id -u)" != 0 ] || echo "user root" >>"$out/mosquitto.conf"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=hil-observer" \
    -keyout "$out/observer.key" -out "$out/observer.csr" 2>/dev/null
openssl x509 -req -in "$out/observer.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
    -out "$out/observer.pem" 2>/dev/null
mosquitto -c "$out/mosquitto.conf" & pids+=($!)
cat >"$out/block.toml" <<TOML
[[gateway]]
id = "$gateway"
broker = "mqtts://$broker_ip:$port"
ledger_options = { checkpoint_s = 60 }
uplink_options = { account_every_s = 10 }
[gateway.ledger]
currency = "EUR"
utc_offset_minutes = 0
holidays = []
standing_charge_minor_per_day = 0
low_credit_levels_minor = [100]
tariff = { kind = "flat", rate = 25000 }
emergency = { amount_minor = 0, auto_select = false, offer_below_minor = 0 }
debt_recovery = { kind = "percent_of_top_up", basis_points = 0 }
friendly = { hours = [], weekends = false, holidays = false }
relay = { reconnect_threshold_minor = 100, reconnect = "direct", verify_after_s = 30, max_attempts = 3 }
plausibility = { max_power_w = 100000, slack_wh = 1000, rebaseline_after = 3 }
# The 3G modem (tests/hil/modem3g.py): AT port and data port on the pci-serial-2x, the power key on the
# PL061's line 4; checks every 10 s and one failed check per recovery stage, so the outage runs in
# about a minute (the defaults are 30 s and 3).
[gateway.modem]
port = "/dev/ttyS1"
apn = "hil.apn"
pin_file = "/var/lib/concentrator/secrets/sim.pin"
power_key_gpio = "gpiochip0:4"
ppp_port = "/dev/ttyS2"
check_interval_s = 10
failures_per_stage = 1
boot_time_s = 5
register_timeout_s = 20
[[gateway.bus]]
name = "rs485-1"
backend = "linux"
path = "/dev/ttyS0"        # QEMU's pci-serial 16550; on a Pi /dev/rs485-1
baud = 2400
format = "8E1"
direction = "adapter"
poll_interval_s = 5
[[meter]]
meter = "$meter_no"
gateway = "$gateway"
dwelling = "HIL-1"
bus = "rs485-1"
address = "$meter"
driver = "dlt645"
opening_balance_minor = $opening
[[customer]]
id = "C-HIL"
name = "HIL Customer"
msisdn = "491700000042"
meters = ["$meter_no"]
TOML
"$headend" provision --config "$pilot/headend.toml" "$out/block.toml" --out "$out/bundles" >"$out/provision.log"
bundle=$out/bundles/$gateway/concentrator
# The SIM's PIN, as the installer adds it to the bundle (a secret: first boot moves it to the store).
echo 1234 >"$bundle/sim.pin"
ls "$bundle" | sed 's/^/  bundle: /'
"$headend" run --config "$pilot/headend.toml" >"$out/headend.log" 2>&1 & pids+=($!)
code=$(grep -oE '[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}' "$out/bundles/customers.txt" | head -n 1)
export MPC_PROFILE=$out/phone/profile.toml MPC_PASSWORD=hil-password
for _ in $(seq 50); do "$mpc" register --server "127.0.0.1:$phone_port" --ca "$pki/ca.pem" --code "$code" \
    --user hil >"$out/mpc.log" 2>&1 && break; sleep 0.2; done
grep -q . "$MPC_PROFILE" || die "the customer could not register: $(cat "$out/mpc.log")"
echo "customer registered with authorization code $code"

echo "== disk: a copy of the image with the bundle in the boot partition's concentrator/"
cp --sparse=always "$img" "$out/disk.img"
mmd -i "$out/disk.img@@1M" ::/concentrator
mcopy -i "$out/disk.img@@1M" "$bundle/"* ::/concentrator/
mdir -i "$out/disk.img@@1M" ::/concentrator | grep -E 'toml|pem|key' || true

echo "== the meter: socat pty pair, the dlt645 package's meter on the host end"
socat -d pty,raw,echo=0,link="$out/uart-guest" pty,raw,echo=0,link="$out/uart-meter" 2>"$out/socat.log" & pids+=($!)
for _ in $(seq 50); do [ -e "$out/uart-guest" ] && [ -e "$out/uart-meter" ] && break; sleep 0.1; done
[ -e "$out/uart-meter" ] || die "socat made no pty pair: $(cat "$out/socat.log")"
"$py" -u tests/peers/python/dlt645_meter.py "$out/uart-meter" "$meter" 00010000=12345.67 >"$out/meter.log" 2>&1 & pids+=($!)
for _ in $(seq 300); do grep -q ready "$out/meter.log" && break; sleep 0.1; done
grep -q ready "$out/meter.log" || die "the simulated meter did not start: $(cat "$out/meter.log")"

echo "== the 3G modem: AT and data ports on QEMU sockets, PPP into the namespace"
ip netns exec "$ns" python3 -u tests/hil/modem3g.py "$out/modem-at.sock" "$out/modem-data.sock" "$out/qmp-gpio.sock" \
    hilppp0 "$out/modem.log" 2>"$out/modem.err" & pids+=($!)
modem_pid=$!
for _ in $(seq 50); do grep -q ready "$out/modem.log" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$out/modem.log" || die "the simulated modem did not start: $(cat "$out/modem.err")"

mosquitto_sub -h "$broker_ip" -p "$port" --cafile "$pki/ca.pem" --cert "$out/observer.pem" --key "$out/observer.key" \
    -t "c/v1/$gateway/#" -F '%I %t %l bytes' >"$out/mqtt.log" 2>"$out/mqtt.err" & pids+=($!)

boot() { # boot LOG: starts the VM, console to LOG
    qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -display none -no-reboot \
        -kernel "$repo/target/image/vmlinuz" -initrd "$repo/target/image/initrd.img" \
        -append "root=LABEL=root-a console=ttyAMA0 net.ifnames=0 rootwait systemd.journald.forward_to_console=1 systemd.show_status=1" \
        -drive file="$out/disk.img",format=raw,if=none,id=disk -device virtio-blk-pci,drive=disk \
        -netdev user,id=net,restrict=on -device virtio-net-pci,netdev=net,romfile= \
        -chardev serial,id=rs485,path="$out/uart-guest" -device pci-serial,chardev=rs485 \
        -chardev socket,id=modemat,path="$out/modem-at.sock",server=on,wait=off \
        -chardev socket,id=modemdata,path="$out/modem-data.sock",server=on,wait=off \
        -device pci-serial-2x,chardev1=modemat,chardev2=modemdata \
        -serial file:"$1" -qmp unix:"$out/qmp.sock",server=on,wait=off \
        -qmp unix:"$out/qmp-gpio.sock",server=on,wait=off &
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
wait_new() { # wait_new SECONDS FILE FROM_LINE PATTERN WHAT: as wait_for, in the lines after FROM_LINE
    local deadline=$((SECONDS + $1))
    while ! tail -n +"$(($3 + 1))" "$2" 2>/dev/null | grep -qE "$4"; do
        [ $SECONDS -lt $deadline ] || { echo "FAIL: no $5 within $1 s (pattern: $4); tail of $2:" >&2; tail -n 60 "$2" >&2; exit 1; }
        kill -0 "$qemu_pid" 2>/dev/null || { echo "FAIL: QEMU exited; tail of $2:" >&2; tail -n 40 "$2" >&2; exit 1; }
        sleep 1
    done
    echo "seen ($((SECONDS - t0)) s): $5: $(tail -n +"$(($3 + 1))" "$2" | grep -m1 -E "$4" | tr -d '\r' | cut -c1-200)"
}
lines() { wc -l <"$1"; }
ups() { grep -cE "c/v1/$gateway/up/[0-9a-f]{16}/readings" "$out/mqtt.log" || true; }
polls() { grep -cE "meter $meter \(HIL-1\): energy-import-total" "$1" || true; }
ppp_only() { # every connection of the gateway to the broker came from its PPP address
    local from
    from=$(grep -oE 'New client connected from [0-9.]+' "$out/mosquitto.log" | awk '{print $5}' | sort -u | grep -vx "$broker_ip" || true)
    [ -n "$from" ] || die "the gateway never connected to the broker"
    [ "$from" = 10.64.0.2 ] || die "the gateway reached the broker from $(echo "$from" | tr '\n' ' ')and not only over PPP (10.64.0.2)"
    echo "seen: every connection of the gateway to the broker came over PPP, from 10.64.0.2 ($(grep -c 'New client connected from 10.64.0.2' "$out/mosquitto.log") connections so far)"
}

echo "== boot 1 (software emulation; about a minute to the daemon)"
t0=$SECONDS
boot "$out/console.log"
wait_for "$boot_timeout" "$out/console.log" 'concentrator-firstboot: gateway .* provisioned' "first boot provisioned the gateway"
wait_for 120 "$out/console.log" 'Started concentrator.service' "systemd started the daemon"
wait_for 120 "$out/console.log" "meter $meter \(HIL-1\): energy-import-total" "the daemon read the host-simulated meter"
first_reading=$((SECONDS - t0))
wait_for 120 "$out/mqtt.log" "c/v1/$gateway/down/[0-9a-f]{16}/tid" "AKA for the meter: a TID assigned"
wait_for 120 "$out/mqtt.log" "c/v1/$gateway/up/[0-9a-f]{16}/readings" "a sealed reading at the broker"
first_3g=$((SECONDS - t0))
wait_for 5 "$out/modem.log" "SIM: PIN accepted" "the gateway entered the SIM PIN"
wait_for 5 "$out/modem.log" "APN set to hil.apn" "the gateway set the APN"
wait_for 5 "$out/modem.log" "IPCP open" "PPP up, the gateway is 10.64.0.2"
ppp_only

echo "== the outage: the modem drops PPP without a word and stops answering; staged recovery"
sleep 12 # a few readings over the link first
t_drop=$SECONDS
t0=$SECONDS
from=$(lines "$out/console.log")
from_modem=$(lines "$out/modem.log")
ups_before=$(ups)
polls_before=$(polls "$out/console.log")
gw_events() { grep -c "c/v1/$gateway/up/gw/event" "$out/mqtt.log" || true; }
events_before=$(gw_events)
kill -USR1 "$modem_pid"
wait_new 120 "$out/console.log" "$from" "modem recovery: reconnect" "stage 1, re-dial"
wait_new 120 "$out/console.log" "$from" "modem recovery: reset" "stage 2, modem reset by AT"
wait_new 120 "$out/console.log" "$from" "modem recovery: power-cycle" "stage 3, power cycle"
wait_new 30 "$out/modem.log" "$from_modem" "power key released" "the modem saw the power-key pulse"
wait_new 120 "$out/modem.log" "$from_modem" "IPCP open" "PPP up again"
wait_new 120 "$out/console.log" "$from" "modem recovered" "the daemon reports the recovery"
deadline=$((SECONDS + 180))
while [ "$(ups)" -le "$ups_before" ]; do
    [ $SECONDS -lt $deadline ] || die "no reading reached the broker after the outage"
    sleep 1
done
recovery=$((SECONDS - t_drop))
outage_polls=$(($(polls "$out/console.log") - polls_before))
echo "seen ($recovery s): readings reach the broker again; the gateway read the meter $outage_polls times meanwhile"
deadline=$((SECONDS + 180))
while [ "$(ups)" -lt $((ups_before + outage_polls)) ]; do
    [ $SECONDS -lt $deadline ] || die "only $(($(ups) - ups_before)) of the $outage_polls readings taken during the outage reached the broker"
    sleep 1
done
echo "seen ($((SECONDS - t_drop)) s): all $outage_polls readings taken during the outage reached the broker ($(($(ups) - ups_before)) readings messages since the drop)"
# The three recovery steps (event 52) and the recovery (53), queued while the link was down. Sealed:
# counted here, not read.
deadline=$((SECONDS + 120))
while [ "$(gw_events)" -lt $((events_before + 4)) ]; do
    [ $SECONDS -lt $deadline ] || die "only $(($(gw_events) - events_before)) of the recovery's 4 gateway events (3 steps, the recovery) reached the broker"
    sleep 1
done
echo "seen: the recovery's gateway events reached the broker ($(($(gw_events) - events_before)): re-dial, reset, power cycle, recovered)"
ppp_only
tid=$(grep -oE "c/v1/$gateway/up/[0-9a-f]{16}/readings" "$out/mqtt.log" | tail -n 1 | cut -d/ -f5)
echo "broker saw:"; sort -k2,2 -u "$out/mqtt.log" | sed 's/^/  /' | head -n 14
echo "== a top-up, and the power cut the moment its command passes the broker"
downs=$(grep -c "/down/$tid/top-up" "$out/mqtt.log" || true)
"$mpc" topup "$meter_no" 5.00 --wait 0 >"$out/topup.log" 2>&1 || die "mpc topup: $(cat "$out/topup.log")"
deadline=$((SECONDS + 60))
while [ "$(grep -c "/down/$tid/top-up" "$out/mqtt.log" || true)" -le "$downs" ]; do
    [ $SECONDS -lt $deadline ] || die "the head-end sent no top-up command"
    sleep 0.05
done
qmp_quit
echo "seen: the top-up command went down; the VM was powered off at once ($(cat "$out/topup.log" | head -n 1))"
# After the power-off, the boot partition as an installer would see it: no secret left on the card.
left=$(mdir -b -i "$out/disk.img@@1M" ::/concentrator/ | tr 'A-Z' 'a-z')
echo "boot partition after first boot: $(echo "$left" | xargs -n1 basename | tr '\n' ' ')"
echo "$left" | grep -q 'provisioned.txt' || die "no PROVISIONED.txt on the boot partition"
! echo "$left" | grep -qE '\.(key|pem)$|uplink-keys' || die "secrets left on the boot partition: $left"
echo "seen: the secrets were deleted from the boot partition"

echo "== boot 2, after the hard power-off: the store reopens, provisioning is not repeated"
ups_before=$(grep -c "/up/[0-9a-f]*/readings" "$out/mqtt.log")
t0=$SECONDS
boot "$out/console2.log"
wait_for "$boot_timeout" "$out/console2.log" 'Started concentrator.service' "systemd started the daemon again"
wait_for 120 "$out/console2.log" "meter $meter \(HIL-1\): energy-import-total" "the daemon read the meter again"
deadline=$((SECONDS + 120))
while [ "$(grep -c "/up/[0-9a-f]*/readings" "$out/mqtt.log")" -le "$ups_before" ]; do
    [ $SECONDS -lt $deadline ] || die "no reading reached the broker after the second boot"
    sleep 1
done
echo "seen ($((SECONDS - t0)) s): readings reach the broker again ($(grep -c "/up/[0-9a-f]*/readings" "$out/mqtt.log") in all)"
# The top-up: applied exactly once. The customer gets the receipt (sent again, or the command retried
# and answered), and the balance the gateway reports is the opening balance plus 5.00, not plus 10.00.
deadline=$((SECONDS + 180))
until "$mpc" history "$meter_no" >"$out/history.log" 2>&1 && grep -q "applied  token 1" "$out/history.log"; do
    [ $SECONDS -lt $deadline ] || die "the top-up was not applied after the power cut: $(cat "$out/history.log")"
    sleep 2
done
[ "$(grep -c "applied  token" "$out/history.log")" = 1 ] || die "applied more than once: $(cat "$out/history.log")"
expected="balance $(( (opening + 500) / 100 )).$(printf %02d $(( (opening + 500) % 100 ))) EUR"
deadline=$((SECONDS + 60))
until "$mpc" balance "$meter_no" >"$out/balance.log" 2>&1 && grep -q "$expected" "$out/balance.log"; do
    [ $SECONDS -lt $deadline ] || die "the gateway reports $(cat "$out/balance.log"), expected $expected"
    sleep 2
done
echo "seen: the top-up was applied exactly once: $(head -n 1 "$out/balance.log")"
! grep -q 'concentrator-firstboot: provisioning' "$out/console2.log" || die "provisioning ran again on the second boot"
echo "seen: provisioning did not run again (the bundle was applied once)"
qmp_quit
ppp_only
echo "boot to first reading under QEMU (TCG): ${first_reading} s"
echo "power-on to the first reading delivered over 3G (PPP): ${first_3g} s"
echo "outage to readings delivered again (re-dial, reset, power cycle, PPP): ${recovery} s"
echo "4 passed, 0 failed"
