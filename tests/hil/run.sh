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
# - signed A/B updates, from an installer's USB stick plugged in over QMP (udev starts
#   concentrator-update-stick@, which runs `concentrator update apply` and reboots with `0 tryboot`): a
#   good version (it boots once on trial, the daemon reports healthy, it is committed and stays after a
#   power cut), a bundle signed with another key (refused, the other slot's first MiB unchanged), a
#   power cut in the middle of writing (the cut slot holds no filesystem; the running one still boots),
#   and a version whose daemon fails its health check (back to the previous version by itself);
# - the last gasp: QEMU's power button raises the power-fail line (the PL061's line 3), the daemon sends
#   its last gasp and stops, the power is cut, and after the next boot the head-end has the outage's
#   window and the customer's money is as it was.
# The Pi's firmware is played by this script: before each boot it reads config.txt from the image's
# boot partition (tryboot.txt instead, once, after a `reboot '0 tryboot'` on the console), boots the
# kernel, initramfs and command line it names, and sets /chosen/bootloader/tryboot in the device tree
# (QEMU's own, dumped and edited with fdtput) as the firmware does on a trial boot.
# Output and logs: target/hil/ (console*.log, mqtt.log, meter.log, modem.log, mosquitto.log, headend.log).
# Takes 20 to 30 minutes. Needs root (the network namespace, the veth pair, the TUN device).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
out=$repo/target/hil
img=$repo/target/image/concentrator-arm64.img
boot_timeout=${HIL_BOOT_TIMEOUT:-420}
die() { echo "tests/hil/run.sh: $*" >&2; exit 1; }
[ -f "$img" ] || die "no image: build it first with 'sudo bash image/build.sh'"
[ "$(id -u)" = 0 ] || die "run as root: the test makes a network namespace, a veth pair and a TUN device for the 3G link"
for f in root.ext4 vmlinuz initrd.img release.pub release-dev.key version.txt; do
    [ -f "$repo/target/image/$f" ] || die "target/image/$f missing: build the image again with 'sudo bash image/build.sh' (without RELEASE_PUB, so the test can sign updates)"
done
for tool in qemu-system-aarch64 socat mosquitto mosquitto_sub mcopy mtype mkfs.vfat openssl python3 ip fdtput debugfs sfdisk; do
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
cargo build -q -p concentrator-appliance --bin concentrator
headend=$repo/target/debug/concentrator-headend
tool=$repo/target/debug/concentrator
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
# The power-fail line: QEMU's power button (system_powerdown over QMP) pulses the PL061's line 3 high
# for 100 ms, as a supercapacitor board's power-fail output would rise (the HIL's device tree has no
# gpio-keys node, so the line is free for the daemon).
[gateway.power]
fail_line = "gpiochip0:3"
polarity = "active_high"
debounce_ms = 20
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
mtype -i "$out/disk.img@@1M" ::/config.txt | grep -q 'kernel=vmlinuz-a' || die "the image's config.txt does not boot slot A's files: $(mtype -i "$out/disk.img@@1M" ::/config.txt)"

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

disk=$out/disk.img
qemu_machine=(-M virt -cpu cortex-a72 -smp 2 -m 1024)
qemu-system-aarch64 "${qemu_machine[@]}" -machine dumpdtb="$out/virt.dtb" -display none -nic none >/dev/null 2>&1 || true
[ -s "$out/virt.dtb" ] || die "QEMU did not dump its device tree (-machine dumpdtb)"
next_tryboot=0
firmware() { # the Pi firmware's part: what to boot, from the boot partition
    local file=config.txt trial=0 kernel initrd cmdfile
    if [ "$next_tryboot" = 1 ] && mtype -i "$disk@@1M" ::/tryboot.txt >/dev/null 2>&1; then
        file=tryboot.txt
        trial=1
    fi
    next_tryboot=0
    mtype -i "$disk@@1M" "::/$file" | tr -d '\r' >"$out/fw-$file" || die "the boot partition has no $file"
    kernel=$(sed -n 's/^kernel=//p' "$out/fw-$file" | tail -n 1)
    initrd=$(sed -n 's/^initramfs \([^ ]*\).*/\1/p' "$out/fw-$file" | tail -n 1)
    cmdfile=$(sed -n 's/^cmdline=//p' "$out/fw-$file" | tail -n 1)
    [ -n "$kernel" ] && [ -n "$initrd" ] || die "$file names no kernel or initramfs: $(cat "$out/fw-$file")"
    mcopy -o -i "$disk@@1M" "::/$kernel" "$out/fw-kernel" || die "$file names $kernel, which the boot partition does not hold"
    mcopy -o -i "$disk@@1M" "::/$initrd" "$out/fw-initrd" || die "$file names $initrd, which the boot partition does not hold"
    # The slot's command line, with QEMU's console for the Pi's (the firmware also rewrites consoles).
    fw_cmdline="$(mtype -i "$disk@@1M" "::/${cmdfile:-cmdline.txt}" | tr -d '\r\n' | tr ' ' '\n' | grep -v -e '^console=' -e '^$' | tr '\n' ' ')"
    fw_cmdline="${fw_cmdline}console=ttyAMA0 systemd.journald.forward_to_console=1 systemd.show_status=1"
    fw_slot=$(echo "$fw_cmdline" | grep -oE 'root=LABEL=root-[ab]' | cut -d- -f2)
    cp "$out/virt.dtb" "$out/fw.dtb"
    fdtput -r "$out/fw.dtb" /gpio-keys
    fdtput -c "$out/fw.dtb" /chosen/bootloader
    fdtput -t i "$out/fw.dtb" /chosen/bootloader tryboot "$trial"
    fw_trial=$trial
    echo "firmware: $file boots $kernel, $initrd, ${cmdfile:-cmdline.txt} (slot $fw_slot)$([ "$trial" = 0 ] || echo ', on trial: tryboot flag set')"
}
boot() { # boot LOG: the firmware's choice, then the VM, console to LOG
    firmware
    qemu-system-aarch64 "${qemu_machine[@]}" -display none -no-reboot \
        -kernel "$out/fw-kernel" -initrd "$out/fw-initrd" -dtb "$out/fw.dtb" -append "$fw_cmdline" \
        -drive file="$disk",format=raw,if=none,id=disk -device virtio-blk-pci,drive=disk \
        -device qemu-xhci,id=xhci \
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
qmp() { python3 "$repo/tests/hil/qmp.py" "$out/qmp.sock" "$@" >>"$out/qmp.log"; }
qmp_quit() { # the hard power-off: QEMU quits at once, the guest gets no warning
    qmp '{"execute": "quit"}'
    wait "$qemu_pid" 2>/dev/null || true
}
wait_for() { # wait_for SECONDS FILE PATTERN WHAT
    local deadline=$((SECONDS + $1))
    while ! grep -qE "$3" "$2" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "FAIL: no $4 within $1 s (pattern: $3); tail of $2:" >&2; tail -n 40 "$2" >&2; exit 1; }
        kill -0 "$qemu_pid" 2>/dev/null || grep -qE "$3" "$2" || { echo "FAIL: QEMU exited; tail of $2:" >&2; tail -n 40 "$2" >&2; exit 1; }
        sleep 1
    done
    echo "seen ($((SECONDS - t0)) s): $4: $(grep -m1 -E "$3" "$2" | tr -d '\r' | cut -c1-160)"
}
wait_new() { # wait_new SECONDS FILE FROM_LINE PATTERN WHAT: as wait_for, in the lines after FROM_LINE
    local deadline=$((SECONDS + $1))
    while ! tail -n +"$(($3 + 1))" "$2" 2>/dev/null | grep -qE "$4"; do
        [ $SECONDS -lt $deadline ] || { echo "FAIL: no $5 within $1 s (pattern: $4); tail of $2:" >&2; tail -n 60 "$2" >&2; exit 1; }
        kill -0 "$qemu_pid" 2>/dev/null || tail -n +"$(($3 + 1))" "$2" | grep -qE "$4" || { echo "FAIL: QEMU exited; tail of $2:" >&2; tail -n 40 "$2" >&2; exit 1; }
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
balance_is_expected() { # balance_is_expected WHEN: the gateway reports the opening balance plus the one top-up
    local deadline=$((SECONDS + 60))
    until "$mpc" balance "$meter_no" >"$out/balance.log" 2>&1 && grep -q "$expected" "$out/balance.log"; do
        [ $SECONDS -lt $deadline ] || die "$1 the gateway reports $(cat "$out/balance.log"), expected $expected"
        sleep 2
    done
}
balance_is_expected "after the power cut"
echo "seen: the top-up was applied exactly once: $(head -n 1 "$out/balance.log")"
! grep -q 'concentrator-firstboot: provisioning' "$out/console2.log" || die "provisioning ran again on the second boot"
echo "seen: provisioning did not run again (the bundle was applied once)"
[ "$fw_slot" = a ] || die "the first boots were not on slot A"

# ---------------------------------------------------------------------------------------------------
# Signed A/B updates from an installer's USB stick.
boots=2
next_boot() { # next_boot: after the guest rebooted or was cut off, boot again; the console's file in $console
    local how
    how=$(grep -a 'reboot: Restarting system' "$console" 2>/dev/null | tail -n 1 | tr -d '\r' || true) # none after a power cut
    case "$how" in
        *"command '0 tryboot'"*) next_tryboot=1 ;;
    esac
    boots=$((boots + 1))
    console=$out/console$boots.log
    t0=$SECONDS
    echo "-- boot $boots"
    boot "$console"
}
wait_reboot() { # wait_reboot SECONDS WHAT: the guest reboots (QEMU exits: -no-reboot)
    local deadline=$((SECONDS + $1))
    while kill -0 "$qemu_pid" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "FAIL: no reboot within $1 s ($2); tail of $console:" >&2; tail -n 40 "$console" >&2; exit 1; }
        sleep 1
    done
    wait "$qemu_pid" 2>/dev/null || true
    echo "seen ($((SECONDS - t0)) s): the guest rebooted ($2): $(grep -a 'reboot: Restarting system' "$console" | tail -n 1 | tr -d '\r')"
}
daemon_reads() { # daemon_reads: on the boot just started, the daemon runs and its readings reach the broker
    local before
    before=$(grep -c "/up/[0-9a-f]*/readings" "$out/mqtt.log" || true)
    wait_for "$boot_timeout" "$console" 'Started concentrator.service' "systemd started the daemon"
    wait_for 120 "$console" "meter $meter \(HIL-1\): energy-import-total" "the daemon read the meter"
    local deadline=$((SECONDS + 180))
    while [ "$(grep -c "/up/[0-9a-f]*/readings" "$out/mqtt.log" || true)" -le "$before" ]; do
        [ $SECONDS -lt $deadline ] || die "no reading reached the broker on boot $boots"
        sleep 1
    done
    echo "seen ($((SECONDS - t0)) s): readings reach the broker from slot $fw_slot"
}
part_start() { # part_start N: partition N's first octet in the disk image
    sfdisk --json "$disk" | python3 -c 'import json, sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][int(sys.argv[1]) - 1]["start"] * 512)' "$1"
}
slot_part() { case "$1" in a) echo 2 ;; b) echo 3 ;; esac; }
slot_head() { # slot_head a|b: SHA-256 of the slot's first MiB, read from outside
    dd if="$disk" bs=1M skip=$(($(part_start "$(slot_part "$1")") / 1048576)) count=1 status=none | sha256sum | cut -c1-16
}
slot_label() { # slot_label a|b: the slot's ext4 label as blkid would find it, or "none"
    dd if="$disk" bs=1024 skip=$(($(part_start "$(slot_part "$1")") / 1024 + 1)) count=1 status=none |
        python3 -c 'import sys; b = sys.stdin.buffer.read(); print(b[120:136].rstrip(b"\0").decode() if b[56:58] == b"\x53\xef" else "none")'
}
boot_file() { mtype -i "$disk@@1M" "::/$1" 2>/dev/null | tr -d '\r'; }
make_stick() { # make_stick NAME BUNDLE: a FAT32 USB stick image holding the bundle
    local img=$out/$1.img
    rm -f "$img"
    mkfs.vfat -C -F 32 -n UPDATE "$img" $(( ($(stat -c %s "$2") / 1048576 + 64) * 1024 )) >/dev/null
    mcopy -i "$img" "$2" ::/
}
plug_stick() { # plug_stick NAME: the installer plugs the stick in (QMP: a read-only USB disk on the xHCI)
    qmp "{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": \"raw\", \"node-name\": \"$1\", \"read-only\": true, \"file\": {\"driver\": \"file\", \"filename\": \"$out/$1.img\", \"read-only\": true}}}" \
        "{\"execute\": \"device_add\", \"arguments\": {\"driver\": \"usb-storage\", \"id\": \"$1\", \"drive\": \"$1\", \"bus\": \"xhci.0\", \"removable\": true}}"
    echo "plugged: the USB stick $1 ($(mdir -b -i "$out/$1.img" ::/ | xargs -n1 basename | tr '\n' ' '))"
}

re() { printf '%s' "$1" | sed 's#[].^$*+?(){}|\\[]#\\&#g'; } # a literal for grep -E
echo "== updates: the bundles, signed by the release key the image trusts (target/image/release-dev.key)"
base_version=$(cat "$repo/target/image/version.txt")
good=$base_version+hil.2
bad=$base_version+hil.bad
good_cub=$out/concentrator-update-$good.cub
"$tool" update make --key "$repo/target/image/release-dev.key" --version "$good" --root "$repo/target/image/root.ext4" \
    --kernel "$repo/target/image/vmlinuz" --initrd "$repo/target/image/initrd.img" --out "$good_cub"
make_stick stick-good "$good_cub"
openssl genpkey -algorithm ed25519 -out "$out/stranger.key" 2>/dev/null
"$tool" update make --key "$out/stranger.key" --version "$base_version+hil.forged" --root "$repo/target/image/root.ext4" \
    --kernel "$repo/target/image/vmlinuz" --initrd "$repo/target/image/initrd.img" --out "$out/concentrator-update-forged.cub"
make_stick stick-forged "$out/concentrator-update-forged.cub"
# The version whose daemon fails its health check: its unit starts the daemon with a configuration
# whose bus adapter does not exist, so the bus is never polled (a packaging mistake of the new version);
# the trial's limit is 60 s instead of 10 minutes. Written into a copy of the root with debugfs.
cp --sparse=always "$repo/target/image/root.ext4" "$out/root-bad.ext4"
sed 's#^path = "/dev/ttyS0"#path = "/dev/ttyUSB9"#' "$bundle/concentrator.toml" >"$out/hil-fault.toml"
grep -q '/dev/ttyUSB9' "$out/hil-fault.toml" || die "the fault configuration names no missing adapter: $(grep -n path "$out/hil-fault.toml")"
printf '\n[update]\ntrial_limit_s = 60\n' >>"$out/hil-fault.toml"
cat >"$out/hil-fault.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/concentratord validate /etc/concentrator/hil-fault.toml
ExecStart=
ExecStart=/usr/bin/concentratord --config /etc/concentrator/hil-fault.toml
UNIT
chmod 0644 "$out/hil-fault.toml" "$out/hil-fault.conf"
debugfs -w -f - "$out/root-bad.ext4" >"$out/debugfs.log" 2>&1 <<DEBUGFS
mkdir /etc/systemd/system/concentrator.service.d
write $out/hil-fault.conf /etc/systemd/system/concentrator.service.d/hil-fault.conf
write $out/hil-fault.toml /etc/concentrator/hil-fault.toml
DEBUGFS
debugfs -R 'cat /etc/systemd/system/concentrator.service.d/hil-fault.conf' "$out/root-bad.ext4" 2>/dev/null | grep -q hil-fault.toml ||
    die "debugfs did not write the fault into root-bad.ext4: $(cat "$out/debugfs.log")"
"$tool" update make --key "$repo/target/image/release-dev.key" --version "$bad" --root "$out/root-bad.ext4" \
    --kernel "$repo/target/image/vmlinuz" --initrd "$repo/target/image/initrd.img" --out "$out/concentrator-update-$bad.cub"
make_stick stick-bad "$out/concentrator-update-$bad.cub"

console=$out/console2.log
echo "== update 1: a good version from a USB stick: written to slot B, one trial boot, healthy, committed"
t0=$SECONDS
t_update=$SECONDS
plug_stick stick-good
wait_for 120 "$console" "update-from-stick: .*applying $(re "concentrator-update-$good.cub")" "the stick's bundle found"
wait_for 600 "$console" "update-from-stick: .*written; rebooting once into it on trial" "the bundle written to slot B"
write_good=$((SECONDS - t_update))
wait_reboot 120 "a tryboot reboot"
[ "$(slot_label b)" = root-b ] || die "slot B's label after the update is $(slot_label b), not root-b"
boot_file tryboot.txt | grep -q 'kernel=vmlinuz-b' || die "tryboot.txt does not boot slot B: $(boot_file tryboot.txt)"
next_boot
[ "$fw_slot" = b ] && [ "$fw_trial" = 1 ] || die "the trial boot was not slot B on trial (slot $fw_slot, trial $fw_trial)"
wait_for "$boot_timeout" "$console" 'trial boot of a new version: it stays only if' "the daemon sees the trial boot"
wait_for 300 "$console" 'trial boot healthy: this version is permanent now' "healthy: committed"
trial_healthy=$((SECONDS - t0))
sleep 2
qmp_quit
boot_file config.txt | grep -q 'kernel=vmlinuz-b' || die "config.txt does not boot slot B after the commit: $(boot_file config.txt)"
[ -z "$(boot_file tryboot.txt)" ] || die "tryboot.txt is still there after the commit"
[ "$(boot_file version-b.txt)" = "$good" ] || die "version-b.txt says $(boot_file version-b.txt), not $good"
echo "seen: config.txt boots slot B, version $good, no trial file; the power was cut"
next_boot
[ "$fw_slot" = b ] && [ "$fw_trial" = 0 ] || die "after the commit the gateway booted slot $fw_slot (trial $fw_trial), not slot B"
daemon_reads
! grep -q 'trial boot of a new version: it stays only if' "$console" || die "an ordinary boot of slot B was taken for a trial"
echo "seen: the good version stays (slot B, an ordinary boot, the daemon reads and sends)"

echo "== update 2: a bundle signed with another key: refused before anything is written"
head_a=$(slot_head a)
from=$(lines "$console")
plug_stick stick-forged
wait_new 120 "$console" "$from" "does not verify" "the signature refused"
wait_new 30 "$console" "$from" "was not applied" "the update not applied, this version keeps running"
sleep 5
kill -0 "$qemu_pid" 2>/dev/null || die "the gateway rebooted after a refused bundle"
[ "$(slot_head a)" = "$head_a" ] || die "slot A changed although the bundle was refused"
[ -z "$(boot_file tryboot.txt)" ] || die "a refused bundle left a tryboot.txt"
boot_file config.txt | grep -q 'kernel=vmlinuz-b' || die "a refused bundle changed config.txt"
echo "seen: slot A's first MiB unchanged ($head_a), config.txt still boots slot B, no trial file"

echo "== update 3: a power cut in the middle of writing slot A: slot B still boots"
from=$(lines "$console")
plug_stick stick-good
wait_new 600 "$console" "$from" "writing slot A: [3-9]0 %" "slot A a third written"
qmp_quit
echo "seen: the power was cut while slot A was being written ($(grep -a 'writing slot A' "$console" | tail -n 1 | tr -d '\r' | sed 's/.*writing/writing/'))"
[ "$(slot_label a)" = none ] || die "the cut slot A has a filesystem labelled $(slot_label a): it could be booted or mistaken for a slot"
[ -z "$(boot_file tryboot.txt)" ] || die "the cut write left a tryboot.txt"
echo "seen: slot A holds no filesystem (its superblock is written last), config.txt still boots slot B"
next_boot
[ "$fw_slot" = b ] || die "after the cut the gateway booted slot $fw_slot"
daemon_reads

echo "== update 4: a version whose daemon fails its health check: back to the previous version by itself"
from=$(lines "$console")
t_update=$SECONDS
plug_stick stick-bad
wait_new 600 "$console" "$from" "update-from-stick: .*written; rebooting once into it on trial" "the faulty version written to slot A (over the cut one)"
wait_reboot 120 "a tryboot reboot"
next_boot
[ "$fw_slot" = a ] && [ "$fw_trial" = 1 ] || die "the trial boot was not slot A on trial (slot $fw_slot, trial $fw_trial)"
wait_for "$boot_timeout" "$console" 'trial boot of a new version: it stays only if' "the daemon sees the trial boot"
wait_for 300 "$console" 'trial boot not healthy|the daemon failed and its restarts are used up' "the verdict: not healthy"
grep -q 'trial boot not healthy' "$console" || echo "note: the daemon's restarts ran out before its own health verdict (the watchdog or a crash)"
wait_for 60 "$console" 'rebooting into the previous version' "the way back"
wait_reboot 120 "an ordinary reboot"
rollback=$((SECONDS - t_update))
next_boot
[ "$fw_slot" = b ] && [ "$fw_trial" = 0 ] || die "after the failed trial the gateway booted slot $fw_slot (trial $fw_trial), not slot B"
daemon_reads
boot_file config.txt | grep -q 'kernel=vmlinuz-b' || die "config.txt changed after the failed trial"
echo "seen: rolled back to slot B ($good) $rollback s after the stick was plugged in"

# ---------------------------------------------------------------------------------------------------
echo "== last gasp: the power-fail line rises, the daemon sends its last gasp, then the power is cut"
events_before=$(gw_events)
from=$(lines "$console")
t0=$SECONDS
qmp '{"execute": "system_powerdown"}'
wait_new 30 "$console" "$from" "LAST GASP: the supply failed" "the daemon sees the power fail"
wait_new 30 "$console" "$from" "the last gasp left|the last gasp did not leave" "the last gasp sent"
qmp_quit
last_gasp_s=$((SECONDS - t0))
echo "seen: the power was cut $last_gasp_s s after the line rose"
headend_says() { # headend_says SECONDS PATTERN WHAT: the head-end's log has the line
    local deadline=$((SECONDS + $1))
    until grep -q "$2" "$out/headend.log"; do
        [ $SECONDS -lt $deadline ] || die "the head-end has no $3 from $gateway: $(tail -n 5 "$out/headend.log")"
        sleep 1
    done
    echo "seen: the head-end has the $3: $(grep "$2" "$out/headend.log" | tail -n 1 | sed 's/.*gateway /gateway /')"
}
headend_says 60 "gateway $gateway: last gasp, its supply failed at" "last gasp"
[ "$(gw_events)" -gt "$events_before" ] || die "no gateway event passed the broker"
next_boot
daemon_reads
headend_says 120 "gateway $gateway: supply back; it was out from" "outage window"
"$mpc" history "$meter_no" >"$out/history.log" 2>&1 || die "mpc history: $(cat "$out/history.log")"
[ "$(grep -c "applied  token" "$out/history.log")" = 1 ] || die "the customer's history after the outage: $(cat "$out/history.log")"
balance_is_expected "after the outage"
echo "seen: no money lost: one top-up applied, $(head -n 1 "$out/balance.log")"
qmp_quit
ppp_only
echo "boot to first reading under QEMU (TCG): ${first_reading} s"
echo "power-on to the first reading delivered over 3G (PPP): ${first_3g} s"
echo "outage to readings delivered again (re-dial, reset, power cycle, PPP): ${recovery} s"
echo "update: stick plugged in to slot B written and the tryboot reboot: ${write_good} s; trial boot to healthy and committed: ${trial_healthy} s"
echo "update with a failing daemon: stick plugged in to back on the previous version: ${rollback} s"
echo "last gasp: power-fail line to power cut (the last gasp sent): ${last_gasp_s} s"
echo "9 passed, 0 failed (boot and provisioning, 3G link and outage, power cut with a top-up, update good, forged, cut, unhealthy, last gasp)"
