"""A transmitter sending garbage (issue 16): the Modbus adapter turns every protocol fault of
pymodbus into one device-state change (one line down, one up) and never lets a library
traceback reach the console; register values of any bits never crash the device task.

Real pymodbus client against a real TCP peer (``tests.support.modbus_peer``) that sends
malformed frames on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.modbus import (
    RegisterField,
    RegisterTable,
    ValueType,
    WordOrder,
    decode_value,
    malformed_response,
)
from gateway.domain.model import DeviceState
from tests.support.modbus_peer import Fault, ScriptedTransmitter
from tests.test_modbus_adapter import WITHIN_S, Recorder, point, poller_for

FAULTS = [f for f in Fault if f is not Fault.NONE]


def _float_words(value: float) -> tuple[int, int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return high, low


@pytest.mark.integration
@pytest.mark.parametrize("fault", FAULTS)
def test_a_malformed_answer_is_one_state_change_down_and_one_up_without_a_traceback(
    caplog: pytest.LogCaptureFixture, fault: Fault
) -> None:
    caplog.set_level(logging.DEBUG)  # pymodbus' own lines included: there must be none

    async def scenario() -> Recorder:
        async with ScriptedTransmitter() as peer:
            peer.registers.update(enumerate(_float_words(1234.5)))
            rec = Recorder()
            task = asyncio.create_task(poller_for([point("s1", port=peer.port)], rec).run())
            try:
                await rec.until(lambda: bool(rec.samples), within=WITHIN_S, what="a sample")
                peer.fault = fault
                await rec.until(
                    lambda: rec.states("s1")[-1] is DeviceState.OFFLINE,
                    within=WITHIN_S,
                    what="the fault reported",
                )
                # Garbage on every reconnection for a while: still one state change.
                asked = peer.requests
                async with asyncio.timeout(WITHIN_S):
                    while peer.requests < asked + 3:  # noqa: ASYNC110 - a peer's counter
                        await asyncio.sleep(0.02)
                peer.fault = Fault.NONE
                await rec.until(
                    lambda: rec.states("s1")[-1] is DeviceState.ONLINE,
                    within=WITHIN_S,
                    what="the recovery",
                )
            finally:
                task.cancel()
                await asyncio.wait([task])
            return rec

    rec = asyncio.run(scenario())
    assert rec.states("s1") == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
    assert "malformed answer reading unit 1 holding registers 0..1: " in rec.statuses[1].detail
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    library = [
        r
        for r in caplog.records
        if r.name.startswith(("asyncio", "pymodbus")) and r.levelno >= logging.INFO
    ]
    assert not library, [r.getMessage() for r in library]
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(recovered) == 1


HOSTILE_WEIGHTS = [1e30, -1e30, -5.0, math.inf, -math.inf, math.nan, 3.4e38]


@pytest.mark.integration
def test_transmitter_garbage_values_never_crash_the_device_task() -> None:
    """Any bits in the weight and heartbeat registers: samples keep coming. A heartbeat that is
    no finite number flags the sample ``error``; weights, NaN and 1e30 included, go on as decoded:
    the shelf engine knows the shelf's plausible range and makes them one device fault
    (tests/test_shelf_gateway.py)."""
    heartbeat = RegisterField(address=10, type=ValueType.FLOAT32)
    wrapped = RegisterField(address=20, type=ValueType.INT32)

    async def scenario() -> Recorder:
        async with ScriptedTransmitter() as peer:
            rec = Recorder()
            shelves = [
                point("float", port=peer.port, heartbeat=heartbeat),
                point("int32", port=peer.port, weight=wrapped),
            ]
            task = asyncio.create_task(poller_for(shelves, rec).run())
            try:
                for n, weight in enumerate(HOSTILE_WEIGHTS):
                    peer.registers.update(enumerate(_float_words(weight)))
                    peer.registers.update(zip((10, 11), _float_words(weight), strict=True))
                    peer.registers.update({20: 0x8000 + n, 21: 0xFFFF})
                    wanted = len(rec.samples) + 4
                    await rec.until(
                        lambda: len(rec.samples) >= wanted,  # noqa: B023 - awaited at once
                        within=WITHIN_S,
                        what=f"samples of {weight}",
                    )
                assert not task.done()
            finally:
                task.cancel()
                await asyncio.wait([task])
            return rec

    rec = asyncio.run(scenario())
    floats = rec.of("float")
    assert any(s.error for s in floats)  # a NaN or infinite heartbeat flagged
    assert any(math.isnan(s.grams) for s in floats)  # the weight as decoded, for the engine
    assert any(math.isinf(s.grams) for s in floats)
    assert any(s.grams < -2e9 for s in rec.of("int32"))  # a wrapped int32 is a (bad) number


@given(st.binary(max_size=300))
def test_any_bytes_are_judged_without_an_exception(data: bytes) -> None:
    result = malformed_response(data)
    assert result is None or isinstance(result, str)


@given(
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
    st.integers(0, 0xFFFF),
    st.sampled_from([3, 4]),
)
def test_a_well_formed_read_answer_is_passed_on(words: list[int], tid: int, function: int) -> None:
    body = bytes([function, 2 * len(words)]) + b"".join(struct.pack(">H", w) for w in words)
    frame = struct.pack(">HHHB", tid, 0, len(body) + 1, 1) + body
    assert malformed_response(frame) is None
    assert malformed_response(frame + frame) is None
    assert malformed_response(frame + frame[:5]) is None  # the rest is on its way
    assert malformed_response(frame + b"\x00\x00\x00\x00\x00\x03\x01\x55\x00") == (
        "function code 0x55 in an answer to a register read"
    )


@given(
    st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
    st.sampled_from(list(ValueType)),
    st.sampled_from(list(WordOrder)),
)
def test_any_register_bits_decode_to_a_float(
    words: list[int], value_type: ValueType, order: WordOrder
) -> None:
    value = decode_value(words[: value_type.width], value_type, order)
    assert isinstance(value, float)
    RegisterField(address=0, type=value_type, table=RegisterTable.INPUT, word_order=order)
