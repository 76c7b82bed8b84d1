"""The reader configuration one client sees: GET_READER_CONFIG and SET_READER_CONFIG.

Each session has its own :class:`ReaderSettings` (configuration lives and dies with the
connection). SET_READER_CONFIG is checked whole before anything changes, so a refused request
changes nothing; ResetToFactoryDefault goes back to :func:`default_report_spec`, every event off,
no keepalives. GPO writes a client applies are recorded by the simulator (``gpo_writes``).
The LLRPConfigurationStateValue is a digest of the configuration and the ROSpecs, so it changes
whenever either does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.llrp import codec as c
from simulators.llrp.capabilities import GPIO_PORTS
from simulators.llrp.refusals import field_error, param_error

if TYPE_CHECKING:
    from simulators.llrp.rospecs import RoSpecRun
    from simulators.llrp.server import LlrpReaderSimulator


def default_report_spec() -> c.ROReportSpec:
    """The reader's ROReportSpec until a client sets one: report at the end of each AISpec with
    antenna, peak RSSI, first/last seen and seen count (what a dock portal needs)."""
    return c.ROReportSpec(
        trigger=c.ROReportTriggerType.UPON_N_TAGS_OR_END_OF_AISPEC,
        n=0,
        selector=c.TagReportContentSelector(
            antenna_id=True,
            peak_rssi=True,
            first_seen_timestamp=True,
            last_seen_timestamp=True,
            tag_seen_count=True,
        ),
    )


# Its repr (class name and fields, in this order) feeds LLRPConfigurationStateValue: renaming or
# reordering changes a value on the wire.
@dataclass(slots=True)
class _ReaderConfig:
    """A session's reader configuration (what SET_READER_CONFIG changes)."""

    report_spec: c.ROReportSpec
    events: dict[int, bool]
    keepalive: c.KeepaliveSpec = field(default_factory=c.KeepaliveSpec)
    antenna_configs: dict[int, c.AntennaConfiguration] = field(default_factory=dict)
    events_and_reports: c.EventsAndReports = field(default_factory=c.EventsAndReports)
    gpi: dict[int, bool] = field(default_factory=dict)
    gpo: dict[int, bool] = field(default_factory=dict)
    access_report_trigger: int = 0


def _default_config() -> _ReaderConfig:
    return _ReaderConfig(
        report_spec=default_report_spec(), events=dict.fromkeys(c.EventType, False)
    )


class ReaderSettings:
    """One session's reader configuration: answers GET_READER_CONFIG, checks and applies
    SET_READER_CONFIG. ``config`` is replaced on a factory reset, so collaborators keep this
    object, not the config."""

    def __init__(self, sim: LlrpReaderSimulator) -> None:
        self._sim = sim
        self.config = _default_config()

    def check_antenna(self, antenna_id: int, param_type: int) -> None:
        """Refuse an antenna this reader does not have (0 = all antennas is fine)."""
        if antenna_id != 0 and antenna_id not in self._sim.antennas:
            raise param_error(
                param_type, f"antenna {antenna_id} does not exist (antennas {self._sim.antennas})"
            )

    def gpi_enabled(self, port: int) -> bool:
        """A disabled input reports and triggers nothing (inputs start enabled)."""
        return self.config.gpi.get(port, True)

    def response(
        self, msg: c.GetReaderConfig, rospecs: Mapping[int, RoSpecRun]
    ) -> c.GetReaderConfigResponse:
        """The answer to GET_READER_CONFIG; ``rospecs`` feed the configuration state value."""
        req = c.ConfigRequest
        sim = self._sim
        if msg.antenna_id != 0 and msg.antenna_id not in sim.antennas:
            raise field_error(
                c.StatusCode.A_OUT_OF_RANGE, f"antenna {msg.antenna_id} does not exist"
            )
        if msg.requested > max(req):
            raise field_error(
                c.StatusCode.A_OUT_OF_RANGE, f"RequestedData {msg.requested}", field_num=1
            )
        antennas = sim.antennas if msg.antenna_id == 0 else (msg.antenna_id,)
        cfg = self.config

        def want(code: int) -> bool:
            return msg.requested in (req.ALL, code)

        def gpio_ports(port: int) -> range:
            return range(1, GPIO_PORTS + 1) if port == 0 else range(port, port + 1)

        return c.GetReaderConfigResponse(
            msg_id=msg.msg_id,
            identification=c.Identification(0, _eui64(sim.reader_id))
            if want(req.IDENTIFICATION)
            else None,
            antenna_properties=tuple(c.AntennaProperties(a, True, 600) for a in antennas)
            if want(req.ANTENNA_PROPERTIES)
            else (),
            antenna_configurations=tuple(self.antenna_config(a) for a in antennas)
            if want(req.ANTENNA_CONFIGURATION)
            else (),
            event_spec=c.ReaderEventNotificationSpec(
                tuple(c.EventNotificationState(t, on) for t, on in cfg.events.items() if t < 9)
            )
            if want(req.READER_EVENT_NOTIFICATION_SPEC)
            else None,
            report_spec=cfg.report_spec if want(req.RO_REPORT_SPEC) else None,
            access_report_spec=c.AccessReportSpec(cfg.access_report_trigger)
            if want(req.ACCESS_REPORT_SPEC)
            else None,
            configuration_state=c.LLRPConfigurationStateValue(self._configuration_state(rospecs))
            if want(req.LLRP_CONFIGURATION_STATE_VALUE)
            else None,
            keepalive=cfg.keepalive if want(req.KEEPALIVE_SPEC) else None,
            gpi_port_states=tuple(
                c.GPIPortCurrentState(p, cfg.gpi.get(p, True), 0)
                for p in gpio_ports(msg.gpi_port)
                if p <= GPIO_PORTS
            )
            if want(req.GPI_PORT_CURRENT_STATE)
            else (),
            gpo_write_data=tuple(
                c.GPOWriteData(p, cfg.gpo.get(p, False))
                for p in gpio_ports(msg.gpo_port)
                if p <= GPIO_PORTS
            )
            if want(req.GPO_WRITE_DATA)
            else (),
            events_and_reports=cfg.events_and_reports if want(req.EVENTS_AND_REPORTS) else None,
        )

    def _configuration_state(self, rospecs: Mapping[int, RoSpecRun]) -> int:
        """LLRPConfigurationStateValue: a value that changes
        whenever the reader's configuration does (SET_READER_CONFIG, ROSpecs added or
        deleted), so a client can tell whether to configure again: a digest of them."""
        state = (self.config, [(i, run.rospec) for i, run in sorted(rospecs.items())])
        return int.from_bytes(hashlib.blake2b(repr(state).encode(), digest_size=4).digest())

    def antenna_config(self, antenna: int) -> c.AntennaConfiguration:
        """The antenna's configuration as a client set it, or the reader's default."""
        configured = self.config.antenna_configs.get(antenna)
        if configured is not None:
            return configured
        return c.AntennaConfiguration(
            antenna_id=antenna,
            rf_receiver=c.RFReceiver(1),
            rf_transmitter=c.RFTransmitter(1, 1, 81),
            inventory_commands=(
                c.C1G2InventoryCommand(
                    rf_control=c.C1G2RFControl(2, 0),
                    singulation_control=c.C1G2SingulationControl(2, 32, 0),
                ),
            ),
        )

    def check(self, msg: c.SetReaderConfig) -> None:
        """Refuse a SET_READER_CONFIG this reader cannot apply whole (before any change)."""
        for props in msg.antenna_properties:
            self.check_antenna(props.antenna_id, c.AntennaProperties.TYPE)
        for ac in msg.antenna_configurations:
            self.check_antenna(ac.antenna_id, c.AntennaConfiguration.TYPE)
        for gpi in msg.gpi_port_states:
            if not 1 <= gpi.port <= GPIO_PORTS:
                raise param_error(c.GPIPortCurrentState.TYPE, f"no GPI port {gpi.port}")
        for gpo in msg.gpo_write_data:
            if not 1 <= gpo.port <= GPIO_PORTS:
                raise param_error(c.GPOWriteData.TYPE, f"no GPO port {gpo.port}")
        if msg.keepalive is not None and msg.keepalive.periodic and msg.keepalive.interval_ms == 0:
            raise param_error(c.KeepaliveSpec.TYPE, "periodic keepalive with interval 0")

    def reset(self) -> None:
        """Back to the factory configuration (ResetToFactoryDefault)."""
        self.config = _default_config()

    def apply(self, msg: c.SetReaderConfig) -> None:
        """Apply a checked SET_READER_CONFIG (not its factory reset: see :meth:`reset`)."""
        cfg = self.config
        if msg.event_spec is not None:
            for state in msg.event_spec.states:
                cfg.events[state.event_type] = state.enabled
        for ac in msg.antenna_configurations:
            targets = self._sim.antennas if ac.antenna_id == 0 else (ac.antenna_id,)
            for a in targets:
                cfg.antenna_configs[a] = c.AntennaConfiguration(
                    antenna_id=a,
                    rf_receiver=ac.rf_receiver,
                    rf_transmitter=ac.rf_transmitter,
                    inventory_commands=ac.inventory_commands,
                )
        if msg.report_spec is not None:
            cfg.report_spec = msg.report_spec
        if msg.access_report_spec is not None:
            cfg.access_report_trigger = msg.access_report_spec.trigger
        for gpi in msg.gpi_port_states:
            cfg.gpi[gpi.port] = gpi.enabled
        for gpo in msg.gpo_write_data:
            cfg.gpo[gpo.port] = gpo.data
            self._sim._record_gpo(gpo.port, gpo.data)
        if msg.events_and_reports is not None:
            cfg.events_and_reports = msg.events_and_reports
        if msg.keepalive is not None:
            cfg.keepalive = msg.keepalive


def _eui64(reader_id: str) -> bytes:
    """A stable, locally administered unicast EUI-64 derived from the reader's name: the
    Identification of IDType 0 ("MAC address") is an EUI-64 (LLRP 1.0.1 section 12.2.2)."""
    raw = bytearray(hashlib.blake2b(reader_id.encode(), digest_size=8).digest())
    raw[0] = (raw[0] | 0x02) & 0xFE
    return bytes(raw)
