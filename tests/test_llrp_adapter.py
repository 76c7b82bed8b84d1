"""The LLRP adapter: tag conversion, watchdog rules, the ROSpec it asks for, and the real thing.

Integration tests run real sllurp against the project's LLRP reader simulator on real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any

import pytest
import uvloop
from sllurp.llrp import LLRPClient

from dockwatch_core.errors import ConfigError, ProtocolError
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.llrp import (
    LinkWatchdog,
    LlrpReaderAdapter,
    ReadBatch,
    reader_config,
    tag_read_from_sllurp,
)
from gateway.domain.model import DeviceId, DeviceState, DeviceStatus, TagRead
from simulators.llrp.server import LlrpReaderSimulator
from simulators.llrp.source import TagPopulation

READER = DeviceId("door-1-reader")


def _entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "EPC-96": b"3074257bf7194e4000001a85",
        "EPC": b"3074257bf7194e4000001a85",
        "AntennaID": 3,
        "PeakRSSI": -52,
        "FirstSeenTimestampUTC": 1_700_000_000_000_000,
        "LastSeenTimestampUTC": 1_700_000_000_250_000,
        "TagSeenCount": 7,
    }
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


# -- conversion at the boundary ------------------------------------------------------------------


def test_a_sllurp_entry_becomes_a_tag_read() -> None:
    read = tag_read_from_sllurp(READER, _entry())
    assert read.reader_id == READER
    assert read.epc == "3074257BF7194E4000001A85"
    assert read.antenna == 3
    assert read.rssi_dbm == -52.0
    assert (read.first_seen_us, read.last_seen_us) == (1_700_000_000_000_000, 1_700_000_000_250_000)
    assert read.seen_count == 7


def test_optional_fields_fall_back() -> None:
    read = tag_read_from_sllurp(
        READER, _entry(PeakRSSI=None, TagSeenCount=None, FirstSeenTimestampUTC=None)
    )
    assert read.rssi_dbm is None
    assert read.seen_count == 1
    assert read.first_seen_us == read.last_seen_us == 1_700_000_000_250_000


@pytest.mark.parametrize(
    "overrides",
    [
        {"EPC": None, "EPC-96": None},
        {"AntennaID": None},
        {"FirstSeenTimestampUTC": None, "LastSeenTimestampUTC": None},
        {"EPC": b"not hex!"},
        {"EPC": "3074"},  # a str, not the bytes sllurp gives
        {"EPC": b""},
        {"TagSeenCount": 0},
        {"FirstSeenTimestampUTC": 2_000_000_000_000_000},  # after last seen
        {"AntennaID": "x"},
    ],
)
def test_malformed_entries_raise_protocol_error(overrides: Mapping[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="malformed TagReportData"):
        tag_read_from_sllurp(READER, _entry(**overrides))


# -- the ROSpec sllurp will send ------------------------------------------------------------------


def test_rospec_requests_every_field_and_every_antenna() -> None:
    config = reader_config(
        antennas=(1, 2, 3, 4),
        keepalive_s=2.5,
        report_every_ms=200,
        report_every_tags=500,
        tx_power_dbm=None,
    )
    assert config.reconnect is False
    assert config.keepalive_interval == 2500
    rospec = LLRPClient(config, transport_tx_write=lambda _: None).getROSpec()
    assert rospec["AISpec"][0]["AntennaID"] == [1, 2, 3, 4]
    configured = [
        a["AntennaID"]
        for a in rospec["AISpec"][0]["InventoryParameterSpec"][0]["AntennaConfiguration"]
    ]
    assert configured == [1, 2, 3, 4]
    selector = rospec["ROReportSpec"]["TagReportContentSelector"]
    for field in (
        "EnableAntennaID",
        "EnablePeakRSSI",
        "EnableFirstSeenTimestamp",
        "EnableLastSeenTimestamp",
        "EnableTagSeenCount",
    ):
        assert selector[field] is True, field
    trigger = rospec["AISpec"][0]["AISpecStopTrigger"]["TagObservationTrigger"]
    assert (trigger["NumberOfTags"], trigger["Timeout"]) == (500, 200)


# -- watchdog rules ------------------------------------------------------------------------------


def test_watchdog_handshake_deadline() -> None:
    dog = LinkWatchdog(connect_timeout_s=10.0, silence_limit_s=4.0)
    dog.begin(100.0)
    dog.heard(105.0)  # messages during the handshake do not extend it
    assert dog.verdict(109.9) is None
    assert dog.deadline() == 110.0
    assert dog.verdict(110.0) == "no LLRP handshake within 10 s"


def test_watchdog_silence_after_inventory() -> None:
    dog = LinkWatchdog(connect_timeout_s=10.0, silence_limit_s=4.0)
    dog.begin(0.0)
    dog.inventorying(1.0)
    assert dog.deadline() == 5.0
    dog.heard(3.0)
    assert dog.verdict(6.9) is None
    verdict = dog.verdict(7.5)
    assert verdict is not None
    assert verdict.startswith("no message from the reader for 4.5 s")
    # A new session starts a new handshake clock.
    dog.begin(20.0)
    assert dog.inventory_at is None
    assert dog.deadline() == 30.0


def test_watchdog_ignores_out_of_order_times() -> None:
    dog = LinkWatchdog(connect_timeout_s=1.0, silence_limit_s=2.0)
    dog.begin(0.0)
    dog.inventorying(0.5)
    dog.heard(3.0)
    dog.heard(2.0)
    assert dog.last_heard == 3.0


# -- construction --------------------------------------------------------------------------------


def _adapter(**overrides: Any) -> LlrpReaderAdapter:
    kwargs: dict[str, Any] = {
        "reader_id": "r1",
        "host": "127.0.0.1",
        "port": 5084,
        "antennas": (1, 2),
        "out": asyncio.Queue(maxsize=10),
        "on_status": lambda _: None,
        "backoff": Backoff(),
    }
    kwargs.update(overrides)
    return LlrpReaderAdapter(**kwargs)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"host": "::1"}, "IPv4 only"),
        ({"port": 0}, "port 0"),
        ({"antennas": ()}, "antennas"),
        ({"out": asyncio.Queue()}, "bounded"),
        ({"keepalive_s": 0}, "must be > 0"),
    ],
)
def test_invalid_settings_are_config_errors(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        _adapter(**overrides)
    assert caught.value.problems[0].startswith("reader r1: ")


def test_a_fresh_adapter_has_no_state_and_zero_stats() -> None:
    adapter = _adapter()
    assert adapter.state is None
    stats = adapter.stats
    assert (stats.reads, stats.batches, stats.reconnects, stats.last_error) == (0, 0, 0, None)


# -- harness shared with tests/test_llrp_faults.py ---------------------------------------------

ADAPTER_LOGGER = "gateway.adapters.llrp"


def sllurp_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sllurp-reader")]


FAST_BACKOFF = BackoffPolicy(initial_s=0.05, max_s=0.4, reset_after_s=5.0)


def fast_backoff() -> Backoff:
    return Backoff(FAST_BACKOFF)


class RecordingBackoff(Backoff):
    """A Backoff that remembers each delay it handed out, with the adapter's clock reading.

    ``rng=lambda: 1.0`` makes every delay the policy's ceiling, so a test can name them.
    """

    __slots__ = ("delays",)

    def __init__(self, policy: BackoffPolicy, *, rng: Callable[[], float] | None = None) -> None:
        super().__init__(policy, rng=rng)
        self.delays: list[tuple[float, float]] = []

    def next_delay(self, now: float) -> float:
        delay = super().next_delay(now)
        self.delays.append((now, delay))
        return delay


class Recorder:
    """What one adapter reported: statuses and batches, with a way to wait for a condition.

    ``status_at[i]`` is the monotonic time ``statuses[i]`` arrived (a DeviceStatus carries wall
    time only); batches carry their own ``received_at_monotonic``.
    """

    def __init__(self) -> None:
        self.statuses: list[DeviceStatus] = []
        self.status_at: list[float] = []
        self.batches: list[ReadBatch] = []
        self._changed = asyncio.Event()

    def on_status(self, status: DeviceStatus) -> None:
        self.statuses.append(status)
        self.status_at.append(time.monotonic())
        self._changed.set()

    def on_batch(self, batch: ReadBatch) -> None:
        self.batches.append(batch)
        self._changed.set()

    def states(self) -> list[str]:
        return [s.state.value for s in self.statuses]

    def reads(self) -> list[TagRead]:
        return [r for b in self.batches for r in b.reads]

    def batches_after(self, t: float) -> int:
        return sum(1 for b in self.batches if b.received_at_monotonic > t)

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        # Wakes on every status or batch; also every 50 ms, for conditions on the adapter's
        # stats or on a queue this recorder does not see. The default deadline only bounds a
        # broken run; tests that assert a time limit measure it themselves.
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()


def make_adapter(
    port: int, reader_id: str = "door-1-reader", **overrides: Any
) -> tuple[LlrpReaderAdapter, Recorder]:
    recorder = Recorder()
    kwargs: dict[str, Any] = {
        "reader_id": reader_id,
        "host": "127.0.0.1",
        "port": port,
        "antennas": (1, 2, 3, 4),
        "out": recorder.on_batch,
        "on_status": recorder.on_status,
        "backoff": fast_backoff(),
        # 2 s of silence takes a healthy reader offline: room for a loaded machine, whose stalled
        # event loop also stalls the in-process simulator. The watchdog test sets its own.
        "keepalive_s": 1.0,
        "connect_timeout_s": 2.0,
        "report_every_ms": 100,
        "degraded_hold_s": 0.5,
    }
    kwargs.update(overrides)
    return LlrpReaderAdapter(**kwargs), recorder


def simulator(port: int = 0, *, prefix: str = "30", **overrides: Any) -> LlrpReaderSimulator:
    kwargs: dict[str, Any] = {
        "port": port,
        "antennas": (1, 2, 3, 4),
        "source": TagPopulation.sequential(3, prefix=prefix, antennas=(1, 2, 3, 4), rssi_dbm=-61.0),
        "report_interval_s": 0.05,
    }
    kwargs.update(overrides)
    return LlrpReaderSimulator(**kwargs)


@contextlib.asynccontextmanager
async def running(*adapters: LlrpReaderAdapter) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run adapters as tasks of one TaskGroup; cancel them on exit (the app's shutdown)."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(a.run(), name=f"llrp-{a.reader_id}") for a in adapters]
        try:
            yield tasks
        finally:
            for task in tasks:
                task.cancel()


def gateway_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """ERROR records of dockwatch itself (sllurp logs its own decode complaints too)."""
    return [
        r for r in caplog.records if r.name.startswith("gateway") and r.levelno >= logging.ERROR
    ]


POLITE_S = 1.0

LOOPS: dict[str, Callable[[Coroutine[Any, Any, float]], float]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


# -- against the simulator ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_reads_from_every_antenna_arrive_as_tag_reads(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)
    expected_epcs = {f"30{i:022X}" for i in range(3)}

    async def scenario() -> float:
        wall_start_us = time.time_ns() // 1000
        mono_start = time.monotonic()
        queue: asyncio.Queue[ReadBatch] = asyncio.Queue(maxsize=64)
        async with simulator() as sim:
            adapter, rec = make_adapter(
                sim.port, out=queue, keepalive_s=1.0, polite_disconnect_s=POLITE_S
            )
            async with running(adapter) as tasks:
                seen: dict[int, TagRead] = {}
                async with asyncio.timeout(10):
                    while len(seen) < 4:
                        batch = await queue.get()
                        assert batch.reader_id == "door-1-reader"
                        assert mono_start <= batch.received_at_monotonic <= time.monotonic()
                        for read in batch.reads:
                            seen.setdefault(read.antenna, read)
                            assert read.epc in expected_epcs
                            assert read.rssi_dbm == -61.0
                            assert read.seen_count >= 1
                            assert (
                                wall_start_us - 1_000_000
                                <= read.first_seen_us
                                <= read.last_seen_us
                                <= time.time_ns() // 1000 + 1_000_000
                            )
                assert sorted(seen) == [1, 2, 3, 4]
                assert rec.states() == ["online"]
                assert adapter.stats.reads >= 4

                # What sllurp asked the reader for, as the reader decoded it.
                rospec = sim.rospecs_added[-1]
                assert rospec.ai_specs[0].antenna_ids == (1, 2, 3, 4)
                assert rospec.report_spec is not None
                selector = rospec.report_spec.selector
                requested = (
                    selector.antenna_id,
                    selector.peak_rssi,
                    selector.first_seen_timestamp,
                    selector.last_seen_timestamp,
                    selector.tag_seen_count,
                )
                assert requested == (True,) * 5
                assert sim.keepalive_intervals_ms == (1000,)

                stop_started = time.monotonic()
                tasks[0].cancel()
            stopped_in = time.monotonic() - stop_started
            assert sllurp_threads() == []
            # Shutdown while online says goodbye (the adapter's, not sllurp's racy disconnect):
            # DELETE_ACCESSSPEC (one was sent at connect), DELETE_ROSPEC, CLOSE_CONNECTION.
            assert sim.stats.messages_in.get("DELETE_ACCESSSPEC", 0) == 2
            assert sim.stats.messages_in.get("DELETE_ROSPEC", 0) == 2
            assert sim.stats.messages_in.get("CLOSE_CONNECTION", 0) == 1
        assert rec.states() == ["online", "offline"]
        assert rec.statuses[-1].detail == "adapter stopped"
        assert all(s.device_id == "door-1-reader" for s in rec.statuses)
        return stopped_in

    stopped_in = LOOPS[loop](scenario())
    # Bounded by the polite disconnect's timeout (sllurp's own can hang for ever), with slack for
    # a loaded machine; a healthy reader answers at once.
    assert stopped_in < POLITE_S + 2.0
    assert gateway_errors(caplog) == []


@pytest.mark.integration
def test_reads_the_reader_reports_while_we_say_goodbye_are_counted() -> None:
    """The reader holds its reads until the ROSpec ends (60 s, 10,000 tags), so all of them
    come in the end-of-ROSpec report that DELETE_ROSPEC, part of the goodbye, sends: they
    arrive while the session is closing and are still this session's reads, not stale ones."""

    async def scenario() -> None:
        async with simulator() as sim:
            adapter, rec = make_adapter(
                sim.port, report_every_ms=60_000, report_every_tags=10_000, keepalive_s=0.5
            )
            async with running(adapter) as tasks:
                await rec.until(lambda: adapter.state is DeviceState.ONLINE)
                await asyncio.sleep(0.5)  # the reader inventories, and holds what it reads
                assert rec.reads() == []
                tasks[0].cancel()
            assert sim.stats.messages_in.get("CLOSE_CONNECTION", 0) == 1
            assert sim.stats.tag_reads_sent >= 3
            assert len(rec.reads()) == adapter.stats.reads == sim.stats.tag_reads_sent
            assert {r.epc for r in rec.reads()} == {f"30{i:022X}" for i in range(3)}

    asyncio.run(scenario())


@pytest.mark.integration
def test_two_readers_share_one_queue() -> None:
    async def scenario() -> None:
        queue: asyncio.Queue[ReadBatch] = asyncio.Queue(maxsize=256)
        async with simulator(prefix="31") as sim_a, simulator(prefix="32") as sim_b:
            adapter_a, rec_a = make_adapter(sim_a.port, "reader-a", out=queue)
            adapter_b, rec_b = make_adapter(sim_b.port, "reader-b", out=queue)
            by_reader: dict[str, set[str]] = {"reader-a": set(), "reader-b": set()}
            async with running(adapter_a, adapter_b):
                async with asyncio.timeout(10):
                    while min(len(epcs) for epcs in by_reader.values()) < 3:
                        batch = await queue.get()
                        by_reader[batch.reader_id].update(
                            r.epc for r in batch.reads if r.reader_id == batch.reader_id
                        )
                assert len(sllurp_threads()) == 2
            assert by_reader["reader-a"] == {f"31{i:022X}" for i in range(3)}
            assert by_reader["reader-b"] == {f"32{i:022X}" for i in range(3)}
            assert rec_a.states() == rec_b.states() == ["online", "offline"]
            assert sllurp_threads() == []

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_full_queue_drops_the_oldest_batch_and_degrades(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)

    async def scenario() -> None:
        queue: asyncio.Queue[ReadBatch] = asyncio.Queue(maxsize=2)
        async with simulator() as sim:
            adapter, rec = make_adapter(sim.port, out=queue)
            async with running(adapter):
                # Nobody consumes: the queue fills, then every new batch evicts the oldest.
                await rec.until(lambda: adapter.stats.dropped_batches >= 3)
                assert adapter.state is DeviceState.DEGRADED
                assert "queue full" in rec.statuses[-1].detail
                stats = adapter.stats
                assert stats.dropped_reads == 12 * stats.dropped_batches  # 3 tags x 4 antennas
                kept = [queue.get_nowait(), queue.get_nowait()]
                # The two kept are the newest: delivered after all the dropped ones.
                assert kept[0].received_at_monotonic < kept[1].received_at_monotonic
                assert stats.batches == stats.dropped_batches + 2

                # A consumer catches up: no more drops, online again after degraded_hold_s.
                async def consume() -> None:
                    while True:
                        await queue.get()

                consumer = asyncio.create_task(consume())
                try:
                    await rec.until(lambda: adapter.state is DeviceState.ONLINE)
                finally:
                    consumer.cancel()
        assert rec.states() == ["online", "degraded", "online", "offline"]

    asyncio.run(scenario())
    warnings = [r for r in caplog.records if "degraded" in r.getMessage()]
    assert len(warnings) == 2  # "is degraded: ..." once, "no longer degraded" once
    assert gateway_errors(caplog) == []
