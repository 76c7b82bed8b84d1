"""Modbus TCP adapter: polls weighing transmitters and turns their registers into WeightSamples.

Theory of operation
-------------------
* **Devices and tasks.** Shelves are grouped by connection (``host:port``, a *device*). Each device
  gets one asyncio task and one pymodbus ``AsyncModbusTcpClient``; nothing is shared between
  device tasks, so a dead, slow or stalled device only ever delays itself. Units behind one
  connection (an RS-485 line behind a Modbus TCP gateway, or a multi-unit transmitter) are read
  one after the other, as the bus requires.
* **Planning.** For each device, the registers every shelf needs (weight, status word, heartbeat)
  are grouped per (unit, table) and merged into contiguous block reads of at most
  ``max_registers`` (125, the protocol limit) registers; ``max_gap`` > 0 also bridges small gaps
  (reading a few unused registers is cheaper than another request, but some devices reject reads
  of unmapped registers, hence the default 0). :func:`plan_reads` is pure and unit-tested.
* **Decoding.** uint16, int16, uint32, int32 and float32, with the word order of 32-bit values
  configurable (``big``: high word first) and ``grams = raw * scale``; :func:`decode_value` is pure.
* **Timing.** Each device polls every ``poll_interval_s`` (5 Hz by default) on a fixed schedule; a
  late cycle is followed at once by the next one, but missed cycles are not made up in a burst.
  Every request has ``timeout_s``.
* **Failures.** A Modbus exception response marks the unit's shelves DEGRADED (OFFLINE for 0x0A /
  0x0B, "gateway target failed to respond"); a timeout marks them OFFLINE and the unit is retried
  after a capped, jittered backoff (``gateway.adapters.backoff``, capped at ``unit_retry_max_s``,
  2 s, so that a unit that answers again is found within it) so that one silent unit costs the
  other units on its line a timeout only now and then; and those retries (probes) wait only
  ``PROBE_TIMEOUT_FACTOR`` times the unit's slowest recent answer (at least 0.1 s, at most
  ``timeout_s``), since every probe holds up the working units behind it on the line. A
  connection that cannot be made, is lost, or on which every unit timed out is closed and
  re-opened with backoff. A status word with the error bit, or a heartbeat that stops changing
  for ``heartbeat_stale_s``, marks the shelf DEGRADED and its samples ``error=True`` (the shelf
  engine then trusts nothing until it recovers).
  Each shelf logs ONE error when it leaves ONLINE (naming shelf id, host:port, unit and the
  exception code or timeout) and one line when it recovers; ``on_status`` gets a DeviceStatus on
  every state change (the first ONLINE included), never on repeats. pymodbus' own logger
  (``pymodbus``) still warns about each failed connection attempt: the application should set it
  to ERROR or above.
* **Malformed answers.** pymodbus raises from inside the protocol's ``data_received`` when an
  answer cannot be decoded (a byte count that disagrees with the frame length, an unknown
  function code): asyncio then logs "Fatal error: protocol.data_received() call failed" with a
  traceback and drops the connection, and the request waits for its timeout. So every received
  buffer passes :func:`malformed_response` first (through pymodbus' ``trace_packet`` hook, its
  documented way to see raw frames): a frame that is not a well-formed answer to a register
  read is withheld from pymodbus, the connection is closed, and the request fails with a
  DeviceError naming the fault ("malformed answer ...: byte count 6, but 4 data bytes
  follow"): the shelves go OFFLINE once (one log line), the connection is re-opened with
  backoff, and the first good answer brings them back (one line). Register *values* are never
  a protocol error: a heartbeat that is not a finite number makes the shelf DEGRADED and its
  samples ``error=True``; a weight is passed on as decoded, NaN and 1e30 included, because
  only the shelf engine knows the shelf's plausible range (``capacity_g``, the item): it turns
  garbage into one ``implausible_weight`` fault and never a movement.
* **Output.** Every successful read of a shelf becomes one ``WeightSample`` handed to
  ``on_sample``, a plain callback run in the event loop (it must not block). :class:`SampleQueue`
  is a bounded queue with a stated policy for consumers that want one: when full, the OLDEST sample
  is dropped (for weight, the newest reading is the valuable one, and the shelf engine tolerates
  gaps); drops are counted and logged once per episode.

* **TLS.** A device whose shelves carry an ``ssl.SSLContext`` (``ShelfPoint.tls``) is polled over
  Modbus/TCP Security (pymodbus' ``AsyncModbusTlsClient``: the same MBAP frames inside TLS,
  IANA port 802). Shelves behind one connection share its context. pymodbus only says "not
  connected" when a handshake fails; the reason (untrusted certificate, host name mismatch...) is
  recorded through :func:`gateway.adapters.tls.report_handshake_failures` and becomes the
  detail of the one error logged. A device that closes a TLS connection before answering (the
  usual sign of a client certificate it does not accept) is reported as such, not as a timeout.

* **Round trips.** Every successful read request is timed (``time.perf_counter``, from sending the
  request to decoding its answer, waits for the connection excluded); :meth:`round_trips` gives
  the count, total, last and largest per device (``host:port``), for metrics. Timeouts and
  exception responses are not round trips of a working device and are not counted.

Clocks: ``clock`` (monotonic seconds) timestamps samples and ages heartbeats; ``utc_now`` stamps
status changes. A sample is stamped halfway between sending the unit's first request and
decoding its last answer: the transmitter read its value in between, and a loop busy for a
moment before it got to the answer does not make an old value look new. Intervals, timeouts
and backoff delays are real seconds of the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final

from pymodbus.client import AsyncModbusTcpClient, AsyncModbusTlsClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from dockwatch_core.errors import DeviceError
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.outage import Outage, OutageWords
from gateway.adapters.tls import (
    describe_tls_error,
    handshake_failures,
    report_handshake_failures,
)
from gateway.domain.model import DeviceId, DeviceState, DeviceStatus, WeightSample

log = logging.getLogger(__name__)

MAX_REGISTERS_PER_READ = 125
"""The Modbus limit for one read of holding or input registers."""
DEVICE_TYPE = "modbus_shelf"

EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}
_UNREACHABLE_CODES = frozenset({0x0A, 0x0B})


class RegisterTable(enum.StrEnum):
    HOLDING = "holding"
    INPUT = "input"


class ValueType(enum.StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    FLOAT32 = "float32"

    @property
    def width(self) -> int:
        """Registers per value."""
        return 1 if self in (ValueType.UINT16, ValueType.INT16) else 2


class WordOrder(enum.StrEnum):
    BIG = "big"
    """High word first (Modicon convention; ``mbpoll -B``)."""
    LITTLE = "little"
    """Low word first (word-swapped)."""


@dataclass(frozen=True, slots=True)
class RegisterField:
    """Where a value lives and how to read it: ``value = raw * scale``."""

    address: int
    type: ValueType = ValueType.FLOAT32
    table: RegisterTable = RegisterTable.HOLDING
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFFFF - (self.type.width - 1):
            raise ValueError(f"register address out of range: {self.address}")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError(f"scale must be finite and non-zero, got {self.scale}")

    @property
    def width(self) -> int:
        return self.type.width


@dataclass(frozen=True, slots=True)
class StatusWord:
    """A 16-bit status register; each flag is a bit number (0 = least significant) or None."""

    address: int
    table: RegisterTable = RegisterTable.HOLDING
    stable_bit: int | None = 0
    overload_bit: int | None = None
    error_bit: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"register address out of range: {self.address}")
        for name in ("stable_bit", "overload_bit", "error_bit"):
            bit = getattr(self, name)
            if bit is not None and not 0 <= bit <= 15:
                raise ValueError(f"{name} must be within 0..15, got {bit}")


@dataclass(frozen=True, slots=True)
class ShelfPoint:
    """One shelf as the poller sees it: where its transmitter is and which registers to read."""

    shelf_id: DeviceId
    host: str
    port: int
    unit: int
    weight: RegisterField
    status: StatusWord | None = None
    heartbeat: RegisterField | None = None
    """A counter the transmitter increments while it converts; a frozen one means a hung ADC."""
    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    """Modbus/TCP Security (TLS) with this context; None: plain Modbus TCP. Every shelf of one
    connection (host:port) must carry the same context object. The poller sets the context's
    ``sslobject_class`` (unless already set) to learn why a handshake failed."""

    def __post_init__(self) -> None:
        if not 0 <= self.unit <= 255:
            raise ValueError(f"unit must be within 0..255, got {self.unit}")
        if not 0 < self.port <= 0xFFFF:
            raise ValueError(f"port out of range: {self.port}")

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def spans(self) -> list[tuple[RegisterTable, int, int]]:
        """(table, first address, register count) of every register this shelf needs."""
        out = [(self.weight.table, self.weight.address, self.weight.width)]
        if self.status is not None:
            out.append((self.status.table, self.status.address, 1))
        if self.heartbeat is not None:
            out.append((self.heartbeat.table, self.heartbeat.address, self.heartbeat.width))
        return out


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers of ``table`` from ``address`` on ``unit``."""

    unit: int
    table: RegisterTable
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count

    def covers(self, table: RegisterTable, address: int, width: int) -> bool:
        return table is self.table and self.address <= address and address + width <= self.end


@dataclass(frozen=True, slots=True)
class PollerSettings:
    """The poller's knobs (the ``modbus`` part of the shelf config)."""

    poll_interval_s: float = 0.2
    timeout_s: float = 1.0
    max_registers: int = MAX_REGISTERS_PER_READ
    max_gap: int = 0
    heartbeat_stale_s: float = 2.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    unit_retry_max_s: float = 2.0
    """The longest wait between probes of a silent unit on a working connection (the
    connection's own backoff may grow to ``backoff.max_s``): a unit that answers again is found
    within it. A probe waits a short, fitted timeout, so probing every 2 s costs the other units
    on the line little."""

    def __post_init__(self) -> None:
        if not self.poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0, got {self.poll_interval_s}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if not 2 <= self.max_registers <= MAX_REGISTERS_PER_READ:
            raise ValueError(f"max_registers must be within 2..125, got {self.max_registers}")
        if self.max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {self.max_gap}")
        if not self.unit_retry_max_s > 0:
            raise ValueError(f"unit_retry_max_s must be > 0, got {self.unit_retry_max_s}")


# -- pure planning and decoding --------------------------------------------------------------------


def plan_reads(
    points: Iterable[ShelfPoint],
    *,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_gap: int = 0,
) -> tuple[ReadBlock, ...]:
    """Merge the registers of ``points`` into as few contiguous reads as the limits allow.

    Spans are grouped per (unit, table), sorted, and merged while the merged block stays within
    ``max_registers`` and the hole between two spans is at most ``max_gap`` registers. Overlapping
    spans (two shelves sharing a status word) are read once. Blocks come out ordered by
    (unit, table, address).
    """
    if not 2 <= max_registers <= MAX_REGISTERS_PER_READ:
        raise ValueError(f"max_registers must be within 2..125, got {max_registers}")
    spans: dict[tuple[int, RegisterTable], set[tuple[int, int]]] = {}
    for point in points:
        for table, address, width in point.spans():
            spans.setdefault((point.unit, table), set()).add((address, address + width))
    blocks: list[ReadBlock] = []
    for (unit, table), ranges in sorted(spans.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        start: int | None = None
        end = 0
        for lo, hi in sorted(ranges):
            if start is not None and lo - end <= max_gap and max(end, hi) - start <= max_registers:
                end = max(end, hi)
                continue
            if start is not None:
                blocks.append(ReadBlock(unit, table, start, end - start))
            start, end = lo, hi
        if start is not None:
            blocks.append(ReadBlock(unit, table, start, end - start))
    return tuple(blocks)


def decode_value(words: Sequence[int], value_type: ValueType, word_order: WordOrder) -> float:
    """Decode one value from its registers (``len(words) == value_type.width``)."""
    if len(words) != value_type.width:
        raise ValueError(f"{value_type} needs {value_type.width} registers, got {len(words)}")
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError(f"registers must be 16-bit values, got {list(words)}")
    if value_type is ValueType.UINT16:
        return float(words[0])
    if value_type is ValueType.INT16:
        return float(struct.unpack(">h", struct.pack(">H", words[0]))[0])
    high, low = (words[0], words[1]) if word_order is WordOrder.BIG else (words[1], words[0])
    data = struct.pack(">HH", high, low)
    fmt = {ValueType.UINT32: ">I", ValueType.INT32: ">i", ValueType.FLOAT32: ">f"}[value_type]
    return float(struct.unpack(fmt, data)[0])


def decode_field(registers: Sequence[int], block_address: int, spec: RegisterField) -> float:
    """The scaled value of ``spec`` from a block read starting at ``block_address``."""
    offset = spec.address - block_address
    if offset < 0 or offset + spec.width > len(registers):
        raise ValueError(f"register {spec.address} is outside the block read")
    return decode_value(registers[offset : offset + spec.width], spec.type, spec.word_order) * (
        spec.scale
    )


_MBAP = struct.Struct(">HHHB")
_READ_FUNCTIONS = frozenset({0x03, 0x04})


def malformed_response(buffer: bytes) -> str | None:
    """Why the Modbus/TCP answers in ``buffer`` are not well-formed answers to register reads
    (holding or input), or None (an incomplete last frame is fine: the rest is on its way).

    Checked per frame: protocol id 0; an MBAP length of 3..254 (unit, function, data); an
    exception answer (function | 0x80) of one code byte; a read answer whose byte count is the
    number of data bytes that follow, a whole number (1..125) of registers; no other function.
    """
    offset = 0
    while len(buffer) - offset >= _MBAP.size + 1:
        _tid, protocol, length, _unit = _MBAP.unpack_from(buffer, offset)
        if protocol != 0:
            return f"protocol id {protocol} in the frame header (Modbus is 0)"
        if not 3 <= length <= 254:
            return f"frame length {length} outside 3..254"
        end = offset + 6 + length
        if end > len(buffer):
            return None
        function = buffer[offset + _MBAP.size]
        data = buffer[offset + _MBAP.size + 1 : end]
        if function & 0x80:
            if len(data) != 1:
                return f"an exception answer with {len(data)} bytes after the function code"
        elif function in _READ_FUNCTIONS:
            count = data[0]
            if count != len(data) - 1:
                return f"byte count {count}, but {len(data) - 1} data bytes follow"
            if count == 0 or count % 2 or count > 2 * MAX_REGISTERS_PER_READ:
                return f"byte count {count} is not a whole number of registers (1..125)"
        else:
            return f"function code 0x{function:02X} in an answer to a register read"
        offset = end
    return None


class _FrameCheck:
    """pymodbus' ``trace_packet`` hook: withholds malformed answers (see the module docstring),
    remembers the first fault and calls ``on_fault`` once."""

    def __init__(self, on_fault: Callable[[], object]) -> None:
        self.fault: str | None = None
        self._on_fault = on_fault

    def __call__(self, sending: bool, data: bytes) -> bytes:
        if sending:
            return data
        if self.fault is not None:
            return b""  # the connection is being closed: nothing more is decoded
        fault = malformed_response(data)
        if fault is None:
            return data
        self.fault = fault
        self._on_fault()
        return b""


# -- errors ----------------------------------------------------------------------------------------


class ModbusExceptionResponse(DeviceError):
    """The device answered a read with a Modbus exception response."""

    def __init__(self, device_id: str, message: str, *, unit: int, code: int) -> None:
        super().__init__(device_id, message)
        self.unit = unit
        self.code = code


class ModbusTimeout(DeviceError):
    """A unit did not answer within the timeout."""

    def __init__(self, device_id: str, message: str, *, unit: int) -> None:
        super().__init__(device_id, message)
        self.unit = unit


def exception_name(code: int) -> str:
    return f"0x{code:02X} ({EXCEPTION_NAMES.get(code, 'unknown exception')})"


# -- output ----------------------------------------------------------------------------------------


class SampleQueue:
    """A bounded queue of samples that drops the OLDEST sample when full (see module docstring)."""

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: deque[WeightSample] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self._dropping = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, sample: WeightSample) -> None:
        """Never blocks: the poller must not wait for a slow consumer."""
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning("weight sample queue full (%s): dropping the oldest", self.maxsize)
        elif self._dropping and len(self._items) < self.maxsize // 2:
            self._dropping = False
            log.info("weight sample queue drained; %s samples dropped so far", self.dropped)
        self._items.append(sample)
        self._ready.set()

    async def get(self) -> WeightSample:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


# -- the poller ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundTrips:
    """Successful read requests of one device (``host:port``) since the poller was created."""

    count: int = 0
    total_s: float = 0.0
    last_s: float = 0.0
    max_s: float = 0.0

    def observe(self, seconds: float) -> RoundTrips:
        return RoundTrips(self.count + 1, self.total_s + seconds, seconds, max(self.max_s, seconds))


@dataclass(slots=True)
class _Health:
    state: DeviceState | None = None
    detail: str = ""
    since_mono: float = 0.0


@dataclass(slots=True)
class _Heartbeat:
    value: int | None = None
    changed_at: float = 0.0


# A unit that has stopped answering is probed with a timeout fitted to its own answers (this
# many times its slowest recent round trip, at least PROBE_TIMEOUT_MIN_S, at most ``timeout_s``):
# on a shared line every probe of a silent unit holds up the units behind it, and a full
# ``timeout_s`` per probe starves the working shelves of samples (a double pick then looks like
# one pick). The first timeout of a unit still costs the full ``timeout_s``: a unit that answered
# a moment ago gets every benefit of the doubt.
PROBE_TIMEOUT_FACTOR: Final = 5.0
PROBE_TIMEOUT_MIN_S: Final = 0.1
_ROUND_TRIPS_KEPT: Final = 32


@dataclass(slots=True)
class _UnitRetry:
    backoff: Backoff
    retry_at: float = 0.0
    failing: bool = False
    round_trips: deque[float] = field(default_factory=lambda: deque(maxlen=_ROUND_TRIPS_KEPT))

    def timeout(self, full_s: float) -> float:
        """The timeout of the unit's next request: ``full_s``, or a probe's shorter one."""
        if not self.failing or not self.round_trips:
            return full_s
        return min(full_s, max(PROBE_TIMEOUT_MIN_S, PROBE_TIMEOUT_FACTOR * max(self.round_trips)))


class ModbusShelfPoller:
    """Polls every configured shelf at ``poll_interval_s``: one task per device (host:port)."""

    def __init__(
        self,
        points: Sequence[ShelfPoint],
        *,
        on_sample: Callable[[WeightSample], None],
        on_status: Callable[[DeviceStatus], None] | None = None,
        settings: PollerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        utc_now: Callable[[], datetime] | None = None,
        rng: Callable[[], float] | None = None,
    ) -> None:
        ids = [p.shelf_id for p in points]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate shelf ids: {sorted(ids)}")
        self.settings = settings if settings is not None else PollerSettings()
        self._on_sample = on_sample
        self._on_status = on_status
        self._clock = clock
        self._utc_now = utc_now if utc_now is not None else (lambda: datetime.now(UTC))
        self._rng = rng
        self._devices: dict[tuple[str, int], list[ShelfPoint]] = {}
        for point in points:
            self._devices.setdefault((point.host, point.port), []).append(point)
        for (host, port), shared in self._devices.items():
            if any(p.tls is not shared[0].tls for p in shared):
                names = ", ".join(p.shelf_id for p in shared)
                raise ValueError(
                    f"shelves {names} share the connection {host}:{port} but not its TLS context"
                )
        self._health = {p.shelf_id: _Health() for p in points}
        self._pollers: list[_DevicePoller] = []
        self._round_trips = {f"{host}:{port}": RoundTrips() for host, port in self._devices}

    @property
    def devices(self) -> list[tuple[str, int]]:
        return list(self._devices)

    def state(self, shelf_id: DeviceId) -> DeviceState | None:
        return self._health[shelf_id].state

    @property
    def requests(self) -> int:
        """Read requests sent so far (all devices), for metrics and benchmarks."""
        return sum(p.requests for p in self._pollers)

    def round_trips(self) -> dict[str, RoundTrips]:
        """Per device (``host:port``), its successful read requests and their round-trip times;
        every configured device is present from the start (count 0 until its first answer)."""
        return dict(self._round_trips)

    async def run(self) -> None:
        """Poll until cancelled. A device task never ends on a device error; only bugs escape."""
        async with asyncio.TaskGroup() as group:
            for (host, port), points in self._devices.items():
                device = _DevicePoller(self, host, port, points)
                self._pollers.append(device)
                group.create_task(device.run(), name=f"modbus {host}:{port}")

    # -- called by device pollers -----------------------------------------------------------------

    def _emit(self, sample: WeightSample) -> None:
        self._on_sample(sample)

    def _round_trip(self, endpoint: str, seconds: float) -> None:
        self._round_trips[endpoint] = self._round_trips[endpoint].observe(seconds)

    def _set_state(self, point: ShelfPoint, state: DeviceState, detail: str) -> None:
        health = self._health[point.shelf_id]
        if health.state is state and (state is DeviceState.ONLINE or health.detail == detail):
            return
        previous, was_down_since = health.state, health.since_mono
        now = self._clock()
        fields = {"shelf_id": point.shelf_id, "endpoint": point.endpoint, "unit": point.unit}
        if state is DeviceState.ONLINE:
            if previous is not None:
                log.info(
                    "shelf %s (%s unit %s) recovered after %.1f s",
                    point.shelf_id,
                    point.endpoint,
                    point.unit,
                    now - was_down_since,
                    extra=fields,
                )
        elif previous in (None, DeviceState.ONLINE):
            log.error(
                "shelf %s (%s unit %s) is %s: %s",
                point.shelf_id,
                point.endpoint,
                point.unit,
                state,
                detail,
                extra=fields,
            )
        elif previous is not state:
            log.warning(
                "shelf %s (%s unit %s) is now %s: %s",
                point.shelf_id,
                point.endpoint,
                point.unit,
                state,
                detail,
                extra=fields,
            )
        if previous is not state:
            health.since_mono = now
        health.state, health.detail = state, detail
        if self._on_status is not None and previous is not state:
            self._on_status(
                DeviceStatus(
                    device_id=point.shelf_id,
                    device_type=DEVICE_TYPE,
                    state=state,
                    since=self._utc_now(),
                    detail=detail,
                )
            )


class _DevicePoller:
    """The loop of one connection (host:port): connect, poll its units, back off on failure."""

    def __init__(
        self, owner: ModbusShelfPoller, host: str, port: int, points: Sequence[ShelfPoint]
    ) -> None:
        self.owner = owner
        self.settings = owner.settings
        self.host, self.port = host, port
        self.endpoint = f"{host}:{port}"
        self.points = list(points)
        self.tls = points[0].tls
        if self.tls is not None:
            report_handshake_failures(self.tls)
        # Whether the current connection has answered a request yet (see _connection_lost).
        self._answered = False
        blocks = plan_reads(
            points, max_registers=self.settings.max_registers, max_gap=self.settings.max_gap
        )
        self.units: dict[int, tuple[list[ShelfPoint], list[ReadBlock]]] = {}
        for point in points:
            self.units.setdefault(point.unit, ([], []))[0].append(point)
        for block in blocks:
            self.units[block.unit][1].append(block)
        # The outage policy of the connection (gateway.adapters.outage): its backoff, and a
        # debug trace; the operator's one error and one recovery line are per shelf
        # (ModbusShelfPoller._set_state), since a connection's shelves go down together.
        self._outage = Outage(
            f"Modbus {self.endpoint}",
            log=log,
            backoff=Backoff(self.settings.backoff, rng=owner._rng),
            words=OutageWords(down_level=logging.DEBUG),
        )
        # A silent unit is probed with the connection's backoff capped at unit_retry_max_s: with
        # its 30 s cap, a transmitter silent for 5 s was found again up to 8 s after it answered,
        # and what changed on it meanwhile became an offline change.
        policy = self.settings.backoff
        cap = min(policy.max_s, self.settings.unit_retry_max_s)
        unit_policy = replace(policy, initial_s=min(policy.initial_s, cap), max_s=cap)
        self._unit_retry = {
            unit: _UnitRetry(Backoff(unit_policy, rng=owner._rng)) for unit in self.units
        }
        self._heartbeats = {p.shelf_id: _Heartbeat() for p in points}
        self._client: AsyncModbusTcpClient | AsyncModbusTlsClient | None = None
        self._frames: _FrameCheck | None = None
        self.requests = 0

    @property
    def device_id(self) -> str:
        return self.endpoint

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    await self._connect()
                except DeviceError as exc:
                    self._down(str(exc))
                    await self._outage.pause()
                    continue
                self._outage.recovered()
                try:
                    await self._poll_forever(loop)
                except DeviceError as exc:
                    self._down(str(exc))
                    self._close()
                    await self._outage.pause()
        finally:
            self._close()

    def _down(self, reason: str) -> None:
        self._outage.failed(reason)
        self._all(DeviceState.OFFLINE, reason)

    def _all(self, state: DeviceState, detail: str) -> None:
        for point in self.points:
            self.owner._set_state(point, state, detail)

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _connect(self) -> None:
        self._close()
        # Our own timeout wraps every call; pymodbus' internal one is set longer so that it never
        # fires first (it would log an error per request), and its auto-reconnect is off.
        timeout = self.settings.timeout_s * 2 + 1.0
        name = f"modbus {self.endpoint}"
        loop = asyncio.get_running_loop()
        # Closed from the hook's fault, on the next loop turn (not inside pymodbus' callback).
        frames = _FrameCheck(lambda: loop.call_soon(self._close_faulty, frames))
        client = (
            AsyncModbusTcpClient(
                self.host,
                port=self.port,
                timeout=timeout,
                retries=0,
                reconnect_delay=0,
                name=name,
                trace_packet=frames,
            )
            if self.tls is None
            else AsyncModbusTlsClient(
                self.host,
                port=self.port,
                sslctx=self.tls,
                timeout=timeout,
                retries=0,
                reconnect_delay=0,
                name=name,
                trace_packet=frames,
            )
        )
        link = "TCP" if self.tls is None else "TLS"
        try:
            with handshake_failures() as failures:
                async with asyncio.timeout(self.settings.timeout_s):
                    connected = await client.connect()
                    _reraise_lost_cancellation()
        except TimeoutError as exc:
            client.close()
            raise DeviceError(
                self.device_id, f"no {link} connection within {self.settings.timeout_s:g} s"
            ) from exc
        if not connected:
            client.close()
            if failures:
                cause = failures[-1]
                raise DeviceError(
                    self.device_id,
                    f"TLS handshake failed: {describe_tls_error(cause, peer='transmitter')}",
                ) from cause
            raise DeviceError(self.device_id, "TCP connection refused or unreachable")
        self._client, self._frames = client, frames
        self._answered = False

    def _close_faulty(self, frames: _FrameCheck) -> None:
        """A malformed answer arrived: the stream cannot be trusted to be in step any more."""
        if self._frames is frames and self._client is not None:
            self._client.close()

    def _malformed(self, what: str) -> DeviceError | None:
        """The DeviceError for a malformed answer to the request for ``what``, if one came."""
        fault = None if self._frames is None else self._frames.fault
        if fault is None:
            return None
        return DeviceError(self.device_id, f"malformed answer reading {what}: {fault}")

    async def _poll_forever(self, loop: asyncio.AbstractEventLoop) -> None:
        interval = self.settings.poll_interval_s
        next_at = loop.time()
        while True:
            await self._poll_once(loop)
            next_at += interval
            now = loop.time()
            # Late (a timeout, a busy loop): poll again at once and keep the period from now on,
            # rather than bursting to catch up on missed cycles.
            next_at = max(next_at, now)
            await asyncio.sleep(next_at - now)

    async def _poll_once(self, loop: asyncio.AbstractEventLoop) -> None:
        polled = timed_out = 0
        for unit, (points, blocks) in self.units.items():
            retry = self._unit_retry[unit]
            if loop.time() < retry.retry_at:
                continue
            polled += 1
            timeout = retry.timeout(self.settings.timeout_s)
            sent = self.owner._clock()
            try:
                words = []
                for block in blocks:
                    started = time.perf_counter()
                    words.append(await self._read(block, timeout))
                    retry.round_trips.append(time.perf_counter() - started)
            except ModbusTimeout as exc:
                timed_out += 1
                retry.failing = True
                retry.retry_at = loop.time() + retry.backoff.next_delay(loop.time())
                for point in points:
                    self.owner._set_state(point, DeviceState.OFFLINE, str(exc))
                continue
            except ModbusExceptionResponse as exc:
                state = (
                    DeviceState.OFFLINE if exc.code in _UNREACHABLE_CODES else DeviceState.DEGRADED
                )
                for point in points:
                    self.owner._set_state(point, state, str(exc))
                continue
            retry.backoff.succeeded(loop.time())
            retry.retry_at = 0.0
            retry.failing = False
            at = 0.5 * (sent + self.owner._clock())
            for point in points:
                self._deliver(point, blocks, words, at)
        if polled and timed_out == polled:
            raise DeviceError(
                self.device_id, f"no unit answered within {self.settings.timeout_s:g} s"
            )

    async def _read(self, block: ReadBlock, timeout_s: float) -> list[int]:
        client = self._client
        if client is None:
            raise DeviceError(self.device_id, "not connected")
        read = (
            client.read_holding_registers
            if block.table is RegisterTable.HOLDING
            else client.read_input_registers
        )
        what = f"unit {block.unit} {block.table} registers {block.address}..{block.end - 1}"
        self.requests += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                response: ModbusPDU = await read(
                    block.address, count=block.count, device_id=block.unit
                )
                _reraise_lost_cancellation()
        except TimeoutError as exc:
            if (malformed := self._malformed(what)) is not None:
                raise malformed from exc
            if self.tls is not None and not client.connected:
                raise self._connection_lost(what) from exc
            raise ModbusTimeout(
                self.device_id,
                f"no answer within {timeout_s:g} s reading {what}",
                unit=block.unit,
            ) from exc
        except ModbusException as exc:
            if (malformed := self._malformed(what)) is not None:
                raise malformed from exc
            if self.tls is not None and not client.connected:
                raise self._connection_lost(what) from exc
            raise DeviceError(self.device_id, f"reading {what} failed: {exc}") from exc
        if (malformed := self._malformed(what)) is not None:  # an answer before the fault
            raise malformed
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise ModbusExceptionResponse(
                self.device_id,
                f"Modbus exception {exception_name(code)} reading {what}",
                unit=block.unit,
                code=code,
            )
        registers = list(response.registers)
        if len(registers) != block.count:
            raise ModbusExceptionResponse(
                self.device_id,
                f"short answer reading {what}: {len(registers)} of {block.count} registers",
                unit=block.unit,
                code=0,
            )
        self.owner._round_trip(self.endpoint, time.perf_counter() - started)
        self._answered = True
        return registers

    def _connection_lost(self, what: str) -> DeviceError:
        """The TLS connection went away under a request: say so rather than "no answer"."""
        if self._answered:
            return DeviceError(self.device_id, f"the TLS connection was closed reading {what}")
        # TLS 1.3 checks the client's certificate after the client's handshake is done: a
        # transmitter that refuses ours closes the connection before the first answer.
        return DeviceError(
            self.device_id,
            "the transmitter closed the TLS connection before answering (does it require a "
            "client certificate? tls.cert_file and tls.key_file)",
        )

    def _deliver(
        self, point: ShelfPoint, blocks: Sequence[ReadBlock], words: Sequence[list[int]], at: float
    ) -> None:
        def raw(table: RegisterTable, address: int, width: int) -> tuple[list[int], int]:
            for block, regs in zip(blocks, words, strict=True):
                if block.covers(table, address, width):
                    return regs, block.address
            raise AssertionError(f"register {address} of {point.shelf_id} was not planned")

        regs, base = raw(point.weight.table, point.weight.address, point.weight.width)
        grams = decode_field(regs, base, point.weight)
        stable: bool | None = None
        overload = error = False
        problems: list[str] = []
        if point.status is not None:
            regs, base = raw(point.status.table, point.status.address, 1)
            status = regs[point.status.address - base]
            stable = _bit(status, point.status.stable_bit)
            overload = bool(_bit(status, point.status.overload_bit))
            error = bool(_bit(status, point.status.error_bit))
            if error:
                problems.append(f"transmitter reports an ADC error (status 0x{status:04X})")
            if overload:
                problems.append(f"transmitter reports overload (status 0x{status:04X})")
        if point.heartbeat is not None:
            hb = point.heartbeat
            regs, base = raw(hb.table, hb.address, hb.width)
            decoded = decode_field(regs, base, hb)
            # A float32 heartbeat can hold NaN or infinity: no beat, not a crash of this task.
            value = int(decoded) if math.isfinite(decoded) else None
            beat = self._heartbeats[point.shelf_id]
            if value is None:
                error = True
                problems.append("heartbeat register holds no finite number")
            elif beat.value != value:
                beat.value, beat.changed_at = value, at
            elif at - beat.changed_at >= self.settings.heartbeat_stale_s:
                error = True
                problems.append(
                    f"heartbeat frozen at {value} for {at - beat.changed_at:.1f} s "
                    "(transmitter hung: its weight is stale)"
                )
        # A value that is no finite number, or out of the shelf's plausible range, is passed on as
        # it is: the shelf engine knows the shelf's range and turns it into one device fault.
        if problems:
            self.owner._set_state(point, DeviceState.DEGRADED, "; ".join(problems))
        else:
            self.owner._set_state(point, DeviceState.ONLINE, "")
        self.owner._emit(
            WeightSample(
                shelf_id=point.shelf_id,
                at=at,
                grams=grams,
                stable=stable,
                overload=overload,
                error=error,
            )
        )


def _reraise_lost_cancellation() -> None:
    """Re-raise a cancellation that pymodbus' ``asyncio.wait_for`` swallowed.

    On Python 3.11, ``wait_for`` returns the result instead of raising CancelledError when the
    cancellation arrives just as its future completes (fixed in 3.12). pymodbus awaits every
    response that way, so at a thousand reads a second a shutdown would now and then leave a
    device task running forever. A cancel request still pending on our task means we were
    cancelled; inside ``asyncio.timeout`` this also turns our own expired timeout into the
    TimeoutError it should have been.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _bit(word: int, bit: int | None) -> bool | None:
    if bit is None:
        return None
    return bool((word >> bit) & 1)
