"""The LLRP reader simulator and its scenarios, against real clients on real sockets.

Two clients drive the simulator: real sllurp 3.0.5 (``LLRPReaderClient``, in its own thread, as
the gateway uses it) and a small asyncio client built on our codec, which can send what sllurp
never would (wrong states, bad frames, other versions) and see every byte the reader sends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from sllurp.llrp import LLRPReaderClient, LLRPReaderConfig

from dockwatch_core.errors import ConfigError
from gateway import cli
from gateway.domain.epc import decode_epc
from gateway.llrp import codec as c
from simulators import epc_encode
from simulators.llrp.server import LlrpReaderSimulator, build_simulators
from simulators.llrp.source import ScriptedReads, SimRead, TagPopulation
from simulators.scenario import RadioModel, load_scenario, parse_scenario
from simulators.truth import read_ground_truth
from tests.support.net import free_port

SCENARIOS = Path(__file__).resolve().parent.parent / "simulators" / "scenarios"
T = TypeVar("T")
OK = c.StatusCode.M_SUCCESS


def run(factory: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            return await factory()

    return asyncio.run(guarded())


class RawClient:
    """An LLRP client on our codec: requests by ID, everything else queued as it arrives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = c.LlrpFramer()
        self.inbox: collections.deque[c.LlrpMessage] = collections.deque()
        self.ids = iter(range(1000, 1 << 31))
        self.hello: c.ReaderEventNotification | None = None

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        """Connect and read the reader's first message, its connection event (``hello``)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.hello = await client.recv_type(c.ReaderEventNotification)
        return client

    async def _fill(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            raise EOFError("reader closed the connection")
        self.inbox.extend(c.decode_message(f) for f in self.framer.feed(data))

    async def recv(self) -> c.LlrpMessage:
        while not self.inbox:
            await self._fill()
        return self.inbox.popleft()

    async def recv_type(self, cls: type[T]) -> T:
        """The next message of ``cls``; others are dropped."""
        while True:
            msg = await self.recv()
            if isinstance(msg, cls):
                return msg

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, msg: c.LlrpMessage) -> c.LlrpMessage:
        """Send ``msg`` with a fresh ID; the reply with that ID (reports etc. stay queued)."""
        msg_id = next(self.ids)
        frame = msg.encode()
        frame = frame[:6] + msg_id.to_bytes(4) + frame[10:]
        await self.send_bytes(frame)
        while True:
            for queued in list(self.inbox):
                if queued.msg_id == msg_id and not isinstance(
                    queued, c.ROAccessReport | c.Keepalive | c.ReaderEventNotification
                ):
                    self.inbox.remove(queued)
                    return queued
            await self._fill()

    async def status(self, msg: c.LlrpMessage) -> c.LLRPStatus:
        status = c.status_of(await self.request(msg))
        assert status is not None
        return status

    async def reports(self, count: int) -> list[c.ROAccessReport]:
        return [await self.recv_type(c.ROAccessReport) for _ in range(count)]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def rospec(
    *,
    rospec_id: int = 1,
    antennas: Sequence[int] = (0,),
    start: int = c.ROSpecStartTriggerType.NULL,
    stop_ms: int = 0,
    ai_stop: c.AISpecStopTrigger | None = None,
    report: c.ROReportSpec | None = None,
    periodic: c.PeriodicTriggerValue | None = None,
) -> c.ROSpec:
    return c.ROSpec(
        rospec_id=rospec_id,
        boundary=c.ROBoundarySpec(
            c.ROSpecStartTrigger(start, periodic),
            c.ROSpecStopTrigger(
                c.ROSpecStopTriggerType.DURATION if stop_ms else c.ROSpecStopTriggerType.NULL,
                stop_ms,
            ),
        ),
        ai_specs=(
            c.AISpec(
                antenna_ids=tuple(antennas),
                stop=ai_stop or c.AISpecStopTrigger(),
                inventory_parameter_specs=(c.InventoryParameterSpec(spec_id=1),),
            ),
        ),
        report_spec=report,
    )


def full_selector() -> c.TagReportContentSelector:
    return c.TagReportContentSelector(
        antenna_id=True,
        peak_rssi=True,
        first_seen_timestamp=True,
        last_seen_timestamp=True,
        tag_seen_count=True,
    )


# -- real sllurp -------------------------------------------------------------------------------

SELECTOR = {
    "EnableAntennaID": True,
    "EnablePeakRSSI": True,
    "EnableFirstSeenTimestamp": True,
    "EnableLastSeenTimestamp": True,
    "EnableTagSeenCount": True,
}


class SllurpHarness:
    """Real sllurp in its thread; callbacks only record, as the gateway's adapter does."""

    def __init__(self, port: int, **config: Any) -> None:
        settings = {
            "antennas": [1, 2, 3, 4],
            "tag_content_selector": SELECTOR,
            "report_every_n_tags": 200,
            "report_timeout_ms": 100,
            "keepalive_interval": 200,
        }
        settings.update(config)
        self.client = LLRPReaderClient("127.0.0.1", port, LLRPReaderConfig(settings), timeout=3.0)
        self.tags: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.got = threading.Event()
        self.client.add_tag_report_callback(self._on_tags)

    def _on_tags(self, _reader: object, tags: list[dict[str, Any]]) -> None:
        with self.lock:
            self.tags.extend(tags)
        self.got.set()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.tags)

    async def wait_for_tags(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
        while not predicate(self.snapshot()):
            self.got.clear()
            if predicate(self.snapshot()):
                return
            await asyncio.to_thread(self.got.wait, 1.0)

    async def shutdown(self) -> None:
        # DESIGN "Devices": disconnect() may hang on sllurp's own race; bound it, then go hard
        await asyncio.to_thread(self.client.disconnect, 2.0)
        self.client.hard_disconnect()
        await asyncio.to_thread(self.client.join, 2.0)


def test_sllurp_inventories_every_antenna_with_the_selected_fields() -> None:
    population = TagPopulation.sequential(3, antennas=(1, 2, 3, 4), rssi_dbm=-57.0)

    async def scenario() -> None:
        async with LlrpReaderSimulator(source=population, report_interval_s=0.02) as sim:
            harness = SllurpHarness(sim.port)
            try:
                await asyncio.to_thread(harness.client.connect)
                await harness.wait_for_tags(
                    lambda tags: (
                        {(t["EPC"], t["AntennaID"]) for t in tags}
                        >= {(e.hex().encode(), a) for e in population.epcs for a in (1, 2, 3, 4)}
                    )
                )
                await sim.wait_for(lambda s: s.stats.keepalive_acks >= 2, timeout_s=5)
                assert sim.keepalive_intervals_ms == (200,)
            finally:
                await harness.shutdown()
            await sim.wait_for(lambda s: s.connections == 0, timeout_s=5)
            (added,) = sim.rospecs_added
            (ai,) = added.ai_specs
            assert ai.antenna_ids == (1, 2, 3, 4)
            assert added.report_spec is not None
            sel = added.report_spec.selector
            assert (sel.antenna_id, sel.peak_rssi, sel.tag_seen_count) == (True, True, True)
            assert (sel.first_seen_timestamp, sel.last_seen_timestamp) == (True, True)
            stats = sim.stats
            for name in ("GET_READER_CAPABILITIES", "GET_READER_CONFIG", "SET_READER_CONFIG"):
                assert stats.messages_in[name] == 1
            assert stats.messages_in["ADD_ROSPEC"] == stats.messages_in["ENABLE_ROSPEC"] == 1
            assert stats.messages_in["DELETE_ROSPEC"] >= 1  # reset on connect, then disconnect
            assert stats.tag_reads_sent >= 12
            for tag in harness.snapshot():
                assert tag["PeakRSSI"] == -57
                assert tag["FirstSeenTimestampUTC"] <= tag["LastSeenTimestampUTC"]
                assert tag["TagSeenCount"] >= 1
                assert tag["ROSpecID"] == 1
                assert "ChannelIndex" not in tag  # not selected, not sent

    run(scenario)


def test_sllurp_sees_a_scenario_pallet_cross_outside_then_inside() -> None:
    scenario = load_scenario(SCENARIOS / "clean.yaml")
    pallet = scenario.pallets[0]
    speed = 25.0  # the pallet's 16 s in the portal's field take 0.64 s

    async def inventory() -> None:
        # scenario time 0 was (at_s - travel) / speed ago: the pallet is entering the field now
        t0 = time.time() - pallet.enters_s / speed
        source = scenario.read_source("door-1-reader", t0, speed=speed)
        async with LlrpReaderSimulator(source=source, report_interval_s=0.02) as sim:
            harness = SllurpHarness(sim.port, report_timeout_ms=50)
            try:
                await asyncio.to_thread(harness.client.connect)
                deadline = t0 + pallet.leaves_s / speed + 0.2

                async def until_gone() -> None:
                    while time.time() < deadline:
                        await asyncio.to_thread(harness.got.wait, 0.1)
                        harness.got.clear()

                await until_gone()
            finally:
                await harness.shutdown()
        firsts: dict[tuple[str, str], int] = {}
        for tag in harness.snapshot():
            epc = tag["EPC"].decode().upper()
            if epc not in pallet.load.epcs:
                continue  # the next pallet may be entering the field as we stop
            side = "outside" if tag["AntennaID"] in (1, 2) else "inside"
            key = (epc, side)
            firsts[key] = min(firsts.get(key, 1 << 62), tag["FirstSeenTimestampUTC"])
        epcs = {epc for epc, _ in firsts}
        assert epcs == set(pallet.load.epcs)
        # direction in: each tag is first heard from outside, then from inside
        both = [e for e in epcs if (e, "outside") in firsts and (e, "inside") in firsts]
        assert len(both) >= len(epcs) - 1
        assert all(firsts[(e, "outside")] < firsts[(e, "inside")] for e in both)

    run(inventory)


def test_sllurp_cannot_start_without_regulatory_capabilities() -> None:
    async def scenario() -> None:
        async with LlrpReaderSimulator(omit_capabilities={"regulatory"}) as sim:
            harness = SllurpHarness(sim.port)
            try:
                await asyncio.to_thread(harness.client.connect)
                # sllurp's thread dies on the missing capabilities (it reads them unguarded)
                await asyncio.to_thread(harness.client.join, 5.0)
                assert not harness.client.is_alive()
            finally:
                harness.client.hard_disconnect()
            assert sim.stats.messages_in["GET_READER_CAPABILITIES"] == 1
            assert "ADD_ROSPEC" not in sim.stats.messages_in

    run(scenario)


# -- connection and capabilities ---------------------------------------------------------------


def test_connect_event_carries_success_and_the_reader_clock() -> None:
    async def scenario() -> None:
        async with LlrpReaderSimulator(clock=lambda: 1_767_225_600.25) as sim:
            client = await RawClient.connect(sim.port)
            event = client.hello
            assert event is not None
            assert event.data.connection_attempt == c.ConnectionAttemptEvent(0)
            assert event.data.timestamp_us == 1_767_225_600_250_000
            assert not event.data.uptime
            await client.close()

    run(scenario)


def test_capabilities_describe_the_reader_and_can_omit_sections() -> None:
    async def scenario() -> None:
        async with LlrpReaderSimulator(antennas=(1, 2), omit_capabilities={"llrp"}) as sim:
            client = await RawClient.connect(sim.port)
            caps = await client.request(c.GetReaderCapabilities())
            assert isinstance(caps, c.GetReaderCapabilitiesResponse)
            assert caps.status.ok
            assert caps.general is not None
            assert caps.general.max_antennas == 2
            assert [p.antenna_id for p in caps.general.air_protocols] == [1, 2]
            assert caps.llrp is None
            assert caps.regulatory is not None
            assert caps.regulatory.uhf_band is not None
            assert len(caps.regulatory.uhf_band.power_levels) == 81
            only = await client.request(c.GetReaderCapabilities(requested=3))
            assert isinstance(only, c.GetReaderCapabilitiesResponse)
            assert only.general is None
            assert only.regulatory is not None
            await client.close()

    run(scenario)


def test_reader_config_reflects_what_the_client_set() -> None:
    async def scenario() -> None:
        async with LlrpReaderSimulator() as sim:
            client = await RawClient.connect(sim.port)
            status = await client.status(
                c.SetReaderConfig(
                    keepalive=c.KeepaliveSpec(True, 60_000),
                    report_spec=c.ROReportSpec(trigger=2, n=5, selector=full_selector()),
                    event_spec=c.ReaderEventNotificationSpec(
                        (c.EventNotificationState(c.EventType.ROSPEC, True),)
                    ),
                )
            )
            assert status.ok
            cfg = await client.request(c.GetReaderConfig())
            assert isinstance(cfg, c.GetReaderConfigResponse)
            assert cfg.keepalive == c.KeepaliveSpec(True, 60_000)
            assert cfg.report_spec == c.ROReportSpec(trigger=2, n=5, selector=full_selector())
            assert cfg.event_spec is not None
            assert c.EventNotificationState(c.EventType.ROSPEC, True) in cfg.event_spec.states
            assert [p.antenna_id for p in cfg.antenna_properties] == [1, 2, 3, 4]
            assert cfg.identification is not None
            assert len(cfg.identification.reader_id) == 8  # IDType 0: an EUI-64
            one = await client.request(c.GetReaderConfig(antenna_id=3, requested=2))
            assert isinstance(one, c.GetReaderConfigResponse)
            assert [p.antenna_id for p in one.antenna_properties] == [3]
            assert one.keepalive is None
            bad = await client.status(c.GetReaderConfig(antenna_id=9))
            assert bad.code == c.StatusCode.M_FIELD_ERROR
            bad = await client.status(
                c.SetReaderConfig(antenna_configurations=(c.AntennaConfiguration(antenna_id=7),))
            )
            assert bad.code == c.StatusCode.M_PARAMETER_ERROR
            assert "antenna 7" in bad.description
            await client.close()

    run(scenario)


# -- ROSpecs -----------------------------------------------------------------------------------


def test_rospec_lifecycle_and_state_errors() -> None:
    async def scenario() -> None:
        source = TagPopulation.sequential(2, antennas=(1,))
        async with LlrpReaderSimulator(source=source, report_interval_s=0.02) as sim:
            client = await RawClient.connect(sim.port)
            invalid = c.StatusCode.M_FIELD_ERROR
            assert (await client.status(c.StartROSpec(spec_id=1))).code == invalid  # unknown
            assert (await client.status(c.AddROSpec(rospec=rospec()))).ok
            dup = await client.status(c.AddROSpec(rospec=rospec()))
            assert dup.code == c.StatusCode.M_PARAMETER_ERROR
            assert "already exists" in dup.description
            start = await client.status(c.StartROSpec(spec_id=1))
            assert start.code == invalid
            assert "DISABLED" in start.description
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok
            stop = await client.status(c.StopROSpec(spec_id=1))
            assert stop.code == invalid
            assert "INACTIVE" in stop.description
            assert (await client.status(c.StartROSpec(spec_id=0))).code == invalid
            assert (await client.status(c.StartROSpec(spec_id=1))).ok
            await sim.wait_for(lambda s: s.inventorying == 1, timeout_s=2)
            again = await client.status(c.StartROSpec(spec_id=1))
            assert again.code == invalid
            assert "ACTIVE" in again.description
            specs = await client.request(c.GetROSpecs())
            assert isinstance(specs, c.GetROSpecsResponse)
            assert [s.current_state for s in specs.rospecs] == [c.ROSpecState.ACTIVE]
            assert (await client.status(c.StopROSpec(spec_id=1))).ok
            assert sim.inventorying == 0
            assert (await client.status(c.DisableROSpec(spec_id=0))).ok
            assert (await client.status(c.DeleteROSpec(spec_id=1))).ok
            gone = await client.status(c.DeleteROSpec(spec_id=1))
            assert gone.code == invalid
            assert gone.field_error is not None
            assert gone.field_error.error_code == c.StatusCode.A_INVALID
            assert (await client.status(c.DeleteROSpec(spec_id=0))).ok  # "all" of none is fine
            await client.close()

    run(scenario)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (rospec(rospec_id=0), "ROSpecID 0"),
        (rospec(antennas=(9,)), "antenna 9"),
        (rospec(start=c.ROSpecStartTriggerType.GPI), "GPI trigger without a GPI port"),
        (
            c.ROSpec(rospec_id=3, current_state=c.ROSpecState.ACTIVE, ai_specs=rospec().ai_specs),
            "must be Disabled",
        ),
    ],
)
def test_invalid_rospecs_are_refused(spec: c.ROSpec, needle: str) -> None:
    async def scenario() -> None:
        async with LlrpReaderSimulator() as sim:
            client = await RawClient.connect(sim.port)
            status = await client.status(c.AddROSpec(rospec=spec))
            assert status.code == c.StatusCode.M_PARAMETER_ERROR
            assert needle in status.description
            assert status.parameter_error is not None
            assert sim.rospecs_added == ()
            await client.close()

    run(scenario)


def test_end_of_rospec_report_merges_reads_and_the_rospec_goes_inactive() -> None:
    source = TagPopulation.sequential(5, antennas=(1, 2))
    report = c.ROReportSpec(trigger=2, n=0, selector=full_selector())

    async def scenario() -> None:
        async with LlrpReaderSimulator(source=source, report_interval_s=0.03) as sim:
            client = await RawClient.connect(sim.port)
            await client.status(
                c.SetReaderConfig(
                    event_spec=c.ReaderEventNotificationSpec(
                        (c.EventNotificationState(c.EventType.ROSPEC, True),)
                    )
                )
            )
            spec = rospec(start=c.ROSpecStartTriggerType.IMMEDIATE, stop_ms=250, report=report)
            assert (await client.status(c.AddROSpec(rospec=spec))).ok
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok  # Immediate: starts now
            started = await client.recv_type(c.ReaderEventNotification)
            assert started.data.rospec_event == c.ROSpecEvent(0, 1)
            (only,) = await client.reports(1)
            ended = await client.recv_type(c.ReaderEventNotification)
            assert ended.data.rospec_event == c.ROSpecEvent(1, 1)
            assert {(t.epc, t.antenna_id) for t in only.tags} == {
                (e, a) for e in source.epcs for a in (1, 2)
            }
            for tag in only.tags:
                assert tag.tag_seen_count is not None
                assert tag.tag_seen_count >= 2
                assert tag.first_seen_utc_us is not None
                assert tag.last_seen_utc_us is not None
                assert tag.first_seen_utc_us < tag.last_seen_utc_us
                assert tag.rospec_id is None  # not selected
            specs = await client.request(c.GetROSpecs())
            assert isinstance(specs, c.GetROSpecsResponse)
            assert [s.current_state for s in specs.rospecs] == [c.ROSpecState.INACTIVE]
            await client.close()

    run(scenario)


def test_reports_come_every_n_tags_then_at_the_end_of_the_aispec() -> None:
    source = TagPopulation.sequential(7, antennas=(1,))
    report = c.ROReportSpec(trigger=1, n=3, selector=c.TagReportContentSelector(antenna_id=True))
    ai_stop = c.AISpecStopTrigger(trigger=c.AISpecStopTriggerType.DURATION, duration_ms=10_000)

    async def scenario() -> None:
        # one inventory round per AISpec window is enough: the round sees all 7 tags at once
        async with LlrpReaderSimulator(source=source, report_interval_s=0.05) as sim:
            client = await RawClient.connect(sim.port)
            spec = rospec(start=c.ROSpecStartTriggerType.IMMEDIATE, ai_stop=ai_stop, report=report)
            assert (await client.status(c.AddROSpec(rospec=spec))).ok
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok
            sizes = [len(r.tags) for r in await client.reports(2)]
            assert sizes == [3, 3]
            assert (await client.status(c.StopROSpec(spec_id=1))).ok
            # the stop ends the ROSpec: what is pending (fewer than N) goes out now
            tail = await client.recv_type(c.ROAccessReport)
            assert 1 <= len(tail.tags) < 3
            await client.close()

    run(scenario)


def test_only_selected_fields_are_reported() -> None:
    source = TagPopulation.sequential(2, antennas=(3,), rssi_dbm=-61.4)
    selector = c.TagReportContentSelector(
        peak_rssi=True,
        channel_index=True,
        spec_index=True,
        inventory_parameter_spec_id=True,
        memory_selectors=(c.C1G2EPCMemorySelector(enable_pc_bits=True, enable_crc=True),),
    )
    report = c.ROReportSpec(trigger=1, n=1, selector=selector)

    async def scenario() -> None:
        async with LlrpReaderSimulator(source=source, report_interval_s=0.02) as sim:
            client = await RawClient.connect(sim.port)
            spec = rospec(start=c.ROSpecStartTriggerType.IMMEDIATE, report=report)
            assert (await client.status(c.AddROSpec(rospec=spec))).ok
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok
            (report_msg,) = await client.reports(1)
            (tag,) = report_msg.tags
            assert tag.peak_rssi == -61
            assert (tag.channel_index, tag.spec_index, tag.inventory_parameter_spec_id) == (1, 1, 1)
            assert tag.c1g2_pc == 0x3000
            assert tag.c1g2_crc == c.gen2_crc16(bytes.fromhex("3000") + tag.epc)
            assert tag.antenna_id is None
            assert tag.first_seen_utc_us is None
            assert tag.last_seen_utc_us is None
            assert tag.tag_seen_count is None
            assert tag.rospec_id is None
            await client.close()

    run(scenario)


@pytest.mark.parametrize(("antennas", "expected"), [((2, 4), {2, 4}), ((0,), {1, 2, 3, 4})])
def test_aispec_antennas_limit_what_is_read(antennas: tuple[int, ...], expected: set[int]) -> None:
    source = TagPopulation.sequential(1, antennas=(1, 2, 3, 4))
    report = c.ROReportSpec(trigger=1, n=0, selector=full_selector())
    ai_stop = c.AISpecStopTrigger(trigger=c.AISpecStopTriggerType.DURATION, duration_ms=60)

    async def scenario() -> None:
        async with LlrpReaderSimulator(source=source, report_interval_s=0.02) as sim:
            client = await RawClient.connect(sim.port)
            spec = rospec(
                start=c.ROSpecStartTriggerType.IMMEDIATE,
                antennas=antennas,
                ai_stop=ai_stop,
                report=report,
            )
            assert (await client.status(c.AddROSpec(rospec=spec))).ok
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok
            seen = {t.antenna_id for r in await client.reports(3) for t in r.tags}
            assert seen == expected
            await client.close()

    run(scenario)


def test_tag_observation_trigger_ends_the_aispec_after_n_unique_tags() -> None:
    clock_start = time.time()
    # three tags 1 s from now (the ROSpec is running by then), a fourth much later: the AISpec
    # must end on the third, not on its timeout
    reads = [
        SimRead(1, f"30{i:022X}", -50.0, int((clock_start + t) * 1e6), int((clock_start + t) * 1e6))
        for i, t in enumerate((1.0, 1.01, 1.02, 8.0))
    ]
    ai_stop = c.AISpecStopTrigger(
        trigger=c.AISpecStopTriggerType.TAG_OBSERVATION,
        tag_observation=c.TagObservationTrigger(number_of_tags=3, timeout_ms=10_000),
    )
    report = c.ROReportSpec(trigger=1, n=0, selector=full_selector())

    async def scenario() -> None:
        async with LlrpReaderSimulator(source=ScriptedReads(reads), report_interval_s=0.02) as sim:
            client = await RawClient.connect(sim.port)
            spec = rospec(start=c.ROSpecStartTriggerType.IMMEDIATE, ai_stop=ai_stop, report=report)
            assert (await client.status(c.AddROSpec(rospec=spec))).ok
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok
            first = await client.recv_type(c.ROAccessReport)
            assert len(first.tags) == 3
            assert time.time() - clock_start < 5.0  # far from the 10 s timeout and the 4th tag
            await client.close()

    run(scenario)


def test_periodic_start_trigger_runs_the_rospec_every_period() -> None:
    report = c.ROReportSpec(trigger=2, n=0, selector=full_selector())
    source = TagPopulation.sequential(1, antennas=(1,))

    async def scenario() -> None:
        async with LlrpReaderSimulator(source=source, report_interval_s=0.02) as sim:
            client = await RawClient.connect(sim.port)
            spec = rospec(
                start=c.ROSpecStartTriggerType.PERIODIC,
                periodic=c.PeriodicTriggerValue(0, 150),
                stop_ms=60,
                report=report,
            )
            assert (await client.status(c.AddROSpec(rospec=spec))).ok
            started = time.monotonic()
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok
            await client.reports(3)  # one end-of-ROSpec report per period
            assert time.monotonic() - started >= 0.3
            await client.close()

    run(scenario)


def test_get_report_returns_what_trigger_none_held() -> None:
    source = TagPopulation.sequential(4, antennas=(1,))
    report = c.ROReportSpec(trigger=0, n=0, selector=full_selector())

    async def scenario() -> None:
        async with LlrpReaderSimulator(source=source, report_interval_s=0.02) as sim:
            client = await RawClient.connect(sim.port)
            spec = rospec(start=c.ROSpecStartTriggerType.IMMEDIATE, report=report)
            assert (await client.status(c.AddROSpec(rospec=spec))).ok
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok
            await sim.wait_for(lambda s: s.inventorying == 1, timeout_s=2)
            await asyncio.sleep(0.1)  # let a few rounds accumulate (nothing is sent meanwhile)
            assert sim.stats.reports_sent == 0
            await client.send_bytes(c.GetReport(msg_id=77).encode())
            held = await client.recv_type(c.ROAccessReport)
            assert {t.epc for t in held.tags} == set(source.epcs)
            await client.close()

    run(scenario)


# -- keepalives, errors, vendor messages --------------------------------------------------------


def test_keepalives_follow_the_period_and_unanswered_ones_close_the_connection() -> None:
    async def scenario() -> None:
        async with LlrpReaderSimulator(keepalive_ack_misses=2) as sim:
            client = await RawClient.connect(sim.port)
            assert (await client.status(c.SetReaderConfig(keepalive=c.KeepaliveSpec(True, 80)))).ok
            started = time.monotonic()
            keepalives = [await client.recv_type(c.Keepalive) for _ in range(2)]
            assert time.monotonic() - started >= 0.15
            assert keepalives[0].msg_id != keepalives[1].msg_id
            closing = await client.recv_type(c.ReaderEventNotification)
            assert closing.data.connection_close is not None
            with pytest.raises(EOFError):
                await client.recv()
            await client.close()
            assert sim.stats.keepalives_sent == 2
            assert sim.stats.keepalive_acks == 0

    run(scenario)


def test_unsupported_and_malformed_messages_get_errors_and_the_connection_survives() -> None:
    async def scenario() -> None:
        async with LlrpReaderSimulator() as sim:
            client = await RawClient.connect(sim.port)
            unknown = await client.request(c.UnknownMessage(msg_type=99))
            assert isinstance(unknown, c.ErrorMessage)
            assert unknown.status.code == c.StatusCode.M_UNSUPPORTED_MESSAGE
            wrong_way = await client.request(c.Keepalive())
            assert isinstance(wrong_way, c.ErrorMessage)
            assert wrong_way.status.code == c.StatusCode.M_UNSUPPORTED_MESSAGE
            v2 = await client.request(c.GetReaderCapabilities(version=2))
            assert isinstance(v2, c.ErrorMessage)
            assert v2.status.code == c.StatusCode.M_UNSUPPORTED_VERSION
            access = await client.status(c.AddAccessSpec(extensions=(c.RawParameter(207, b""),)))
            assert access.code == c.StatusCode.M_UNSUPPORTED_PARAMETER
            broken = c.encode_frame(c.MessageType.ADD_ROSPEC, bytes.fromhex("00b10028"), msg_id=5)
            await client.send_bytes(broken)
            reply = await client.recv_type(c.AddROSpecResponse)
            assert reply.msg_id == 5
            assert reply.status.code == c.StatusCode.M_PARAMETER_ERROR
            assert "ROSpec length 40 overruns" in reply.status.description
            # still serving
            assert (await client.status(c.DeleteAccessSpec(spec_id=0))).ok
            assert sim.stats.protocol_errors == 1
            await client.close()

    run(scenario)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes.fromhex("043e 00000003 00000009"), c.StatusCode.M_FIELD_ERROR),
        (bytes.fromhex("1c3e 0000000a 00000009"), c.StatusCode.M_UNSUPPORTED_VERSION),
        (bytes.fromhex("043e 7fffffff 00000009"), c.StatusCode.M_FIELD_ERROR),
    ],
)
def test_an_unusable_header_gets_an_error_then_a_close(frame: bytes, code: int) -> None:
    async def scenario() -> None:
        async with LlrpReaderSimulator() as sim:
            client = await RawClient.connect(sim.port)
            await client.send_bytes(frame)
            error = await client.recv_type(c.ErrorMessage)
            assert error.status.code == code
            with pytest.raises(EOFError):
                await client.recv()
            await client.close()
            await sim.wait_for(lambda s: s.connections == 0, timeout_s=2)

    run(scenario)


def test_impinj_extensions_close_connection_and_forced_failures() -> None:
    forced = c.LLRPStatus(c.StatusCode.R_DEVICE_ERROR, "antenna hub fault")

    async def scenario() -> None:
        async with LlrpReaderSimulator(fail_requests={c.MessageType.ADD_ROSPEC: forced}) as sim:
            client = await RawClient.connect(sim.port)
            impinj = await client.request(c.impinj_enable_extensions())
            assert isinstance(impinj, c.CustomMessage)
            assert (impinj.vendor_id, impinj.subtype) == (c.VENDOR_IMPINJ, 22)
            assert impinj.status() == c.LLRPStatus()
            assert await client.status(c.AddROSpec(rospec=rospec())) == forced
            assert sim.rospecs_added == ()
            closed = await client.request(c.CloseConnection())
            assert isinstance(closed, c.CloseConnectionResponse)
            assert closed.status.ok
            with pytest.raises(EOFError):
                await client.recv()
            await client.close()
            await sim.wait_for(lambda s: s.connections == 0, timeout_s=2)

    run(scenario)


# -- several clients and faults ---------------------------------------------------------------


async def _start_inventory(client: RawClient) -> None:
    report = c.ROReportSpec(trigger=1, n=1, selector=full_selector())
    spec = rospec(start=c.ROSpecStartTriggerType.IMMEDIATE, report=report)
    assert (await client.status(c.AddROSpec(rospec=spec))).ok
    assert (await client.status(c.EnableROSpec(spec_id=1))).ok


def test_clients_each_get_their_own_reader_up_to_max_clients() -> None:
    source = TagPopulation.sequential(1, antennas=(1,))

    async def scenario() -> None:
        async with LlrpReaderSimulator(source=source, report_interval_s=0.02, max_clients=2) as sim:
            a = await RawClient.connect(sim.port)
            b = await RawClient.connect(sim.port)
            await sim.wait_for(lambda s: s.connections == 2, timeout_s=2)
            await _start_inventory(a)
            await _start_inventory(b)
            await a.reports(2)
            await b.reports(2)
            assert sim.inventorying == 2
            refused = await RawClient.connect(sim.port)
            event = refused.hello
            assert event is not None
            assert event.data.connection_attempt == c.ConnectionAttemptEvent(
                c.ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_CONNECTION_EXISTS
            )
            with pytest.raises(EOFError):
                await refused.recv_type(c.ROAccessReport)
            await refused.close()
            await a.close()
            await sim.wait_for(lambda s: s.connections == 1, timeout_s=2)
            await b.reports(1)  # b is unaffected
            await b.close()

    run(scenario)


async def _drain_until_closed(client: RawClient) -> None:
    while True:
        await client.recv()


def test_drop_connections_cuts_clients_mid_inventory() -> None:
    source = TagPopulation.sequential(3, antennas=(1,))

    async def scenario() -> None:
        async with LlrpReaderSimulator(source=source, report_interval_s=0.02) as sim:
            client = await RawClient.connect(sim.port)
            await _start_inventory(client)
            await client.reports(1)
            await sim.drop_connections()
            with pytest.raises((EOFError, ConnectionError)):
                await _drain_until_closed(client)
            await client.close()
            await sim.wait_for(lambda s: s.connections == 0, timeout_s=2)
            assert sim.stats.connections_total == 1

    run(scenario)


def test_inject_bytes_reaches_every_client_verbatim() -> None:
    garbage = bytes.fromhex("043d ffffffff 00000001 deadbeef")

    async def scenario() -> None:
        async with LlrpReaderSimulator(max_clients=None) as sim:
            clients = [await RawClient.connect(sim.port) for _ in range(2)]
            await sim.wait_for(lambda s: s.connections == 2, timeout_s=2)
            await sim.inject_bytes(garbage)
            for client in clients:
                assert await client.reader.readexactly(len(garbage)) == garbage
                await client.close()

    run(scenario)


def test_a_frozen_reader_answers_nothing_until_thawed() -> None:
    async def scenario() -> None:
        async with LlrpReaderSimulator() as sim:
            client = await RawClient.connect(sim.port)
            sim.set_frozen(True)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await client.request(c.GetReaderConfig())
            sim.set_frozen(False)
            assert (await client.status(c.GetReaderConfig())).ok
            await client.close()

    run(scenario)


def test_stop_announces_the_close_to_clients() -> None:
    async def scenario() -> None:
        sim = LlrpReaderSimulator()
        await sim.start()
        client = await RawClient.connect(sim.port)
        await sim.wait_for(lambda s: s.connections == 1, timeout_s=2)
        await sim.stop()
        closing = await client.recv_type(c.ReaderEventNotification)
        assert closing.data.connection_close == c.ConnectionCloseEvent()
        with pytest.raises(EOFError):
            await client.recv()
        await client.close()

    run(scenario)


def test_high_rate_mode_sends_reports_as_fast_as_the_client_reads() -> None:
    source = TagPopulation.sequential(100, antennas=(1,))
    ai_stop = c.AISpecStopTrigger(
        trigger=c.AISpecStopTriggerType.TAG_OBSERVATION,
        tag_observation=c.TagObservationTrigger(number_of_tags=100),
    )
    report = c.ROReportSpec(trigger=1, n=0, selector=full_selector())

    async def scenario() -> None:
        async with LlrpReaderSimulator(source=source, report_interval_s=0) as sim:
            client = await RawClient.connect(sim.port)
            spec = rospec(start=c.ROSpecStartTriggerType.IMMEDIATE, ai_stop=ai_stop, report=report)
            assert (await client.status(c.AddROSpec(rospec=spec))).ok
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok
            started = time.monotonic()
            reports = await client.reports(50)
            elapsed = time.monotonic() - started
            assert all(len(r.tags) == 100 for r in reports)
            assert elapsed < 5.0  # 50 x 100 tags; well above 1,000 tags/s even on a busy box
            await client.close()

    run(scenario)


# -- scenarios -------------------------------------------------------------------------------


def _scenario(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "seed": 3,
        "doors": [{"id": "door-1", "reader": "r1"}],
        "pallets": [
            {
                "id": "p1",
                "door": "door-1",
                "direction": "in",
                "at_s": 5.0,
                "sscc": {"company_prefix": "0614141", "serial": 42},
                "cases": [{"gtin": "00614141123452", "company_prefix": "0614141", "count": 3}],
            }
        ],
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"doors": []}, "doors: at least one door is required"),
        ({"colour": "red"}, "colour: unknown key"),
        ({"radio": {"miss_rate": 1.5}}, "radio.miss_rate: must be in [0, 1)"),
        ({"radio": {"path_loss": 2}}, "radio.path_loss: unknown key"),
        (
            {"pallets": [{"door": "door-9", "direction": "in", "at_s": 1, "epcs": ["30AB"]}]},
            "pallets[0].door: no door 'door-9'",
        ),
        (
            {"pallets": [{"door": "door-1", "direction": "up", "at_s": 1, "epcs": ["30AB"]}]},
            "pallets[0].direction: must be one of 'in', 'out', got 'up'",
        ),
        (
            {"pallets": [{"door": "door-1", "direction": "in", "epcs": ["30AB"]}]},
            "pallets[0].at_s: missing required key",
        ),
        (
            {
                "pallets": [
                    {
                        "door": "door-1",
                        "direction": "in",
                        "at_s": 1,
                        "cases": [{"gtin": "00614141123453", "company_prefix": "0614141"}],
                    }
                ]
            },
            "pallets[0].cases[0]: GTIN 00614141123453 has a wrong check digit",
        ),
        (
            {"strays": [{"door": "door-1", "position": [1, 2], "to_s": 9, "epcs": ["30AB"]}]},
            "strays[0].position: must be [x, y, z]",
        ),
        (
            {
                "pallets": [
                    {"id": "a", "door": "door-1", "direction": "in", "at_s": 1, "epcs": ["30AB"]},
                    {"id": "b", "door": "door-1", "direction": "in", "at_s": 9, "epcs": ["30AB"]},
                ]
            },
            "b: EPC 30AB is also carried by a",
        ),
    ],
)
def test_scenario_errors_name_their_key(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_scenario(_scenario(**change), source="test.yaml")
    assert any(needle in p for p in info.value.problems), info.value.problems
    assert all(p.startswith("test.yaml: ") for p in info.value.problems)


def test_every_problem_of_a_scenario_is_reported_at_once() -> None:
    pallet = {"door": "door-1", "direction": "in", "at_s": -1, "epcs": ["30AB"], "speed": 2}
    with pytest.raises(ConfigError) as info:
        parse_scenario(
            _scenario(radio={"miss_rate": 1.5, "dwell": 0.1}, pallets=[pallet]), source="t.yaml"
        )
    assert info.value.problems == [
        "t.yaml: radio.dwell: unknown key (allowed: "
        + ", ".join(f.name for f in dataclasses.fields(RadioModel))
        + "); did you mean 'dwell_s'?",
        "t.yaml: radio.miss_rate: must be in [0, 1), got 1.5",
        "t.yaml: pallets[0].speed: unknown key (allowed: id, door, sscc, cases, epcs, direction, "
        "at_s, speed_mps, lateral_m, travel_m); did you mean 'speed_mps'?",
        "t.yaml: pallets[0].at_s: must be a number >= 0, got -1",
    ]


def test_shelves_section_is_passed_through_untouched() -> None:
    shelves = [{"id": "shelf-a1", "unit": 1, "events": [{"t": 3.0, "pick": 2}]}]
    scenario = parse_scenario(_scenario(shelves=shelves))
    assert scenario.shelves == shelves


def test_shipped_scenarios_load() -> None:
    for path in sorted(SCENARIOS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "doors" not in data:
            continue  # a shelf-only scenario (simulators/shelf_scenario.py)
        scenario = load_scenario(path)
        assert scenario.pallets, path


def _merged(reads: Sequence[SimRead]) -> dict[tuple[str, int], tuple[int, int, int]]:
    out: dict[tuple[str, int], tuple[int, int, int]] = {}
    for r in reads:
        key = (r.epc_hex, r.antenna)
        first, last, count = out.get(key, (r.first_seen_us, r.last_seen_us, 0))
        out[key] = (min(first, r.first_seen_us), max(last, r.last_seen_us), count + r.seen_count)
    return out


def _windows(edges: Sequence[float]) -> Iterator[tuple[float, float]]:
    return itertools.pairwise(edges)


def test_same_seed_same_reads_however_time_is_sliced() -> None:
    scenario = load_scenario(SCENARIOS / "hard.yaml")
    a = scenario.read_source("door-1", 1000.0)
    b = scenario.read_source("door-1", 1000.0)
    whole = a.reads(1000.0, 1030.0)
    edges = [1000.0 + 0.137 * i for i in range(220)] + [1030.0]
    sliced = [r for t0, t1 in _windows(edges) for r in b.reads(t0, t1)]
    assert whole
    assert _merged(whole) == _merged(sliced)
    other_seed = scenario.with_seed(8).read_source("door-1", 1000.0).reads(1000.0, 1030.0)
    assert _merged(other_seed) != _merged(whole)


def test_speed_compresses_scenario_time() -> None:
    scenario = load_scenario(SCENARIOS / "clean.yaml")
    slow = scenario.read_source("door-1", 0.0, speed=1.0).reads(0.0, 20.0)
    fast = scenario.read_source("door-1", 0.0, speed=10.0).reads(0.0, 2.0)
    assert {(r.epc_hex, r.antenna, r.seen_count) for r in slow} == {
        (r.epc_hex, r.antenna, r.seen_count) for r in fast
    }
    assert max(r.last_seen_us for r in fast) <= 2_000_000


def test_truth_has_one_crossing_per_epc_and_parked_strays(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "hard.yaml")
    path = scenario.write_truth(tmp_path / "truth.jsonl")
    events = read_ground_truth(path)
    crossings = [e for e in events if e["event"] == "crossing"]
    parked = [e for e in events if e["event"] == "parked"]
    assert len(crossings) == sum(len(p.load.epcs) for p in scenario.pallets)
    assert len({(e["epc"], e["door"]) for e in crossings}) == len(crossings)
    assert len(parked) == sum(len(s.load.epcs) for s in scenario.strays)
    out = next(e for e in crossings if e["load"] == "out-1")
    assert (out["door"], out["direction"], out["from"], out["to"]) == (
        "door-2",
        "out",
        "staging",
        "shipping",
    )
    assert out["t"] == 15.5
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)


def test_neighbouring_door_traffic_is_heard_more_weakly_and_more_rarely() -> None:
    scenario = load_scenario(SCENARIOS / "hard.yaml")
    door2_epcs = {e for p in scenario.pallets if p.door == "door-2" for e in p.load.epcs}
    own = [
        r for r in scenario.read_source("door-2", 0.0).reads(0.0, 100.0) if r.epc_hex in door2_epcs
    ]
    cross = [
        r for r in scenario.read_source("door-1", 0.0).reads(0.0, 100.0) if r.epc_hex in door2_epcs
    ]
    own_count = sum(r.seen_count for r in own)
    cross_count = sum(r.seen_count for r in cross)
    assert 0 < cross_count < own_count / 3
    assert max(r.rssi_dbm for r in cross) < max(r.rssi_dbm for r in own)


def test_an_inbound_pallet_is_heard_outside_first_and_a_yard_stray_from_outside() -> None:
    scenario = load_scenario(SCENARIOS / "hard.yaml")
    reads = scenario.read_source("door-1", 0.0).reads(0.0, 100.0)
    pallet = next(p for p in scenario.pallets if p.load.id == "in-2")
    first: dict[str, list[int]] = {"outside": [], "inside": []}
    for r in reads:
        if r.epc_hex in pallet.load.epcs:
            first["outside" if r.antenna in (1, 2) else "inside"].append(r.first_seen_us)
    assert min(first["outside"]) < min(first["inside"])
    yard = next(s for s in scenario.strays if s.load.id == "stray-yard")
    per_side = collections.Counter(
        "outside" if r.antenna in (1, 2) else "inside"
        for r in reads
        if r.epc_hex in yard.load.epcs
        for _ in range(r.seen_count)
    )
    # parked in the yard: heard all the time from outside, at most by a back lobe from inside
    assert per_side["outside"] > 100 * max(1, per_side["inside"])


# -- EPC encoding -----------------------------------------------------------------------------


def test_sgtin96_tds_worked_example() -> None:
    epc = epc_encode.sgtin96("80614141123458", "0614141", 6789, filter_value=3)
    assert epc == "3074257BF7194E4000001A85"


def test_our_encodings_decode_to_the_same_keys_in_the_gateway() -> None:
    for prefix, gtin in (("0614141", "80614141123458"), ("061414112", "00614141123452")):
        for serial in (0, 1, 6789, (1 << 38) - 1):
            decoded = decode_epc(epc_encode.sgtin96(gtin, prefix, serial, filter_value=1))
            assert decoded.recognised
            assert (decoded.gtin, decoded.serial, decoded.company_prefix) == (
                gtin,
                str(serial),
                prefix,
            )
    for prefix in ("061414", "0614141", "061414123456"):
        serial = 10 ** (16 - len(prefix)) - 1
        decoded = decode_epc(epc_encode.sscc96(prefix, serial, extension=3))
        assert decoded.recognised
        assert decoded.gs1_key == epc_encode.sscc18(prefix, serial, extension=3)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: epc_encode.sgtin96("8061414112345", "0614141", 1), "14 digits"),
        (lambda: epc_encode.sgtin96("80614141123458", "0614142", 1), "not in GTIN"),
        (lambda: epc_encode.sgtin96("80614141123458", "0614141", 1 << 38), r"2\^38"),
        (lambda: epc_encode.sscc96("0614141", 10**9 * 10), "at most 9 digits"),
        (lambda: epc_encode.sscc96("06141", 1), "6 to 12 digits"),
    ],
)
def test_encoder_rejects_bad_arguments(call: Callable[[], str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        call()


# -- command line ------------------------------------------------------------------------------


def test_cli_builds_one_simulator_per_scenario_door() -> None:
    parser = cli.build_parser(["simulate", "llrp"])
    args = parser.parse_args(["simulate", "llrp", "--scenario", str(SCENARIOS / "hard.yaml")])
    sims = build_simulators(args, t0_wall=0.0)
    assert [(s.reader_id, s.requested_port, s.antennas) for s in sims] == [
        ("door-1-reader", 5084, (1, 2, 3, 4)),
        ("door-2-reader", 5085, (1, 2, 3, 4)),
    ]


def test_cli_serves_and_exits_after_duration(tmp_path: Path) -> None:
    scenario_file = tmp_path / "one.yaml"
    scenario_file.write_text(yaml.safe_dump(_scenario()), encoding="utf-8")
    truth = tmp_path / "truth.jsonl"
    port = free_port()
    argv = ["simulate", "llrp", "--scenario", str(scenario_file), "--port", str(port)]
    argv += ["--truth", str(truth), "--duration", "0.3", "--speed", "5", "--seed", "9"]
    assert cli.main(argv) == 0
    events = read_ground_truth(truth)
    assert [e["event"] for e in events] == ["crossing"] * 4
