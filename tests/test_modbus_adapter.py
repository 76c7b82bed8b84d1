"""The Modbus adapter: pure read planning and decoding, then polling real pymodbus servers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from gateway.adapters.backoff import BackoffPolicy
from gateway.adapters.modbus import (
    ModbusShelfPoller,
    PollerSettings,
    ReadBlock,
    RegisterField,
    RegisterTable,
    RoundTrips,
    SampleQueue,
    ShelfPoint,
    StatusWord,
    ValueType,
    WordOrder,
    decode_field,
    decode_value,
    plan_reads,
)
from gateway.domain.model import DeviceId, DeviceState, DeviceStatus, WeightSample
from simulators.modbus import registers
from simulators.modbus.accuracy import point_for
from simulators.modbus.server import ShelfSimulator
from simulators.shelf_scenario import (
    Encoding,
    FailureMode,
    ShelfEvent,
    ShelfEventKind,
    ShelfTrack,
    WeightType,
)
from simulators.shelf_scenario import WordOrder as SimWordOrder

HOLDING = RegisterTable.HOLDING
Trips = dict[str, RoundTrips]
INPUT = RegisterTable.INPUT


def point(
    shelf: str = "s1",
    unit: int = 1,
    weight: RegisterField | None = None,
    status: StatusWord | None = None,
    heartbeat: RegisterField | None = None,
    port: int = 502,
) -> ShelfPoint:
    return ShelfPoint(
        shelf_id=DeviceId(shelf),
        host="127.0.0.1",
        port=port,
        unit=unit,
        weight=weight if weight is not None else RegisterField(address=0),
        status=status,
        heartbeat=heartbeat,
    )


# -- planning --------------------------------------------------------------------------------------


def test_weight_status_and_heartbeat_of_one_unit_are_one_read() -> None:
    p = point(status=StatusWord(address=2), heartbeat=RegisterField(3, ValueType.UINT16))
    assert plan_reads([p]) == (ReadBlock(1, HOLDING, 0, 4),)


def test_units_and_tables_are_never_merged() -> None:
    blocks = plan_reads(
        [
            point("a", unit=1),
            point("b", unit=2),
            point("c", unit=2, weight=RegisterField(address=2, table=INPUT)),
        ]
    )
    assert blocks == (
        ReadBlock(1, HOLDING, 0, 2),
        ReadBlock(2, HOLDING, 0, 2),
        ReadBlock(2, INPUT, 2, 2),
    )


def test_gaps_split_reads_unless_bridging_is_allowed() -> None:
    p = point(status=StatusWord(address=10))
    assert plan_reads([p]) == (ReadBlock(1, HOLDING, 0, 2), ReadBlock(1, HOLDING, 10, 1))
    assert plan_reads([p], max_gap=8) == (ReadBlock(1, HOLDING, 0, 11),)
    assert len(plan_reads([p], max_gap=7)) == 2


def test_a_shared_status_word_is_read_once() -> None:
    shared = StatusWord(address=8)
    blocks = plan_reads(
        [
            point("a", weight=RegisterField(4), status=shared),
            point("b", weight=RegisterField(6), status=shared),
        ]
    )
    assert blocks == (ReadBlock(1, HOLDING, 4, 5),)


def test_blocks_respect_the_register_limit_without_splitting_values() -> None:
    points = [point(f"s{i}", weight=RegisterField(address=2 * i)) for i in range(100)]
    blocks = plan_reads(points, max_registers=125)
    assert [b.count for b in blocks] == [124, 76]  # 62 float32s, then the other 38
    small = plan_reads(points, max_registers=3)
    assert all(b.count == 2 for b in small)
    with pytest.raises(ValueError, match="max_registers"):
        plan_reads(points, max_registers=126)


@given(
    spans=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=3),  # unit
            st.sampled_from([HOLDING, INPUT]),
            st.integers(min_value=0, max_value=400),  # address
            st.sampled_from([ValueType.UINT16, ValueType.FLOAT32]),
        ),
        min_size=1,
        max_size=40,
    ),
    max_registers=st.integers(min_value=2, max_value=125),
    max_gap=st.integers(min_value=0, max_value=6),
)
@example(
    spans=[(1, HOLDING, 0, ValueType.FLOAT32), (1, HOLDING, 1, ValueType.FLOAT32)],
    max_registers=2,
    max_gap=0,
)
def test_property_every_register_is_read_within_the_limits(
    spans: list[tuple[int, RegisterTable, int, ValueType]], max_registers: int, max_gap: int
) -> None:
    points = [
        point(f"s{i}", unit=unit, weight=RegisterField(address, vtype, table))
        for i, (unit, table, address, vtype) in enumerate(spans)
    ]
    blocks = plan_reads(points, max_registers=max_registers, max_gap=max_gap)
    for p in points:
        covering = [
            b
            for b in blocks
            if b.unit == p.unit and b.covers(p.weight.table, p.weight.address, p.weight.width)
        ]
        assert len(covering) == 1
    for b in blocks:
        assert 1 <= b.count <= max_registers
    for a, b in itertools.pairwise(blocks):
        if (a.unit, a.table) == (b.unit, b.table):
            assert a.address < b.address
            if a.end > b.address:
                # A register is read twice only for fields that overlap (a mistake of the
                # register map, which the block limit then cannot serve in one read): the
                # second block starts at a field that does not fit in the first.
                assert any(
                    (p.unit, p.weight.table, p.weight.address) == (b.unit, b.table, b.address)
                    and p.weight.address + p.weight.width > a.end
                    for p in points
                ), (a, b)


# -- decoding --------------------------------------------------------------------------------------


def test_decoding_matches_pymodbus_own_conversions() -> None:
    conv = AsyncModbusTcpClient.convert_from_registers
    dt = AsyncModbusTcpClient.DATATYPE
    for value, vtype, pm_type in [
        (1234.5, ValueType.FLOAT32, dt.FLOAT32),
        (-70_000, ValueType.INT32, dt.INT32),
        (3_000_000_000, ValueType.UINT32, dt.UINT32),
    ]:
        orders: tuple[Literal["big", "little"], ...] = ("big", "little")
        for order in orders:
            words = AsyncModbusTcpClient.convert_to_registers(value, pm_type, word_order=order)
            assert decode_value(words, vtype, WordOrder(order)) == pytest.approx(value)
            assert conv(words, pm_type, word_order=order) == pytest.approx(value)
    assert decode_value([0xFFFE], ValueType.INT16, WordOrder.BIG) == -2
    assert decode_value([0xFFFE], ValueType.UINT16, WordOrder.LITTLE) == 65534


def test_decoding_applies_word_order_and_scale_like_the_simulator() -> None:
    for encoding in [
        Encoding(WeightType.FLOAT32, SimWordOrder.BIG, 1.0),
        Encoding(WeightType.FLOAT32, SimWordOrder.LITTLE, 1000.0),
        Encoding(WeightType.INT32, SimWordOrder.LITTLE, 0.1),
        Encoding(WeightType.INT32, SimWordOrder.BIG, 1.0),
    ]:
        words = [0, 0, *registers.encode_weight(-1234.5, encoding)]
        spec = RegisterField(
            address=2,
            type=ValueType.FLOAT32 if encoding.type is WeightType.FLOAT32 else ValueType.INT32,
            word_order=WordOrder(encoding.word_order.value),
            scale=encoding.scale,
        )
        tolerance = 0.5 if encoding.type is WeightType.INT32 and encoding.scale == 1.0 else 0.05
        assert decode_field(words, 0, spec) == pytest.approx(-1234.5, abs=tolerance)


def test_decoding_rejects_wrong_sizes() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode_value([1], ValueType.FLOAT32, WordOrder.BIG)
    with pytest.raises(ValueError, match="16-bit"):
        decode_value([70_000], ValueType.UINT16, WordOrder.BIG)
    with pytest.raises(ValueError, match="outside the block"):
        decode_field([1, 2], 10, RegisterField(address=11))


# -- the bounded queue -----------------------------------------------------------------------------


def test_sample_queue_drops_the_oldest_when_full(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[float]:
        queue = SampleQueue(maxsize=3)
        for i in range(5):
            queue.put(WeightSample(DeviceId("s"), float(i), 0.0))
        assert queue.dropped == 2
        return [(await queue.get()).at for _ in range(3)]

    with caplog.at_level(logging.WARNING, logger="gateway.adapters.modbus"):
        assert asyncio.run(scenario()) == [2.0, 3.0, 4.0]
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1


# -- against real servers --------------------------------------------------------------------------


def quiet_track(unit: int, shelf: str, *events: ShelfEvent, **over: Any) -> ShelfTrack:
    """A noiseless shelf of 20 x 250 g on a 700 g tray."""
    base = ShelfTrack(
        shelf_id=shelf,
        unit=unit,
        unit_weight_g=250.0,
        initial_units=20,
        tare_g=700.0,
        noise_g=0.0,
        events=events,
    )
    return replace(base, **over)


@dataclass
class Recorder:
    samples: list[WeightSample] = field(default_factory=list)
    statuses: list[DeviceStatus] = field(default_factory=list)
    times: dict[str, list[float]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def sample(self, s: WeightSample) -> None:
        self.samples.append(s)
        self.times.setdefault(s.shelf_id, []).append(asyncio.get_running_loop().time())
        self.changed.set()

    def status(self, s: DeviceStatus) -> None:
        self.statuses.append(s)
        self.changed.set()

    def of(self, shelf: str) -> list[WeightSample]:
        return [s for s in self.samples if s.shelf_id == shelf]

    def states(self, shelf: str) -> list[DeviceState]:
        return [s.state for s in self.statuses if s.device_id == shelf]

    async def until(self, done: Callable[[], bool], *, within: float, what: str) -> None:
        """Wait for ``done()``, re-checked on every sample and status; fail after ``within`` s.

        The deadline only bounds a broken run: a loaded machine makes a passing run slower, never
        a failing one.
        """
        try:
            async with asyncio.timeout(within):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} within {within} s: {self.statuses}") from None


FAST = PollerSettings(
    poll_interval_s=0.05,
    timeout_s=0.3,
    heartbeat_stale_s=0.8,
    backoff=BackoffPolicy(initial_s=0.05, max_s=0.2, reset_after_s=1.0),
)
WITHIN_S = 20.0


def poller_for(
    points: Sequence[ShelfPoint], rec: Recorder, settings: PollerSettings = FAST
) -> ModbusShelfPoller:
    return ModbusShelfPoller(
        points, on_sample=rec.sample, on_status=rec.status, settings=settings, rng=lambda: 1.0
    )


async def poll_until(
    points: Sequence[ShelfPoint],
    done: Callable[[Recorder], bool],
    what: str,
    settings: PollerSettings = FAST,
) -> Recorder:
    """Poll ``points`` until ``done(recorder)`` holds (at most ``WITHIN_S``), then stop."""
    rec = Recorder()
    task = asyncio.create_task(poller_for(points, rec, settings).run())
    try:
        await rec.until(lambda: done(rec), within=WITHIN_S, what=what)
    finally:
        task.cancel()
        await asyncio.wait([task])
    return rec


@pytest.mark.integration
def test_samples_carry_decoded_weights_and_status_bits() -> None:
    tracks = [
        quiet_track(1, "float-big"),
        quiet_track(
            2,
            "int-little",
            encoding=Encoding(WeightType.INT32, SimWordOrder.LITTLE, 0.1),
            initial_units=7,
        ),
    ]

    async def scenario() -> Recorder:
        async with ShelfSimulator(shelves=tracks) as sim:
            points = [point_for(t, sim.host, sim.port) for t in tracks]
            return await poll_until(
                points,
                lambda rec: min(len(rec.of("float-big")), len(rec.of("int-little"))) >= 5,
                "5 samples of each shelf",
            )

    rec = asyncio.run(scenario())
    big, little = rec.of("float-big"), rec.of("int-little")
    assert len(big) >= 5
    assert len(little) >= 5
    assert all(s.grams == pytest.approx(20 * 250.0) for s in big)
    assert all(s.grams == pytest.approx(7 * 250.0) for s in little)
    assert all(s.stable is True and not s.error and not s.overload for s in big + little)
    assert rec.states("float-big") == [DeviceState.ONLINE]
    assert rec.states("int-little") == [DeviceState.ONLINE]


@pytest.mark.integration
def test_failures_are_reported_once_and_recoveries_once(caplog: pytest.LogCaptureFixture) -> None:
    tracks = [
        quiet_track(
            1, "exc", ShelfEvent(0.3, ShelfEventKind.FAILURE, 1.2, mode=FailureMode.EXCEPTION)
        ),
        quiet_track(
            2, "frozen", ShelfEvent(0.3, ShelfEventKind.FAILURE, 2.2, mode=FailureMode.FROZEN)
        ),
        quiet_track(
            3, "adc", ShelfEvent(0.3, ShelfEventKind.FAILURE, 1.2, mode=FailureMode.ADC_ERROR)
        ),
    ]

    async def scenario() -> tuple[Recorder, int]:
        async with ShelfSimulator(shelves=tracks) as sim:
            points = [point_for(t, sim.host, sim.port) for t in tracks]
            points.append(point("ghost", unit=9, port=sim.port))  # no such unit behind the gateway

            def episodes_over(rec: Recorder) -> bool:
                # Every failing shelf went down and came back (the frozen one with fresh,
                # unflagged samples), and the ghost unit was reported.
                return (
                    all(len(rec.states(shelf)) >= 3 for shelf in ("exc", "frozen", "adc"))
                    and bool(rec.states("ghost"))
                    and not rec.of("frozen")[-1].error
                )

            return await poll_until(points, episodes_over, "failure and recovery"), sim.port

    with caplog.at_level(logging.INFO, logger="gateway.adapters.modbus"):
        rec, port = asyncio.run(scenario())
    online, degraded, offline = DeviceState.ONLINE, DeviceState.DEGRADED, DeviceState.OFFLINE
    assert rec.states("exc") == [online, degraded, online]
    assert rec.states("frozen") == [online, degraded, online]
    assert rec.states("adc") == [online, degraded, online]
    assert rec.states("ghost") == [offline]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 4  # one per failing shelf, whatever the number of failed polls
    [exc_line] = [e for e in errors if "shelf exc " in e]
    assert f"127.0.0.1:{port} unit 1" in exc_line
    assert "0x04 (server device failure)" in exc_line
    [ghost_line] = [e for e in errors if "shelf ghost " in e]
    assert "0x0B (gateway target device failed to respond)" in ghost_line
    assert any("heartbeat frozen" in e for e in errors if "shelf frozen " in e)
    recovered = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    assert len(recovered) == 3
    # A frozen transmitter's samples are flagged once its heartbeat is stale; the ADC's at once.
    assert any(s.error for s in rec.of("frozen"))
    assert not rec.of("frozen")[-1].error
    assert any(s.error for s in rec.of("adc"))
    assert rec.of("exc")  # samples before and after the exception responses


@pytest.mark.integration
def test_a_dead_device_never_slows_a_healthy_one(caplog: pytest.LogCaptureFixture) -> None:
    """5 Hz polling of a healthy shelf while another device stalls and a third refuses."""
    healthy = quiet_track(1, "healthy")
    stalled = quiet_track(
        1, "stalled", ShelfEvent(0.0, ShelfEventKind.FAILURE, 1e6, mode=FailureMode.SILENT)
    )
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        refused_port = int(refusing.getsockname()[1])  # bound, never listening: refuses

        async def scenario() -> Recorder:
            async with (
                ShelfSimulator(shelves=[healthy]) as a,
                ShelfSimulator(shelves=[stalled]) as b,
            ):
                points = [
                    point_for(healthy, a.host, a.port),
                    point_for(stalled, b.host, b.port),
                    point("refused", port=refused_port),
                ]
                settings = PollerSettings(
                    poll_interval_s=0.2,
                    timeout_s=1.0,
                    backoff=BackoffPolicy(initial_s=0.1, max_s=0.5),
                )

                def observed(rec: Recorder) -> bool:
                    # Both dead devices were found dead, and the healthy shelf was sampled for
                    # about 3 s meanwhile (a stalled request costs 1 s each time it is retried).
                    return (
                        bool(rec.states("stalled"))
                        and bool(rec.states("refused"))
                        and len(rec.times.get("healthy", [])) >= 16
                    )

                return await poll_until(points, observed, "3 s of healthy samples", settings)

        with caplog.at_level(logging.ERROR, logger="gateway.adapters.modbus"):
            rec = asyncio.run(scenario())
    times = rec.times["healthy"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 5 Hz. The median, not the worst gap: a loaded machine may delay one poll, while a healthy
    # shelf waiting on the stalled one would wait its 1 s timeout on most polls.
    assert statistics.median(gaps) == pytest.approx(0.2, abs=0.05), gaps
    assert rec.states("healthy") == [DeviceState.ONLINE]
    assert rec.states("stalled") == [DeviceState.OFFLINE]
    assert rec.states("refused") == [DeviceState.OFFLINE]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 2
    assert any("no answer within 1 s" in e and "shelf stalled " in e for e in errors)
    assert any("refused" in e and f"127.0.0.1:{refused_port}" in e for e in errors)


@pytest.mark.integration
def test_a_silent_unit_on_a_shared_line_is_probed_briefly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two units behind one host:port; one falls silent for 5 s, then answers again.

    The first timeout costs the full 1 s; after that the silent unit is probed with a timeout
    fitted to its own earlier answers, so the healthy unit on the same line keeps being sampled
    at about its rate (with a full timeout per probe it would get a sample a second or less),
    and the silent unit is found again when it answers.
    """
    healthy = quiet_track(1, "healthy")
    silent = quiet_track(
        2, "silent", ShelfEvent(1.0, ShelfEventKind.FAILURE, 5.0, mode=FailureMode.SILENT)
    )
    settings = PollerSettings(
        poll_interval_s=0.1,
        timeout_s=1.0,
        backoff=BackoffPolicy(initial_s=0.1, max_s=0.3),
    )

    async def scenario() -> Recorder:
        async with ShelfSimulator(shelves=[healthy, silent]) as sim:
            points = [point_for(healthy, sim.host, sim.port), point_for(silent, sim.host, sim.port)]

            def observed(rec: Recorder) -> bool:
                return rec.states("silent") == [
                    DeviceState.ONLINE,
                    DeviceState.OFFLINE,
                    DeviceState.ONLINE,
                ]

            return await poll_until(points, observed, "a silent unit found again", settings)

    with caplog.at_level(logging.ERROR, logger="gateway.adapters.modbus"):
        rec = asyncio.run(scenario())
    silent_times = rec.times["silent"]
    went, came = max(
        itertools.pairwise(silent_times), key=lambda pair: pair[1] - pair[0]
    )  # the silence, as the poller saw it
    assert came - went > 4.0
    # Skip the first (full) timeout, then look at the healthy unit's samples while probing.
    during = [t for t in rec.times["healthy"] if went + 1.2 < t < came]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert len(during) >= 8, during
    # Time spent waiting on probes: long gaps. With a full timeout per probe they would fill
    # about three quarters of the silence (1 s probe, 0.3 s backoff); here next to none of it.
    stalled = sum(gap for gap in gaps if gap > 0.6)
    assert stalled < 0.25 * (during[-1] - during[0]), gaps
    assert [s.state for s in rec.statuses if s.device_id == "healthy"] == [DeviceState.ONLINE]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1, errors  # one line when the unit goes silent, none per probe
    assert "no answer within 1 s" in errors[0]
    assert "shelf silent " in errors[0]


@pytest.mark.integration
def test_a_unit_that_answers_again_is_found_within_unit_retry_max_s() -> None:
    """The connection's backoff may grow to 30 s; a silent unit's probes stop growing at
    ``unit_retry_max_s``. Silent for 9 s with every delay at its ceiling (rng 1.0): probes at
    about 0.5, 1.5, 3.5 and 7.5 s would make the next one 15.5 s, long after the unit came back;
    capped at 1 s, it is found within about a second of answering."""
    healthy = quiet_track(1, "healthy")
    silent = quiet_track(
        2, "silent", ShelfEvent(1.0, ShelfEventKind.FAILURE, 9.0, mode=FailureMode.SILENT)
    )
    settings = PollerSettings(
        poll_interval_s=0.1,
        timeout_s=0.5,
        backoff=BackoffPolicy(initial_s=0.5, max_s=30.0),
        unit_retry_max_s=1.0,
    )

    async def scenario() -> Recorder:
        async with ShelfSimulator(shelves=[healthy, silent]) as sim:
            points = [point_for(healthy, sim.host, sim.port), point_for(silent, sim.host, sim.port)]

            def found_again(rec: Recorder) -> bool:
                return (
                    rec.states("silent")[-1:] == [DeviceState.ONLINE]
                    and len(rec.states("silent")) == 3
                )

            return await poll_until(points, found_again, "the silent unit found again", settings)

    rec = asyncio.run(scenario())
    went, came = max(itertools.pairwise(rec.times["silent"]), key=lambda pair: pair[1] - pair[0])
    # Silent 9 s; found again within the 1 s cap, a probe's timeout and some slack.
    assert 8.5 < came - went < 9.0 + 1.0 + 0.5 + 0.6, came - went


@pytest.mark.integration
def test_round_trips_are_timed_per_device_and_timeouts_are_not_round_trips() -> None:
    healthy = quiet_track(1, "healthy")
    silent = quiet_track(
        2, "silent", ShelfEvent(0.0, ShelfEventKind.FAILURE, 1e6, mode=FailureMode.SILENT)
    )
    settings = replace(FAST, timeout_s=0.5)
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        refused_port = int(refusing.getsockname()[1])  # bound, never listening: refuses

        async def scenario() -> tuple[Recorder, Trips, Trips, int, int]:
            async with ShelfSimulator(shelves=[healthy, silent]) as sim:
                points = [
                    point_for(healthy, sim.host, sim.port),
                    point_for(silent, sim.host, sim.port),
                    point("refused", port=refused_port),
                ]
                rec = Recorder()
                poller = poller_for(points, rec, settings)
                before = poller.round_trips()
                task = asyncio.create_task(poller.run())
                try:
                    await rec.until(
                        lambda: (
                            len(rec.of("healthy")) >= 10
                            and bool(rec.states("silent"))
                            and bool(rec.states("refused"))
                        ),
                        within=WITHIN_S,
                        what="10 healthy samples, a silent unit and a refused device",
                    )
                finally:
                    task.cancel()
                    await asyncio.wait([task])
                blocks = len(plan_reads([points[0]]))
                return rec, before, poller.round_trips(), sim.port, blocks

        rec, before, after, port, blocks = asyncio.run(scenario())
    device, dead = f"127.0.0.1:{port}", f"127.0.0.1:{refused_port}"
    # Every configured device is there from the start, before any request.
    assert set(before) == {device, dead}
    assert before[device].count == 0
    # One timed round trip per successful read request of the healthy unit; the silent unit's
    # requests timed out (0.5 s each) and count for nothing, or the largest would be >= 0.5 s.
    measured = after[device]
    assert rec.states("silent") == [DeviceState.OFFLINE]
    assert measured.count == len(rec.of("healthy")) * blocks
    assert measured.total_s > 0
    assert 0 < measured.last_s <= measured.max_s < settings.timeout_s
    assert after[dead].count == 0
    assert after[dead].total_s == 0


@pytest.mark.integration
def test_a_restarted_device_is_reconnected() -> None:
    track = quiet_track(1, "s1")
    online, offline = DeviceState.ONLINE, DeviceState.OFFLINE

    async def scenario() -> tuple[Recorder, float]:
        first = ShelfSimulator(shelves=[track])
        await first.start()
        port = first.port
        rec = Recorder()
        task = asyncio.create_task(poller_for([point_for(track, "127.0.0.1", port)], rec).run())
        try:
            await rec.until(lambda: len(rec.samples) >= 3, within=WITHIN_S, what="samples")
            await first.stop()
            await rec.until(
                lambda: rec.states("s1")[-1:] == [offline], within=WITHIN_S, what="down"
            )
            second = ShelfSimulator(port=port, shelves=[track])
            restarted_at = time.monotonic()
            await second.start()
            try:
                seen = len(rec.samples)
                await rec.until(
                    lambda: rec.states("s1")[-1:] == [online] and len(rec.samples) > seen,
                    within=WITHIN_S,
                    what="reconnection",
                )
                back_in = time.monotonic() - restarted_at
            finally:
                await second.stop()
        finally:
            task.cancel()
            await asyncio.wait([task])
            await first.stop()  # a no-op once stopped; here for a run that failed early
        return rec, back_in

    rec, back_in = asyncio.run(scenario())
    assert rec.states("s1") == [online, offline, online]
    assert rec.samples[-1].grams == pytest.approx(20 * 250.0)
    # Retries are spaced by the backoff (capped at 0.2 s) plus a connect and a 0.3 s read
    # timeout at worst: well under a second nominally; the bound leaves room for a loaded machine.
    assert back_in < FAST.backoff.max_s + FAST.timeout_s + 2.5


def test_points_and_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="unit"):
        point(unit=300)
    with pytest.raises(ValueError, match="stable_bit"):
        StatusWord(address=2, stable_bit=16)
    with pytest.raises(ValueError, match="address"):
        RegisterField(address=65535, type=ValueType.FLOAT32)
    with pytest.raises(ValueError, match="max_registers"):
        PollerSettings(max_registers=200)
    with pytest.raises(ValueError, match="duplicate"):
        ModbusShelfPoller([point("a"), point("a")], on_sample=lambda _s: None)
