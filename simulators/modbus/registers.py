"""The simulated weighing transmitter's register map (one map per Modbus unit id).

Modelled on common DIN-rail weighing transmitters: 32-bit weights, a status word, a heartbeat and
a command register. Holding registers (function 3) and input registers (function 4) show the same
map. Addresses are PDU addresses (0-based); "ref" is the 1-based reference that ``mbpoll`` and
most HMI tools use (``mbpoll -r 1`` reads address 0; ``-0`` switches mbpoll to 0-based).

====  =====  =================  ====  ===================================================
addr  ref    name               R/W   content
====  =====  =================  ====  ===================================================
0-1   1-2    NET weight         R     gross - tare; float32 or int32, ``grams = raw * scale``
2     3      STATUS             R     bit 0 stable, 1 overload, 2 ADC error, 3 tare active
                                      (net mode), 4 centre of zero (|net| < 0.25 scale);
                                      other bits 0
3     4      HEARTBEAT          R     conversions counter, +1 at 10 Hz, wraps at 65536;
                                      stops when the transmitter hangs (frozen value)
4-5   5-6    GROSS weight       R     same encoding as NET
6-7   7-8    TARE weight        R     same encoding as NET
8     9      COMMAND            W     write 1 = tare (tare := gross), 2 = clear tare,
                                      reads back 0 once executed
9     10     FORMAT             R     0 = float32, 1 = int32; bit 8 set = low word first
10-11 11-12  CAPACITY           R     same encoding as NET
====  =====  =================  ====  ===================================================

Word order: a 32-bit value is two registers; ``big`` puts the high word first (``mbpoll -B``),
``little`` the low word first (``mbpoll`` default). Bytes within a register are always big-endian,
as Modbus defines. ``scale`` is grams per count: ``int32`` with ``scale: 0.1`` holds decigrams;
``float32`` with ``scale: 1000`` holds kilograms.

The gateway config for such a shelf reads::

    weight: {table: holding, address: 0, type: float32, word_order: big, scale: 1.0}
    status: {table: holding, address: 2, stable_bit: 0, overload_bit: 1, error_bit: 2}
    heartbeat: {table: holding, address: 3}
"""

from __future__ import annotations

import math
import struct
from typing import Final

from simulators.modbus.physics import Reading
from simulators.shelf_scenario import Encoding, Garbage, WeightType, WordOrder

NET: Final = 0
STATUS: Final = 2
HEARTBEAT: Final = 3
GROSS: Final = 4
TARE: Final = 6
COMMAND: Final = 8
FORMAT: Final = 9
CAPACITY: Final = 10
MAP_SIZE: Final = 12

STABLE_BIT: Final = 0
OVERLOAD_BIT: Final = 1
ADC_ERROR_BIT: Final = 2
TARE_ACTIVE_BIT: Final = 3
CENTRE_OF_ZERO_BIT: Final = 4

CMD_TARE: Final = 1
CMD_CLEAR_TARE: Final = 2

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1


def encode_weight(grams: float, encoding: Encoding) -> tuple[int, int]:
    """Two registers holding ``grams`` in ``encoding`` (int32 saturates at its range)."""
    raw = grams / encoding.scale
    if encoding.type is WeightType.FLOAT32:
        data = struct.pack(">f", raw)
    else:
        value = max(_INT32_MIN, min(_INT32_MAX, round(raw))) if math.isfinite(raw) else 0
        data = struct.pack(">i", value)
    high, low = struct.unpack(">HH", data)
    return (high, low) if encoding.word_order is WordOrder.BIG else (low, high)


def garbage_words(garbage: Garbage, encoding: Encoding, unit_scale_g: float) -> tuple[int, int]:
    """Two registers of nonsense of the kind ``garbage`` in ``encoding``'s type and word order."""
    if encoding.type is WeightType.FLOAT32:
        value = {
            Garbage.NEGATIVE: -1000.0 * unit_scale_g / encoding.scale,
            Garbage.WRAPPED: 4294967296.0 - 1234.0,
            Garbage.HUGE: 1e30,
            Garbage.NAN: math.nan,
        }[garbage]
        data = struct.pack(">f", value)
    else:
        raw = {
            Garbage.NEGATIVE: -round(1000.0 * unit_scale_g / encoding.scale),
            Garbage.WRAPPED: _INT32_MIN + 1234,
            Garbage.HUGE: _INT32_MAX,
            Garbage.NAN: _INT32_MIN,
        }[garbage]
        data = struct.pack(">i", max(_INT32_MIN, min(_INT32_MAX, raw)))
    high, low = struct.unpack(">HH", data)
    return (high, low) if encoding.word_order is WordOrder.BIG else (low, high)


def format_word(encoding: Encoding) -> int:
    value = 0 if encoding.type is WeightType.FLOAT32 else 1
    if encoding.word_order is WordOrder.LITTLE:
        value |= 1 << 8
    return value


def fill(
    registers: list[int],
    offset: int,
    reading: Reading,
    *,
    tare_g: float,
    tare_active: bool,
    capacity_g: float,
    encoding: Encoding,
) -> None:
    """Write the whole map for ``reading`` into ``registers[offset:offset + MAP_SIZE]``."""
    gross = reading.gross_g
    net = 0.0 if reading.adc_error else gross - tare_g
    status = 0
    if reading.stable and not reading.adc_error:
        status |= 1 << STABLE_BIT
    if reading.overload:
        status |= 1 << OVERLOAD_BIT
    if reading.adc_error:
        status |= 1 << ADC_ERROR_BIT
        gross = 0.0
    if tare_active:
        status |= 1 << TARE_ACTIVE_BIT
    if abs(net) < 0.25 * encoding.scale and not reading.adc_error:
        status |= 1 << CENTRE_OF_ZERO_BIT
    if reading.garbage is not None:
        registers[offset + NET : offset + NET + 2] = garbage_words(
            reading.garbage, encoding, max(capacity_g, 1.0) / 1000.0
        )
    else:
        registers[offset + NET : offset + NET + 2] = encode_weight(net, encoding)
    registers[offset + STATUS] = status
    registers[offset + HEARTBEAT] = reading.heartbeat & 0xFFFF
    registers[offset + GROSS : offset + GROSS + 2] = encode_weight(gross, encoding)
    registers[offset + TARE : offset + TARE + 2] = encode_weight(tare_g, encoding)
    registers[offset + COMMAND] = 0
    registers[offset + FORMAT] = format_word(encoding)
    registers[offset + CAPACITY : offset + CAPACITY + 2] = encode_weight(capacity_g, encoding)
