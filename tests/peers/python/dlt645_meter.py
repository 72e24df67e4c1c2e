"""A DL/T 645-2007 meter from the `dlt645` package (PyPI) for the concentrator's peer test.

    dlt645_meter.py SLAVE_PATH ADDRESS DI=VALUE ...

Serves on the serial device SLAVE_PATH (a pseudo-terminal's slave side) with the package's own RTU
server and meter service: every byte on the wire is framed and encoded by the package. ADDRESS is the
meter's address as printed on a nameplate (12 digits, most significant first). Each DI is a data
identifier in hex (DI3 first, "00010000") and VALUE what the meter holds: a number for energy (DI3 00)
and variables (DI3 02), the package's digit string for parameters (DI3 04, e.g. "26050105" for the date
YYMMDDWW). Prints "ready" once the port is open.

Known deviations of dlt645 3.2.0 from DL/T 645-2007 (the concentrator's codec is not bent to them; the
tests only use what the package does as the standard says):
- A frame for another meter's address gets an abnormal reply ("other error") instead of silence, so
  the package's meter cannot share a bus with other meters.
- Broadcast time sync (0x08) is parsed as YY MM DD hh mm ss; the standard sends ss mm hh DD MM YY.
  Its clock is also kept apart from the date and time data items, so a read does not show a sync.
- There is no relay control (0x1C): it answers with an abnormal reply.
- There are no follow-up reads (0x12), and no prepaid balances (00900100, 00900200).
- `set_address("…")` takes the digits in wire order (low byte first); this script passes bytes.
"""

import sys
import time

import serial
from dlt645 import MeterServerService


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    port, nameplate = sys.argv[1], sys.argv[2]
    service = MeterServerService.new_rtu_server(
        port, 8, 1, 2400, serial.PARITY_EVEN, 1.0
    )
    # Wire order: the nameplate's lowest two digits first.
    service.set_address(bytes.fromhex(nameplate)[::-1])
    for assignment in sys.argv[3:]:
        di_text, value = assignment.split("=", 1)
        di = int(di_text, 16)
        kind = di >> 24
        if kind == 0x00:
            ok = service.set_00(di, float(value))
        elif kind == 0x02:
            ok = service.set_02(di, float(value))
        elif kind == 0x04:
            ok = service.set_04(di, value)
        else:
            sys.exit(f"data identifier {di_text}: this script sets only DI3 00, 02 and 04")
        if not ok:
            sys.exit(f"the dlt645 package refused {di_text} = {value}")
    if not service.start():
        sys.exit(f"the dlt645 package could not open {port}")
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
