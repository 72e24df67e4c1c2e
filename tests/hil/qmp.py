#!/usr/bin/env python3
"""Sends QMP commands to a QEMU monitor socket, one after another, and prints each reply.

    qmp.py SOCKET '{"execute": "system_powerdown"}' ...

The capabilities handshake is done first. Asynchronous events QEMU sends meanwhile are skipped. Exits
with status 1, printing the error, if a command fails. The HIL test (tests/hil/run.sh) uses it to plug
and unplug the installer's USB stick, to raise the power-fail line and to cut the power."""
import json
import socket
import sys


def main():
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(sys.argv[1])
    f = sock.makefile("rw")
    f.readline()  # the greeting

    def call(cmd):
        f.write(json.dumps(cmd) + "\n")
        f.flush()
        while True:
            line = f.readline()
            if not line:
                return {"return": {}}  # QEMU quit (the reply to "quit" may not arrive)
            reply = json.loads(line)
            if "return" in reply or "error" in reply:
                return reply

    call({"execute": "qmp_capabilities"})
    for arg in sys.argv[2:]:
        reply = call(json.loads(arg))
        if "error" in reply:
            print(f"qmp: {arg}: {reply['error'].get('desc', reply['error'])}", file=sys.stderr)
            sys.exit(1)
        print(json.dumps(reply["return"]))


if __name__ == "__main__":
    main()
