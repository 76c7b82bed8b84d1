"""LLRP 1.0.1 / 1.1 binary codec, both directions (reader side and client side).

Theory of operation
-------------------
An LLRP message is a 10-byte header followed by its body:

* ``u16``: 3 reserved bits, 3-bit version (1 = LLRP 1.0.1, 2 = LLRP 1.1), 10-bit message type;
* ``u32`` length of the whole message, header included (so never less than 10);
* ``u32`` message ID (a response carries the ID of the request it answers).

A body is fixed fields followed by parameters. A parameter is either

* TV: one byte with the top bit set and a 7-bit type, then a value whose length the type
  implies (AntennaID, PeakRSSI, EPC-96, timestamps... only small fixed fields are TV), or
* TLV: ``u16`` with 6 reserved bits and a 10-bit type, ``u16`` length including this 4-byte
  header, then fixed fields and nested parameters.

Type 1023 is the vendor extension point: a CUSTOM_MESSAGE body starts with a ``u32`` vendor
(IANA enterprise number) and a ``u8`` subtype; a Custom parameter carries a ``u32`` vendor and a
``u32`` subtype. Impinj (vendor 25882) uses CUSTOM_MESSAGE subtype 21 to enable its extensions
and answers with subtype 22 carrying an LLRPStatus.

Decoding rules (invariants the tests hold us to):

* every length is bounds-checked against its container; the first violation raises
  :class:`dockwatch_core.errors.ProtocolError` naming the path (``RO_ACCESS_REPORT/TagReportData[2]/
  EPCData``) and what is wrong (truncated header, length < 10, length above the cap,
  unknown version, a parameter overrunning its message, trailing garbage in a fixed parameter);
* parameters may arrive in any order (readers differ); required ones that are missing, and
  duplicates of single ones, are errors;
* TLV parameters we do not model and Custom parameters are kept verbatim in ``extensions``, so
  decoding then encoding is lossless for them; an unknown TV type cannot be skipped (its length is
  implied by its type) and is an error;
* an unknown message type is not a framing error: it decodes to :class:`UnknownMessage` so a
  reader can answer ERROR_MESSAGE / M_UnsupportedMessage and keep the connection.

Encoding writes parameters in the order the specification lists them. A 96-bit EPC is always
encoded as the EPC-96 TV parameter, any other length as the EPCData TLV parameter (what readers
do); both decode to the same :class:`TagReportData`.

Field layouts follow the LLRP 1.0.1 specification (EPCglobal, 2007) and LLRP 1.1 (2010).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol, Self, TypeVar

from dockwatch_core.errors import ProtocolError

HEADER_LENGTH = 10
MAX_MESSAGE_LENGTH = 1 << 20
"""Default cap on a message's length field: 1 MiB. A report of 10,000 tags is ~300 kB."""
SUPPORTED_VERSIONS = frozenset({1, 2})
VENDOR_IMPINJ = 25882
IMPINJ_ENABLE_EXTENSIONS = 21
IMPINJ_ENABLE_EXTENSIONS_RESPONSE = 22
CUSTOM_TYPE = 1023


class MessageType(enum.IntEnum):
    GET_READER_CAPABILITIES = 1
    GET_READER_CONFIG = 2
    SET_READER_CONFIG = 3
    CLOSE_CONNECTION_RESPONSE = 4
    GET_READER_CAPABILITIES_RESPONSE = 11
    GET_READER_CONFIG_RESPONSE = 12
    SET_READER_CONFIG_RESPONSE = 13
    CLOSE_CONNECTION = 14
    ADD_ROSPEC = 20
    DELETE_ROSPEC = 21
    START_ROSPEC = 22
    STOP_ROSPEC = 23
    ENABLE_ROSPEC = 24
    DISABLE_ROSPEC = 25
    GET_ROSPECS = 26
    ADD_ROSPEC_RESPONSE = 30
    DELETE_ROSPEC_RESPONSE = 31
    START_ROSPEC_RESPONSE = 32
    STOP_ROSPEC_RESPONSE = 33
    ENABLE_ROSPEC_RESPONSE = 34
    DISABLE_ROSPEC_RESPONSE = 35
    GET_ROSPECS_RESPONSE = 36
    ADD_ACCESSSPEC = 40
    DELETE_ACCESSSPEC = 41
    ENABLE_ACCESSSPEC = 42
    DISABLE_ACCESSSPEC = 43
    GET_ACCESSSPECS = 44
    ADD_ACCESSSPEC_RESPONSE = 50
    DELETE_ACCESSSPEC_RESPONSE = 51
    ENABLE_ACCESSSPEC_RESPONSE = 52
    DISABLE_ACCESSSPEC_RESPONSE = 53
    GET_ACCESSSPECS_RESPONSE = 54
    GET_REPORT = 60
    RO_ACCESS_REPORT = 61
    KEEPALIVE = 62
    READER_EVENT_NOTIFICATION = 63
    ENABLE_EVENTS_AND_REPORTS = 64
    KEEPALIVE_ACK = 72
    ERROR_MESSAGE = 100
    CUSTOM_MESSAGE = 1023


class StatusCode(enum.IntEnum):
    """LLRPStatus codes (LLRP 1.0.1 section 14.2.1)."""

    M_SUCCESS = 0
    M_PARAMETER_ERROR = 100
    M_FIELD_ERROR = 101
    M_UNEXPECTED_PARAMETER = 102
    M_MISSING_PARAMETER = 103
    M_DUPLICATE_PARAMETER = 104
    M_OVERFLOW_PARAMETER = 105
    M_OVERFLOW_FIELD = 106
    M_UNKNOWN_PARAMETER = 107
    M_UNKNOWN_FIELD = 108
    M_UNSUPPORTED_MESSAGE = 109
    M_UNSUPPORTED_VERSION = 110
    M_UNSUPPORTED_PARAMETER = 111
    P_PARAMETER_ERROR = 200
    P_FIELD_ERROR = 201
    P_UNEXPECTED_PARAMETER = 202
    P_MISSING_PARAMETER = 203
    P_DUPLICATE_PARAMETER = 204
    P_OVERFLOW_PARAMETER = 205
    P_OVERFLOW_FIELD = 206
    P_UNKNOWN_PARAMETER = 207
    P_UNKNOWN_FIELD = 208
    P_UNSUPPORTED_PARAMETER = 209
    A_INVALID = 300
    A_OUT_OF_RANGE = 301
    R_DEVICE_ERROR = 401


class ROSpecState(enum.IntEnum):
    DISABLED = 0
    INACTIVE = 1
    ACTIVE = 2


class ROSpecStartTriggerType(enum.IntEnum):
    NULL = 0
    IMMEDIATE = 1
    PERIODIC = 2
    GPI = 3


class ROSpecStopTriggerType(enum.IntEnum):
    NULL = 0
    DURATION = 1
    GPI_WITH_TIMEOUT = 2


class AISpecStopTriggerType(enum.IntEnum):
    NULL = 0
    DURATION = 1
    GPI_WITH_TIMEOUT = 2
    TAG_OBSERVATION = 3


class TagObservationTriggerType(enum.IntEnum):
    UPON_SEEING_N_TAGS_OR_TIMEOUT = 0
    UPON_SEEING_NO_MORE_NEW_TAGS_FOR_T_MS_OR_TIMEOUT = 1
    N_ATTEMPTS_TO_SEE_ALL_TAGS_IN_FOV_OR_TIMEOUT = 2


class ROReportTriggerType(enum.IntEnum):
    NONE = 0
    UPON_N_TAGS_OR_END_OF_AISPEC = 1
    UPON_N_TAGS_OR_END_OF_ROSPEC = 2


class ConnectionAttemptStatus(enum.IntEnum):
    SUCCESS = 0
    FAILED_READER_INITIATED_CONNECTION_EXISTS = 1
    FAILED_CLIENT_INITIATED_CONNECTION_EXISTS = 2
    FAILED_OTHER_REASON = 3
    ANOTHER_CONNECTION_ATTEMPTED = 4


class EventType(enum.IntEnum):
    """EventNotificationState event types."""

    HOPPING = 0
    GPI = 1
    ROSPEC = 2
    REPORT_BUFFER_FILL_WARNING = 3
    READER_EXCEPTION = 4
    RF_SURVEY = 5
    AISPEC = 6
    AISPEC_WITH_SINGULATION = 7
    ANTENNA = 8
    SPEC_LOOP = 9


class CapabilitiesRequest(enum.IntEnum):
    ALL = 0
    GENERAL_DEVICE = 1
    LLRP = 2
    REGULATORY = 3
    AIR_PROTOCOL = 4


class ConfigRequest(enum.IntEnum):
    ALL = 0
    IDENTIFICATION = 1
    ANTENNA_PROPERTIES = 2
    ANTENNA_CONFIGURATION = 3
    RO_REPORT_SPEC = 4
    READER_EVENT_NOTIFICATION_SPEC = 5
    ACCESS_REPORT_SPEC = 6
    LLRP_CONFIGURATION_STATE_VALUE = 7
    KEEPALIVE_SPEC = 8
    GPI_PORT_CURRENT_STATE = 9
    GPO_WRITE_DATA = 10
    EVENTS_AND_REPORTS = 11


def message_name(msg_type: int) -> str:
    """The spec's name of a message type, or ``TYPE_<n>`` for an unknown one."""
    try:
        return MessageType(msg_type).name
    except ValueError:
        return f"TYPE_{msg_type}"


# --------------------------------------------------------------------------------------------
# Low-level reading and writing
# --------------------------------------------------------------------------------------------

_U8 = struct.Struct("!B")
_S8 = struct.Struct("!b")
_U16 = struct.Struct("!H")
_S16 = struct.Struct("!h")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_HEADER = struct.Struct("!HII")
_TLV_HEADER = struct.Struct("!HH")


class _Reader:
    """A bounds-checked cursor over one message or parameter body."""

    __slots__ = ("_buf", "_pos", "where")

    def __init__(self, buf: bytes, where: str) -> None:
        self._buf = buf
        self._pos = 0
        self.where = where

    @property
    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise ProtocolError(
                f"{self.where}: truncated {what}: needs {n} bytes, {self.remaining} left"
            )
        chunk = self._buf[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self, what: str) -> int:
        return int(_U8.unpack(self.take(1, what))[0])

    def s8(self, what: str) -> int:
        return int(_S8.unpack(self.take(1, what))[0])

    def u16(self, what: str) -> int:
        return int(_U16.unpack(self.take(2, what))[0])

    def s16(self, what: str) -> int:
        return int(_S16.unpack(self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(_U32.unpack(self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack(self.take(8, what))[0])

    def utf8v(self, what: str) -> str:
        raw = self.take(self.u16(f"{what} length"), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{self.where}: {what} is not UTF-8") from exc

    def u8v(self, what: str) -> bytes:
        return self.take(self.u16(f"{what} count"), what)

    def u16v(self, what: str) -> tuple[int, ...]:
        count = self.u16(f"{what} count")
        return tuple(self.u16(what) for _ in range(count))

    def u32v(self, what: str) -> tuple[int, ...]:
        count = self.u16(f"{what} count")
        return tuple(self.u32(what) for _ in range(count))

    def u1v(self, what: str) -> tuple[int, bytes]:
        bits = self.u16(f"{what} bit count")
        return bits, self.take((bits + 7) // 8, what)

    def rest(self) -> bytes:
        return self.take(self.remaining, "rest")

    def params(self) -> list[Parameter]:
        """Decode everything left as a sequence of parameters."""
        out: list[Parameter] = []
        counts: dict[str, int] = {}
        while self.remaining:
            out.append(_decode_parameter(self, counts))
        return out

    def end(self) -> None:
        if self.remaining:
            raise ProtocolError(f"{self.where}: {self.remaining} unexpected trailing bytes")


def _u8(v: int) -> bytes:
    return _U8.pack(v)


def _u16(v: int) -> bytes:
    return _U16.pack(v)


def _s16(v: int) -> bytes:
    return _S16.pack(v)


def _u32(v: int) -> bytes:
    return _U32.pack(v)


def _u64(v: int) -> bytes:
    return _U64.pack(v)


def _utf8v(s: str) -> bytes:
    raw = s.encode("utf-8")
    return _u16(len(raw)) + raw


def _tlv(param_type: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    length = _TLV_HEADER.size + len(body)
    if length > 0xFFFF:
        raise ProtocolError(f"parameter type {param_type} is {length} bytes, above 65535")
    return _TLV_HEADER.pack(param_type, length) + body


def _encode_all(params: Iterable[Parameter | None]) -> bytes:
    return b"".join(p.encode() for p in params if p is not None)


def _flag(value: bool, bit: int) -> int:
    return (1 << bit) if value else 0


# --------------------------------------------------------------------------------------------
# Generic parameters: TV values, unmodelled TLVs, vendor extensions
# --------------------------------------------------------------------------------------------


class TvType(enum.IntEnum):
    ANTENNA_ID = 1
    FIRST_SEEN_UTC = 2
    FIRST_SEEN_UPTIME = 3
    LAST_SEEN_UTC = 4
    LAST_SEEN_UPTIME = 5
    PEAK_RSSI = 6
    CHANNEL_INDEX = 7
    TAG_SEEN_COUNT = 8
    ROSPEC_ID = 9
    INVENTORY_PARAMETER_SPEC_ID = 10
    C1G2_CRC = 11
    C1G2_PC = 12
    EPC_96 = 13
    SPEC_INDEX = 14
    CLIENT_REQUEST_OPSPEC_RESULT = 15
    ACCESS_SPEC_ID = 16
    OPSPEC_ID = 17
    C1G2_SINGULATION_DETAILS = 18
    C1G2_XPC_W1 = 19
    C1G2_XPC_W2 = 20


# value length of every TV parameter; the type implies it (no length on the wire)
_TV_LENGTHS: dict[int, int] = {
    TvType.ANTENNA_ID: 2,
    TvType.FIRST_SEEN_UTC: 8,
    TvType.FIRST_SEEN_UPTIME: 8,
    TvType.LAST_SEEN_UTC: 8,
    TvType.LAST_SEEN_UPTIME: 8,
    TvType.PEAK_RSSI: 1,
    TvType.CHANNEL_INDEX: 2,
    TvType.TAG_SEEN_COUNT: 2,
    TvType.ROSPEC_ID: 4,
    TvType.INVENTORY_PARAMETER_SPEC_ID: 2,
    TvType.C1G2_CRC: 2,
    TvType.C1G2_PC: 2,
    TvType.EPC_96: 12,
    TvType.SPEC_INDEX: 2,
    TvType.CLIENT_REQUEST_OPSPEC_RESULT: 2,
    TvType.ACCESS_SPEC_ID: 4,
    TvType.OPSPEC_ID: 2,
    TvType.C1G2_SINGULATION_DETAILS: 4,
    TvType.C1G2_XPC_W1: 2,
    TvType.C1G2_XPC_W2: 2,
}


@dataclass(frozen=True, slots=True)
class TvParameter:
    """A TV-encoded parameter: ``type`` (1..127) and its raw value bytes."""

    type: int
    value: bytes

    def __post_init__(self) -> None:
        expected = _TV_LENGTHS.get(self.type)
        if expected is None:
            raise ValueError(f"unknown TV parameter type {self.type}")
        if len(self.value) != expected:
            raise ValueError(f"TV type {self.type} takes {expected} bytes, got {len(self.value)}")

    @classmethod
    def of(cls, tv_type: int, value: int) -> TvParameter:
        length = _TV_LENGTHS[tv_type]
        signed = tv_type == TvType.PEAK_RSSI
        return cls(tv_type, value.to_bytes(length, "big", signed=signed))

    def as_int(self) -> int:
        return int.from_bytes(self.value, "big", signed=self.type == TvType.PEAK_RSSI)

    def encode(self) -> bytes:
        return _u8(0x80 | self.type) + self.value


@dataclass(frozen=True, slots=True)
class RawParameter:
    """A TLV parameter this codec does not model, kept verbatim (type and body)."""

    type: int
    body: bytes

    def encode(self) -> bytes:
        return _tlv(self.type, self.body)


@dataclass(frozen=True, slots=True)
class CustomParameter:
    """A vendor extension parameter (type 1023)."""

    TYPE: ClassVar[int] = CUSTOM_TYPE
    vendor_id: int
    subtype: int
    data: bytes = b""

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u32(self.vendor_id), _u32(self.subtype), self.data)

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        vendor = r.u32("VendorIdentifier")
        subtype = r.u32("ParameterSubtype")
        return cls(vendor, subtype, r.rest())


# --------------------------------------------------------------------------------------------
# Status and errors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldError:
    TYPE: ClassVar[int] = 288
    field_num: int
    error_code: int

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.field_num), _u16(self.error_code))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u16("FieldNum"), r.u16("ErrorCode"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class ParameterError:
    TYPE: ClassVar[int] = 289
    parameter_type: int
    error_code: int
    field_error: FieldError | None = None
    parameter_error: ParameterError | None = None

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u16(self.parameter_type),
            _u16(self.error_code),
            _encode_all((self.field_error, self.parameter_error)),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        ptype = r.u16("ParameterType")
        code = r.u16("ErrorCode")
        kids = _Children(r.params(), r.where)
        out = cls(ptype, code, kids.opt(FieldError), kids.opt(ParameterError))
        kids.no_rest()
        return out


@dataclass(frozen=True, slots=True)
class LLRPStatus:
    TYPE: ClassVar[int] = 287
    code: int = StatusCode.M_SUCCESS
    description: str = ""
    field_error: FieldError | None = None
    parameter_error: ParameterError | None = None

    @property
    def ok(self) -> bool:
        return self.code == StatusCode.M_SUCCESS

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u16(self.code),
            _utf8v(self.description),
            _encode_all((self.field_error, self.parameter_error)),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        code = r.u16("StatusCode")
        description = r.utf8v("ErrorDescription")
        kids = _Children(r.params(), r.where)
        out = cls(code, description, kids.opt(FieldError), kids.opt(ParameterError))
        kids.no_rest()
        return out


# --------------------------------------------------------------------------------------------
# Capabilities
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceiveSensitivityTableEntry:
    TYPE: ClassVar[int] = 139
    index: int
    value_db: int

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.index), _s16(self.value_db))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u16("Index"), r.s16("ReceiveSensitivityValue"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class PerAntennaAirProtocol:
    TYPE: ClassVar[int] = 140
    antenna_id: int
    protocol_ids: tuple[int, ...] = (1,)

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u16(self.antenna_id),
            _u16(len(self.protocol_ids)),
            bytes(self.protocol_ids),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        antenna = r.u16("AntennaID")
        out = cls(antenna, tuple(r.u8v("ProtocolID")))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class GPIOCapabilities:
    TYPE: ClassVar[int] = 141
    num_gpis: int = 0
    num_gpos: int = 0

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.num_gpis), _u16(self.num_gpos))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u16("NumGPIs"), r.u16("NumGPOs"))
        r.end()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class GeneralDeviceCapabilities:
    TYPE: ClassVar[int] = 137
    max_antennas: int
    can_set_antenna_properties: bool = False
    has_utc_clock: bool = True
    manufacturer: int = 0
    model: int = 0
    firmware_version: str = ""
    receive_sensitivities: tuple[ReceiveSensitivityTableEntry, ...] = ()
    gpio: GPIOCapabilities = field(default_factory=GPIOCapabilities)
    air_protocols: tuple[PerAntennaAirProtocol, ...] = ()
    extensions: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        flags = _flag(self.can_set_antenna_properties, 15) | _flag(self.has_utc_clock, 14)
        return _tlv(
            self.TYPE,
            _u16(self.max_antennas),
            _u16(flags),
            _u32(self.manufacturer),
            _u32(self.model),
            _utf8v(self.firmware_version),
            _encode_all(self.receive_sensitivities),
            self.gpio.encode(),
            _encode_all(self.air_protocols),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        max_antennas = r.u16("MaxNumberOfAntennaSupported")
        flags = r.u16("flags")
        manufacturer = r.u32("DeviceManufacturerName")
        model = r.u32("ModelName")
        firmware = r.utf8v("ReaderFirmwareVersion")
        kids = _Children(r.params(), r.where)
        return cls(
            max_antennas=max_antennas,
            can_set_antenna_properties=bool(flags & 0x8000),
            has_utc_clock=bool(flags & 0x4000),
            manufacturer=manufacturer,
            model=model,
            firmware_version=firmware,
            receive_sensitivities=kids.many(ReceiveSensitivityTableEntry),
            gpio=kids.one(GPIOCapabilities),
            air_protocols=kids.many(PerAntennaAirProtocol),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LLRPCapabilities:
    TYPE: ClassVar[int] = 142
    can_do_rf_survey: bool = False
    can_report_buffer_fill_warning: bool = False
    supports_client_request_opspec: bool = False
    can_do_tag_inventory_state_aware_singulation: bool = False
    supports_event_and_report_holding: bool = False
    max_priority_levels: int = 1
    client_request_opspec_timeout: int = 0
    max_rospecs: int = 1
    max_specs_per_rospec: int = 1
    max_inventory_parameter_specs_per_aispec: int = 1
    max_accessspecs: int = 0
    max_opspecs_per_accessspec: int = 0

    def encode(self) -> bytes:
        flags = (
            _flag(self.can_do_rf_survey, 7)
            | _flag(self.can_report_buffer_fill_warning, 6)
            | _flag(self.supports_client_request_opspec, 5)
            | _flag(self.can_do_tag_inventory_state_aware_singulation, 4)
            | _flag(self.supports_event_and_report_holding, 3)
        )
        return _tlv(
            self.TYPE,
            _u8(flags),
            _u8(self.max_priority_levels),
            _u16(self.client_request_opspec_timeout),
            _u32(self.max_rospecs),
            _u32(self.max_specs_per_rospec),
            _u32(self.max_inventory_parameter_specs_per_aispec),
            _u32(self.max_accessspecs),
            _u32(self.max_opspecs_per_accessspec),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        flags = r.u8("flags")
        out = cls(
            can_do_rf_survey=bool(flags & 0x80),
            can_report_buffer_fill_warning=bool(flags & 0x40),
            supports_client_request_opspec=bool(flags & 0x20),
            can_do_tag_inventory_state_aware_singulation=bool(flags & 0x10),
            supports_event_and_report_holding=bool(flags & 0x08),
            max_priority_levels=r.u8("MaxNumPriorityLevelsSupported"),
            client_request_opspec_timeout=r.u16("ClientRequestOpSpecTimeout"),
            max_rospecs=r.u32("MaxNumROSpecs"),
            max_specs_per_rospec=r.u32("MaxNumSpecsPerROSpec"),
            max_inventory_parameter_specs_per_aispec=r.u32(
                "MaxNumInventoryParameterSpecsPerAISpec"
            ),
            max_accessspecs=r.u32("MaxNumAccessSpecs"),
            max_opspecs_per_accessspec=r.u32("MaxNumOpSpecsPerAccessSpec"),
        )
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class TransmitPowerLevelTableEntry:
    TYPE: ClassVar[int] = 145
    index: int
    power_cdbm: int
    """Transmit power in hundredths of a dBm (3000 = 30.00 dBm)."""

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.index), _s16(self.power_cdbm))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u16("Index"), r.s16("TransmitPowerValue"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class FrequencyHopTable:
    TYPE: ClassVar[int] = 147
    hop_table_id: int
    frequencies_khz: tuple[int, ...]

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u8(self.hop_table_id),
            _u8(0),
            _u16(len(self.frequencies_khz)),
            b"".join(_u32(f) for f in self.frequencies_khz),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        hop_table_id = r.u8("HopTableID")
        r.u8("Reserved")
        out = cls(hop_table_id, r.u32v("Frequency"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class FixedFrequencyTable:
    TYPE: ClassVar[int] = 148
    frequencies_khz: tuple[int, ...]

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u16(len(self.frequencies_khz)),
            b"".join(_u32(f) for f in self.frequencies_khz),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u32v("Frequency"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class FrequencyInformation:
    TYPE: ClassVar[int] = 146
    hopping: bool
    hop_tables: tuple[FrequencyHopTable, ...] = ()
    fixed: FixedFrequencyTable | None = None

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u8(_flag(self.hopping, 7)),
            _encode_all(self.hop_tables),
            _encode_all((self.fixed,)),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        hopping = bool(r.u8("Hopping") & 0x80)
        kids = _Children(r.params(), r.where)
        out = cls(hopping, kids.many(FrequencyHopTable), kids.opt(FixedFrequencyTable))
        kids.no_rest()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class C1G2UHFRFModeTableEntry:
    TYPE: ClassVar[int] = 329
    mode_identifier: int
    dr_64_3: bool = True
    epc_hag_tc_conformance: bool = False
    m: int = 2
    forward_link_modulation: int = 2
    spectral_mask: int = 2
    bdr: int = 250000
    pie: int = 2000
    min_tari: int = 12500
    max_tari: int = 25000
    step_tari: int = 0

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u32(self.mode_identifier),
            _u8(_flag(self.dr_64_3, 7) | _flag(self.epc_hag_tc_conformance, 6)),
            _u8(self.m),
            _u8(self.forward_link_modulation),
            _u8(self.spectral_mask),
            _u32(self.bdr),
            _u32(self.pie),
            _u32(self.min_tari),
            _u32(self.max_tari),
            _u32(self.step_tari),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        mode = r.u32("ModeIdentifier")
        flags = r.u8("DR")
        out = cls(
            mode_identifier=mode,
            dr_64_3=bool(flags & 0x80),
            epc_hag_tc_conformance=bool(flags & 0x40),
            m=r.u8("MValue"),
            forward_link_modulation=r.u8("ForwardLinkModulation"),
            spectral_mask=r.u8("SpectralMaskIndicator"),
            bdr=r.u32("BDRValue"),
            pie=r.u32("PIEValue"),
            min_tari=r.u32("MinTariValue"),
            max_tari=r.u32("MaxTariValue"),
            step_tari=r.u32("StepTariValue"),
        )
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class C1G2UHFRFModeTable:
    TYPE: ClassVar[int] = 328
    entries: tuple[C1G2UHFRFModeTableEntry, ...]

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _encode_all(self.entries))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        kids = _Children(r.params(), r.where)
        out = cls(kids.many(C1G2UHFRFModeTableEntry, minimum=1))
        kids.no_rest()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class UHFBandCapabilities:
    TYPE: ClassVar[int] = 144
    power_levels: tuple[TransmitPowerLevelTableEntry, ...]
    frequency_information: FrequencyInformation
    mode_tables: tuple[C1G2UHFRFModeTable, ...]
    extensions: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _encode_all(self.power_levels),
            self.frequency_information.encode(),
            _encode_all(self.mode_tables),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        kids = _Children(r.params(), r.where)
        return cls(
            power_levels=kids.many(TransmitPowerLevelTableEntry, minimum=1),
            frequency_information=kids.one(FrequencyInformation),
            mode_tables=kids.many(C1G2UHFRFModeTable, minimum=1),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RegulatoryCapabilities:
    TYPE: ClassVar[int] = 143
    country_code: int = 0
    communications_standard: int = 0
    uhf_band: UHFBandCapabilities | None = None
    extensions: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u16(self.country_code),
            _u16(self.communications_standard),
            _encode_all((self.uhf_band,)),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        country = r.u16("CountryCode")
        standard = r.u16("CommunicationsStandard")
        kids = _Children(r.params(), r.where)
        return cls(
            country_code=country,
            communications_standard=standard,
            uhf_band=kids.opt(UHFBandCapabilities),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class C1G2LLRPCapabilities:
    TYPE: ClassVar[int] = 327
    can_support_block_erase: bool = False
    can_support_block_write: bool = False
    max_select_filters_per_query: int = 2

    def encode(self) -> bytes:
        flags = _flag(self.can_support_block_erase, 7) | _flag(self.can_support_block_write, 6)
        return _tlv(self.TYPE, _u8(flags), _u16(self.max_select_filters_per_query))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        flags = r.u8("flags")
        out = cls(
            can_support_block_erase=bool(flags & 0x80),
            can_support_block_write=bool(flags & 0x40),
            max_select_filters_per_query=r.u16("MaxNumSelectFiltersPerQuery"),
        )
        r.end()
        return out


# --------------------------------------------------------------------------------------------
# Reader configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identification:
    TYPE: ClassVar[int] = 218
    id_type: int
    """0 = MAC address, 1 = EPC."""
    reader_id: bytes

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u8(self.id_type), _u16(len(self.reader_id)), self.reader_id)

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        id_type = r.u8("IDType")
        out = cls(id_type, r.u8v("ReaderID"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class AntennaProperties:
    TYPE: ClassVar[int] = 221
    antenna_id: int
    connected: bool = True
    gain_cdbi: int = 0
    """Antenna gain in hundredths of a dBi."""

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE, _u8(_flag(self.connected, 7)), _u16(self.antenna_id), _s16(self.gain_cdbi)
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        connected = bool(r.u8("AntennaConnected") & 0x80)
        antenna = r.u16("AntennaID")
        out = cls(antenna, connected, r.s16("AntennaGain"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class RFReceiver:
    TYPE: ClassVar[int] = 223
    sensitivity_index: int

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.sensitivity_index))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u16("ReceiverSensitivity"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class RFTransmitter:
    TYPE: ClassVar[int] = 224
    hop_table_id: int = 1
    channel_index: int = 1
    transmit_power_index: int = 1

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u16(self.hop_table_id),
            _u16(self.channel_index),
            _u16(self.transmit_power_index),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u16("HopTableID"), r.u16("ChannelIndex"), r.u16("TransmitPower"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class C1G2TagInventoryMask:
    TYPE: ClassVar[int] = 332
    memory_bank: int
    pointer: int
    mask_bits: int
    mask: bytes

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u8((self.memory_bank & 0x3) << 6),
            _u16(self.pointer),
            _u16(self.mask_bits),
            self.mask,
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        bank = r.u8("MB") >> 6
        pointer = r.u16("Pointer")
        bits, mask = r.u1v("TagMask")
        r.end()
        return cls(bank, pointer, bits, mask)


@dataclass(frozen=True, slots=True)
class C1G2Filter:
    TYPE: ClassVar[int] = 331
    mask: C1G2TagInventoryMask
    truncate: int = 0
    extensions: tuple[Parameter, ...] = ()
    """The optional state-aware / state-unaware filter actions, kept verbatim."""

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u8((self.truncate & 0x3) << 6),
            self.mask.encode(),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        truncate = r.u8("T") >> 6
        kids = _Children(r.params(), r.where)
        return cls(kids.one(C1G2TagInventoryMask), truncate, kids.rest())


@dataclass(frozen=True, slots=True)
class C1G2RFControl:
    TYPE: ClassVar[int] = 335
    mode_index: int
    tari: int = 0

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.mode_index), _u16(self.tari))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u16("ModeIndex"), r.u16("Tari"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class C1G2SingulationControl:
    TYPE: ClassVar[int] = 336
    session: int = 0
    tag_population: int = 32
    tag_transit_time_ms: int = 0
    extensions: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u8((self.session & 0x3) << 6),
            _u16(self.tag_population),
            _u32(self.tag_transit_time_ms),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        session = r.u8("Session") >> 6
        population = r.u16("TagPopulation")
        transit = r.u32("TagTransitTime")
        kids = _Children(r.params(), r.where)
        return cls(session, population, transit, kids.rest())


@dataclass(frozen=True, slots=True, kw_only=True)
class C1G2InventoryCommand:
    TYPE: ClassVar[int] = 330
    tag_inventory_state_aware: bool = False
    filters: tuple[C1G2Filter, ...] = ()
    rf_control: C1G2RFControl | None = None
    singulation_control: C1G2SingulationControl | None = None
    extensions: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u8(_flag(self.tag_inventory_state_aware, 7)),
            _encode_all(self.filters),
            _encode_all((self.rf_control, self.singulation_control)),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        aware = bool(r.u8("TagInventoryStateAware") & 0x80)
        kids = _Children(r.params(), r.where)
        return cls(
            tag_inventory_state_aware=aware,
            filters=kids.many(C1G2Filter),
            rf_control=kids.opt(C1G2RFControl),
            singulation_control=kids.opt(C1G2SingulationControl),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AntennaConfiguration:
    TYPE: ClassVar[int] = 222
    antenna_id: int
    rf_receiver: RFReceiver | None = None
    rf_transmitter: RFTransmitter | None = None
    inventory_commands: tuple[C1G2InventoryCommand, ...] = ()
    extensions: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u16(self.antenna_id),
            _encode_all((self.rf_receiver, self.rf_transmitter)),
            _encode_all(self.inventory_commands),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        antenna = r.u16("AntennaID")
        kids = _Children(r.params(), r.where)
        return cls(
            antenna_id=antenna,
            rf_receiver=kids.opt(RFReceiver),
            rf_transmitter=kids.opt(RFTransmitter),
            inventory_commands=kids.many(C1G2InventoryCommand),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True)
class EventNotificationState:
    TYPE: ClassVar[int] = 245
    event_type: int
    enabled: bool

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.event_type), _u8(_flag(self.enabled, 7)))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        event = r.u16("EventType")
        out = cls(event, bool(r.u8("NotificationState") & 0x80))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class ReaderEventNotificationSpec:
    TYPE: ClassVar[int] = 244
    states: tuple[EventNotificationState, ...]

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _encode_all(self.states))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        kids = _Children(r.params(), r.where)
        out = cls(kids.many(EventNotificationState, minimum=1))
        kids.no_rest()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class C1G2EPCMemorySelector:
    TYPE: ClassVar[int] = 348
    enable_crc: bool = False
    enable_pc_bits: bool = False
    enable_xpc_bits: bool = False
    """LLRP 1.1 only."""

    def encode(self) -> bytes:
        flags = (
            _flag(self.enable_crc, 7)
            | _flag(self.enable_pc_bits, 6)
            | _flag(self.enable_xpc_bits, 5)
        )
        return _tlv(self.TYPE, _u8(flags))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        flags = r.u8("flags")
        r.end()
        return cls(
            enable_crc=bool(flags & 0x80),
            enable_pc_bits=bool(flags & 0x40),
            enable_xpc_bits=bool(flags & 0x20),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TagReportContentSelector:
    """Which optional fields each TagReportData carries (the EPC is always there)."""

    TYPE: ClassVar[int] = 238
    rospec_id: bool = False
    spec_index: bool = False
    inventory_parameter_spec_id: bool = False
    antenna_id: bool = False
    channel_index: bool = False
    peak_rssi: bool = False
    first_seen_timestamp: bool = False
    last_seen_timestamp: bool = False
    tag_seen_count: bool = False
    access_spec_id: bool = False
    memory_selectors: tuple[C1G2EPCMemorySelector, ...] = ()

    _BITS: ClassVar[tuple[str, ...]] = (
        "rospec_id",
        "spec_index",
        "inventory_parameter_spec_id",
        "antenna_id",
        "channel_index",
        "peak_rssi",
        "first_seen_timestamp",
        "last_seen_timestamp",
        "tag_seen_count",
        "access_spec_id",
    )

    def encode(self) -> bytes:
        flags = 0
        for i, name in enumerate(self._BITS):
            flags |= _flag(bool(getattr(self, name)), 15 - i)
        return _tlv(self.TYPE, _u16(flags), _encode_all(self.memory_selectors))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        flags = r.u16("flags")
        values: dict[str, Any] = {
            name: bool(flags & (1 << (15 - i))) for i, name in enumerate(cls._BITS)
        }
        kids = _Children(r.params(), r.where)
        out = cls(**values, memory_selectors=kids.many(C1G2EPCMemorySelector))
        kids.no_rest()
        return out

    @property
    def pc_bits(self) -> bool:
        return any(s.enable_pc_bits for s in self.memory_selectors)

    @property
    def crc(self) -> bool:
        return any(s.enable_crc for s in self.memory_selectors)


@dataclass(frozen=True, slots=True, kw_only=True)
class ROReportSpec:
    TYPE: ClassVar[int] = 237
    trigger: int = ROReportTriggerType.UPON_N_TAGS_OR_END_OF_AISPEC
    n: int = 0
    selector: TagReportContentSelector = field(default_factory=TagReportContentSelector)
    extensions: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u8(self.trigger),
            _u16(self.n),
            self.selector.encode(),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        trigger = r.u8("ROReportTrigger")
        n = r.u16("N")
        kids = _Children(r.params(), r.where)
        return cls(
            trigger=trigger,
            n=n,
            selector=kids.one(TagReportContentSelector),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True)
class AccessReportSpec:
    TYPE: ClassVar[int] = 239
    trigger: int = 0

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u8(self.trigger))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u8("AccessReportTrigger"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class LLRPConfigurationStateValue:
    TYPE: ClassVar[int] = 217
    value: int

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u32(self.value))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u32("LLRPConfigurationStateValue"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class KeepaliveSpec:
    TYPE: ClassVar[int] = 220
    periodic: bool = False
    interval_ms: int = 0

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u8(1 if self.periodic else 0), _u32(self.interval_ms))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        trigger = r.u8("KeepaliveTriggerType")
        if trigger > 1:
            raise ProtocolError(f"{r.where}: KeepaliveTriggerType {trigger} is not 0 or 1")
        out = cls(trigger == 1, r.u32("PeriodicTriggerValue"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class GPIPortCurrentState:
    TYPE: ClassVar[int] = 225
    port: int
    enabled: bool = True
    state: int = 0
    """0 low, 1 high, 2 unknown."""

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.port), _u8(_flag(self.enabled, 7)), _u8(self.state))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        port = r.u16("GPIPortNum")
        enabled = bool(r.u8("Config") & 0x80)
        out = cls(port, enabled, r.u8("State"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class GPOWriteData:
    TYPE: ClassVar[int] = 219
    port: int
    data: bool = False

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.port), _u8(_flag(self.data, 7)))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        port = r.u16("GPOPortNumber")
        out = cls(port, bool(r.u8("GPOData") & 0x80))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class EventsAndReports:
    TYPE: ClassVar[int] = 226
    hold_upon_reconnect: bool = False

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u8(_flag(self.hold_upon_reconnect, 7)))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(bool(r.u8("HoldEventsAndReportsUponReconnect") & 0x80))
        r.end()
        return out


# --------------------------------------------------------------------------------------------
# ROSpec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UTCTimestamp:
    TYPE: ClassVar[int] = 128
    microseconds: int

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u64(self.microseconds))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u64("Microseconds"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class Uptime:
    TYPE: ClassVar[int] = 129
    microseconds: int

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u64(self.microseconds))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u64("Microseconds"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class PeriodicTriggerValue:
    TYPE: ClassVar[int] = 180
    offset_ms: int
    period_ms: int
    utc_start: UTCTimestamp | None = None

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE, _u32(self.offset_ms), _u32(self.period_ms), _encode_all((self.utc_start,))
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        offset = r.u32("Offset")
        period = r.u32("Period")
        kids = _Children(r.params(), r.where)
        out = cls(offset, period, kids.opt(UTCTimestamp))
        kids.no_rest()
        return out


@dataclass(frozen=True, slots=True)
class GPITriggerValue:
    TYPE: ClassVar[int] = 181
    port: int
    event: bool
    timeout_ms: int

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.port), _u8(_flag(self.event, 7)), _u32(self.timeout_ms))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        port = r.u16("GPIPortNum")
        event = bool(r.u8("GPIEvent") & 0x80)
        out = cls(port, event, r.u32("Timeout"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class ROSpecStartTrigger:
    TYPE: ClassVar[int] = 179
    trigger: int = ROSpecStartTriggerType.NULL
    periodic: PeriodicTriggerValue | None = None
    gpi: GPITriggerValue | None = None

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u8(self.trigger), _encode_all((self.periodic, self.gpi)))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        trigger = r.u8("ROSpecStartTriggerType")
        kids = _Children(r.params(), r.where)
        out = cls(trigger, kids.opt(PeriodicTriggerValue), kids.opt(GPITriggerValue))
        kids.no_rest()
        if trigger == ROSpecStartTriggerType.PERIODIC and out.periodic is None:
            raise ProtocolError(f"{r.where}: Periodic trigger without PeriodicTriggerValue")
        return out


@dataclass(frozen=True, slots=True)
class ROSpecStopTrigger:
    TYPE: ClassVar[int] = 182
    trigger: int = ROSpecStopTriggerType.NULL
    duration_ms: int = 0
    gpi: GPITriggerValue | None = None

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u8(self.trigger), _u32(self.duration_ms), _encode_all((self.gpi,)))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        trigger = r.u8("ROSpecStopTriggerType")
        duration = r.u32("DurationTriggerValue")
        kids = _Children(r.params(), r.where)
        out = cls(trigger, duration, kids.opt(GPITriggerValue))
        kids.no_rest()
        return out


@dataclass(frozen=True, slots=True)
class ROBoundarySpec:
    TYPE: ClassVar[int] = 178
    start: ROSpecStartTrigger = field(default_factory=ROSpecStartTrigger)
    stop: ROSpecStopTrigger = field(default_factory=ROSpecStopTrigger)

    def encode(self) -> bytes:
        return _tlv(self.TYPE, self.start.encode(), self.stop.encode())

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        kids = _Children(r.params(), r.where)
        out = cls(kids.one(ROSpecStartTrigger), kids.one(ROSpecStopTrigger))
        kids.no_rest()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TagObservationTrigger:
    TYPE: ClassVar[int] = 185
    trigger: int = TagObservationTriggerType.UPON_SEEING_N_TAGS_OR_TIMEOUT
    number_of_tags: int = 0
    number_of_attempts: int = 0
    t_ms: int = 0
    timeout_ms: int = 0

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u8(self.trigger),
            _u8(0),
            _u16(self.number_of_tags),
            _u16(self.number_of_attempts),
            _u16(self.t_ms),
            _u32(self.timeout_ms),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        trigger = r.u8("TriggerType")
        r.u8("Reserved")
        out = cls(
            trigger=trigger,
            number_of_tags=r.u16("NumberOfTags"),
            number_of_attempts=r.u16("NumberOfAttempts"),
            t_ms=r.u16("T"),
            timeout_ms=r.u32("Timeout"),
        )
        r.end()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class AISpecStopTrigger:
    TYPE: ClassVar[int] = 184
    trigger: int = AISpecStopTriggerType.NULL
    duration_ms: int = 0
    gpi: GPITriggerValue | None = None
    tag_observation: TagObservationTrigger | None = None

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u8(self.trigger),
            _u32(self.duration_ms),
            _encode_all((self.gpi, self.tag_observation)),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        trigger = r.u8("AISpecStopTriggerType")
        duration = r.u32("DurationTrigger")
        kids = _Children(r.params(), r.where)
        out = cls(
            trigger=trigger,
            duration_ms=duration,
            gpi=kids.opt(GPITriggerValue),
            tag_observation=kids.opt(TagObservationTrigger),
        )
        kids.no_rest()
        if trigger == AISpecStopTriggerType.TAG_OBSERVATION and out.tag_observation is None:
            raise ProtocolError(f"{r.where}: Tag_Observation trigger without its parameter")
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class InventoryParameterSpec:
    TYPE: ClassVar[int] = 186
    spec_id: int
    protocol_id: int = 1
    antenna_configurations: tuple[AntennaConfiguration, ...] = ()
    extensions: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u16(self.spec_id),
            _u8(self.protocol_id),
            _encode_all(self.antenna_configurations),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        spec_id = r.u16("InventoryParameterSpecID")
        protocol = r.u8("ProtocolID")
        kids = _Children(r.params(), r.where)
        return cls(
            spec_id=spec_id,
            protocol_id=protocol,
            antenna_configurations=kids.many(AntennaConfiguration),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AISpec:
    TYPE: ClassVar[int] = 183
    antenna_ids: tuple[int, ...] = (0,)
    """0 means every antenna of the reader."""
    stop: AISpecStopTrigger = field(default_factory=AISpecStopTrigger)
    inventory_parameter_specs: tuple[InventoryParameterSpec, ...] = ()
    extensions: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u16(len(self.antenna_ids)),
            b"".join(_u16(a) for a in self.antenna_ids),
            self.stop.encode(),
            _encode_all(self.inventory_parameter_specs),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        antennas = r.u16v("AntennaIDs")
        kids = _Children(r.params(), r.where)
        return cls(
            antenna_ids=antennas,
            stop=kids.one(AISpecStopTrigger),
            inventory_parameter_specs=kids.many(InventoryParameterSpec, minimum=1),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ROSpec:
    TYPE: ClassVar[int] = 177
    rospec_id: int
    priority: int = 0
    current_state: int = ROSpecState.DISABLED
    boundary: ROBoundarySpec = field(default_factory=ROBoundarySpec)
    ai_specs: tuple[AISpec, ...] = ()
    report_spec: ROReportSpec | None = None
    extensions: tuple[Parameter, ...] = ()
    """Other spec parameters (RFSurveySpec, LoopSpec, Custom), kept verbatim."""

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u32(self.rospec_id),
            _u8(self.priority),
            _u8(self.current_state),
            self.boundary.encode(),
            _encode_all(self.ai_specs),
            _encode_all(self.extensions),
            _encode_all((self.report_spec,)),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        rospec_id = r.u32("ROSpecID")
        priority = r.u8("Priority")
        state = r.u8("CurrentState")
        kids = _Children(r.params(), r.where)
        out = cls(
            rospec_id=rospec_id,
            priority=priority,
            current_state=state,
            boundary=kids.one(ROBoundarySpec),
            ai_specs=kids.many(AISpec),
            report_spec=kids.opt(ROReportSpec),
            extensions=kids.rest(),
        )
        if not out.ai_specs and not out.extensions:
            raise ProtocolError(f"{r.where}: missing SpecParameter (AISpec)")
        return out


# --------------------------------------------------------------------------------------------
# Reports and events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EPCData:
    TYPE: ClassVar[int] = 241
    bits: int
    epc: bytes

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.bits), self.epc)

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        bits, epc = r.u1v("EPC")
        r.end()
        return cls(bits, epc)


@dataclass(frozen=True, slots=True, kw_only=True)
class TagReportData:
    """One tag report entry. Only ``epc`` is mandatory; the selector decides the rest."""

    TYPE: ClassVar[int] = 240
    epc: bytes
    epc_bits: int | None = None
    """Bit length of the EPC; None means ``8 * len(epc)``."""
    rospec_id: int | None = None
    spec_index: int | None = None
    inventory_parameter_spec_id: int | None = None
    antenna_id: int | None = None
    peak_rssi: int | None = None
    """dBm, signed byte."""
    channel_index: int | None = None
    first_seen_utc_us: int | None = None
    first_seen_uptime_us: int | None = None
    last_seen_utc_us: int | None = None
    last_seen_uptime_us: int | None = None
    tag_seen_count: int | None = None
    c1g2_pc: int | None = None
    c1g2_crc: int | None = None
    access_spec_id: int | None = None
    extensions: tuple[Parameter, ...] = ()

    # (attribute, TV type) in the order the spec lists them after the EPC
    _TV_FIELDS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("rospec_id", TvType.ROSPEC_ID),
        ("spec_index", TvType.SPEC_INDEX),
        ("inventory_parameter_spec_id", TvType.INVENTORY_PARAMETER_SPEC_ID),
        ("antenna_id", TvType.ANTENNA_ID),
        ("peak_rssi", TvType.PEAK_RSSI),
        ("channel_index", TvType.CHANNEL_INDEX),
        ("first_seen_utc_us", TvType.FIRST_SEEN_UTC),
        ("first_seen_uptime_us", TvType.FIRST_SEEN_UPTIME),
        ("last_seen_utc_us", TvType.LAST_SEEN_UTC),
        ("last_seen_uptime_us", TvType.LAST_SEEN_UPTIME),
        ("tag_seen_count", TvType.TAG_SEEN_COUNT),
        ("c1g2_pc", TvType.C1G2_PC),
        ("c1g2_crc", TvType.C1G2_CRC),
        ("access_spec_id", TvType.ACCESS_SPEC_ID),
    )

    @property
    def epc_hex(self) -> str:
        return self.epc.hex().upper()

    def encode(self) -> bytes:
        # the hot path of a busy reader (one call per tag per report): plain struct packing
        bits = 8 * len(self.epc) if self.epc_bits is None else self.epc_bits
        if bits == 96 and len(self.epc) == 12:
            parts = [_EPC96_TAG, self.epc]
        else:
            parts = [EPCData(bits, self.epc).encode()]
        for name, packer, tag in _TV_PACKERS:
            value = getattr(self, name)
            if value is not None:
                parts.append(packer.pack(tag, value))
        if self.extensions:
            parts.append(_encode_all(self.extensions))
        return _tlv(self.TYPE, *parts)

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        epc: bytes | None = None
        epc_bits: int | None = None
        values: dict[str, Any] = {}
        names = {tv: name for name, tv in cls._TV_FIELDS}
        extensions: list[Parameter] = []
        for p in r.params():
            if isinstance(p, TvParameter) and p.type == TvType.EPC_96:
                if epc is not None:
                    raise ProtocolError(f"{r.where}: more than one EPC")
                epc, epc_bits = p.value, None
            elif isinstance(p, EPCData):
                if epc is not None:
                    raise ProtocolError(f"{r.where}: more than one EPC")
                epc = p.epc
                epc_bits = None if p.bits == 8 * len(p.epc) else p.bits
            elif isinstance(p, TvParameter) and p.type in names:
                name = names[p.type]
                if name in values:
                    raise ProtocolError(f"{r.where}: duplicate {TvType(p.type).name}")
                values[name] = p.as_int()
            else:
                extensions.append(p)
        if epc is None:
            raise ProtocolError(f"{r.where}: missing EPC (EPCData or EPC-96)")
        return cls(epc=epc, epc_bits=epc_bits, extensions=tuple(extensions), **values)


_EPC96_TAG = bytes([0x80 | TvType.EPC_96])
_TV_STRUCTS = {
    1: struct.Struct("!BB"),
    2: struct.Struct("!BH"),
    4: struct.Struct("!BI"),
    8: struct.Struct("!BQ"),
}
# (TagReportData attribute, struct packing the TV type byte and the value, TV type byte)
_TV_PACKERS: tuple[tuple[str, struct.Struct, int], ...] = tuple(
    (
        name,
        struct.Struct("!Bb") if tv == TvType.PEAK_RSSI else _TV_STRUCTS[_TV_LENGTHS[tv]],
        0x80 | tv,
    )
    for name, tv in TagReportData._TV_FIELDS
)


@dataclass(frozen=True, slots=True)
class ConnectionAttemptEvent:
    TYPE: ClassVar[int] = 256
    status: int = ConnectionAttemptStatus.SUCCESS

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.status))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        out = cls(r.u16("Status"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class ConnectionCloseEvent:
    TYPE: ClassVar[int] = 257

    def encode(self) -> bytes:
        return _tlv(self.TYPE)

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        r.end()
        return cls()


@dataclass(frozen=True, slots=True)
class ROSpecEvent:
    TYPE: ClassVar[int] = 249
    event: int
    """0 start, 1 end, 2 preemption."""
    rospec_id: int
    preempting_rospec_id: int = 0

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE, _u8(self.event), _u32(self.rospec_id), _u32(self.preempting_rospec_id)
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        event = r.u8("EventType")
        rospec_id = r.u32("ROSpecID")
        out = cls(event, rospec_id, r.u32("PreemptingROSpecID"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class AISpecEvent:
    TYPE: ClassVar[int] = 254
    rospec_id: int
    spec_index: int
    extensions: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return _tlv(
            self.TYPE,
            _u8(0),  # End_Of_AISpec, the only event type
            _u32(self.rospec_id),
            _u16(self.spec_index),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        r.u8("EventType")
        rospec_id = r.u32("ROSpecID")
        spec_index = r.u16("SpecIndex")
        return cls(rospec_id, spec_index, tuple(r.params()))


@dataclass(frozen=True, slots=True)
class GPIEvent:
    TYPE: ClassVar[int] = 248
    port: int
    event: bool
    """The new state of the input: True high, False low."""

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u16(self.port), _u8(_flag(self.event, 7)))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        port = r.u16("GPIPortNumber")
        out = cls(port, bool(r.u8("GPIEvent") & 0x80))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class AntennaEvent:
    TYPE: ClassVar[int] = 255
    connected: bool
    antenna_id: int

    def encode(self) -> bytes:
        return _tlv(self.TYPE, _u8(1 if self.connected else 0), _u16(self.antenna_id))

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        connected = r.u8("EventType") == 1
        out = cls(connected, r.u16("AntennaID"))
        r.end()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderEventNotificationData:
    TYPE: ClassVar[int] = 246
    timestamp_us: int
    uptime: bool = False
    """True when ``timestamp_us`` is an Uptime, not a UTCTimestamp."""
    rospec_event: ROSpecEvent | None = None
    aispec_event: AISpecEvent | None = None
    antenna_event: AntennaEvent | None = None
    connection_attempt: ConnectionAttemptEvent | None = None
    connection_close: ConnectionCloseEvent | None = None
    extensions: tuple[Parameter, ...] = ()
    gpi_event: GPIEvent | None = None

    def encode(self) -> bytes:
        stamp = Uptime(self.timestamp_us) if self.uptime else UTCTimestamp(self.timestamp_us)
        return _tlv(
            self.TYPE,
            stamp.encode(),
            _encode_all(
                (
                    self.gpi_event,
                    self.rospec_event,
                    self.aispec_event,
                    self.antenna_event,
                    self.connection_attempt,
                    self.connection_close,
                )
            ),
            _encode_all(self.extensions),
        )

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        kids = _Children(r.params(), r.where)
        utc = kids.opt(UTCTimestamp)
        up = kids.opt(Uptime)
        if (utc is None) == (up is None):
            raise ProtocolError(f"{r.where}: needs exactly one of UTCTimestamp or Uptime")
        stamp = utc.microseconds if utc is not None else up.microseconds if up else 0
        return cls(
            timestamp_us=stamp,
            uptime=up is not None,
            rospec_event=kids.opt(ROSpecEvent),
            aispec_event=kids.opt(AISpecEvent),
            antenna_event=kids.opt(AntennaEvent),
            connection_attempt=kids.opt(ConnectionAttemptEvent),
            connection_close=kids.opt(ConnectionCloseEvent),
            gpi_event=kids.opt(GPIEvent),
            extensions=kids.rest(),
        )


Parameter = (
    TvParameter
    | RawParameter
    | CustomParameter
    | FieldError
    | ParameterError
    | LLRPStatus
    | ReceiveSensitivityTableEntry
    | PerAntennaAirProtocol
    | GPIOCapabilities
    | GeneralDeviceCapabilities
    | LLRPCapabilities
    | TransmitPowerLevelTableEntry
    | FrequencyHopTable
    | FixedFrequencyTable
    | FrequencyInformation
    | C1G2UHFRFModeTableEntry
    | C1G2UHFRFModeTable
    | UHFBandCapabilities
    | RegulatoryCapabilities
    | C1G2LLRPCapabilities
    | Identification
    | AntennaProperties
    | RFReceiver
    | RFTransmitter
    | C1G2TagInventoryMask
    | C1G2Filter
    | C1G2RFControl
    | C1G2SingulationControl
    | C1G2InventoryCommand
    | AntennaConfiguration
    | EventNotificationState
    | ReaderEventNotificationSpec
    | C1G2EPCMemorySelector
    | TagReportContentSelector
    | ROReportSpec
    | AccessReportSpec
    | LLRPConfigurationStateValue
    | KeepaliveSpec
    | GPIPortCurrentState
    | GPOWriteData
    | EventsAndReports
    | UTCTimestamp
    | Uptime
    | PeriodicTriggerValue
    | GPITriggerValue
    | ROSpecStartTrigger
    | ROSpecStopTrigger
    | ROBoundarySpec
    | TagObservationTrigger
    | AISpecStopTrigger
    | InventoryParameterSpec
    | AISpec
    | ROSpec
    | EPCData
    | TagReportData
    | ConnectionAttemptEvent
    | ConnectionCloseEvent
    | ROSpecEvent
    | AISpecEvent
    | AntennaEvent
    | GPIEvent
    | ReaderEventNotificationData
)


class _ParameterClass(Protocol):
    """What the decoder registry needs from a modelled parameter class (the class object)."""

    @property
    def TYPE(self) -> int: ...

    def _decode(self, r: _Reader) -> Parameter: ...


_MODELLED: tuple[_ParameterClass, ...] = (
    CustomParameter,
    FieldError,
    ParameterError,
    LLRPStatus,
    ReceiveSensitivityTableEntry,
    PerAntennaAirProtocol,
    GPIOCapabilities,
    GeneralDeviceCapabilities,
    LLRPCapabilities,
    TransmitPowerLevelTableEntry,
    FrequencyHopTable,
    FixedFrequencyTable,
    FrequencyInformation,
    C1G2UHFRFModeTableEntry,
    C1G2UHFRFModeTable,
    UHFBandCapabilities,
    RegulatoryCapabilities,
    C1G2LLRPCapabilities,
    Identification,
    AntennaProperties,
    RFReceiver,
    RFTransmitter,
    C1G2TagInventoryMask,
    C1G2Filter,
    C1G2RFControl,
    C1G2SingulationControl,
    C1G2InventoryCommand,
    AntennaConfiguration,
    EventNotificationState,
    ReaderEventNotificationSpec,
    C1G2EPCMemorySelector,
    TagReportContentSelector,
    ROReportSpec,
    AccessReportSpec,
    LLRPConfigurationStateValue,
    KeepaliveSpec,
    GPIPortCurrentState,
    GPOWriteData,
    EventsAndReports,
    UTCTimestamp,
    Uptime,
    PeriodicTriggerValue,
    GPITriggerValue,
    ROSpecStartTrigger,
    ROSpecStopTrigger,
    ROBoundarySpec,
    TagObservationTrigger,
    AISpecStopTrigger,
    InventoryParameterSpec,
    AISpec,
    ROSpec,
    EPCData,
    TagReportData,
    ConnectionAttemptEvent,
    ConnectionCloseEvent,
    ROSpecEvent,
    AISpecEvent,
    AntennaEvent,
    GPIEvent,
    ReaderEventNotificationData,
)
_TLV_DECODERS = {cls.TYPE: cls for cls in _MODELLED}


def parameter_name(param_type: int) -> str:
    cls = _TLV_DECODERS.get(param_type)
    # protocols cannot require a class's __name__, hence getattr
    return str(getattr(cls, "__name__", "")) or f"Parameter{param_type}"


def _decode_parameter(r: _Reader, counts: dict[str, int]) -> Parameter:
    first = r.take(1, "parameter type")[0]
    if first & 0x80:
        tv_type = first & 0x7F
        length = _TV_LENGTHS.get(tv_type)
        if length is None:
            raise ProtocolError(f"{r.where}: unknown TV parameter type {tv_type}")
        return TvParameter(tv_type, r.take(length, f"TV parameter {tv_type}"))
    second = r.take(1, "parameter type")[0]
    param_type = ((first << 8) | second) & 0x3FF
    name = parameter_name(param_type)
    length = r.u16(f"{name} length")
    if length < _TLV_HEADER.size:
        raise ProtocolError(f"{r.where}: {name} length {length} is below its 4-byte header")
    body_len = length - _TLV_HEADER.size
    if body_len > r.remaining:
        raise ProtocolError(
            f"{r.where}: {name} length {length} overruns its container "
            f"({r.remaining + _TLV_HEADER.size} bytes left)"
        )
    index = counts.get(name, 0)
    counts[name] = index + 1
    where = f"{r.where}/{name}" + (f"[{index}]" if index else "")
    child = _Reader(r.take(body_len, name), where)
    decoder = _TLV_DECODERS.get(param_type)
    if decoder is None:
        return RawParameter(param_type, child.rest())
    return decoder._decode(child)


_P = TypeVar("_P")


class _Children:
    """Sub-parameters of one container, claimed by class; what is left is ``rest()``."""

    __slots__ = ("_items", "_where")

    def __init__(self, items: list[Parameter], where: str) -> None:
        self._items: list[Parameter | None] = list(items)
        self._where = where

    def _claim(self, cls: type[_P]) -> list[_P]:
        found: list[_P] = []
        for i, item in enumerate(self._items):
            if isinstance(item, cls):
                found.append(item)
                self._items[i] = None
        return found

    def many(self, cls: type[_P], *, minimum: int = 0) -> tuple[_P, ...]:
        found = self._claim(cls)
        if len(found) < minimum:
            raise ProtocolError(f"{self._where}: missing {cls.__name__}")
        return tuple(found)

    def opt(self, cls: type[_P]) -> _P | None:
        found = self._claim(cls)
        if len(found) > 1:
            raise ProtocolError(f"{self._where}: duplicate {cls.__name__}")
        return found[0] if found else None

    def one(self, cls: type[_P]) -> _P:
        value = self.opt(cls)
        if value is None:
            raise ProtocolError(f"{self._where}: missing {cls.__name__}")
        return value

    def rest(self) -> tuple[Parameter, ...]:
        return tuple(p for p in self._items if p is not None)

    def no_rest(self) -> None:
        for p in self._items:
            if p is None:
                continue
            if isinstance(p, CustomParameter | RawParameter):
                continue  # vendor extensions and unknown parameters are tolerated, dropped
            raise ProtocolError(f"{self._where}: unexpected {type(p).__name__}")


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LlrpMessage:
    """Base of every message: ``msg_id`` and ``version`` come from / go to the header."""

    TYPE: ClassVar[int] = -1
    msg_id: int = 0
    version: int = 1
    extensions: tuple[Parameter, ...] = ()
    """Parameters this codec does not model (vendor extensions), kept verbatim."""

    @property
    def name(self) -> str:
        return message_name(self.TYPE)

    def _body(self) -> bytes:
        return _encode_all(self.extensions)

    def encode(self) -> bytes:
        return encode_frame(self.TYPE, self._body(), msg_id=self.msg_id, version=self.version)

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        kids = _Children(r.params(), r.where)
        return cls(msg_id=msg_id, version=version, extensions=kids.rest())


def encode_frame(msg_type: int, body: bytes, *, msg_id: int = 0, version: int = 1) -> bytes:
    """Header + body. Also used by fault injection to build deliberately odd frames."""
    length = HEADER_LENGTH + len(body)
    return _HEADER.pack(((version & 0x7) << 10) | (msg_type & 0x3FF), length, msg_id) + body


# Messages whose body is parameters only (and that model none of them)
@dataclass(frozen=True, slots=True, kw_only=True)
class Keepalive(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.KEEPALIVE


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepaliveAck(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.KEEPALIVE_ACK


@dataclass(frozen=True, slots=True, kw_only=True)
class EnableEventsAndReports(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.ENABLE_EVENTS_AND_REPORTS


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseConnection(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.CLOSE_CONNECTION


@dataclass(frozen=True, slots=True, kw_only=True)
class GetReport(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.GET_REPORT


@dataclass(frozen=True, slots=True, kw_only=True)
class GetROSpecs(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.GET_ROSPECS


@dataclass(frozen=True, slots=True, kw_only=True)
class GetAccessSpecs(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.GET_ACCESSSPECS


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusResponse(LlrpMessage):
    """Base of the responses whose body is one LLRPStatus."""

    status: LLRPStatus = field(default_factory=LLRPStatus)

    def _body(self) -> bytes:
        return self.status.encode() + _encode_all(self.extensions)

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        kids = _Children(r.params(), r.where)
        return cls(
            msg_id=msg_id, version=version, status=kids.one(LLRPStatus), extensions=kids.rest()
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseConnectionResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.CLOSE_CONNECTION_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class SetReaderConfigResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.SET_READER_CONFIG_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class AddROSpecResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.ADD_ROSPEC_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteROSpecResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.DELETE_ROSPEC_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class StartROSpecResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.START_ROSPEC_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class StopROSpecResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.STOP_ROSPEC_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class EnableROSpecResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.ENABLE_ROSPEC_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class DisableROSpecResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.DISABLE_ROSPEC_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class AddAccessSpecResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.ADD_ACCESSSPEC_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteAccessSpecResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.DELETE_ACCESSSPEC_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class EnableAccessSpecResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.ENABLE_ACCESSSPEC_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class DisableAccessSpecResponse(StatusResponse):
    TYPE: ClassVar[int] = MessageType.DISABLE_ACCESSSPEC_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class GetAccessSpecsResponse(StatusResponse):
    """AccessSpecs are not modelled; any returned are kept in ``extensions``."""

    TYPE: ClassVar[int] = MessageType.GET_ACCESSSPECS_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage(StatusResponse):
    TYPE: ClassVar[int] = MessageType.ERROR_MESSAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class SpecIdRequest(LlrpMessage):
    """Base of the requests whose body is one u32 spec ID (0 = all, where allowed)."""

    spec_id: int = 0

    def _body(self) -> bytes:
        return _u32(self.spec_id) + _encode_all(self.extensions)

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        spec_id = r.u32("spec ID")
        kids = _Children(r.params(), r.where)
        return cls(msg_id=msg_id, version=version, spec_id=spec_id, extensions=kids.rest())


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteROSpec(SpecIdRequest):
    TYPE: ClassVar[int] = MessageType.DELETE_ROSPEC


@dataclass(frozen=True, slots=True, kw_only=True)
class StartROSpec(SpecIdRequest):
    TYPE: ClassVar[int] = MessageType.START_ROSPEC


@dataclass(frozen=True, slots=True, kw_only=True)
class StopROSpec(SpecIdRequest):
    TYPE: ClassVar[int] = MessageType.STOP_ROSPEC


@dataclass(frozen=True, slots=True, kw_only=True)
class EnableROSpec(SpecIdRequest):
    TYPE: ClassVar[int] = MessageType.ENABLE_ROSPEC


@dataclass(frozen=True, slots=True, kw_only=True)
class DisableROSpec(SpecIdRequest):
    TYPE: ClassVar[int] = MessageType.DISABLE_ROSPEC


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteAccessSpec(SpecIdRequest):
    TYPE: ClassVar[int] = MessageType.DELETE_ACCESSSPEC


@dataclass(frozen=True, slots=True, kw_only=True)
class EnableAccessSpec(SpecIdRequest):
    TYPE: ClassVar[int] = MessageType.ENABLE_ACCESSSPEC


@dataclass(frozen=True, slots=True, kw_only=True)
class DisableAccessSpec(SpecIdRequest):
    TYPE: ClassVar[int] = MessageType.DISABLE_ACCESSSPEC


@dataclass(frozen=True, slots=True, kw_only=True)
class AddAccessSpec(LlrpMessage):
    """The AccessSpec is not modelled; it is kept in ``extensions``."""

    TYPE: ClassVar[int] = MessageType.ADD_ACCESSSPEC


@dataclass(frozen=True, slots=True, kw_only=True)
class GetReaderCapabilities(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.GET_READER_CAPABILITIES
    requested: int = CapabilitiesRequest.ALL

    def _body(self) -> bytes:
        return _u8(self.requested) + _encode_all(self.extensions)

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        requested = r.u8("RequestedData")
        kids = _Children(r.params(), r.where)
        return cls(msg_id=msg_id, version=version, requested=requested, extensions=kids.rest())


@dataclass(frozen=True, slots=True, kw_only=True)
class GetReaderCapabilitiesResponse(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.GET_READER_CAPABILITIES_RESPONSE
    status: LLRPStatus = field(default_factory=LLRPStatus)
    general: GeneralDeviceCapabilities | None = None
    llrp: LLRPCapabilities | None = None
    regulatory: RegulatoryCapabilities | None = None
    air_protocol: C1G2LLRPCapabilities | None = None

    def _body(self) -> bytes:
        return self.status.encode() + _encode_all(
            (self.general, self.llrp, self.regulatory, self.air_protocol, *self.extensions)
        )

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        kids = _Children(r.params(), r.where)
        return cls(
            msg_id=msg_id,
            version=version,
            status=kids.one(LLRPStatus),
            general=kids.opt(GeneralDeviceCapabilities),
            llrp=kids.opt(LLRPCapabilities),
            regulatory=kids.opt(RegulatoryCapabilities),
            air_protocol=kids.opt(C1G2LLRPCapabilities),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GetReaderConfig(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.GET_READER_CONFIG
    antenna_id: int = 0
    requested: int = ConfigRequest.ALL
    gpi_port: int = 0
    gpo_port: int = 0

    def _body(self) -> bytes:
        return (
            _u16(self.antenna_id)
            + _u8(self.requested)
            + _u16(self.gpi_port)
            + _u16(self.gpo_port)
            + _encode_all(self.extensions)
        )

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        antenna = r.u16("AntennaID")
        requested = r.u8("RequestedData")
        gpi = r.u16("GPIPortNum")
        gpo = r.u16("GPOPortNum")
        kids = _Children(r.params(), r.where)
        return cls(
            msg_id=msg_id,
            version=version,
            antenna_id=antenna,
            requested=requested,
            gpi_port=gpi,
            gpo_port=gpo,
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _ReaderConfigFields(LlrpMessage):
    """The parameters GET_READER_CONFIG_RESPONSE and SET_READER_CONFIG share."""

    event_spec: ReaderEventNotificationSpec | None = None
    antenna_properties: tuple[AntennaProperties, ...] = ()
    antenna_configurations: tuple[AntennaConfiguration, ...] = ()
    report_spec: ROReportSpec | None = None
    access_report_spec: AccessReportSpec | None = None
    keepalive: KeepaliveSpec | None = None
    gpo_write_data: tuple[GPOWriteData, ...] = ()
    gpi_port_states: tuple[GPIPortCurrentState, ...] = ()
    events_and_reports: EventsAndReports | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SetReaderConfig(_ReaderConfigFields):
    TYPE: ClassVar[int] = MessageType.SET_READER_CONFIG
    reset_to_factory_defaults: bool = False

    def _body(self) -> bytes:
        return b"".join(
            (
                _u8(_flag(self.reset_to_factory_defaults, 7)),
                _encode_all((self.event_spec,)),
                _encode_all(self.antenna_properties),
                _encode_all(self.antenna_configurations),
                _encode_all((self.report_spec, self.access_report_spec, self.keepalive)),
                _encode_all(self.gpo_write_data),
                _encode_all(self.gpi_port_states),
                _encode_all((self.events_and_reports,)),
                _encode_all(self.extensions),
            )
        )

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        reset = bool(r.u8("ResetToFactoryDefault") & 0x80)
        kids = _Children(r.params(), r.where)
        return cls(
            msg_id=msg_id,
            version=version,
            reset_to_factory_defaults=reset,
            event_spec=kids.opt(ReaderEventNotificationSpec),
            antenna_properties=kids.many(AntennaProperties),
            antenna_configurations=kids.many(AntennaConfiguration),
            report_spec=kids.opt(ROReportSpec),
            access_report_spec=kids.opt(AccessReportSpec),
            keepalive=kids.opt(KeepaliveSpec),
            gpo_write_data=kids.many(GPOWriteData),
            gpi_port_states=kids.many(GPIPortCurrentState),
            events_and_reports=kids.opt(EventsAndReports),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GetReaderConfigResponse(_ReaderConfigFields):
    TYPE: ClassVar[int] = MessageType.GET_READER_CONFIG_RESPONSE
    status: LLRPStatus = field(default_factory=LLRPStatus)
    identification: Identification | None = None
    configuration_state: LLRPConfigurationStateValue | None = None

    def _body(self) -> bytes:
        return b"".join(
            (
                self.status.encode(),
                _encode_all((self.identification,)),
                _encode_all(self.antenna_properties),
                _encode_all(self.antenna_configurations),
                _encode_all(
                    (
                        self.event_spec,
                        self.report_spec,
                        self.access_report_spec,
                        self.configuration_state,
                        self.keepalive,
                    )
                ),
                _encode_all(self.gpi_port_states),
                _encode_all(self.gpo_write_data),
                _encode_all((self.events_and_reports,)),
                _encode_all(self.extensions),
            )
        )

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        kids = _Children(r.params(), r.where)
        return cls(
            msg_id=msg_id,
            version=version,
            status=kids.one(LLRPStatus),
            identification=kids.opt(Identification),
            antenna_properties=kids.many(AntennaProperties),
            antenna_configurations=kids.many(AntennaConfiguration),
            event_spec=kids.opt(ReaderEventNotificationSpec),
            report_spec=kids.opt(ROReportSpec),
            access_report_spec=kids.opt(AccessReportSpec),
            configuration_state=kids.opt(LLRPConfigurationStateValue),
            keepalive=kids.opt(KeepaliveSpec),
            gpi_port_states=kids.many(GPIPortCurrentState),
            gpo_write_data=kids.many(GPOWriteData),
            events_and_reports=kids.opt(EventsAndReports),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AddROSpec(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.ADD_ROSPEC
    rospec: ROSpec

    def _body(self) -> bytes:
        return self.rospec.encode() + _encode_all(self.extensions)

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        kids = _Children(r.params(), r.where)
        return cls(msg_id=msg_id, version=version, rospec=kids.one(ROSpec), extensions=kids.rest())


@dataclass(frozen=True, slots=True, kw_only=True)
class GetROSpecsResponse(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.GET_ROSPECS_RESPONSE
    status: LLRPStatus = field(default_factory=LLRPStatus)
    rospecs: tuple[ROSpec, ...] = ()

    def _body(self) -> bytes:
        return self.status.encode() + _encode_all((*self.rospecs, *self.extensions))

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        kids = _Children(r.params(), r.where)
        return cls(
            msg_id=msg_id,
            version=version,
            status=kids.one(LLRPStatus),
            rospecs=kids.many(ROSpec),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ROAccessReport(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.RO_ACCESS_REPORT
    tags: tuple[TagReportData, ...] = ()

    def _body(self) -> bytes:
        return _encode_all((*self.tags, *self.extensions))

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        kids = _Children(r.params(), r.where)
        return cls(
            msg_id=msg_id, version=version, tags=kids.many(TagReportData), extensions=kids.rest()
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderEventNotification(LlrpMessage):
    TYPE: ClassVar[int] = MessageType.READER_EVENT_NOTIFICATION
    data: ReaderEventNotificationData

    def _body(self) -> bytes:
        return self.data.encode() + _encode_all(self.extensions)

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        kids = _Children(r.params(), r.where)
        return cls(
            msg_id=msg_id,
            version=version,
            data=kids.one(ReaderEventNotificationData),
            extensions=kids.rest(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomMessage(LlrpMessage):
    """A vendor message: ``vendor_id`` (IANA PEN), ``subtype`` (u8) and opaque ``data``."""

    TYPE: ClassVar[int] = MessageType.CUSTOM_MESSAGE
    vendor_id: int
    subtype: int
    data: bytes = b""

    def _body(self) -> bytes:
        return _u32(self.vendor_id) + _u8(self.subtype) + self.data

    @classmethod
    def _decode(cls, r: _Reader, msg_id: int, version: int) -> LlrpMessage:
        vendor = r.u32("VendorIdentifier")
        subtype = r.u8("MessageSubtype")
        return cls(msg_id=msg_id, version=version, vendor_id=vendor, subtype=subtype, data=r.rest())

    def status(self) -> LLRPStatus | None:
        """The LLRPStatus a vendor response carries first in its data (Impinj style), if any."""
        r = _Reader(self.data, f"{self.name}/data")
        try:
            params = r.params()
        except ProtocolError:
            return None
        return next((p for p in params if isinstance(p, LLRPStatus)), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownMessage(LlrpMessage):
    """A message whose type this codec does not know; ``body`` is kept verbatim."""

    msg_type: int
    body: bytes = b""

    @property
    def name(self) -> str:
        return message_name(self.msg_type)

    def encode(self) -> bytes:
        return encode_frame(self.msg_type, self.body, msg_id=self.msg_id, version=self.version)


_MESSAGES: tuple[type[LlrpMessage], ...] = (
    Keepalive,
    KeepaliveAck,
    EnableEventsAndReports,
    CloseConnection,
    CloseConnectionResponse,
    GetReport,
    GetROSpecs,
    GetROSpecsResponse,
    GetAccessSpecs,
    GetAccessSpecsResponse,
    SetReaderConfigResponse,
    AddROSpecResponse,
    DeleteROSpecResponse,
    StartROSpecResponse,
    StopROSpecResponse,
    EnableROSpecResponse,
    DisableROSpecResponse,
    AddAccessSpec,
    AddAccessSpecResponse,
    DeleteAccessSpecResponse,
    EnableAccessSpecResponse,
    DisableAccessSpecResponse,
    ErrorMessage,
    DeleteROSpec,
    StartROSpec,
    StopROSpec,
    EnableROSpec,
    DisableROSpec,
    DeleteAccessSpec,
    EnableAccessSpec,
    DisableAccessSpec,
    GetReaderCapabilities,
    GetReaderCapabilitiesResponse,
    GetReaderConfig,
    GetReaderConfigResponse,
    SetReaderConfig,
    AddROSpec,
    ROAccessReport,
    ReaderEventNotification,
    CustomMessage,
)
MESSAGE_CLASSES: dict[int, type[LlrpMessage]] = {cls.TYPE: cls for cls in _MESSAGES}


# --------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------


class MessageHeader(NamedTuple):
    """A validated header (a tuple: built for every frame a reader sends, it must be cheap)."""

    version: int
    msg_type: int
    length: int
    msg_id: int


def decode_header(
    data: bytes | bytearray, *, max_length: int = MAX_MESSAGE_LENGTH
) -> MessageHeader:
    """Parse and validate the 10-byte header at the start of ``data``."""
    if len(data) < HEADER_LENGTH:
        raise ProtocolError(
            f"truncated LLRP header: {len(data)} bytes, a header is {HEADER_LENGTH}"
        )
    word, length, msg_id = _HEADER.unpack_from(data)
    version = (word >> 10) & 0x7
    msg_type = word & 0x3FF
    # The gateway frames every report with this: the checks first, names only for a failure.
    if version in SUPPORTED_VERSIONS and HEADER_LENGTH <= length <= max_length:
        return MessageHeader(version, msg_type, length, msg_id)
    name = message_name(msg_type)
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(f"{name} (id {msg_id}): unknown LLRP version {version}")
    if length < HEADER_LENGTH:
        raise ProtocolError(f"{name} (id {msg_id}): length {length} < {HEADER_LENGTH}")
    raise ProtocolError(f"{name} (id {msg_id}): length {length} above the cap {max_length}")


def decode_message(data: bytes, *, max_length: int = MAX_MESSAGE_LENGTH) -> LlrpMessage:
    """Decode exactly one message (``data`` must be the whole frame, no more, no less)."""
    header = decode_header(data, max_length=max_length)
    name = message_name(header.msg_type)
    if header.length != len(data):
        raise ProtocolError(
            f"{name} (id {header.msg_id}): length field says {header.length} bytes, "
            f"frame has {len(data)}"
        )
    body = data[HEADER_LENGTH:]
    cls = MESSAGE_CLASSES.get(header.msg_type)
    if cls is None:
        return UnknownMessage(
            msg_id=header.msg_id, version=header.version, msg_type=header.msg_type, body=body
        )
    return cls._decode(_Reader(body, name), header.msg_id, header.version)


class LlrpFramer:
    """Splits a TCP byte stream into whole LLRP frames.

    ``feed(bytes)`` returns the complete frames received so far (each validated by
    :func:`decode_header`) and buffers a partial one. A bad header (unknown version, length below
    10 or above the cap) raises :class:`ProtocolError`; the stream cannot be resynchronised after
    that, so every later ``feed`` raises too.
    """

    __slots__ = ("_broken", "_buf", "max_length")

    def __init__(self, *, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self._buf = bytearray()
        self._broken: ProtocolError | None = None
        self.max_length = max_length

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        return list(self.frames(data))

    def frames(self, data: bytes | memoryview) -> Iterator[bytes]:
        """``feed`` one frame at a time: the frames before a bad header are yielded before it
        raises, so a receiver can act on everything the stream held up to the fault."""
        if self._broken is not None:
            raise ProtocolError(f"stream already broken: {self._broken}")
        buf = self._buf
        buf += data
        while len(buf) >= HEADER_LENGTH:
            try:
                header = decode_header(buf, max_length=self.max_length)
            except ProtocolError as exc:
                self._broken = exc
                raise
            if len(buf) < header.length:
                break
            frame = bytes(buf[: header.length])
            del buf[: header.length]
            yield frame


def decode_stream(data: bytes, *, max_length: int = MAX_MESSAGE_LENGTH) -> list[LlrpMessage]:
    """Decode a buffer holding whole messages back to back (a trailing partial one is an error)."""
    framer = LlrpFramer(max_length=max_length)
    messages = [decode_message(f, max_length=max_length) for f in framer.feed(data)]
    if framer.buffered:
        raise ProtocolError(f"truncated message at the end: {framer.buffered} bytes left over")
    return messages


def impinj_enable_extensions(msg_id: int = 0) -> CustomMessage:
    """The Impinj IMPINJ_ENABLE_EXTENSIONS request (32 reserved bits of data)."""
    return CustomMessage(
        msg_id=msg_id,
        vendor_id=VENDOR_IMPINJ,
        subtype=IMPINJ_ENABLE_EXTENSIONS,
        data=bytes(4),
    )


def impinj_enable_extensions_response(msg_id: int, status: LLRPStatus) -> CustomMessage:
    return CustomMessage(
        msg_id=msg_id,
        vendor_id=VENDOR_IMPINJ,
        subtype=IMPINJ_ENABLE_EXTENSIONS_RESPONSE,
        data=status.encode(),
    )


def gen2_pc_word(epc_bits: int) -> int:
    """The Gen2 Protocol-Control word for an EPC of ``epc_bits`` (length field in words)."""
    return ((epc_bits + 15) // 16) << 11


def gen2_crc16(data: bytes) -> int:
    """CRC-16 as Gen2 computes it over PC+EPC (CCITT polynomial, preset 0xFFFF, complemented)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc ^ 0xFFFF


def status_of(message: LlrpMessage) -> LLRPStatus | None:
    """The LLRPStatus a response carries, whatever its type."""
    if isinstance(message, StatusResponse | GetReaderCapabilitiesResponse):
        return message.status
    if isinstance(message, GetReaderConfigResponse | GetROSpecsResponse):
        return message.status
    if isinstance(message, CustomMessage):
        return message.status()
    return None
