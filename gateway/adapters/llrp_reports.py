"""What the gateway asks an LLRP reader to report, and how it reads the reports.

Theory of operation
-------------------
The ROSpec's reader configuration (:func:`reader_config`, one per session: sllurp mutates it)
requests every TagReportData field the portal engine uses (antenna, peak RSSI, first and last
seen, seen count) and enables every configured antenna: sllurp's defaults omit those fields and
enable antenna 1 only. It also asks for a KEEPALIVE every ``keepalive_s`` (the adapter's watchdog
needs to hear silence), reports every ``report_every_tags`` tags or ``report_every_ms`` ms, and
antenna and GPI events.

Each RO_ACCESS_REPORT sllurp decodes becomes one :class:`ConvertedReport`
(:func:`tag_reads_from_sllurp`), on sllurp's thread, before the event loop sees it. The usual
report, every requested field in every entry and nothing wrong, is converted column by column and
validated once for all its reads (:meth:`TagRead.batch`); a report with any entry incomplete or
invalid is converted entry by entry (:func:`tag_read_from_sllurp`), which keeps the fallbacks and
counts the malformed entries. Both give the same reads (``tests/test_llrp_conversion.py``). The
read journal's replay (:mod:`gateway.adapters.journal`) converts with the same functions.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sllurp.llrp import LLRPReaderConfig
from sllurp.llrp_errors import LLRPError

from dockwatch_core.errors import ProtocolError
from gateway.domain.model import DeviceId, Epc, TagRead

# Exceptions sllurp's pure-Python decoders raise on bytes they cannot make sense of.
DECODE_ERRORS: Final = (LLRPError, struct.error, ValueError, KeyError, IndexError, TypeError)

# The TagReportData fields the ROSpec requests; a reader that omits one is degraded.
_REQUESTED_FIELDS: Final = frozenset(
    {"AntennaID", "PeakRSSI", "FirstSeenTimestampUTC", "LastSeenTimestampUTC", "TagSeenCount"}
)
_TAG_CONTENT_SELECTOR: Final[Mapping[str, bool]] = {
    "EnableROSpecID": False,
    "EnableSpecIndex": False,
    "EnableInventoryParameterSpecID": False,
    "EnableAntennaID": True,
    "EnableChannelIndex": False,
    "EnablePeakRSSI": True,
    "EnableFirstSeenTimestamp": True,
    "EnableLastSeenTimestamp": True,
    "EnableTagSeenCount": True,
    "EnableAccessSpecID": False,
}


@dataclass(frozen=True, slots=True)
class ConvertedReport:
    """The tag entries of one RO_ACCESS_REPORT, converted: its valid reads and what was wrong.

    ``malformed`` entries were dropped (``first_problem`` says why for the first one);
    ``missing_fields`` are requested TagReportData fields the report's first entry lacks.
    """

    reads: tuple[TagRead, ...]
    malformed: int = 0
    first_problem: str | None = None
    missing_fields: frozenset[str] = frozenset()


def tag_read_from_sllurp(reader_id: DeviceId, entry: Mapping[str, Any]) -> TagRead:
    """Convert one sllurp TagReportData dict into a :class:`TagRead`.

    sllurp gives the EPC as lower-case hex ASCII bytes and timestamps in microseconds. A missing
    PeakRSSI becomes ``None``, a missing TagSeenCount 1, and a missing first/last-seen timestamp
    takes the other one; an entry without EPC, antenna or any UTC timestamp is malformed.

    Raises:
        ProtocolError: the entry cannot be a TagRead.
    """
    first = entry.get("FirstSeenTimestampUTC")
    last = entry.get("LastSeenTimestampUTC")
    if first is None:
        if last is None:
            raise ProtocolError("malformed TagReportData entry: no UTC timestamp")
        first = last
    elif last is None:
        last = first
    try:
        epc = entry["EPC"].decode("ascii").upper()
        rssi = entry.get("PeakRSSI")
        return TagRead(
            reader_id=reader_id,
            antenna=int(entry["AntennaID"]),
            epc=Epc(epc),
            rssi_dbm=None if rssi is None else float(rssi),
            first_seen_us=int(first),
            last_seen_us=int(last),
            seen_count=int(entry.get("TagSeenCount", 1)),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"malformed TagReportData entry: {exc!r}") from exc


# Column readers: ``map`` calls them from C, with no per-entry Python frame; each raises
# KeyError when its field is absent.
_EPC: Final = operator.itemgetter("EPC")
_ANTENNA: Final = operator.itemgetter("AntennaID")
_RSSI: Final = operator.itemgetter("PeakRSSI")
_FIRST_SEEN: Final = operator.itemgetter("FirstSeenTimestampUTC")
_LAST_SEEN: Final = operator.itemgetter("LastSeenTimestampUTC")
_SEEN_COUNT: Final = operator.itemgetter("TagSeenCount")


def tag_reads_from_sllurp(
    reader_id: DeviceId, entries: Sequence[Mapping[str, Any]]
) -> ConvertedReport:
    """Convert the TagReportData dicts of one report; malformed entries are dropped and counted.

    The result is what :func:`tag_read_from_sllurp` gives entry by entry. The usual report has
    every requested field in every entry and nothing wrong: it is converted column by column
    (``map`` over the entries, one ``join`` for the EPCs) and validated by
    :meth:`TagRead.batch`, less than half the cost of converting entry by entry. A report
    where any entry lacks a field, or where any value fails, is converted entry by entry, which
    keeps the fallbacks (missing PeakRSSI, TagSeenCount, one timestamp) and says which
    entries are malformed.
    """
    if not entries:
        return ConvertedReport(())
    # A reader applies one content selector to every entry: the first one tells.
    missing = _REQUESTED_FIELDS.difference(entries[0])
    if not missing:
        try:
            return ConvertedReport(_tag_reads_by_column(reader_id, entries))
        except (KeyError, ValueError, TypeError, AttributeError):
            pass  # some entry is incomplete or invalid: entry by entry says which
    reads = []
    malformed = 0
    first_problem: ProtocolError | None = None
    for entry in entries:
        try:
            reads.append(tag_read_from_sllurp(reader_id, entry))
        except ProtocolError as exc:
            malformed += 1
            first_problem = first_problem or exc
    return ConvertedReport(
        tuple(reads),
        malformed,
        None if first_problem is None else str(first_problem),
        frozenset(missing),
    )


def _tag_reads_by_column(
    reader_id: DeviceId, entries: Sequence[Mapping[str, Any]]
) -> tuple[TagRead, ...]:
    """The fast path of :func:`tag_reads_from_sllurp`: the same conversions, a column at a time."""
    # A space cannot occur in hex: an EPC holding one adds a piece, and TagRead.batch then
    # rejects the columns for their lengths (a non-bytes EPC makes join raise TypeError).
    epcs = b" ".join(map(_EPC, entries)).decode("ascii").upper().split(" ")
    return TagRead.batch(
        reader_id,
        antennas=list(map(int, map(_ANTENNA, entries))),
        epcs=epcs,
        rssi_dbm=list(map(float, map(_RSSI, entries))),
        first_seen_us=list(map(int, map(_FIRST_SEEN, entries))),
        last_seen_us=list(map(int, map(_LAST_SEEN, entries))),
        seen_counts=list(map(int, map(_SEEN_COUNT, entries))),
    )


def reader_config(
    *,
    antennas: Sequence[int],
    keepalive_s: float,
    report_every_ms: int,
    report_every_tags: int,
    tx_power_dbm: float | None,
) -> Any:
    """The sllurp ``LLRPReaderConfig`` of one session (sllurp mutates it: build one per session).

    Every TagReportData field the gateway uses is requested explicitly, every configured antenna is
    enabled, reports come every ``report_every_tags`` tags or ``report_every_ms`` ms, and the reader
    is asked for a KEEPALIVE every ``keepalive_s`` so silence can be detected.
    """
    return LLRPReaderConfig(
        {
            "antennas": list(antennas),
            "tx_power": 0,  # index 0: the reader's maximum, unless tx_power_dbm picks a level
            "tx_power_dbm": None if tx_power_dbm is None else float(tx_power_dbm),
            "report_every_n_tags": report_every_tags,
            "report_timeout_ms": report_every_ms,
            "tag_content_selector": dict(_TAG_CONTENT_SELECTOR),
            "keepalive_interval": round(keepalive_s * 1000),
            "reconnect": False,  # sllurp's reconnect sleeps a fixed 60 s; the adapter owns it
            "start_inventory": True,
            "reset_on_connect": True,  # delete stale ROSpecs/AccessSpecs a previous run left
            # AntennaEvent: a reader that notices a pulled cable says so (antenna health);
            # GPIEvent: photo eyes on the reader's inputs (the door pipeline's beams)
            "event_selector": {"AntennaEvent": True, "GPIEvent": True},
        }
    )
