"""The Modbus shelf simulator as a pymodbus client (and the CLI) sees it."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from simulators.modbus import registers
from simulators.modbus.physics import HEARTBEAT_HZ
from simulators.modbus.server import ShelfSimulator
from simulators.shelf_scenario import (
    Encoding,
    FailureMode,
    ShelfEvent,
    ShelfEventKind,
    ShelfScenario,
    ShelfTrack,
    WeightType,
    WordOrder,
)
from simulators.truth import read_ground_truth

pytestmark = pytest.mark.integration


def static_track(unit: int = 1, **over: Any) -> ShelfTrack:
    """A noiseless shelf of 12 x 250 g on an 800 g tray."""
    track = ShelfTrack(
        shelf_id=f"shelf-{unit}",
        unit=unit,
        unit_weight_g=250.0,
        initial_units=12,
        tare_g=800.0,
        capacity_g=15_000.0,
        noise_g=0.0,
    )
    return replace(track, **over)


def f32(words: Sequence[int]) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", *words))[0])


async def read(client: AsyncModbusTcpClient, address: int, count: int, unit: int = 1) -> ModbusPDU:
    return await client.read_holding_registers(address, count=count, device_id=unit)


def test_register_map_as_read_by_a_client() -> None:
    async def scenario() -> None:
        async with ShelfSimulator(shelves=[static_track()]) as sim:
            client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
            await client.connect()
            try:
                rr = await read(client, 0, registers.MAP_SIZE)
                regs = rr.registers
                assert f32(regs[0:2]) == pytest.approx(12 * 250.0)  # net
                assert f32(regs[4:6]) == pytest.approx(12 * 250.0 + 800.0)  # gross
                assert f32(regs[6:8]) == pytest.approx(800.0)  # tare
                assert f32(regs[10:12]) == pytest.approx(15_000.0)  # capacity
                status = regs[registers.STATUS]
                assert status & (1 << registers.STABLE_BIT)
                assert status & (1 << registers.TARE_ACTIVE_BIT)
                assert not status & (1 << registers.ADC_ERROR_BIT)
                assert regs[registers.FORMAT] == 0
                # Input registers show the same map; the heartbeat advances at 10 Hz. Each read
                # is bracketed by the monotonic clock, so the bounds hold however late the
                # event loop (or the machine) runs: floor(b) - floor(a) lies in (b - a - 1,
                # b - a + 1), and b - a lies between the brackets' inner and outer spans (the
                # inner one is at least the 0.35 s slept: the heartbeat must have advanced).
                sent_1 = time.monotonic()
                ir = await client.read_input_registers(0, count=4, device_id=1)
                got_1 = time.monotonic()
                assert f32(ir.registers[0:2]) == pytest.approx(12 * 250.0)
                first = ir.registers[registers.HEARTBEAT]
                await asyncio.sleep(0.35)
                sent_2 = time.monotonic()
                later = (await read(client, registers.HEARTBEAT, 1)).registers[0]
                got_2 = time.monotonic()
                ticks = (later - first) % 0x10000
                assert (
                    (sent_2 - got_1) * HEARTBEAT_HZ - 1
                    < ticks
                    < (got_2 - sent_1) * HEARTBEAT_HZ + 1
                )
                # Beyond the map: illegal data address.
                beyond = await read(client, registers.MAP_SIZE, 1)
                assert beyond.isError()
                assert beyond.exception_code == 0x02
                # A unit id nobody answers to: gateway target failed to respond.
                ghost = await read(client, 0, 2, unit=42)
                assert ghost.exception_code == 0x0B
            finally:
                client.close()

    asyncio.run(scenario())


def test_tare_commands_and_write_protection() -> None:
    async def scenario() -> None:
        track = static_track(encoding=Encoding(WeightType.INT32, WordOrder.LITTLE, 0.1))
        async with ShelfSimulator(shelves=[track]) as sim:
            client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
            await client.connect()
            try:

                def i32_little(words: Sequence[int]) -> float:
                    (raw,) = struct.unpack(">i", struct.pack(">HH", words[1], words[0]))
                    return float(raw) * 0.1

                regs = (await read(client, 0, 8)).registers
                assert i32_little(regs[0:2]) == pytest.approx(3000.0)
                ok = await client.write_register(registers.COMMAND, registers.CMD_TARE, device_id=1)
                assert not ok.isError()
                regs = (await read(client, 0, 10)).registers
                assert i32_little(regs[0:2]) == pytest.approx(0.0)
                assert i32_little(regs[6:8]) == pytest.approx(3800.0)
                assert regs[registers.COMMAND] == 0  # executed
                assert regs[registers.FORMAT] == 0x0101  # int32, low word first
                await client.write_register(
                    registers.COMMAND, registers.CMD_CLEAR_TARE, device_id=1
                )
                regs = (await read(client, 0, 4)).registers
                assert i32_little(regs[0:2]) == pytest.approx(3800.0)
                assert not regs[registers.STATUS] & (1 << registers.TARE_ACTIVE_BIT)
                bad = await client.write_register(registers.COMMAND, 99, device_id=1)
                assert bad.exception_code == 0x03
                protected = await client.write_register(registers.NET, 1, device_id=1)
                assert protected.exception_code == 0x02
            finally:
                client.close()

    asyncio.run(scenario())


def test_failures_as_a_client_sees_them() -> None:
    tracks = [
        static_track(
            1, events=(ShelfEvent(0.0, ShelfEventKind.FAILURE, 60.0, mode=FailureMode.SILENT),)
        ),
        static_track(
            2,
            events=(
                ShelfEvent(
                    0.0, ShelfEventKind.FAILURE, 60.0, mode=FailureMode.EXCEPTION, exception_code=6
                ),
            ),
        ),
        static_track(
            3,
            events=(ShelfEvent(0.0, ShelfEventKind.FAILURE, 60.0, mode=FailureMode.ADC_ERROR),),
        ),
    ]

    async def scenario() -> None:
        async with ShelfSimulator(shelves=tracks) as sim:
            client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=5, retries=0)
            await client.connect()
            try:
                busy = await read(client, 0, 4, unit=2)
                assert busy.exception_code == 0x06
                regs = (await read(client, 0, 4, unit=3)).registers
                assert regs[registers.STATUS] & (1 << registers.ADC_ERROR_BIT)
                assert not regs[registers.STATUS] & (1 << registers.STABLE_BIT)
                assert f32(regs[0:2]) == 0.0
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await read(client, 0, 4, unit=1)
            finally:
                client.close()

    asyncio.run(scenario())


def test_ground_truth_is_written_as_events_happen(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    track = static_track(
        events=(
            ShelfEvent(1.0, ShelfEventKind.PICK, 0.8, units=3),
            ShelfEvent(3.0, ShelfEventKind.HAND, 2.0, grams=400.0),
            ShelfEvent(6.0, ShelfEventKind.RESTOCK, 1.2, units=5),
            ShelfEvent(8.0, ShelfEventKind.BUMP, 0.3, grams=700.0),
            ShelfEvent(9.0, ShelfEventKind.FAILURE, 5.0, mode=FailureMode.FROZEN),
            # After the run (9.5 s of real time after it, at 20x): never written.
            ShelfEvent(200.0, ShelfEventKind.PICK, 0.8, units=1),
        )
    )
    scenario = ShelfScenario(name="t", seed=1, shelves=(track,))

    async def run() -> None:
        async with ShelfSimulator(scenario=scenario, speed=20.0, truth=truth) as sim:
            await sim.sleep_until(10.0)

    asyncio.run(run())
    events = read_ground_truth(truth)
    assert [e["event"] for e in events] == ["start", "pick", "hand", "restock", "bump", "failure"]
    start, pick, hand, restock, bump, failure = events
    assert start["units"] == 12
    assert start["shelf"] == "shelf-1"
    assert (pick["t"], pick["units"], pick["on_hand_after"]) == (1.0, 3, 9)
    assert (restock["units"], restock["on_hand_after"]) == (5, 14)
    assert hand["grams"] == 400.0
    assert bump["grams"] == 700.0
    assert (failure["mode"], failure["duration"]) == ("frozen", 5.0)


def test_command_line_serves_generated_shelves(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "modbus",
            "--port",
            "0",
            "--units",
            "3",
            "--duration",
            "0.3",
            "--truth",
            str(truth),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "modbus simulator listening on 127.0.0.1:" in out.stdout
    assert "units 1..3" in out.stdout
    starts = [e for e in read_ground_truth(truth) if e["event"] == "start"]
    assert [e["unit"] for e in starts] == [1, 2, 3]


def test_command_line_rejects_a_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("shelves:\n  - {id: x, noise: 1}\n", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulate", "modbus", "--scenario", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "dockwatch simulate modbus: shelves[0].noise: unknown key (allowed: id, unit, sku, "
        "unit_weight_g, initial_units, item_sigma_g, tare_g, capacity_g, noise_g, "
        "drift_g_per_min, encoding, events, random); did you mean 'noise_g'?",
        "dockwatch simulate modbus: shelves[0].unit: missing required key",
    ]
