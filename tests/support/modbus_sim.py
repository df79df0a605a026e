#!/usr/bin/env python3
"""Modbus TCP / RTU device simulator of edgewatch's integration tests.

Started by tests/support/modbus.rs (the layout constants there mirror this file).
Needs pymodbus==3.16.1 (tests/support/requirements-modbus.txt; ./scripts/test makes the
venv target/modbus-venv). It uses pymodbus' SimDevice/SimData with an `action` hook: the
older ModbusDeviceContext data blocks are copied at start-up, so they cannot change later.

    modbus_sim.py --dir DIR --tcp PORT [--host 127.0.0.1]     # PORT 0: the kernel picks one
    modbus_sim.py --dir DIR --rtu DEVICE [--baud 19200] [--parity N|E|O] [--stopbits 1|2]
    options: --units 1,2,3  --tick-ms 1000  --request-log  --unknown-unit silent|exception

When serving it writes DIR/ready atomically ("tcp 127.0.0.1 PORT" or "rtu DEVICE") and
prints "READY ..." on stdout. SIGTERM / SIGINT stop it.

Layout, per unit U (0-based PDU addresses; tick = whole --tick-ms periods since start):
  holding 0        U (unit id)
  holding 1        0x8025 (bit tests: bits 0, 2, 5 and 15 set)
  holding 10-11    counter u32, ABCD: 0xFFFA + tick (carries into the high word at tick 6)
  holding 12       tick & 0xFFFF
  holding 14-15    f32 ABCD: float(tick)
  holding 100..119 typed block ABCD, 200.. CDAB, 300.. BADC, 400.. DCBA; offsets in a block:
                   0 u16, 1 i16, 2 u32, 4 i32, 6 u64, 10 i64, 14 f32, 16 f64 (TYPED_VALUES);
                   u16/i16 are single registers, stored plainly in every block
  holding 1000..1999  bulk: value = address
  input 0          U (unit id)
  input 1          0x4952 ("IR" marker)
  coil 0..15       bits of 0x8025 (coil i = bit i);   coil 16: tick is odd
  discrete 0..15   bits of 0x4952;                     discrete 16: tick is odd
Every other address (e.g. holding 2..9 and 13) answers exception 2 (illegal data address);
a read touching any undefined address answers exception 2. Writes answer exception 2.
Unit ids not in --units get no answer (an absent slave), or exception 11 with
--unknown-unit exception.

Faults: DIR/faults.json, re-read when it changes (write a new file and rename it over):
  {"faults": [{"unit": 1, "function": 3, "start": 100, "end": 120,
               "delay_ms": 1500, "silent": false, "exception": 6, "corrupt": false}]}
A fault applies to a request when every selector it has matches: "unit", "function"
(function code), and the address range [start, end) overlapping the request's
[address, address + count). All faults that apply combine: the longest delay, silent if
any, the first exception, corrupt if any. silent: no answer at all. exception N: answer
exception N (1-8, 10, 11). corrupt: the answer is broken on the wire (RTU: bad CRC; TCP:
MBAP protocol id 0xFFFF).

--request-log appends one line per request received to DIR/requests.log:
  UNIX_TIME UNIT FUNCTION ADDRESS COUNT      e.g. "1764680000.123456 1 3 100 20"
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import logging
import os
import signal
import struct
import sys
import time

from pymodbus import __version__ as PYMODBUS_VERSION
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# Function code -> table ("c" coils, "d" discrete inputs, "h" holding, "i" input).
FC_TABLE = {1: "c", 5: "c", 15: "c", 2: "d", 4: "i", 3: "h", 6: "h", 16: "h", 22: "h", 23: "h"}
WRITE_FCS = {5, 6, 15, 16, 22, 23}

BIT_PATTERN_COILS = 0x8025
BIT_PATTERN_DISCRETE = 0x4952
HR_BITS = 0x8025
IR_MARKER = 0x4952
COUNTER_BASE = 0xFFFA
TOGGLE_BIT = 16
BULK_START, BULK_END = 1000, 2000
TYPED_BASES = {"ABCD": 100, "CDAB": 200, "BADC": 300, "DCBA": 400}
TYPED_LEN = 20
# (offset in the block, struct format (big-endian), value)
TYPED_VALUES = [
    (0, ">H", 0x1234),
    (1, ">h", -12345),
    (2, ">I", 0x12345678),
    (4, ">i", -123456789),
    (6, ">Q", 0x0123456789ABCDEF),
    (10, ">q", -1234567890123456789),
    (14, ">f", -273.15),
    (16, ">d", -1234567.891),
]


def ordered_words(data: bytes, order: str) -> list[int]:
    """Registers holding big-endian `data` (2, 4 or 8 bytes) in word order `order`."""
    words = [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]
    if len(words) == 1:
        return words  # single registers are stored plainly in every block
    swap = lambda w: ((w & 0xFF) << 8) | (w >> 8)  # noqa: E731
    if order == "ABCD":
        return words
    if order == "CDAB":
        return words[::-1]
    if order == "BADC":
        return [swap(w) for w in words]
    if order == "DCBA":
        return [swap(w) for w in words[::-1]]
    raise ValueError(order)


def static_holding(unit: int) -> dict[int, int]:
    """Holding registers that never change, by address."""
    regs = {0: unit, 1: HR_BITS}
    for order, base in TYPED_BASES.items():
        for offset, fmt, value in TYPED_VALUES:
            for i, word in enumerate(ordered_words(struct.pack(fmt, value), order)):
                regs[base + offset + i] = word
    for address in range(BULK_START, BULK_END):
        regs[address] = address
    return regs


def dynamic_holding(tick: int) -> dict[int, int]:
    counter = (COUNTER_BASE + tick) & 0xFFFFFFFF
    regs = {10: counter >> 16, 11: counter & 0xFFFF, 12: tick & 0xFFFF}
    regs[14], regs[15] = struct.unpack(">HH", struct.pack(">f", float(tick)))
    return regs


class Faults:
    """The fault list of faults.json, re-read whenever the file changes."""

    def __init__(self, path: str):
        self.path = path
        self.stamp = None
        self.faults: list[dict] = []

    def refresh(self):
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self.stamp:
            return
        self.stamp = stamp
        self.faults = []
        if stamp is None:
            return
        try:
            with open(self.path, encoding="utf-8") as fh:
                self.faults = list((json.load(fh) or {}).get("faults", []))
        except (OSError, ValueError, AttributeError) as exc:
            print(f"fault file {self.path} ignored: {exc}", file=sys.stderr, flush=True)

    def lookup(self, unit: int, fc: int, address: int, count: int) -> dict:
        """The combined fault for one request ({} when none applies)."""
        self.refresh()
        out: dict = {}
        for fault in self.faults:
            if "unit" in fault and fault["unit"] != unit:
                continue
            if "function" in fault and fault["function"] != fc:
                continue
            start, end = fault.get("start", 0), fault.get("end", 65536)
            if not (address < end and start < address + max(count, 1)):
                continue
            if fault.get("delay_ms"):
                out["delay_ms"] = max(out.get("delay_ms", 0), fault["delay_ms"])
            if fault.get("silent"):
                out["silent"] = True
            if fault.get("exception") and "exception" not in out:
                out["exception"] = int(fault["exception"])
            if fault.get("corrupt"):
                out["corrupt"] = True
        return out


class Simulator:
    def __init__(self, args):
        self.rtu = args.rtu is not None
        self.t0 = time.monotonic()
        self.tick_s = args.tick_ms / 1000
        self.faults = Faults(os.path.join(args.dir, "faults.json"))
        self.log = None
        if args.request_log:
            self.log = open(os.path.join(args.dir, "requests.log"), "a", encoding="ascii", buffering=1)
        self.unknown_unit = args.unknown_unit
        self.static = {}
        # (unit, function code) of answers to corrupt on the wire, in request order.
        self.corrupt_pending: collections.Counter = collections.Counter()
        # (unit, function code, address) -> bit counts of requests not yet handled.
        self.bit_counts: collections.defaultdict = collections.defaultdict(collections.deque)

    def tick(self) -> int:
        return int((time.monotonic() - self.t0) / self.tick_s)

    def log_request(self, unit: int, fc: int, address: int, count: int):
        if self.log is not None:
            self.log.write(f"{time.time():.6f} {unit} {fc} {address} {count}\n")

    def defined(self, unit: int, table: str, address: int, count: int) -> bool:
        end = address + count
        if table in ("c", "d"):
            return 0 <= address and end <= TOGGLE_BIT + 1
        if table == "i":
            return 0 <= address and end <= 2
        regs = self.static[unit]
        dyn = dynamic_holding(0)
        return all(a in regs or a in dyn for a in range(address, end))

    async def action(self, unit, fc, start_address, address, count, registers, set_values):
        """Called by pymodbus for every request to a known unit (every address is valid to
        pymodbus; this decides). For coils and discrete inputs pymodbus passes the number
        of 16-bit registers as `count`: the bit count comes from trace_pdu."""
        table = FC_TABLE.get(fc)
        if table in ("c", "d"):
            pending = self.bit_counts.get((unit, fc, address))
            count = pending.popleft() if pending else count * 16
        fault = self.faults.lookup(unit, fc, address, count)
        if fault.get("delay_ms"):
            await asyncio.sleep(fault["delay_ms"] / 1000)
        if fault.get("silent"):
            raise NoSuchIdException(f"fault injection: silent unit {unit}")
        if fault.get("corrupt"):
            self.corrupt_pending[(unit, fc)] += 1
        if fault.get("exception"):
            return ExcCodes(fault["exception"])
        if fc in WRITE_FCS or table is None or not self.defined(unit, table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        tick = self.tick()
        if table == "h":
            for addr, value in dynamic_holding(tick).items():
                registers[addr - start_address] = value
        elif table in ("c", "d"):
            # Bits are packed 16 per register (bit 0 = LSB); register 1 holds bit 16.
            idx = 1 - start_address
            registers[idx] = 1 if tick % 2 == 1 else 0
        return None

    async def unknown(self, _fc, _start, _address, _count, _registers, _values):
        if self.unknown_unit == "exception":
            return ExcCodes.GATEWAY_NO_RESPONSE
        raise NoSuchIdException("unknown unit")

    def trace_pdu(self, sending: bool, pdu):
        """Every decoded request: logged, and bit counts kept for the action."""
        if not sending:
            fc, address = pdu.function_code, getattr(pdu, "address", 0)
            count = getattr(pdu, "count", 1)
            self.log_request(pdu.dev_id, fc, address, count)
            if FC_TABLE.get(fc) in ("c", "d"):
                self.bit_counts[(pdu.dev_id, fc, address)].append(count)
        return pdu

    def trace_packet(self, sending: bool, data: bytes) -> bytes:
        """Every frame on the wire; breaks the answers the action marked as corrupt."""
        if not sending:
            return data
        head = 0 if self.rtu else 6  # RTU: unit, fc, ...; TCP: 6-byte MBAP prefix, unit, fc
        if len(data) < head + 2:
            return data
        key = (data[head], data[head + 1] & 0x7F)
        if self.corrupt_pending[key] <= 0:
            return data
        self.corrupt_pending[key] -= 1
        frame = bytearray(data)
        if self.rtu:
            frame[-1] ^= 0xFF  # the CRC no longer matches
        else:
            frame[2:4] = b"\xff\xff"  # the MBAP protocol identifier must be 0
        return bytes(frame)

    def device(self, unit: int) -> SimDevice:
        regs = static_holding(unit)
        self.static[unit] = regs
        holding = [0] * 65536
        for addr, value in regs.items():
            holding[addr] = value
        for addr, value in dynamic_holding(0).items():
            holding[addr] = value
        inputs = [0] * 65536
        inputs[0], inputs[1] = unit, IR_MARKER
        coils = [bool(BIT_PATTERN_COILS >> i & 1) for i in range(16)] + [False] * 16
        discrete = [bool(BIT_PATTERN_DISCRETE >> i & 1) for i in range(16)] + [False] * 16
        return SimDevice(
            id=unit,
            # (coils, discrete inputs, holding, input): every address valid to pymodbus,
            # so that the action sees (and logs, and faults) every request.
            simdata=(
                [SimData(0, values=coils, datatype=DataType.BITS)],
                [SimData(0, values=discrete, datatype=DataType.BITS)],
                [SimData(0, values=holding, datatype=DataType.REGISTERS)],
                [SimData(0, values=inputs, datatype=DataType.REGISTERS)],
            ),
            action=functools.partial(self.action, unit),
        )

    def catch_all(self) -> SimDevice:
        # id 0: every unit id not defined explicitly.
        return SimDevice(
            id=0,
            simdata=[SimData(0, count=65536, values=0, datatype=DataType.REGISTERS)],
            action=self.unknown,
        )


def write_ready(directory: str, text: str):
    tmp = os.path.join(directory, "ready.tmp")
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(text + "\n")
    os.replace(tmp, os.path.join(directory, "ready"))


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--tcp", type=int, metavar="PORT", help="Modbus TCP port (0: any free)")
    mode.add_argument("--rtu", metavar="DEVICE", help="serial device for Modbus RTU")
    ap.add_argument("--dir", required=True, help="ready file, faults.json, requests.log")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--baud", type=int, default=19200)
    ap.add_argument("--parity", default="N", choices="NEO")
    ap.add_argument("--stopbits", type=int, default=1, choices=(1, 2))
    ap.add_argument("--bytesize", type=int, default=8, choices=(7, 8))
    ap.add_argument("--units", default="1,2,3", help="comma-separated unit ids (1-247)")
    ap.add_argument("--tick-ms", type=float, default=1000.0, help="milliseconds per tick")
    ap.add_argument("--unknown-unit", choices=("silent", "exception"), default="silent")
    ap.add_argument("--request-log", action="store_true", help="DIR/requests.log")
    args = ap.parse_args()

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sim = Simulator(args)
    units = sorted({int(u) for u in args.units.split(",") if u.strip()})
    if not units or not all(1 <= u <= 247 for u in units):
        ap.error("--units: ids must be 1..247")
    devices = [sim.device(u) for u in units] + [sim.catch_all()]

    if args.tcp is not None:
        server = ModbusTcpServer(
            devices, address=(args.host, args.tcp), ignore_missing_devices=True,
            trace_packet=sim.trace_packet, trace_pdu=sim.trace_pdu,
        )
    else:
        server = ModbusSerialServer(
            devices, framer=FramerType.RTU, port=args.rtu, baudrate=args.baud,
            bytesize=args.bytesize, parity=args.parity, stopbits=args.stopbits,
            ignore_missing_devices=True, trace_packet=sim.trace_packet,
            trace_pdu=sim.trace_pdu,
        )
    await server.serve_forever(background=True)  # raises if it cannot listen / open

    if args.tcp is not None:
        port = server.transport.sockets[0].getsockname()[1]
        ready = f"tcp {args.host} {port}"
    else:
        ready = f"rtu {args.rtu}"
    sim.t0 = time.monotonic()  # tick 0 starts when the simulator is ready
    write_ready(args.dir, ready)
    print(f"READY {ready} units={units} pymodbus={PYMODBUS_VERSION}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
