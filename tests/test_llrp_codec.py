"""The LLRP codec: golden bytes both ways, hand-checked layouts, sllurp cross-checks, bad input.

Golden files live in ``tests/fixtures/llrp/<name>.hex``: hex digits, whitespace and ``#`` comments
(one line per top-level parameter). They were produced by this codec, then the layouts below were
checked by hand against the LLRP 1.0.1 specification; rewrite them after a deliberate codec change
with ``python -m tests.test_llrp_codec --write-fixtures`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sllurp.llrp import LLRPMessage, LLRPROSpec

from dockwatch_core.errors import ProtocolError
from gateway.llrp import codec as c

FIXTURES = Path(__file__).parent / "fixtures" / "llrp"
EPC96 = bytes.fromhex("3074257BF7194E4000001A85")
EPC128 = bytes.fromhex("3074257BF7194E4000001A85DEADBEEF")
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
OK = c.LLRPStatus()


def _selector() -> c.TagReportContentSelector:
    return c.TagReportContentSelector(
        rospec_id=True,
        antenna_id=True,
        peak_rssi=True,
        first_seen_timestamp=True,
        last_seen_timestamp=True,
        tag_seen_count=True,
        memory_selectors=(c.C1G2EPCMemorySelector(enable_pc_bits=True),),
    )


def _rospec() -> c.ROSpec:
    return c.ROSpec(
        rospec_id=1,
        boundary=c.ROBoundarySpec(
            c.ROSpecStartTrigger(c.ROSpecStartTriggerType.IMMEDIATE),
            c.ROSpecStopTrigger(c.ROSpecStopTriggerType.NULL, 0),
        ),
        ai_specs=(
            c.AISpec(
                antenna_ids=(1, 2, 3, 4),
                stop=c.AISpecStopTrigger(
                    trigger=c.AISpecStopTriggerType.TAG_OBSERVATION,
                    tag_observation=c.TagObservationTrigger(number_of_tags=100, timeout_ms=200),
                ),
                inventory_parameter_specs=(
                    c.InventoryParameterSpec(
                        spec_id=1,
                        antenna_configurations=tuple(
                            c.AntennaConfiguration(
                                antenna_id=a,
                                rf_transmitter=c.RFTransmitter(1, 1, 81),
                                inventory_commands=(
                                    c.C1G2InventoryCommand(
                                        rf_control=c.C1G2RFControl(2, 0),
                                        singulation_control=c.C1G2SingulationControl(2, 4, 0),
                                    ),
                                ),
                            )
                            for a in (1, 2)
                        ),
                    ),
                ),
            ),
        ),
        report_spec=c.ROReportSpec(trigger=1, n=0, selector=_selector()),
    )


def _capabilities() -> c.GetReaderCapabilitiesResponse:
    return c.GetReaderCapabilitiesResponse(
        msg_id=1,
        general=c.GeneralDeviceCapabilities(
            max_antennas=4,
            manufacturer=25882,
            model=1,
            firmware_version="dockwatch-sim 1.0",
            receive_sensitivities=(c.ReceiveSensitivityTableEntry(1, 0),),
            gpio=c.GPIOCapabilities(4, 4),
            air_protocols=tuple(c.PerAntennaAirProtocol(a, (1,)) for a in (1, 2, 3, 4)),
        ),
        llrp=c.LLRPCapabilities(max_rospecs=1, max_specs_per_rospec=8),
        regulatory=c.RegulatoryCapabilities(
            country_code=840,
            communications_standard=1,
            uhf_band=c.UHFBandCapabilities(
                power_levels=(
                    c.TransmitPowerLevelTableEntry(1, 1000),
                    c.TransmitPowerLevelTableEntry(2, 3000),
                ),
                frequency_information=c.FrequencyInformation(
                    True, (c.FrequencyHopTable(1, (902_750, 903_250, 903_750)),)
                ),
                mode_tables=(
                    c.C1G2UHFRFModeTable(
                        (
                            c.C1G2UHFRFModeTableEntry(mode_identifier=0, m=0, bdr=640_000),
                            c.C1G2UHFRFModeTableEntry(mode_identifier=2, m=2, bdr=274_000),
                        )
                    ),
                ),
            ),
        ),
        air_protocol=c.C1G2LLRPCapabilities(max_select_filters_per_query=2),
    )


def _reader_config_fields() -> dict[str, Any]:
    return {
        "event_spec": c.ReaderEventNotificationSpec(
            (c.EventNotificationState(c.EventType.ROSPEC, True),)
        ),
        "antenna_properties": (c.AntennaProperties(1, True, 600),),
        "antenna_configurations": (
            c.AntennaConfiguration(
                antenna_id=1, rf_receiver=c.RFReceiver(1), rf_transmitter=c.RFTransmitter(1, 1, 81)
            ),
        ),
        "report_spec": c.ROReportSpec(trigger=1, n=10, selector=_selector()),
        "keepalive": c.KeepaliveSpec(True, 5000),
        "gpi_port_states": (c.GPIPortCurrentState(1, True, 0),),
        "gpo_write_data": (c.GPOWriteData(1, False),),
        "events_and_reports": c.EventsAndReports(False),
    }


def _cases() -> dict[str, c.LlrpMessage]:
    """One message of every type this codec knows, as the golden files hold them."""
    error = c.LLRPStatus(
        c.StatusCode.M_FIELD_ERROR,
        "no ROSpec 7",
        field_error=c.FieldError(0, c.StatusCode.A_INVALID),
    )
    cfg = _reader_config_fields()
    return {
        "reader_event_notification": c.ReaderEventNotification(
            msg_id=1,
            data=c.ReaderEventNotificationData(
                timestamp_us=T0, connection_attempt=c.ConnectionAttemptEvent(0)
            ),
        ),
        "get_reader_capabilities": c.GetReaderCapabilities(msg_id=1, requested=0),
        "get_reader_capabilities_response": _capabilities(),
        "get_reader_config": c.GetReaderConfig(msg_id=2, antenna_id=0, requested=0),
        "get_reader_config_response": dataclasses.replace(
            c.GetReaderConfigResponse(
                msg_id=2,
                identification=c.Identification(0, bytes.fromhex("0216250a0b0c")),
                configuration_state=c.LLRPConfigurationStateValue(0),
                access_report_spec=c.AccessReportSpec(0),
            ),
            **cfg,
        ),
        "set_reader_config": dataclasses.replace(c.SetReaderConfig(msg_id=3), **cfg),
        "set_reader_config_response": c.SetReaderConfigResponse(msg_id=3, status=OK),
        "enable_events_and_reports": c.EnableEventsAndReports(msg_id=4),
        "add_rospec": c.AddROSpec(msg_id=5, rospec=_rospec()),
        "add_rospec_response": c.AddROSpecResponse(msg_id=5, status=OK),
        "delete_rospec": c.DeleteROSpec(msg_id=6, spec_id=0),
        "delete_rospec_response": c.DeleteROSpecResponse(msg_id=6, status=error),
        "enable_rospec": c.EnableROSpec(msg_id=7, spec_id=1),
        "enable_rospec_response": c.EnableROSpecResponse(msg_id=7, status=OK),
        "disable_rospec": c.DisableROSpec(msg_id=8, spec_id=1),
        "disable_rospec_response": c.DisableROSpecResponse(msg_id=8, status=OK),
        "start_rospec": c.StartROSpec(msg_id=9, spec_id=1),
        "start_rospec_response": c.StartROSpecResponse(msg_id=9, status=OK),
        "stop_rospec": c.StopROSpec(msg_id=10, spec_id=1),
        "stop_rospec_response": c.StopROSpecResponse(msg_id=10, status=OK),
        "get_rospecs": c.GetROSpecs(msg_id=11),
        "get_rospecs_response": c.GetROSpecsResponse(msg_id=11, status=OK, rospecs=(_rospec(),)),
        "add_accessspec": c.AddAccessSpec(msg_id=12, extensions=(c.RawParameter(207, b"\0" * 12),)),
        "add_accessspec_response": c.AddAccessSpecResponse(
            msg_id=12,
            status=c.LLRPStatus(
                c.StatusCode.M_UNSUPPORTED_PARAMETER,
                "no access operations",
                parameter_error=c.ParameterError(207, c.StatusCode.P_UNSUPPORTED_PARAMETER),
            ),
        ),
        "delete_accessspec": c.DeleteAccessSpec(msg_id=13, spec_id=0),
        "delete_accessspec_response": c.DeleteAccessSpecResponse(msg_id=13, status=OK),
        "enable_accessspec": c.EnableAccessSpec(msg_id=14, spec_id=0),
        "enable_accessspec_response": c.EnableAccessSpecResponse(msg_id=14, status=OK),
        "disable_accessspec": c.DisableAccessSpec(msg_id=15, spec_id=0),
        "disable_accessspec_response": c.DisableAccessSpecResponse(msg_id=15, status=OK),
        "get_accessspecs": c.GetAccessSpecs(msg_id=16),
        "get_accessspecs_response": c.GetAccessSpecsResponse(msg_id=16, status=OK),
        "get_report": c.GetReport(msg_id=17),
        "ro_access_report": c.ROAccessReport(
            msg_id=18,
            tags=(
                c.TagReportData(
                    epc=EPC96,
                    rospec_id=1,
                    antenna_id=3,
                    peak_rssi=-52,
                    first_seen_utc_us=T0,
                    last_seen_utc_us=T0 + 250_000,
                    tag_seen_count=7,
                    c1g2_pc=0x3000,
                ),
                c.TagReportData(epc=EPC128, antenna_id=1, peak_rssi=-71, channel_index=5),
            ),
        ),
        "keepalive": c.Keepalive(msg_id=19),
        "keepalive_ack": c.KeepaliveAck(msg_id=19),
        "close_connection": c.CloseConnection(msg_id=20),
        "close_connection_response": c.CloseConnectionResponse(msg_id=20, status=OK),
        "error_message": c.ErrorMessage(
            msg_id=21,
            status=c.LLRPStatus(c.StatusCode.M_UNSUPPORTED_MESSAGE, "TYPE_99 not supported"),
        ),
        "custom_message": c.impinj_enable_extensions(msg_id=22),
        "custom_message_response": c.impinj_enable_extensions_response(22, OK),
    }


CASES = _cases()


def _load_hex(name: str) -> bytes:
    text = (FIXTURES / f"{name}.hex").read_text(encoding="utf-8")
    digits = "".join(line.split("#", 1)[0] for line in text.splitlines())
    return bytes.fromhex("".join(digits.split()))


def _annotate(name: str, msg: c.LlrpMessage) -> str:
    """The golden file text: header, fixed fields, then one line per top-level parameter."""
    frame = msg.encode()
    header = c.decode_header(frame)
    lines = [
        f"# {msg.name} (type {header.msg_type}), version {header.version}, "
        f"{header.length} bytes, message ID {header.msg_id}",
        f"{frame[:2].hex()} {frame[2:6].hex()} {frame[6:10].hex()}"
        "  # Rsvd|Ver|Type, Length, MessageID",
    ]
    fixed = {
        c.MessageType.GET_READER_CAPABILITIES: 1,
        c.MessageType.GET_READER_CONFIG: 7,
        c.MessageType.SET_READER_CONFIG: 1,
        c.MessageType.CUSTOM_MESSAGE: len(frame) - 10,
    }.get(c.MessageType(header.msg_type), 0)
    if isinstance(msg, c.SpecIdRequest):
        fixed = 4
    body = frame[10:]
    if fixed:
        lines.append(f"{body[:fixed].hex()}  # fixed fields")
    pos = fixed
    while pos < len(body):
        ptype, plen = struct.unpack_from("!HH", body, pos)
        ptype &= 0x3FF
        chunk = body[pos : pos + plen]
        lines.append(f"{chunk.hex()}  # {c.parameter_name(ptype)} ({ptype}), {plen} bytes")
        pos += plen
    return "\n".join(lines) + "\n"


def write_fixtures() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, msg in CASES.items():
        (FIXTURES / f"{name}.hex").write_text(_annotate(name, msg), encoding="utf-8")


# -- golden bytes both ways --------------------------------------------------------------------


def test_every_message_type_has_a_golden_fixture() -> None:
    covered = {msg.TYPE for msg in CASES.values()}
    assert covered == {int(t) for t in c.MessageType}
    assert {p.stem for p in FIXTURES.glob("*.hex")} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_encode_matches_golden(name: str) -> None:
    assert CASES[name].encode() == _load_hex(name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_golden_gives_the_expected_message(name: str) -> None:
    assert c.decode_message(_load_hex(name)) == CASES[name]


# -- layouts checked by hand against the spec -------------------------------------------------


def test_keepalive_header_layout() -> None:
    # Rsvd=000 Ver=001 Type=0b0000111110 (62): 0000 0100 0011 1110 = 0x043E; Length 10; ID 19
    assert _load_hex("keepalive") == bytes.fromhex("043e 0000000a 00000013")


def test_ro_access_report_layout_by_hand() -> None:
    expected = b"".join(
        [
            bytes.fromhex("043d"),  # Ver 1, type 61
            (10 + 4 + 13 + 5 + 3 + 4 + 2 + 9 + 9 + 3 + 3 + 4 + 16 + 2 + 3 + 2 + 3).to_bytes(4),
            (18).to_bytes(4),  # message ID
            # TagReportData #1: TLV type 240, length
            bytes.fromhex("00f0"),
            (4 + 13 + 5 + 3 + 2 + 9 + 9 + 3 + 3).to_bytes(2),
            bytes.fromhex("8d") + EPC96,  # EPC-96: TV type 13 -> 0x80|13
            bytes.fromhex("89 00000001"),  # ROSpecID: TV 9, u32
            bytes.fromhex("81 0003"),  # AntennaID: TV 1, u16
            bytes.fromhex("86 cc"),  # PeakRSSI: TV 6, s8 -52
            bytes.fromhex("82") + T0.to_bytes(8),  # FirstSeenTimestampUTC: TV 2, u64
            bytes.fromhex("84") + (T0 + 250_000).to_bytes(8),  # LastSeenTimestampUTC: TV 4
            bytes.fromhex("88 0007"),  # TagSeenCount: TV 8, u16
            bytes.fromhex("8c 3000"),  # C1G2-PC: TV 12
            # TagReportData #2 with a 128-bit EPC: EPCData TLV 241 (u16 bit count + bits)
            bytes.fromhex("00f0"),
            (4 + 4 + 2 + 16 + 3 + 2 + 3).to_bytes(2),
            bytes.fromhex("00f1 0016 0080") + EPC128,
            bytes.fromhex("81 0001"),
            bytes.fromhex("86 b9"),  # -71
            bytes.fromhex("87 0005"),  # ChannelIndex: TV 7
        ]
    )
    assert CASES["ro_access_report"].encode() == expected


def test_reader_event_notification_layout_by_hand() -> None:
    expected = (
        bytes.fromhex("043f 00000020 00000001")  # type 63, 32 bytes, ID 1
        + bytes.fromhex("00f6 0016")  # ReaderEventNotificationData (246), 22 bytes
        + bytes.fromhex("0080 000c")
        + T0.to_bytes(8)  # UTCTimestamp (128), 12 bytes
        + bytes.fromhex("0100 0006 0000")  # ConnectionAttemptEvent (256): Success
    )
    assert _load_hex("reader_event_notification") == expected


def test_error_message_layout_by_hand() -> None:
    text = b"TYPE_99 not supported"
    expected = (
        bytes.fromhex("0464")  # type 100
        + (10 + 4 + 2 + 2 + len(text)).to_bytes(4)
        + (21).to_bytes(4)
        + bytes.fromhex("011f")  # LLRPStatus (287)
        + (4 + 2 + 2 + len(text)).to_bytes(2)
        + bytes.fromhex("006d")  # M_UnsupportedMessage (109)
        + len(text).to_bytes(2)
        + text
    )
    assert _load_hex("error_message") == expected


def test_impinj_extensions_are_custom_messages_with_vendor_and_subtype() -> None:
    # CUSTOM_MESSAGE (1023): u32 vendor 25882, u8 subtype 21, u32 reserved
    assert _load_hex("custom_message") == bytes.fromhex(
        "07ff 00000013 00000016 0000651a 15 00000000"
    )
    response = c.decode_message(_load_hex("custom_message_response"))
    assert isinstance(response, c.CustomMessage)
    assert (response.vendor_id, response.subtype) == (25882, 22)
    assert response.status() == OK


# -- sllurp agrees --------------------------------------------------------------------------


def test_sllurp_decodes_our_ro_access_report_to_the_same_values() -> None:
    decoded = LLRPMessage(msgbytes=_load_hex("ro_access_report")).msgdict["RO_ACCESS_REPORT"]
    first, second = decoded["TagReportData"]
    assert first["EPC"] == EPC96.hex().encode()
    assert first["AntennaID"] == 3
    assert first["PeakRSSI"] == -52
    assert first["FirstSeenTimestampUTC"] == T0
    assert first["LastSeenTimestampUTC"] == T0 + 250_000
    assert first["TagSeenCount"] == 7
    assert first["ROSpecID"] == 1
    assert second["EPC"] == EPC128.hex().encode()
    assert (second["AntennaID"], second["PeakRSSI"], second["ChannelIndex"]) == (1, -71, 5)


@given(
    st.lists(
        st.tuples(
            st.binary(min_size=2, max_size=62).filter(lambda b: len(b) % 2 == 0),
            st.integers(1, 0xFFFF),
            st.integers(-128, 127),
            st.integers(0, 2**63),
            st.integers(0, 10**9),
            st.integers(1, 0xFFFF),
        ),
        min_size=1,
        max_size=20,
    )
)
@settings(max_examples=60, deadline=None)
def test_sllurp_decodes_any_report_we_encode(
    entries: list[tuple[bytes, int, int, int, int, int]],
) -> None:
    tags = tuple(
        c.TagReportData(
            epc=epc,
            antenna_id=antenna,
            peak_rssi=rssi,
            first_seen_utc_us=first,
            last_seen_utc_us=first + span,
            tag_seen_count=count,
        )
        for epc, antenna, rssi, first, span, count in entries
    )
    frame = c.ROAccessReport(msg_id=9, tags=tags).encode()
    assert c.decode_message(frame) == c.ROAccessReport(msg_id=9, tags=tags)
    got = LLRPMessage(msgbytes=frame).msgdict["RO_ACCESS_REPORT"]["TagReportData"]
    assert [
        (
            bytes.fromhex(t["EPC"].decode()),
            t["AntennaID"],
            t["PeakRSSI"],
            t["FirstSeenTimestampUTC"],
            t["LastSeenTimestampUTC"],
            t["TagSeenCount"],
        )
        for t in got
    ] == [(e, a, r, f, f + s, n) for e, a, r, f, s, n in entries]


def test_sllurp_accepts_our_capabilities() -> None:
    decoded = LLRPMessage(msgbytes=_load_hex("get_reader_capabilities_response")).msgdict
    caps = decoded["GET_READER_CAPABILITIES_RESPONSE"]
    assert caps["LLRPStatus"]["StatusCode"] == "Success"
    assert caps["GeneralDeviceCapabilities"]["MaxNumberOfAntennaSupported"] == 4
    band = caps["RegulatoryCapabilities"]["UHFBandCapabilities"]
    assert [e["TransmitPowerValue"] for e in band["TransmitPowerLevelTableEntry"]] == [1000, 3000]
    modes = band["UHFC1G2RFModeTable"]["UHFC1G2RFModeTableEntry"]
    assert [m["ModeIdentifier"] for m in modes] == [0, 2]


def test_we_decode_the_rospec_sllurp_sends_and_reencode_it_byte_for_byte() -> None:
    selector = {
        "EnableAntennaID": True,
        "EnablePeakRSSI": True,
        "EnableFirstSeenTimestamp": True,
        "EnableLastSeenTimestamp": True,
        "EnableTagSeenCount": True,
    }
    rospec = LLRPROSpec(
        {"ModeIdentifier": 2, "MaxTari": 25000},
        1,
        antennas=[1, 2, 3, 4],
        tag_content_selector=selector,
        report_every_n_tags=50,
        report_timeout_ms=300,
    )
    frame = LLRPMessage(msgdict={"ADD_ROSPEC": {"ROSpecID": 1, "ROSpec": rospec, "ID": 4}}).msgbytes
    msg = c.decode_message(frame)
    assert isinstance(msg, c.AddROSpec)
    assert msg.encode() == frame
    spec = msg.rospec
    assert spec.rospec_id == 1
    assert spec.boundary.start.trigger == c.ROSpecStartTriggerType.IMMEDIATE
    (ai,) = spec.ai_specs
    assert ai.antenna_ids == (1, 2, 3, 4)
    assert ai.stop.trigger == c.AISpecStopTriggerType.TAG_OBSERVATION
    assert ai.stop.tag_observation == c.TagObservationTrigger(number_of_tags=50, timeout_ms=300)
    (ips,) = ai.inventory_parameter_specs
    assert [a.antenna_id for a in ips.antenna_configurations] == [1, 2, 3, 4]
    command = ips.antenna_configurations[0].inventory_commands[0]
    assert command.rf_control == c.C1G2RFControl(2, 0)
    assert command.singulation_control is not None
    assert command.singulation_control.session == 2
    assert spec.report_spec is not None
    sel = spec.report_spec.selector
    assert spec.report_spec.trigger == c.ROReportTriggerType.UPON_N_TAGS_OR_END_OF_AISPEC
    assert (sel.antenna_id, sel.peak_rssi, sel.first_seen_timestamp) == (True, True, True)
    assert (sel.last_seen_timestamp, sel.tag_seen_count, sel.rospec_id) == (True, True, True)
    assert (sel.channel_index, sel.spec_index, sel.access_spec_id) == (False, False, False)


@pytest.mark.parametrize(
    "msgdict",
    [
        {"GET_READER_CAPABILITIES": {"RequestedData": 0, "ID": 1}},
        {"GET_READER_CONFIG": {"RequestedData": 0, "ID": 2}},
        {
            "SET_READER_CONFIG": {
                "ResetToFactoryDefaults": False,
                "ReaderEventNotificationSpec": {"EventNotificationState": {"ROSpecEvent": True}},
                "KeepaliveSpec": {"KeepaliveTriggerType": 1, "TimeInterval": 1500},
                "ID": 3,
            }
        },
        {"ENABLE_EVENTS_AND_REPORTS": {"ID": 4}},
        {"ENABLE_ROSPEC": {"ROSpecID": 1, "ID": 5}},
        {"DELETE_ROSPEC": {"ROSpecID": 0, "ID": 6}},
        {"DELETE_ACCESSSPEC": {"AccessSpecID": 0, "ID": 7}},
        {"KEEPALIVE_ACK": {"ID": 8}},
        {"CLOSE_CONNECTION": {"ID": 9}},
        {"IMPINJ_ENABLE_EXTENSIONS": {"ID": 10}},
    ],
)
def test_requests_sllurp_sends_round_trip(msgdict: dict[str, dict[str, object]]) -> None:
    frame = LLRPMessage(msgdict=msgdict).msgbytes
    assert c.decode_message(frame).encode() == frame


def test_set_reader_config_from_sllurp_carries_the_keepalive() -> None:
    frame = LLRPMessage(
        msgdict={
            "SET_READER_CONFIG": {
                "ResetToFactoryDefaults": False,
                "KeepaliveSpec": {"KeepaliveTriggerType": 1, "TimeInterval": 1500},
                "ID": 3,
            }
        }
    ).msgbytes
    msg = c.decode_message(frame)
    assert isinstance(msg, c.SetReaderConfig)
    assert msg.keepalive == c.KeepaliveSpec(True, 1500)


# -- malformed input --------------------------------------------------------------------------


def _frame(msg_type: int, body_hex: str) -> bytes:
    """A frame with a correct header around a hand-written (possibly broken) body."""
    return c.encode_frame(msg_type, bytes.fromhex(body_hex), msg_id=1)


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (bytes.fromhex("043e0000000a"), "truncated LLRP header"),
        (bytes.fromhex("043e 00000009 00000001"), "length 9 < 10"),
        (bytes.fromhex("043d 7fffffff 00000001"), "above the cap"),
        (bytes.fromhex("0c3e 0000000a 00000001"), "unknown LLRP version 3"),
        (bytes.fromhex("003e 0000000a 00000001"), "unknown LLRP version 0"),
        (bytes.fromhex("043e 0000000b 00000001"), "length field says 11 bytes, frame has 10"),
        # TagReportData claims 40 bytes but the message holds only 8 after its header
        (_frame(61, "00f00028 8d000000"), "overruns its container"),
        # a TLV length below its own 4-byte header
        (_frame(61, "00f00002"), "below its 4-byte header"),
        # EPC-96 cut short inside a TagReportData
        (_frame(61, "00f0000a 8d3074257bf7"), "truncated TV parameter"),
        # TV type 127 does not exist: its length cannot be known
        (_frame(61, "00f00006 ff00"), "unknown TV parameter type 127"),
        # TagReportData without an EPC
        (_frame(61, "00f00007 810001"), "missing EPC"),
        # a response without its LLRPStatus
        (_frame(30, ""), "missing LLRPStatus"),
        # KeepaliveSpec with one byte too many
        (_frame(3, "00 00dc000a 0100000064 00"), "unexpected trailing bytes"),
        # READER_EVENT_NOTIFICATION data without a timestamp
        (_frame(63, "00f6000a 010000060000"), "exactly one of UTCTimestamp or Uptime"),
        # LLRPStatus whose ErrorDescription length overruns the parameter
        (_frame(100, "011f000a 006d00ff6162"), "truncated ErrorDescription"),
        # a ROSpec with a Periodic start trigger but no PeriodicTriggerValue
        (
            _frame(20, "00b1001c 00000001 00 00 00b20012 00b30005 02 00b60009 0000000000"),
            "Periodic trigger without PeriodicTriggerValue",
        ),
    ],
)
def test_malformed_input_is_rejected_with_a_reason(frame: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        c.decode_message(frame)


def test_errors_name_the_parameter_path() -> None:
    report = c.ROAccessReport(
        tags=(c.TagReportData(epc=EPC96), c.TagReportData(epc=EPC96, antenna_id=1))
    ).encode()
    # cut the AntennaID of the second TagReportData short
    broken = bytearray(report[:-1])
    broken[2:6] = len(broken).to_bytes(4)
    broken[-4 - 13 - 2 : -13 - 2] = bytes.fromhex("00f0") + (4 + 13 + 2).to_bytes(2)
    with pytest.raises(ProtocolError, match=r"RO_ACCESS_REPORT/TagReportData\[1\]"):
        c.decode_message(bytes(broken))


def test_a_cap_below_the_default_applies() -> None:
    frame = CASES["get_reader_capabilities_response"].encode()
    with pytest.raises(ProtocolError, match="above the cap 64"):
        c.decode_message(frame, max_length=64)


def test_an_unknown_message_type_is_kept_not_rejected() -> None:
    frame = c.encode_frame(99, b"\x01\x02", msg_id=5)
    msg = c.decode_message(frame)
    assert msg == c.UnknownMessage(msg_id=5, msg_type=99, body=b"\x01\x02")
    assert msg.name == "TYPE_99"
    assert msg.encode() == frame


def test_unknown_and_custom_parameters_survive_a_round_trip() -> None:
    extra = (c.CustomParameter(25882, 50, b"\x00\x01"), c.RawParameter(500, b"\xaa\xbb"))
    msg = c.GetReaderConfigResponse(msg_id=3, extensions=extra)
    assert c.decode_message(msg.encode()) == msg


def test_llrp_1_1_version_decodes() -> None:
    frame = c.Keepalive(msg_id=3, version=2).encode()
    assert frame[:2] == bytes.fromhex("083e")
    assert c.decode_message(frame) == c.Keepalive(msg_id=3, version=2)


# -- framing ----------------------------------------------------------------------------------


@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
@settings(max_examples=50, deadline=None)
def test_framer_reassembles_any_chunking(cuts: list[int]) -> None:
    messages = [CASES[n] for n in ("ro_access_report", "keepalive", "add_rospec", "error_message")]
    stream = b"".join(m.encode() for m in messages)
    framer = c.LlrpFramer()
    frames: list[bytes] = []
    pos = 0
    for cut in cuts * 200:
        if pos >= len(stream):
            break
        frames += framer.feed(stream[pos : pos + cut])
        pos += cut
    frames += framer.feed(stream[pos:])
    assert [c.decode_message(f) for f in frames] == messages
    assert framer.buffered == 0


def test_framer_stays_broken_after_a_bad_header() -> None:
    framer = c.LlrpFramer()
    with pytest.raises(ProtocolError, match="length 3"):
        framer.feed(bytes.fromhex("043e 00000003 00000001"))
    with pytest.raises(ProtocolError, match="stream already broken"):
        framer.feed(CASES["keepalive"].encode())


def test_framer_yields_the_frames_before_a_bad_header_then_raises() -> None:
    # The gateway acts on every frame a socket read held up to the fault (a report, then the
    # garbage): frames() hands them over one by one before it raises.
    report = CASES["ro_access_report"].encode()
    keepalive = CASES["keepalive"].encode()
    frames = c.LlrpFramer().frames(report + keepalive + b"\xde\xad\xbe\xef" * 4)
    assert next(frames) == report
    assert next(frames) == keepalive
    with pytest.raises(ProtocolError, match="unknown LLRP version 7"):
        next(frames)


def test_decode_stream_rejects_a_trailing_partial_message() -> None:
    data = CASES["keepalive"].encode() + CASES["keepalive_ack"].encode()[:7]
    with pytest.raises(ProtocolError, match="7 bytes left over"):
        c.decode_stream(data)


# -- Gen2 helpers ------------------------------------------------------------------------------


def test_gen2_crc16_check_value() -> None:
    # CRC-16/GENIBUS (the Gen2 CRC-16) of "123456789" is 0xD64E
    assert c.gen2_crc16(b"123456789") == 0xD64E


def test_gen2_pc_word_encodes_the_epc_length_in_words() -> None:
    assert c.gen2_pc_word(96) == 0x3000
    assert c.gen2_pc_word(128) == 0x4000


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-fixtures"]:
        write_fixtures()
        print(f"wrote {len(CASES)} fixtures to {FIXTURES}")
    else:
        print("usage: python -m tests.test_llrp_codec --write-fixtures")
