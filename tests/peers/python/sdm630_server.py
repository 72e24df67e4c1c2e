"""A Modbus RTU slave from pymodbus answering like an Eastron SDM630 (the concentrator's peer test).

    sdm630_server.py SLAVE_PATH SLAVE_ID NAME=VALUE ...

Serves on the serial device SLAVE_PATH (a pseudo-terminal's slave side) as slave SLAVE_ID. Each NAME is a
quantity of the SDM630's input-register map and VALUE the number it holds, as an IEEE 754 float32 in two
registers, high word first. Every other register of the table reads 0. Prints "ready" once listening.
"""

import asyncio
import struct
import sys

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import ModbusSerialServer

# Input-register addresses (protocol addresses, 30001 = 0) from Eastron's published SDM630 Modbus map.
SDM630_INPUTS = {
    "voltage_l1": 0x0000,
    "voltage_l2": 0x0002,
    "voltage_l3": 0x0004,
    "current_l1": 0x0006,
    "current_l2": 0x0008,
    "current_l3": 0x000A,
    "active_power_l1": 0x000C,
    "active_power_l2": 0x000E,
    "active_power_l3": 0x0010,
    "active_power_total": 0x0034,
    "frequency": 0x0046,
    "import_active_energy": 0x0048,
    "export_active_energy": 0x004A,
    "total_active_energy": 0x0156,
}
TABLE_SIZE = 0x0160


def register_image(assignments):
    words = [0] * TABLE_SIZE
    for assignment in assignments:
        name, value = assignment.split("=", 1)
        address = SDM630_INPUTS[name]
        high, low = struct.unpack(">HH", struct.pack(">f", float(value)))
        words[address] = high
        words[address + 1] = low
    return words


async def serve(port, slave_id, words):
    # pymodbus's device context adds 1 to every protocol address before it looks in a block, so the
    # block that protocol address 0 reads starts at 1.
    inputs = ModbusSequentialDataBlock(1, words)
    device = ModbusDeviceContext(ir=inputs)
    context = ModbusServerContext(devices={slave_id: device}, single=False)
    server = ModbusSerialServer(
        context,
        port=port,
        baudrate=9600,
        bytesize=8,
        parity="N",
        stopbits=1,
        # Stay silent for other slave ids, as a slave on a shared bus must.
        ignore_missing_devices=True,
    )
    await server.serve_forever(background=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    port, slave_id = sys.argv[1], int(sys.argv[2])
    asyncio.run(serve(port, slave_id, register_image(sys.argv[3:])))


if __name__ == "__main__":
    main()
