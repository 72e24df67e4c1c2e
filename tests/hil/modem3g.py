#!/usr/bin/env python3
"""The HIL test's 3G modem and its network (tests/hil/README.md, *The 3G data link*).

    modem3g.py AT_SOCKET DATA_SOCKET QMP_SOCKET TUN_NAME LOG

Runs inside the test's network namespace. It connects to the guest's two virtual UARTs (QEMU
`-chardev socket` servers: the modem's AT port and its data port, as a USB 3G stick has), answers the AT
dialogue on both (SIM PIN, registration, signal, operator, APN), and after `ATD*99#` on the data port
says CONNECT and is the network's end of PPP: LCP, IPCP (the gateway gets 10.64.0.2, this end is
10.64.0.1) and IPv4 carried to and from a TUN interface in the namespace, from which the namespace
routes to the host's broker. (A host pppd would need the kernel's PPP driver, which the build machines'
kernel does not have; this end speaks PPP itself, in user space.)

It watches the guest's power-key line: the virt machine's PL061 GPIO data register, read over a QMP
socket of its own (`xp`), line POWER_KEY_LINE. A pulse is a power cycle: the modem reboots, wants its
PIN again and answers normally.

SIGUSR1 is the outage: the PPP session ends without a word (no LCP terminate: a radio link that is
gone) and the modem stops answering on both ports, until it is power-cycled (AT+CFUN=1,1 does not help).
Every step goes to LOG with the time, for the test to wait on.
"""

import fcntl
import json
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time

PIN = "1234"
APN_EXPECTED = "hil.apn"
POWER_KEY_LINE = 4
GPIO_DATA = 0x090303FC  # virt's PL061 at 0x09030000, data register with all eight lines unmasked
LOCAL_IP = bytes([10, 64, 0, 1])
PEER_IP = bytes([10, 64, 0, 2])

at_path, data_path, qmp_path, tun_name, log_path = sys.argv[1:6]
logf = open(log_path, "a", buffering=1)
t_start = time.monotonic()


def log(msg):
    logf.write(f"{time.strftime('%H:%M:%S')} +{time.monotonic() - t_start:7.1f}s {msg}\n")


# ---------------------------------------------------------------------------------------------- PPP


def fcs16(data):
    fcs = 0xFFFF
    for b in data:
        fcs ^= b
        for _ in range(8):
            fcs = (fcs >> 1) ^ 0x8408 if fcs & 1 else fcs >> 1
    return fcs ^ 0xFFFF


def frame(proto, payload):
    body = bytes([0xFF, 0x03]) + struct.pack(">H", proto) + payload
    body += struct.pack("<H", fcs16(body))
    out = bytearray([0x7E])
    for b in body:
        if b < 0x20 or b in (0x7D, 0x7E):
            out += bytes([0x7D, b ^ 0x20])
        else:
            out.append(b)
    out.append(0x7E)
    return bytes(out)


def options(data):
    i = 0
    while i + 2 <= len(data):
        t, n = data[i], data[i + 1]
        if n < 2 or i + n > len(data):
            return
        yield t, data[i + 2 : i + n]
        i += n


class Ppp:
    """The network's end of one PPP session."""

    def __init__(self, send, tun):
        self.send_raw = send
        self.tun = tun
        self.buf = bytearray()
        self.escape = False
        self.ident = 1
        self.lcp_ours_acked = self.lcp_theirs_acked = False
        self.ipcp_ours_acked = self.ipcp_theirs_acked = False
        self.magic = os.urandom(4)
        self.open = False
        self.ended = False
        self.packets_in = self.packets_out = 0
        self.ipcp_sent = False
        self.last_request = 0.0
        self.tick(time.monotonic())

    def tick(self, now):
        """Sends (again, every 2 s until acknowledged) this end's configure requests."""
        if now - self.last_request < 2:
            return
        if not self.lcp_ours_acked:
            self.last_request = now
            self.send(0xC021, self.cp(1, struct.pack(">BB", 5, 6) + self.magic))
        elif self.ipcp_sent and not self.ipcp_ours_acked:
            self.last_request = now
            self.send(0x8021, self.cp(1, struct.pack(">BB", 3, 6) + LOCAL_IP))

    def cp(self, code, data, ident=None):
        if ident is None:
            ident = self.ident
            self.ident = (self.ident + 1) & 0xFF
        return struct.pack(">BBH", code, ident, 4 + len(data)) + data

    def send(self, proto, payload):
        self.send_raw(frame(proto, payload))

    def feed(self, data):
        for b in data:
            if b == 0x7E:
                if len(self.buf) >= 4:
                    self.packet(bytes(self.buf))
                self.buf.clear()
                self.escape = False
            elif b == 0x7D:
                self.escape = True
            else:
                self.buf.append(b ^ 0x20 if self.escape else b)
                self.escape = False

    def packet(self, raw):
        if fcs16(raw[:-2]) != struct.unpack("<H", raw[-2:])[0]:
            return
        p = raw[:-2]
        if p[:2] == b"\xff\x03":
            p = p[2:]
        if p and p[0] & 1:
            proto, p = p[0], p[1:]
        elif len(p) >= 2:
            proto, p = struct.unpack(">H", p[:2])[0], p[2:]
        else:
            return
        if proto == 0xC021:
            self.lcp(p)
        elif proto == 0x8021:
            self.ipcp(p)
        elif proto == 0x0021:
            if self.open:
                self.packets_in += 1
                os.write(self.tun, p)
        else:
            # IPV6CP, CCP and the rest: Protocol-Reject (LCP code 8).
            self.send(0xC021, self.cp(8, struct.pack(">H", proto) + p[:64]))

    def lcp(self, p):
        if len(p) < 4:
            return
        code, ident, length = struct.unpack(">BBH", p[:4])
        data = p[4:length]
        if code != 9:
            log(f"ppp: LCP code {code} from the gateway ({len(data)} octets of options or data)")
        if code == 1:  # Configure-Request: everything the gateway asks (MRU, ACCM, magic, PFC, ACFC)
            self.send(0xC021, self.cp(2, data, ident))
            self.lcp_theirs_acked = True
        elif code == 2:
            self.lcp_ours_acked = True
        elif code == 5:  # Terminate-Request
            self.send(0xC021, self.cp(6, data, ident))
            log("ppp: the gateway ended the session (LCP terminate)")
            self.ended = True
        elif code == 9:  # Echo-Request
            self.send(0xC021, self.cp(10, self.magic + data[4:], ident))
        if self.lcp_ours_acked and self.lcp_theirs_acked and not self.ipcp_sent:
            self.ipcp_sent = True
            log("ppp: LCP open")
            self.last_request = 0.0
            self.tick(time.monotonic())

    def ipcp(self, p):
        if len(p) < 4:
            return
        code, ident, length = struct.unpack(">BBH", p[:4])
        data = p[4:length]
        log(f"ppp: IPCP code {code} from the gateway: options {data.hex()}")
        if code == 1:
            reject, nak = b"", b""
            for t, v in options(data):
                if t == 3 and v != PEER_IP:
                    nak += struct.pack(">BB", 3, 6) + PEER_IP
                elif t in (129, 131) and v != LOCAL_IP:
                    nak += struct.pack(">BB", t, 6) + LOCAL_IP
                elif t not in (3, 129, 131):
                    reject += struct.pack(">BB", t, 2 + len(v)) + v
            if reject:
                self.send(0x8021, self.cp(4, reject, ident))
            elif nak:
                self.send(0x8021, self.cp(3, nak, ident))
            else:
                self.send(0x8021, self.cp(2, data, ident))
                self.ipcp_theirs_acked = True
        elif code == 2:
            self.ipcp_ours_acked = True
        elif code == 5:
            self.send(0x8021, self.cp(6, data, ident))
        if self.ipcp_ours_acked and self.ipcp_theirs_acked and not self.open:
            self.open = True
            log("ppp: IPCP open, the gateway is 10.64.0.2: IPv4 is carried")

    def from_tun(self, packet):
        if self.open:
            self.packets_out += 1
            self.send(0x0021, packet)


# -------------------------------------------------------------------------------------------- modem


class Port:
    """One of the modem's ttys, over QEMU's socket chardev."""

    def __init__(self, name, path):
        self.name, self.path = name, path
        self.sock = None
        self.line = bytearray()

    def connect(self):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            return False
        s.setblocking(False)
        self.sock = s
        self.line.clear()
        return True

    def write(self, data):
        if self.sock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass

    def say(self, *lines):
        self.write(b"".join(b"\r\n" + l.encode() + b"\r\n" for l in lines))


class Modem:
    def __init__(self):
        self.at = Port("AT", at_path)
        self.data = Port("data", data_path)
        self.ppp = None
        self.tun = open_tun(tun_name)
        self.boot("power on")

    def boot(self, why):
        self.pin_ok = False
        self.echo = {"AT": True, "data": True}
        self.silent = False
        self.apn = None
        self.end_ppp("modem " + why)
        log(f"modem boots ({why}): SIM PIN wanted")

    def end_ppp(self, why):
        if self.ppp:
            log(f"ppp: session over ({why}); {self.ppp.packets_in} packets in, {self.ppp.packets_out} out")
            self.ppp = None

    def outage(self):
        log("outage: the radio link is gone and the modem stops answering (until a power cycle)")
        self.end_ppp("outage")
        self.silent = True

    def command(self, port, cmd):
        up = cmd.upper()
        if self.silent:
            log(f"{port.name} <- {cmd} (silent: no answer)")
            return
        log(f"{port.name} <- {cmd}")
        if self.echo[port.name]:
            port.write(cmd.encode() + b"\r")
        ok = "OK"
        if up in ("AT", "ATZ", "AT+CMEE=2", "ATH", "AT+COPS=0"):
            port.say(ok)
        elif up in ("ATE0", "ATE1"):
            self.echo[port.name] = up == "ATE1"
            port.say(ok)
        elif up == "AT+CPIN?":
            port.say("+CPIN: READY" if self.pin_ok else "+CPIN: SIM PIN", ok)
        elif up.startswith("AT+CPIN="):
            if cmd.split("=", 1)[1].strip('"') == PIN:
                self.pin_ok = True
                log("SIM: PIN accepted")
                port.say(ok)
            else:
                log("SIM: wrong PIN")
                port.say("+CME ERROR: incorrect password")
        elif not self.pin_ok and up not in ("AT+CCID",):
            port.say("+CME ERROR: SIM PIN required")
        elif up == "AT+CCID":
            port.say("+CCID: 8949000000000000042", ok)
        elif up == "AT+CIMI":
            port.say("001010000000042", ok)
        elif up.startswith("AT+CGDCONT="):
            self.apn = cmd.split(",")[-1].strip('"')
            log(f"APN set to {self.apn}")
            port.say(ok if self.apn == APN_EXPECTED else "ERROR")
        elif up == "AT+CGREG?":
            port.say("+CGREG: 0,1", ok)
        elif up == "AT+CEREG?":
            port.say("+CEREG: 0,1", ok)
        elif up == "AT+CREG?":
            port.say("+CREG: 0,1", ok)
        elif up == "AT+CSQ":
            port.say("+CSQ: 17,99", ok)
        elif up == "AT+COPS?":
            port.say('+COPS: 0,0,"HIL Telecom",2', ok)
        elif up == "AT+CFUN=1,1":
            port.say(ok)
            self.boot("reset by AT+CFUN=1,1")
        elif port is self.data and up.startswith("ATD*99"):
            if self.apn != APN_EXPECTED:
                port.say("NO CARRIER")
                return
            port.say("CONNECT 7200000")
            log("data port: CONNECT, PPP starts")
            self.ppp = Ppp(self.data.write, self.tun)
        else:
            port.say("ERROR")

    def receive(self, port, data):
        if port is self.data and self.ppp is not None and re.fullmatch(rb"\s*AT[\x20-\x7e]*\r\n?", data):
            # Plain AT on the data port: the gateway's pppd is gone without a terminate (a real modem
            # sees DTR drop); back to command mode.
            self.end_ppp("the gateway dials again")
        if port is self.data and self.ppp is not None:
            if not self.silent:
                self.ppp.feed(data)
                if self.ppp.ended:
                    self.ppp = None
                    port.say("NO CARRIER")
            return
        for b in data:
            if b in (13, 10):
                if port.line:
                    self.command(port, port.line.decode(errors="replace").strip())
                port.line.clear()
            elif len(port.line) < 512:
                port.line.append(b)


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x0001 | 0x1000))  # TUNSETIFF, TUN|NO_PI
    subprocess.run(["ip", "addr", "add", "10.64.0.1", "peer", "10.64.0.2/32", "dev", name], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    return fd


class Gpio:
    """The guest's power-key line, read from the PL061 over QMP."""

    def __init__(self):
        self.f = None
        self.level = 0
        self.high_since = None

    def read(self):
        if self.f is None:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(qmp_path)
            except OSError:
                return None
            s.settimeout(2)
            self.f = s.makefile("rw")
            self.f.readline()
            self.request({"execute": "qmp_capabilities"})
        r = self.request(
            {"execute": "human-monitor-command", "arguments": {"command-line": f"xp /1wx {GPIO_DATA:#x}"}}
        )
        if r is None:
            return None
        try:
            return (int(r.split(":")[1].strip(), 16) >> POWER_KEY_LINE) & 1
        except (IndexError, ValueError):
            return None

    def request(self, cmd):
        try:
            self.f.write(json.dumps(cmd) + "\n")
            self.f.flush()
            while True:
                line = self.f.readline()
                if not line:
                    raise OSError("closed")
                msg = json.loads(line)
                if "return" in msg:
                    return msg["return"]
                if "error" in msg:
                    return None
        except (OSError, ValueError):
            self.f = None
            return None


def main():
    modem = Modem()
    gpio = Gpio()
    outage = []
    signal.signal(signal.SIGUSR1, lambda *_: outage.append(1))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    sel.register(modem.tun, selectors.EVENT_READ, "tun")
    next_gpio = 0.0
    log("ready: waiting for the guest's UARTs")
    while True:
        for port in (modem.at, modem.data):
            if port.sock is None and port.connect():
                sel.register(port.sock, selectors.EVENT_READ, port)
                log(f"{port.name} port connected to the guest's UART")
        if outage:
            outage.clear()
            modem.outage()
        now = time.monotonic()
        if now >= next_gpio:
            next_gpio = now + 0.2
            level = gpio.read()
            if level is not None and level != gpio.level:
                gpio.level = level
                if level:
                    gpio.high_since = now
                    log("power key pressed")
                else:
                    held = now - (gpio.high_since or now)
                    log(f"power key released after {held:.1f} s: power cycle")
                    modem.boot("power-cycled by its power key")
        if modem.ppp is not None and not modem.silent:
            modem.ppp.tick(now)
        for key, _ in sel.select(timeout=0.1):
            if key.data == "tun":
                packet = os.read(modem.tun, 65536)
                if modem.ppp is not None and not modem.silent:
                    modem.ppp.from_tun(packet)
                continue
            port = key.data
            try:
                data = port.sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                # QEMU went away (the test's power cut): the modem loses power with the gateway.
                sel.unregister(port.sock)
                port.sock.close()
                port.sock = None
                log(f"{port.name} port closed: the gateway is off")
                if port is modem.at:
                    modem.boot("power lost with the gateway")
                    gpio.f = None
                continue
            modem.receive(port, data)


if __name__ == "__main__":
    main()
