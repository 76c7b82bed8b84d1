"""The simulator's register map as an independent Modbus master, mbpoll, reads it.

mbpoll numbers references from 1 (``-r 1`` is PDU address 0; ``-0`` switches to 0-based), reads
32-bit values low word first unless ``-B`` (big endian word order) is given, and prints one line
``[ref]: value`` per value.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess

import pytest

from simulators.modbus import registers
from simulators.modbus.server import ShelfSimulator
from simulators.shelf_scenario import (
    Encoding,
    FailureMode,
    ShelfEvent,
    ShelfEventKind,
    ShelfTrack,
    WeightType,
    WordOrder,
)
from tests.conftest import missing

pytestmark = pytest.mark.integration

TRACKS = [
    # 12 x 250 g on an 800 g tray, float32 high word first.
    ShelfTrack("float-big", 1, initial_units=12, tare_g=800.0, noise_g=0.0),
    # 7 x 250 g on a 500 g tray, int32 in decigrams, low word first.
    ShelfTrack(
        "int-little",
        2,
        initial_units=7,
        tare_g=500.0,
        noise_g=0.0,
        encoding=Encoding(WeightType.INT32, WordOrder.LITTLE, 0.1),
    ),
    # A transmitter that answers every read with exception 4.
    ShelfTrack(
        "broken",
        3,
        noise_g=0.0,
        events=(ShelfEvent(0.0, ShelfEventKind.FAILURE, 1e6, mode=FailureMode.EXCEPTION),),
    ),
]


@pytest.fixture(scope="module")
def mbpoll() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        missing("mbpoll")
    assert path is not None
    return path


async def poll(mbpoll: str, port: int, *args: str) -> tuple[int, dict[int, str], str]:
    proc = await asyncio.create_subprocess_exec(
        mbpoll,
        "-m",
        "tcp",
        *args,
        "-1",
        "-o",
        "2",
        "127.0.0.1",
        "-p",
        str(port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    values = {
        int(ref): value for ref, value in re.findall(r"^\[(\d+)\]:\s+(\S+)", out.decode(), re.M)
    }
    assert proc.returncode is not None
    return proc.returncode, values, err.decode()


def test_mbpoll_reads_weights_status_and_heartbeat(mbpoll: str) -> None:
    async def scenario() -> None:
        async with ShelfSimulator(shelves=TRACKS) as sim:
            port = sim.port
            # Net (ref 1-2), gross (5-6) and tare (7-8) as float32, big endian word order.
            rc, net, _ = await poll(
                mbpoll, port, "-a", "1", "-r", "1", "-c", "1", "-t", "4:float", "-B"
            )
            assert rc == 0
            assert float(net[1]) == pytest.approx(3000.0)
            rc, more, _ = await poll(
                mbpoll, port, "-a", "1", "-r", "5", "-c", "2", "-t", "4:float", "-B"
            )
            assert float(more[5]) == pytest.approx(3800.0)
            assert float(more[7]) == pytest.approx(800.0)
            # The same map on the input registers (function 4), 0-based addressing this time.
            rc, ir, _ = await poll(
                mbpoll, port, "-a", "1", "-0", "-r", "0", "-c", "1", "-t", "3:float", "-B"
            )
            assert float(ir[0]) == pytest.approx(3000.0)
            # Without -B mbpoll expects the low word first: the float32-big map reads as garbage.
            rc, swapped, _ = await poll(
                mbpoll, port, "-a", "1", "-r", "1", "-c", "1", "-t", "4:float"
            )
            assert float(swapped[1]) != pytest.approx(3000.0)
            # int32, low word first (mbpoll's default order), in decigrams.
            rc, raw, _ = await poll(mbpoll, port, "-a", "2", "-r", "1", "-c", "1", "-t", "4:int")
            assert int(raw[1]) * 0.1 == pytest.approx(1750.0)
            # Status (ref 3): stable + tare active; format (ref 10): int32, low word first.
            rc, words, _ = await poll(mbpoll, port, "-a", "2", "-r", "3", "-c", "2", "-t", "4")
            assert int(words[3]) == (1 << registers.STABLE_BIT) | (1 << registers.TARE_ACTIVE_BIT)
            rc, fmt, _ = await poll(mbpoll, port, "-a", "2", "-r", "10", "-c", "1", "-t", "4:hex")
            assert int(fmt[10], 16) == 0x0101
            # Heartbeat (ref 4) counts at 10 Hz.
            first = int(words[4])
            await asyncio.sleep(0.5)
            rc, words, _ = await poll(mbpoll, port, "-a", "2", "-r", "4", "-c", "1", "-t", "4")
            assert int(words[4]) - first >= 4

    asyncio.run(scenario())


def test_mbpoll_sees_exception_responses(mbpoll: str) -> None:
    async def scenario() -> None:
        async with ShelfSimulator(shelves=TRACKS) as sim:
            rc, values, err = await poll(mbpoll, sim.port, "-a", "3", "-r", "1", "-c", "2")
            assert rc != 0
            assert values == {}
            assert "Slave device or server failure" in err
            rc, values, err = await poll(mbpoll, sim.port, "-a", "9", "-r", "1", "-c", "2")
            assert rc != 0
            assert "Target device failed to respond" in err
            rc, values, err = await poll(mbpoll, sim.port, "-a", "1", "-r", "13", "-c", "1")
            assert rc != 0
            assert "Illegal data address" in err

    asyncio.run(scenario())
