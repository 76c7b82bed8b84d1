"""LLRP readers through sllurp: connect, watch, reconnect, and hand tag reads to the event loop.

Theory of operation
-------------------
One :class:`LlrpReaderAdapter` per configured reader, run as its own task. ``run()`` loops over
*sessions*: a session is one TCP connection served by one fresh sllurp ``LLRPReaderClient`` and its
reader thread. A session ends with a reason (a :class:`~dockwatch_core.errors.DeviceError`); the
adapter tears the session down, waits a capped exponential backoff with full jitter
(:mod:`gateway.adapters.backoff`) and starts a new one, until cancelled.

Parts. This module holds the adapter, which runs the sessions and the watchdog, and its loop-side
collaborators: :class:`_ReaderHealth` (online, degraded or offline, and who hears of it),
:class:`_ReadIntake` (reports in, batches out), :class:`_ReaderChecks` (capabilities, the
connection's status, the reader's clock) and :class:`_DoorIo` (antenna and GPI events in, GPO
writes out). The rest is in sibling modules: :mod:`gateway.adapters.llrp_session`
(the session's client on sllurp's thread: socket, framing, hand-over),
:mod:`gateway.adapters.llrp_dialect` (the steps the gateway sends and what a refusal of each
means) and :mod:`gateway.adapters.llrp_reports` (the reader configuration and the conversion of
its reports).

Threads. sllurp decodes on its own (non-daemon) thread. What runs there is pure: read the socket,
frame and decode (:class:`~gateway.adapters.llrp_session.ReaderClient`), convert each report's
tag dicts to :class:`TagRead` (:func:`~gateway.adapters.llrp_reports.tag_reads_from_sllurp`), and
post events with ``loop.call_soon_threadsafe(...)``. All state (counters, degraded/offline,
watchdog, the queue) lives on the event loop. Blocking calls (``connect``, the polite
``disconnect``, ``join``) run in the default executor. Every event carries its session's number,
so a late event from a torn-down client is ignored.

Cost. Ingest is bound by sllurp's pure-Python decoding (about 10 us a tag read); everything the
adapter adds must stay small beside it (``benchmarks/llrp_ingest.py`` measures the ratio). Hence:
the socket is read 64 KiB at a time (sllurp reads 4 KiB, less than one 100-tag report, and every
read releases the GIL to the other thread); a report is converted column by column and validated
once for all its reads (:meth:`TagRead.batch`), entry by entry only when something is wrong with
it; and the reports of one socket read are posted together, so the loop wakes once per read.

TLS (optional, per reader: LLRP over TLS, port 5085). Given an ``ssl.SSLContext``, the session
wraps its socket right after the TCP connect; the TLS handshake is part of ``connect`` (bounded by
``connect_timeout_s``) and its failure is a connect failure, named in plain words (untrusted
certificate, host name mismatch, a plain port: :func:`gateway.adapters.tls.describe_tls_error`).
The TLS socket is non-blocking: sllurp's thread reads until the SSL object asks for more bytes
and only then select()s (decrypted bytes buffered inside the SSL object do not wake select), and
every SSL call (reads, writes from the executor's polite disconnect, shutdown) holds one lock, as
OpenSSL forbids using one connection from two threads at once
(:class:`~gateway.adapters.llrp_session.ReaderSocket`). The plain TCP path is unchanged.

Watchdog (the gateway's, not sllurp's). A session is torn down when
  * the TCP connect or the TLS handshake fails, or the LLRP handshake (capabilities, config,
    ROSpec) does not reach inventory within ``connect_timeout_s``;
  * nothing at all (report, keepalive, any message) arrives for ``2 * keepalive_s`` once
    inventorying; the ROSpec's reader config asks for a KEEPALIVE every ``keepalive_s``;
  * sllurp's reader thread exits or reports the connection lost;
  * a frame header is absurd (version, or a length outside [10, ``max_frame_bytes``]) or a
    message does not decode: the byte stream can no longer be trusted, so we do not resync;
  * the reader's capabilities cannot serve the configuration (fewer antennas than configured,
    no UTC clock, no regulatory capabilities), or it refuses a step inventory needs.

Dialects. Readers refuse what they do not implement (ERROR_MESSAGE naming the message ID, or a
non-success LLRPStatus). The session's :class:`~gateway.adapters.llrp_dialect.RequestLedger`
notes which request each message ID is as it is sent, and sorts each refusal (on sllurp's thread)
by :data:`LLRP_STEPS`: a required step ends the session in the reader's own words; an optional one
is reported (logged once per adapter) and sllurp is shown that step's response as successful,
since its state machine knows no optional steps.

States (``on_status`` is called on changes only). ``online``: inventorying. ``degraded``: the link
is up but something is wrong (malformed tag entries, reports missing a requested field, the
hand-off queue dropping); it returns to ``online`` after ``degraded_hold_s`` without a new problem.
A lasting condition (an antenna down, the reader's clock off) degrades it until cleared.
``offline``: no session. Going offline logs ONE error (reader id, host:port, reason); retries are
logged at debug level; recovery logs one info line.

Hand-off. Each RO_ACCESS_REPORT with at least one valid entry becomes one :class:`ReadBatch`, given
to a callback or put into a bounded ``asyncio.Queue``. When the queue is full the OLDEST batch is
dropped (fresh reads matter more to a portal than stale ones), counted in ``dropped_batches`` /
``dropped_reads``, and the reader is degraded while it keeps happening. Upstream of the queue, at
most ``MAX_HANDOVERS_IN_FLIGHT`` posts of reports wait for the loop; beyond that sllurp's thread
waits, and TCP pushes back on the reader.

sllurp 3.0.5 traps handled here: its own reconnect waits a fixed 60 s (we set ``reconnect=False``
and own reconnection); ``disconnect()`` can hang forever and never sends CLOSE_CONNECTION (we do
not use it: :meth:`~gateway.adapters.llrp_session.ReaderClient.goodbye` sends DELETE_ACCESSSPEC,
DELETE_ROSPEC and CLOSE_CONNECTION and waits, bounded, for the response); its thread is not a
daemon (we interrupt, join and verify the thread is gone); its ROSpec starts on an Immediate
trigger and it never sends START_ROSPEC (we send it after ENABLE_ROSPEC); its framing buffers
forever on an absurd length and silently skips bytes after a decode error (we frame with
:class:`gateway.llrp.codec.LlrpFramer`, the simulator's framer, and stop at the first bad frame);
its ROSpec omits AntennaID/PeakRSSI/FirstSeen and enables only antenna 1 unless told (we request
every field and antenna explicitly); its socket is IPv4 only (we reject IPv6 hosts up front).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from sllurp.llrp_errors import LLRPError

from dockwatch_core.errors import ConfigError, DeviceError
from gateway.adapters.backoff import Backoff
from gateway.adapters.journal import JournalWriter
from gateway.adapters.llrp_dialect import LLRP_STEPS, LlrpStep, RefusalBook, llrp_status_text
from gateway.adapters.llrp_reports import (
    ConvertedReport,
    reader_config,
    tag_read_from_sllurp,
    tag_reads_from_sllurp,
)
from gateway.adapters.llrp_session import ReaderClient, SessionSink
from gateway.adapters.outage import Outage, OutageWords
from gateway.domain.model import DeviceId, DeviceState, DeviceStatus, TagRead

# The adapter's public names, and those of its parts that callers and tests import from here.
__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "DEVICE_TYPE",
    "LLRP_STEPS",
    "ConvertedReport",
    "LinkWatchdog",
    "LlrpAdapterStats",
    "LlrpReaderAdapter",
    "LlrpStep",
    "ReadBatch",
    "llrp_status_text",
    "reader_config",
    "tag_read_from_sllurp",
    "tag_reads_from_sllurp",
]

logger = logging.getLogger(__name__)

DEVICE_TYPE: Final = "llrp_reader"

DEFAULT_MAX_FRAME_BYTES: Final = 16 * 1024 * 1024

# ConnectionAttemptEvent statuses (LLRP 1.0.1 section 13.2.6.11) in words.
_CONNECTION_REFUSALS: Final[Mapping[str, str]] = {  # sllurp's names for them
    "Failed (a Reader initiated connection already exists)": (
        "a reader-initiated connection already exists"
    ),
    "Failed (a Client initiated connection already exists)": (
        "another client is already connected to the reader"
    ),
    "Failed (any reason other than a connection already exists)": (
        "the reader refused it (not because of another connection)"
    ),
    "Another connection attempted": "another client tried to connect",
}


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """The valid tag reads of one RO_ACCESS_REPORT, as received on the event loop."""

    reader_id: DeviceId
    received_at_monotonic: float
    reads: tuple[TagRead, ...]


@dataclass(frozen=True, slots=True)
class LlrpAdapterStats:
    """Counters of one adapter since it was created (a snapshot; the adapter keeps counting)."""

    reads: int = 0
    batches: int = 0
    malformed_reads: int = 0
    dropped_batches: int = 0
    dropped_reads: int = 0
    sessions_online: int = 0
    reconnects: int = 0
    last_error: str | None = None
    # Optional steps the reader refused (request -> the reader's words); the session went on.
    refused_steps: Mapping[str, str] = field(default_factory=dict)
    # The reader's UTC clock minus the gateway's, from its ConnectionAttemptEvent timestamp.
    clock_skew_s: float | None = None


@dataclass(slots=True)
class LinkWatchdog:
    """When to give up on a session; pure (time is passed in), one instance per adapter.

    ``verdict(now)`` returns a reason to tear the session down, or ``None``; ``deadline()`` is the
    earliest time the verdict can change if nothing is heard meanwhile.
    """

    connect_timeout_s: float
    silence_limit_s: float
    started_at: float = 0.0
    inventory_at: float | None = None
    last_heard: float = 0.0
    # The last thing the reader refused in this session, named in the handshake verdict: a
    # reader that refuses a step sllurp waits on is otherwise only "silent".
    last_refusal: str | None = None
    # False once the reader refused SET_READER_CONFIG (no LLRP keepalives will come): silence
    # then proves nothing, and TCP keepalives find a dead peer instead.
    keepalives: bool = True

    def begin(self, now: float) -> None:
        self.started_at = now
        self.inventory_at = None
        self.last_heard = now
        self.last_refusal = None
        self.keepalives = True

    def heard(self, now: float) -> None:
        self.last_heard = max(self.last_heard, now)

    def inventorying(self, now: float) -> None:
        self.inventory_at = now
        self.heard(now)

    def deadline(self) -> float:
        if self.inventory_at is None:
            return self.started_at + self.connect_timeout_s
        if not self.keepalives:
            return math.inf
        return self.last_heard + self.silence_limit_s

    def verdict(self, now: float) -> str | None:
        if now < self.deadline():
            return None
        if self.inventory_at is None:
            if self.last_refusal is not None:
                return (
                    f"no LLRP handshake within {self.connect_timeout_s:g} s; "
                    f"the reader refused {self.last_refusal}"
                )
            return f"no LLRP handshake within {self.connect_timeout_s:g} s"
        return (
            f"no message from the reader for {now - self.last_heard:.1f} s "
            f"(limit {self.silence_limit_s:g} s, twice the keepalive period)"
        )


class _ReaderHealth:
    """Whether the reader is online, degraded or offline, and who hears of it (loop only).

    Degraded while a recent *problem* (:meth:`problem`: malformed entries, missing fields, a full
    queue; forgotten ``degraded_hold_s`` after it last happened) or a lasting *condition*
    (:meth:`set_condition`: an antenna down, the reader's clock off; until cleared) holds.
    ``on_status`` hears of changes only, and of each new kind of problem while degraded; the
    outage policy (:mod:`gateway.adapters.outage`: one error when the reader goes offline, a
    warning per new reason meanwhile, one line when it is back) logs the rest. Online and
    degraded are judged only once the session inventories (the link watchdog knows when).
    """

    def __init__(
        self,
        *,
        reader_id: DeviceId,
        endpoint: str,
        tls: bool,
        degraded_hold_s: float,
        backoff: Backoff,
        on_status: Callable[[DeviceStatus], None],
        watchdog: LinkWatchdog,
        wake: Callable[[], None],
        clock: Callable[[], float],
        utcnow: Callable[[], datetime],
    ) -> None:
        self._reader_id = reader_id
        self._endpoint = endpoint
        self._tls = tls
        self._degraded_hold_s = degraded_hold_s
        self._on_status = on_status
        self._watchdog = watchdog
        self._wake = wake  # re-arms the watch loop's timer
        self._clock = clock
        self._utcnow = utcnow
        self.outage = Outage(
            f"LLRP reader {reader_id} at {endpoint}",
            log=logger,
            backoff=backoff,
            clock=clock,
            extra={"reader_id": reader_id},
            words=OutageWords(
                down="{link} is offline: {reason}",
                still="{link} still offline: {reason}",
                back="{link} is online again after {seconds:.1f} s offline ({attempts} attempts)",
            ),
        )
        self.state: DeviceState | None = None
        self.last_error: str | None = None
        # problem key -> (last time seen, detail); the reader is degraded while any is recent.
        self._problems: dict[str, tuple[float, str]] = {}
        self._warned: set[str] = set()
        # Lasting conditions (key -> detail) that degrade the reader until cleared: an antenna
        # down (told by the app's antenna health), the reader's clock off (per session).
        self._conditions: dict[str, str] = {}
        self._degraded_keys: frozenset[str] = frozenset()

    def new_session(self) -> None:
        """Forget the last session's problems and its reader clock verdict."""
        self._problems.clear()
        self._conditions.pop("clock", None)

    def set_condition(self, key: str, detail: str | None) -> None:
        """Hold (``detail``) or clear (``None``) a lasting condition; re-judge the state now."""
        if detail is None:
            if self._conditions.pop(key, None) is None:
                return
        elif self._conditions.get(key) == detail:
            return
        else:
            self._conditions[key] = detail
        if self._watchdog.inventory_at is not None and self.state is not DeviceState.OFFLINE:
            self.refresh(self._clock())

    def hold_condition(self, key: str, detail: str) -> None:
        """Hold a lasting condition without re-judging the state now (the next refresh does)."""
        self._conditions[key] = detail

    def problem(self, now: float, key: str, detail: str) -> None:
        self._problems[key] = (now, detail)
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(
                "LLRP reader %s at %s is degraded: %s",
                self._reader_id,
                self._endpoint,
                detail,
                extra={"reader_id": self._reader_id},
            )
        if self._watchdog.inventory_at is not None:
            self.refresh(now)
            self._wake()  # re-arm the watch loop's timer for the problem's expiry

    def problems_expire_at(self) -> float:
        """When the last recent problem is forgotten (``inf``: there is none)."""
        if not self._problems:
            return math.inf
        return max(at for at, _ in self._problems.values()) + self._degraded_hold_s

    def refresh(self, now: float) -> None:
        for key, (at, _) in list(self._problems.items()):
            if now - at >= self._degraded_hold_s:
                del self._problems[key]
        if self._problems or self._conditions:
            details = [*self._conditions.values(), *(d for _, d in self._problems.values())]
            keys = frozenset(self._problems).union(self._conditions)
            # A new kind of problem is news even while already degraded (a second antenna).
            renotify = keys != self._degraded_keys
            self._degraded_keys = keys
            self.set_state(DeviceState.DEGRADED, "; ".join(details), force=renotify)
            return
        self._degraded_keys = frozenset()
        if self.state is DeviceState.DEGRADED:
            logger.info(
                "LLRP reader %s at %s is no longer degraded",
                self._reader_id,
                self._endpoint,
                extra={"reader_id": self._reader_id},
            )
        self._warned.clear()
        self.set_state(DeviceState.ONLINE, "inventorying")

    def went_down(self, exc: DeviceError) -> None:
        reason = _reason(exc)
        self.last_error = str(exc)
        # A new reason is news (e.g. "connection closed" first, then the retries find that the
        # reader lacks a capability); the same reason again is a retry, not worth a line.
        if self.outage.failed(reason) or self.state is not DeviceState.OFFLINE:
            self.set_state(DeviceState.OFFLINE, reason)

    def set_state(self, state: DeviceState, detail: str, *, force: bool = False) -> None:
        if state is self.state and not force:
            return
        previous = self.state
        self.state = state
        if previous is DeviceState.OFFLINE and state is not DeviceState.OFFLINE:
            self.outage.recovered()
        elif previous is None and state is not DeviceState.OFFLINE:
            logger.info(
                "LLRP reader %s at %s is online%s",
                self._reader_id,
                self._endpoint,
                "" if not self._tls else " (TLS)",
                extra={"reader_id": self._reader_id},
            )
        self._on_status(
            DeviceStatus(
                device_id=self._reader_id,
                device_type=DEVICE_TYPE,
                state=state,
                since=self._utcnow(),
                detail=detail,
            )
        )


class _ReadIntake:
    """Reports in, batches out (loop only): each report's valid reads become one
    :class:`ReadBatch` for the callback or the bounded queue, which drops its OLDEST batch when
    full; malformed entries, missing fields and drops are counted and are problems."""

    def __init__(
        self,
        *,
        reader_id: DeviceId,
        out: asyncio.Queue[ReadBatch] | Callable[[ReadBatch], None],
        health: _ReaderHealth,
    ) -> None:
        self._reader_id = reader_id
        self._out = out
        self._health = health
        self.reads = 0
        self.batches = 0
        self.malformed = 0
        self.dropped_batches = 0
        self.dropped_reads = 0

    def take(self, report: ConvertedReport, now: float) -> None:
        if report.malformed:
            self.malformed += report.malformed
            self._health.problem(
                now,
                "malformed",
                f"{report.malformed} malformed tag entries in a report: {report.first_problem}",
            )
        elif report.missing_fields:
            # The ROSpec asked for these fields; a reader that drops one (e.g. PeakRSSI) still
            # yields reads, but the portal engine loses evidence.
            self._health.problem(
                now, "fields", f"reports lack requested fields {sorted(report.missing_fields)}"
            )
        if report.reads:
            self._deliver(ReadBatch(self._reader_id, now, report.reads), now)

    def _deliver(self, batch: ReadBatch, now: float) -> None:
        self.batches += 1
        self.reads += len(batch.reads)
        out = self._out
        if not isinstance(out, asyncio.Queue):
            out(batch)
            return
        try:
            out.put_nowait(batch)
        except asyncio.QueueFull:
            oldest = out.get_nowait()
            out.task_done()
            out.put_nowait(batch)
            self.dropped_batches += 1
            self.dropped_reads += len(oldest.reads)
            self._health.problem(now, "queue", "hand-off queue full: dropping the oldest batches")


class _ReaderChecks:
    """Whether this reader can serve the configuration (loop only): its capabilities (antennas,
    UTC clock, regulatory table), its answer to the connection attempt, and its clock against
    the gateway's. Each check returns a reason to end the session, or ``None``."""

    def __init__(
        self,
        *,
        reader_id: DeviceId,
        endpoint: str,
        antennas: tuple[int, ...],
        health: _ReaderHealth,
        max_clock_skew_s: float,
        utcnow: Callable[[], datetime],
    ) -> None:
        self._reader_id = reader_id
        self._endpoint = endpoint
        self._antennas = antennas
        self._health = health
        self._max_clock_skew_s = max_clock_skew_s
        self._utcnow = utcnow
        # The reader's UTC clock minus the gateway's, from the last connection event.
        self.clock_skew_s: float | None = None

    def capability_problem(self, caps: Mapping[str, Any]) -> str | None:
        general = caps.get("GeneralDeviceCapabilities")
        if not isinstance(general, Mapping):
            return "reader capabilities lack GeneralDeviceCapabilities"
        max_antennas = general.get("MaxNumberOfAntennaSupported", 0)
        if max_antennas < max(self._antennas):
            return (
                f"reader supports {max_antennas} antenna(s) but antennas "
                f"{list(self._antennas)} are configured"
            )
        if not general.get("HasUTCClockCapability", False):
            return "reader has no UTC clock (FirstSeenTimestampUTC cannot be reported)"
        regulatory = caps.get("RegulatoryCapabilities")
        if not isinstance(regulatory, Mapping) or "UHFBandCapabilities" not in regulatory:
            return "reader capabilities lack RegulatoryCapabilities/UHFBandCapabilities"
        return None

    def connection_problem(self, data: Mapping[str, Any]) -> str | None:
        """The ConnectionAttemptEvent of a ReaderEventNotificationData, if it holds one: its
        timestamp checks the reader's clock; a status other than Success ends the session."""
        attempt = data.get("ConnectionAttemptEvent")
        if attempt is None:
            return None
        self._check_clock(data.get("UTCTimestamp"))
        if attempt.get("Status") != "Success":
            status = str(attempt.get("Status"))
            return f"reader refused the connection: {_CONNECTION_REFUSALS.get(status, status)}"
        return None

    def _check_clock(self, stamp: object) -> None:
        """The reader's clock against the gateway's, from the connection event's UTCTimestamp
        (sent the moment the reader accepts us; a few ms of latency at most). Reads are dated
        by the reader: a skewed clock misdates every movement, and the portal engine's windows."""
        if not isinstance(stamp, Mapping) or not isinstance(stamp.get("Microseconds"), int):
            return
        skew = stamp["Microseconds"] / 1e6 - self._utcnow().timestamp()
        self.clock_skew_s = skew
        if abs(skew) <= self._max_clock_skew_s:
            return
        detail = (
            f"reader clock {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} the "
            f"gateway's (limit {self._max_clock_skew_s:g} s): reads are misdated"
        )
        logger.warning(
            "LLRP reader %s at %s: %s",
            self._reader_id,
            self._endpoint,
            detail,
            extra={"reader_id": self._reader_id, "clock_skew_s": round(skew, 3)},
        )
        self._health.hold_condition("clock", detail)


class _DoorIo:
    """The reader's I/O for the door pipeline (loop only): antenna events in (to the app's
    antenna health: a reader that notices a pulled cable says so), GPI events in (photo eyes),
    GPO writes out (stack lights, horns), each run in the executor and kept until done."""

    def __init__(
        self,
        *,
        reader_id: DeviceId,
        on_antenna: Callable[[DeviceId, int, bool], None] | None,
        on_gpi: Callable[[DeviceId, int, bool, int], None] | None,
        utcnow: Callable[[], datetime],
    ) -> None:
        self._reader_id = reader_id
        self._on_antenna = on_antenna
        self._on_gpi = on_gpi
        self._utcnow = utcnow
        self._gpo_writes: set[asyncio.Future[None]] = set()

    def notified(self, data: Mapping[str, Any]) -> None:
        """Pass on the antenna and GPI events of one ReaderEventNotificationData."""
        antenna_event = data.get("AntennaEvent")
        if isinstance(antenna_event, Mapping) and self._on_antenna is not None:
            self._on_antenna(
                self._reader_id,
                int(antenna_event.get("AntennaID", 0)),
                antenna_event.get("EventType") == "Connected",
            )
        gpi_event = data.get("GPIEvent")
        if isinstance(gpi_event, Mapping) and self._on_gpi is not None:
            stamp = data.get("UTCTimestamp")
            at_us = stamp.get("Microseconds") if isinstance(stamp, Mapping) else None
            self._on_gpi(
                self._reader_id,
                int(gpi_event.get("GPIPortNumber", 0)),
                bool(gpi_event.get("GPIEvent")),
                at_us if isinstance(at_us, int) else round(self._utcnow().timestamp() * 1e6),
            )

    def write_gpo(self, client: ReaderClient, levels: Mapping[int, bool]) -> None:
        future = asyncio.ensure_future(asyncio.to_thread(self._send_gpo, client, dict(levels)))
        self._gpo_writes.add(future)
        future.add_done_callback(self._gpo_writes.discard)

    def _send_gpo(self, client: ReaderClient, levels: dict[int, bool]) -> None:
        try:
            client.write_gpo(levels)
        except (OSError, LLRPError) as exc:  # the watchdog finds a dead link; this is a light
            logger.debug("GPO write to %s failed: %r", self._reader_id, exc)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LlrpReaderAdapter:
    """One LLRP reader: connect, watch, reconnect with backoff; hand reads to the event loop.

    ``run()`` never returns and raises nothing but ``CancelledError``; cancelling it stops the
    session politely (bounded), joins sllurp's thread and reports ``offline``.
    """

    def __init__(
        self,
        *,
        reader_id: str,
        host: str,
        port: int,
        antennas: Sequence[int],
        out: asyncio.Queue[ReadBatch] | Callable[[ReadBatch], None],
        on_status: Callable[[DeviceStatus], None],
        backoff: Backoff,
        keepalive_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        report_every_ms: int = 200,
        report_every_tags: int = 1000,
        tx_power_dbm: float | None = None,
        degraded_hold_s: float = 10.0,
        polite_disconnect_s: float = 1.0,
        thread_join_s: float = 3.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        tls: ssl.SSLContext | None = None,
        on_antenna: Callable[[DeviceId, int, bool], None] | None = None,
        on_gpi: Callable[[DeviceId, int, bool, int], None] | None = None,
        max_clock_skew_s: float = 2.0,
        journal: JournalWriter | None = None,
        clock: Callable[[], float] = time.monotonic,
        utcnow: Callable[[], datetime] = _utcnow,
    ) -> None:
        problems = _config_problems(
            host=host,
            port=port,
            antennas=antennas,
            out=out,
            positive=(keepalive_s, connect_timeout_s, report_every_ms, report_every_tags),
        )
        if problems:
            raise ConfigError([f"reader {reader_id}: {p}" for p in problems])

        self.reader_id = DeviceId(reader_id)
        self.host = host
        self.port = port
        self.antennas = tuple(sorted(set(antennas)))
        # sllurp mutates its reader config: a fresh one per session.
        self._reader_config = partial(
            reader_config,
            antennas=self.antennas,
            keepalive_s=keepalive_s,
            report_every_ms=report_every_ms,
            report_every_tags=report_every_tags,
            tx_power_dbm=tx_power_dbm,
        )
        # What every session's client gets; config, post, session and sink are the session's.
        self._new_client = partial(
            ReaderClient,
            host=host,
            port=port,
            socket_timeout_s=connect_timeout_s,
            max_frame_bytes=max_frame_bytes,
            reader_id=self.reader_id,
            tls=tls,
            tcp_keepalive_s=keepalive_s,
            journal=journal,
        )
        self._backoff = backoff
        self._polite_disconnect_s = polite_disconnect_s
        self._thread_join_s = thread_join_s
        self._client: ReaderClient | None = None  # the session's, for GPO writes
        self._clock = clock

        self._watchdog = LinkWatchdog(connect_timeout_s, 2.0 * keepalive_s)
        self._session = 0
        self._failure: DeviceError | None = None
        self._wake = asyncio.Event()  # replaced in run(): an Event belongs to one loop
        self._running = False
        self._sessions_online = 0
        self._connects = 0

        self._health = _ReaderHealth(
            reader_id=self.reader_id,
            endpoint=self.endpoint,
            tls=tls is not None,
            degraded_hold_s=degraded_hold_s,
            backoff=backoff,
            on_status=on_status,
            watchdog=self._watchdog,
            wake=self._wake_watch,
            clock=clock,
            utcnow=utcnow,
        )
        self._intake = _ReadIntake(reader_id=self.reader_id, out=out, health=self._health)
        self._checks = _ReaderChecks(
            reader_id=self.reader_id,
            endpoint=self.endpoint,
            antennas=self.antennas,
            health=self._health,
            max_clock_skew_s=max_clock_skew_s,
            utcnow=utcnow,
        )
        self._door_io = _DoorIo(
            reader_id=self.reader_id, on_antenna=on_antenna, on_gpi=on_gpi, utcnow=utcnow
        )
        self._refusals = RefusalBook(reader_id=self.reader_id, endpoint=self.endpoint)

    # -- public ---------------------------------------------------------------------------------

    @property
    def state(self) -> DeviceState | None:
        """The last state reported to ``on_status`` (``None`` before the first attempt ends)."""
        return self._health.state

    @property
    def stats(self) -> LlrpAdapterStats:
        intake = self._intake
        return LlrpAdapterStats(
            reads=intake.reads,
            batches=intake.batches,
            malformed_reads=intake.malformed,
            dropped_batches=intake.dropped_batches,
            dropped_reads=intake.dropped_reads,
            sessions_online=self._sessions_online,
            reconnects=max(0, self._connects - 1),
            last_error=self._health.last_error,
            refused_steps=dict(self._refusals.steps),
            clock_skew_s=self._checks.clock_skew_s,
        )

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def set_antenna_down(self, antenna: int, detail: str | None) -> None:
        """Mark the reader degraded while one of its antennas is down (``detail``), or clear it
        (``None``). Antenna health is judged by the portal's reads (``gateway.domain.antenna``)."""
        self._health.set_condition(f"antenna {antenna}", detail)

    def write_gpo(self, levels: Mapping[int, bool]) -> bool:
        """Set GPO ports (SET_READER_CONFIG GPOWriteData) now, from the loop: the write runs
        in the executor. Returns False (nothing sent) while the reader is not inventorying."""
        client = self._client
        if client is None or self._health.state not in (DeviceState.ONLINE, DeviceState.DEGRADED):
            return False
        self._door_io.write_gpo(client, levels)
        return True

    async def run(self) -> None:
        if self._running:
            raise RuntimeError(f"LlrpReaderAdapter {self.reader_id} is already running")
        self._running = True
        self._wake = asyncio.Event()
        try:
            while True:
                # A bug (anything but a DeviceError) escapes to the gateway's supervisor, the
                # one place that logs a crash and restarts a part.
                try:
                    await self._session_once()
                except DeviceError as exc:
                    self._health.went_down(exc)
                await self._health.outage.pause()
        finally:
            self._running = False
            self._session += 1  # late events from the last client are now stale
            self._health.set_state(DeviceState.OFFLINE, "adapter stopped")

    # -- sessions -------------------------------------------------------------------------------

    async def _session_once(self) -> None:
        """Run one session until it fails (raises DeviceError) or the task is cancelled."""
        self._session += 1
        session = self._session
        self._failure = None
        self._health.new_session()
        self._wake.clear()
        self._connects += 1
        self._watchdog.begin(self._clock())
        loop = asyncio.get_running_loop()
        client = self._new_client(
            config=self._reader_config(),
            post=lambda fn, *args: _post(loop, fn, *args),
            session=session,
            sink=self._sink(),
        )
        self._client = client
        connecting = asyncio.ensure_future(asyncio.to_thread(client.connect))
        connecting.add_done_callback(lambda _: self._wake.set())
        polite = False
        try:
            await self._watch(client, connecting)
        except asyncio.CancelledError:
            polite = self._health.state in (DeviceState.ONLINE, DeviceState.DEGRADED)
            raise
        finally:
            self._client = None
            try:
                # Reports the reader sent before it answered the goodbye are still this
                # session's: they arrive while it closes and are counted, not dropped as stale.
                await self._close(client, connecting, polite=polite)
            finally:
                self._session += 1  # the thread is gone: anything later from it is stale

    async def _watch(self, client: ReaderClient, connecting: asyncio.Future[None]) -> None:
        while True:
            if self._failure is not None:
                raise self._failure
            if connecting.done():
                exc = connecting.exception()
                if exc is not None:
                    raise DeviceError(self.reader_id, f"cannot connect: {exc}") from exc
                if not client.thread_alive():
                    # A dying thread posts its reason first: let those callbacks run, so the
                    # cause is reported rather than its consequence.
                    await asyncio.sleep(0)
                    raise self._failure or DeviceError(
                        self.reader_id, "sllurp reader thread exited"
                    )
            now = self._clock()
            verdict = self._watchdog.verdict(now)
            if verdict is not None:
                raise DeviceError(self.reader_id, verdict)
            if self._watchdog.inventory_at is not None:
                self._health.refresh(now)
            wake_at = min(self._watchdog.deadline(), self._health.problems_expire_at())
            self._wake.clear()
            try:
                delay = None if wake_at == math.inf else max(0.0, wake_at - now)
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _close(
        self, client: ReaderClient, connecting: asyncio.Future[None], *, polite: bool
    ) -> None:
        """Tear a session down completely, even if cancelled meanwhile (then re-raise)."""
        # A connect still in flight would start sllurp's thread after we stopped it: let it end
        # first (it is bounded by the socket timeout, connect_timeout_s).
        cancelled = await _finish(connecting)
        closing = asyncio.ensure_future(
            asyncio.to_thread(
                client.close,
                polite_timeout_s=self._polite_disconnect_s if polite else 0.0,
                join_timeout_s=self._thread_join_s,
            )
        )
        cancelled = await _finish(closing) or cancelled
        failure = closing.exception()
        if failure is not None or not closing.result():
            logger.error(
                "LLRP reader %s at %s: sllurp's reader thread did not exit within %.1f s (%r)",
                self.reader_id,
                self.endpoint,
                self._thread_join_s,
                failure,
                extra={"reader_id": self.reader_id},
            )
        if cancelled:
            raise asyncio.CancelledError

    # -- events from sllurp's thread (run on the loop) ------------------------------------------

    def _sink(self) -> SessionSink:
        return SessionSink(
            reports=self._on_reports,
            message=self._on_message,
            refused=self._on_refused,
            inventorying=self._on_inventorying,
            failed=self._fail,
            disconnected=self._on_disconnected,
            thread_exited=self._on_thread_exited,
        )

    def _on_reports(
        self, session: int, reports: list[ConvertedReport], taken: Callable[[], None]
    ) -> None:
        taken()  # sllurp's thread may hand over more
        if session != self._session:
            return
        now = self._clock()
        self._watchdog.heard(now)
        take = self._intake.take
        for report in reports:
            take(report, now)

    def _on_message(self, session: int, name: str, body: Mapping[str, Any]) -> None:
        if session != self._session:
            return
        self._watchdog.heard(self._clock())
        problem = None
        if name == "GET_READER_CAPABILITIES_RESPONSE":
            problem = self._checks.capability_problem(body)
        elif name == "READER_EVENT_NOTIFICATION":
            data = body.get("ReaderEventNotificationData", {})
            problem = self._checks.connection_problem(data)
            self._door_io.notified(data)  # after the clock check, before a refusal's failure
        if problem is not None:
            self._fail(session, problem)

    def _on_refused(self, session: int, request: str | None, text: str) -> None:
        """The reader refused an optional step (or sent an ERROR_MESSAGE answering nothing we
        sent): logged once per adapter for each step and reason; the session goes on."""
        if session != self._session:
            return
        self._watchdog.heard(self._clock())
        self._watchdog.last_refusal = self._refusals.note(request, text)
        if request == "SET_READER_CONFIG":
            self._watchdog.keepalives = False

    def _on_inventorying(self, session: int) -> None:
        if session != self._session:
            return
        now = self._clock()
        self._watchdog.inventorying(now)
        self._sessions_online += 1
        self._backoff.succeeded(now)
        self._health.refresh(now)
        self._wake.set()

    def _on_disconnected(self, session: int) -> None:
        self._fail(session, "connection closed")

    def _on_thread_exited(self, session: int) -> None:
        self._fail(session, "sllurp reader thread exited")

    def _wake_watch(self) -> None:
        # Not a bound method of the Event: run() replaces it.
        self._wake.set()

    def _fail(self, session: int, reason: str, cause: BaseException | None = None) -> None:
        # The first reason wins: it is the cause, later ones are consequences.
        if session == self._session and self._failure is None:
            self._failure = DeviceError(self.reader_id, reason)
            # What ``raise ... from cause`` records; the exception was caught on sllurp's thread.
            self._failure.__cause__ = cause
            self._wake.set()


def _config_problems(
    *,
    host: str,
    port: int,
    antennas: Sequence[int],
    out: asyncio.Queue[ReadBatch] | Callable[[ReadBatch], None],
    positive: tuple[float, ...],
) -> list[str]:
    """What is wrong with a reader's configuration (``positive``: keepalive_s,
    connect_timeout_s, report_every_ms and report_every_tags)."""
    problems = []
    try:
        if ipaddress.ip_address(host).version == 6:
            problems.append(f"host {host!r} is IPv6; sllurp 3.0.5 connects over IPv4 only")
    except ValueError:
        pass  # a host name: resolved to IPv4 by sllurp's AF_INET socket
    if not 0 < port < 65536:
        problems.append(f"port {port} out of range")
    if not antennas or any(not 1 <= a <= 0xFFFF for a in antennas):
        problems.append(f"antennas must be a non-empty list of 1..65535, got {antennas!r}")
    if min(positive) <= 0:
        problems.append(
            "keepalive_s, connect_timeout_s, report_every_ms and report_every_tags must be > 0"
        )
    if isinstance(out, asyncio.Queue) and out.maxsize <= 0:
        problems.append("the hand-off queue must be bounded (maxsize > 0)")
    return problems


def _reason(exc: DeviceError) -> str:
    """The reason without the ``device_id:`` prefix DeviceError adds (the log line names it)."""
    prefix = f"{exc.device_id}: "
    text = str(exc)
    return text[len(prefix) :] if text.startswith(prefix) else text


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> None:
    """Hand an event from sllurp's thread to the loop; a closed loop has nobody left to tell."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


async def _finish(fut: asyncio.Future[Any]) -> bool:
    """Wait until ``fut`` is done even if this task is cancelled meanwhile.

    Returns whether a cancellation arrived while waiting; the caller re-raises it once its
    clean-up is complete. ``asyncio.wait`` neither raises the future's exception nor cancels it.
    """
    cancelled = False
    while not fut.done():
        try:
            await asyncio.wait([fut])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled
