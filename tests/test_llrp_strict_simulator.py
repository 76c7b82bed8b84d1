"""The reader simulator is as strict as a reader: one client at a time, select filters honoured
(or refused, never ignored), an EUI-64 reader id, a configuration state value that follows the
configuration, and the antenna-cut fault.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.domain.model import DeviceState
from gateway.llrp import codec as c
from simulators.llrp.server import GpioChange, LlrpReaderSimulator
from simulators.llrp.source import TagPopulation
from tests.test_llrp_adapter import ADAPTER_LOGGER, make_adapter, running, simulator
from tests.test_llrp_simulator import RawClient, full_selector, rospec, run

pytestmark = pytest.mark.integration

# Two families of EPCs: 3000... and 3100...
POPULATION = TagPopulation(
    [f"30{i:022X}" for i in range(3)] + [f"31{i:022X}" for i in range(2)], antennas=(1, 2)
)


def test_a_second_client_is_refused_while_one_is_connected() -> None:
    async def scenario() -> None:
        async with LlrpReaderSimulator() as sim:  # as shipped: max_clients=1
            first = await RawClient.connect(sim.port)
            assert first.hello is not None
            assert first.hello.data.connection_attempt == c.ConnectionAttemptEvent()
            second = await RawClient.connect(sim.port)
            assert second.hello is not None
            assert second.hello.data.connection_attempt == c.ConnectionAttemptEvent(
                c.ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_CONNECTION_EXISTS
            )
            with pytest.raises(EOFError):
                await second.recv()
            await second.close()
            await first.close()
            await sim.wait_for(lambda s: s.connections == 0, timeout_s=2)
            third = await RawClient.connect(sim.port)
            assert third.hello is not None
            assert third.hello.data.connection_attempt == c.ConnectionAttemptEvent()
            await third.close()

    run(scenario)


def test_a_second_gateway_is_told_in_plain_words_and_the_first_keeps_reading(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)

    async def scenario() -> None:
        async with simulator() as sim:
            first, rec1 = make_adapter(sim.port, "door-1-reader")
            second, rec2 = make_adapter(sim.port, "door-1-reader-again")
            async with running(first):
                await rec1.until(lambda: first.state is DeviceState.ONLINE)
                async with running(second):
                    await rec2.until(lambda: second.stats.reconnects >= 1)
                    reads = len(rec1.reads())
                    await rec1.until(lambda: len(rec1.reads()) > reads)
                assert rec2.statuses[0].detail == (
                    "reader refused the connection: another client is already connected to "
                    "the reader"
                )
                assert first.state is DeviceState.ONLINE

    asyncio.run(scenario())


def _filtered(mask_hex: str, bits: int, action: int | None) -> c.C1G2Filter:
    extensions: tuple[c.Parameter, ...] = ()
    if action is not None:  # C1G2TagInventoryStateUnawareFilterAction
        extensions = (c.RawParameter(334, bytes([action])),)
    mask = c.C1G2TagInventoryMask(1, 0x20, bits, bytes.fromhex(mask_hex))
    return c.C1G2Filter(mask, extensions=extensions)


def _rospec_with(filters: tuple[c.C1G2Filter, ...], bank: int = 1) -> c.ROSpec:
    spec = rospec(
        start=c.ROSpecStartTriggerType.IMMEDIATE,
        report=c.ROReportSpec(trigger=1, n=1, selector=full_selector()),
    )
    if bank != 1:
        filters = tuple(c.C1G2Filter(c.C1G2TagInventoryMask(bank, 0, 8, b"\xe2")) for _ in filters)
    command = c.C1G2InventoryCommand(filters=filters)
    ips = c.InventoryParameterSpec(
        spec_id=1,
        antenna_configurations=(
            c.AntennaConfiguration(antenna_id=0, inventory_commands=(command,)),
        ),
    )
    ai = spec.ai_specs[0]
    ai = c.AISpec(antenna_ids=ai.antenna_ids, stop=ai.stop, inventory_parameter_specs=(ips,))
    return c.ROSpec(
        rospec_id=spec.rospec_id,
        boundary=spec.boundary,
        ai_specs=(ai,),
        report_spec=spec.report_spec,
    )


@pytest.mark.parametrize(
    ("action", "expected_prefix"),
    [(None, "30"), (0, "30"), (4, "31")],  # default Select/Unselect, and its inverse
)
def test_select_filters_are_honoured(action: int | None, expected_prefix: str) -> None:
    async def scenario() -> set[str]:
        async with LlrpReaderSimulator(source=POPULATION, report_interval_s=0.02) as sim:
            client = await RawClient.connect(sim.port)
            spec = _rospec_with((_filtered("30", 8, action),))
            assert (await client.status(c.AddROSpec(rospec=spec))).ok
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok
            seen = {t.epc.hex().upper() for r in await client.reports(20) for t in r.tags}
            await client.close()
            return seen

    seen = run(scenario)
    assert seen
    assert all(epc.startswith(expected_prefix) for epc in seen)


def test_a_filter_on_a_bank_the_simulator_does_not_model_is_refused() -> None:
    async def scenario() -> c.LLRPStatus:
        async with LlrpReaderSimulator(source=POPULATION) as sim:
            client = await RawClient.connect(sim.port)
            spec = _rospec_with((_filtered("E2", 8, None),), bank=2)
            status = await client.status(c.AddROSpec(rospec=spec))
            too_many = _rospec_with(tuple(_filtered("30", 8, None) for _ in range(3)))
            overflow = await client.status(c.AddROSpec(rospec=too_many))
            assert overflow.code == c.StatusCode.M_PARAMETER_ERROR
            await client.close()
            return status

    status = run(scenario)
    assert not status.ok
    assert "memory bank 2" in status.description


def test_llrpkit_epc_filter_is_honoured() -> None:
    from llrpkit import Reader

    async def scenario() -> tuple[set[str], set[str]]:
        async with (
            LlrpReaderSimulator(source=POPULATION, report_interval_s=0.02) as sim,
            Reader("127.0.0.1", sim.port) as reader,
        ):
            include = {
                t.epc.hex().upper()
                async for t in reader.inventory(epc_filter="31", max_tags=20, duration=5)
            }
            exclude = {
                t.epc.hex().upper()
                async for t in reader.inventory(
                    epc_filter="31", filter_action="exclude", max_tags=20, duration=5
                )
            }
        return include, exclude

    include, exclude = run(scenario)
    assert include == {f"31{i:022X}" for i in range(2)}
    assert exclude == {f"30{i:022X}" for i in range(3)}


def test_the_configuration_state_value_follows_the_configuration() -> None:
    async def scenario() -> list[int]:
        async with LlrpReaderSimulator() as sim:
            client = await RawClient.connect(sim.port)

            async def state() -> int:
                reply = await client.request(
                    c.GetReaderConfig(requested=c.ConfigRequest.LLRP_CONFIGURATION_STATE_VALUE)
                )
                assert isinstance(reply, c.GetReaderConfigResponse)
                assert reply.configuration_state is not None
                return reply.configuration_state.value

            values = [await state(), await state()]
            keepalive = c.SetReaderConfig(keepalive=c.KeepaliveSpec(True, 5000))
            assert (await client.status(keepalive)).ok
            values.append(await state())
            assert (await client.status(c.AddROSpec(rospec=rospec()))).ok
            values.append(await state())
            assert (await client.status(c.DeleteROSpec(spec_id=0))).ok
            values.append(await state())
            await client.close()
            return values

    before, again, configured, with_rospec, deleted = run(scenario)
    assert before == again
    assert len({before, configured, with_rospec}) == 3
    assert deleted == configured


def test_the_reader_id_is_an_eui64() -> None:
    async def scenario() -> bytes:
        async with LlrpReaderSimulator(reader_id="door-7") as sim:
            client = await RawClient.connect(sim.port)
            reply = await client.request(
                c.GetReaderConfig(requested=c.ConfigRequest.IDENTIFICATION)
            )
            await client.close()
            assert isinstance(reply, c.GetReaderConfigResponse)
            assert reply.identification is not None
            assert reply.identification.id_type == 0
            return reply.identification.reader_id

    reader_id = run(scenario)
    assert len(reader_id) == 8
    assert reader_id[0] & 0x03 == 0x02  # locally administered, unicast


def test_gpo_writes_are_recorded_with_their_time() -> None:
    async def scenario() -> tuple[float, float, list[GpioChange]]:
        async with LlrpReaderSimulator() as sim:
            client = await RawClient.connect(sim.port)
            before = sim.clock()
            write = c.SetReaderConfig(gpo_write_data=(c.GPOWriteData(2, True),))
            assert (await client.status(write)).ok
            write = c.SetReaderConfig(gpo_write_data=(c.GPOWriteData(2, False),))
            assert (await client.status(write)).ok
            after = sim.clock()
            await client.close()
            return before, after, sim.gpo_writes

    before, after, writes = run(scenario)
    assert [(w.port, w.high) for w in writes] == [(2, True), (2, False)]
    assert all(before <= w.at_s <= after for w in writes)


def test_a_gpi_edge_is_an_event_and_starts_and_stops_a_gpi_triggered_rospec() -> None:
    async def scenario() -> tuple[list[c.LlrpMessage], list[GpioChange]]:
        async with LlrpReaderSimulator(source=POPULATION, report_interval_s=0.02) as sim:
            client = await RawClient.connect(sim.port)
            events = c.ReaderEventNotificationSpec(
                (
                    c.EventNotificationState(c.EventType.GPI, True),
                    c.EventNotificationState(c.EventType.ROSPEC, True),
                )
            )
            assert (await client.status(c.SetReaderConfig(event_spec=events))).ok
            spec = rospec(report=c.ROReportSpec(trigger=1, n=1, selector=full_selector()))
            spec = c.ROSpec(
                rospec_id=spec.rospec_id,
                boundary=c.ROBoundarySpec(
                    c.ROSpecStartTrigger(
                        c.ROSpecStartTriggerType.GPI, gpi=c.GPITriggerValue(1, True, 0)
                    ),
                    c.ROSpecStopTrigger(
                        c.ROSpecStopTriggerType.GPI_WITH_TIMEOUT,
                        gpi=c.GPITriggerValue(1, False, 0),
                    ),
                ),
                ai_specs=spec.ai_specs,
                report_spec=spec.report_spec,
            )
            assert (await client.status(c.AddROSpec(rospec=spec))).ok
            assert (await client.status(c.EnableROSpec(spec_id=1))).ok
            assert sim.inventorying == 0  # armed, waiting for the edge
            sim.set_gpi(1, True)
            seen: list[c.LlrpMessage] = []
            while sum(isinstance(m, c.ROAccessReport) for m in seen) < 3:
                seen.append(await client.recv())
            assert sim.inventorying == 1
            sim.set_gpi(1, False)
            await sim.wait_for(lambda s: s.inventorying == 0, timeout_s=2)
            while not any(
                isinstance(m, c.ReaderEventNotification)
                and m.data.rospec_event is not None
                and m.data.rospec_event.event == 1
                for m in seen
            ):
                seen.append(await client.recv())
            await client.close()
            return seen, sim.gpi_changes

    messages, changes = run(scenario)
    gpi = [
        m.data.gpi_event
        for m in messages
        if isinstance(m, c.ReaderEventNotification) and m.data.gpi_event is not None
    ]
    assert gpi == [c.GPIEvent(1, True), c.GPIEvent(1, False)]
    assert [(g.port, g.high) for g in changes] == [(1, True), (1, False)]


def test_llrpkit_gpi_gated_inventory_starts_on_the_edge() -> None:
    from llrpkit import Reader

    async def scenario() -> int:
        async with (
            LlrpReaderSimulator(source=POPULATION, report_interval_s=0.02) as sim,
            Reader("127.0.0.1", sim.port) as reader,
        ):

            async def inventory() -> int:
                return len([t async for t in reader.inventory(gpi_trigger=1, max_tags=5)])

            task = asyncio.create_task(inventory())
            await sim.wait_for(
                lambda s: s.stats.messages_in.get("ENABLE_ROSPEC", 0) > 0, timeout_s=5
            )
            assert sim.inventorying == 0
            sim.set_gpi(1, True)
            async with asyncio.timeout(10):
                return await task

    assert run(scenario) == 5
