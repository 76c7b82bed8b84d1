"""The fast, column-wise conversion of a report gives exactly what entry-by-entry conversion
gives: same reads, same malformed count, same first problem. ``TagRead.batch`` accepts and
rejects exactly what ``TagRead(...)`` does."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockwatch_core.errors import ProtocolError
from gateway.adapters.llrp import (
    reader_config,
    tag_read_from_sllurp,
    tag_reads_from_sllurp,
)
from gateway.adapters.llrp_session import ReaderClient, SessionSink
from gateway.domain.model import DeviceId, Epc, TagRead
from gateway.llrp import codec

READER = DeviceId("r1")

hex_epc = st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)
bad_epc = st.sampled_from(["", "zz", "12 4", "ÿ"])


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    epc = draw(st.one_of(hex_epc, hex_epc, hex_epc, bad_epc))
    entry["EPC"] = epc.encode("latin-1")
    if draw(st.integers(0, 9)):
        entry["AntennaID"] = draw(st.integers(-1, 70000))
    if draw(st.integers(0, 5)):
        entry["PeakRSSI"] = draw(st.integers(-128, 0))
    first = draw(st.integers(0, 2**53))
    if draw(st.integers(0, 9)):
        entry["FirstSeenTimestampUTC"] = first
    if draw(st.integers(0, 9)):
        entry["LastSeenTimestampUTC"] = first + draw(st.integers(-5, 10**6))
    if draw(st.integers(0, 5)):
        entry["TagSeenCount"] = draw(st.integers(-1, 500))
    if not draw(st.integers(0, 20)):
        del entry["EPC"]
    return entry


def one_by_one(report: list[dict[str, Any]]) -> tuple[list[TagRead], int, str | None]:
    reads: list[TagRead] = []
    malformed = 0
    first_problem: str | None = None
    for entry in report:
        try:
            reads.append(tag_read_from_sllurp(READER, entry))
        except ProtocolError as exc:
            malformed += 1
            first_problem = first_problem or str(exc)
    return reads, malformed, first_problem


@settings(max_examples=300, deadline=None)
@given(st.lists(entries(), max_size=12))
def test_report_conversion_equals_entry_by_entry(report: list[dict[str, Any]]) -> None:
    converted = tag_reads_from_sllurp(READER, report)
    reads, malformed, first_problem = one_by_one(report)
    assert list(converted.reads) == reads
    assert converted.malformed == malformed
    assert converted.first_problem == first_problem


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-1, 70000),
            st.one_of(hex_epc.map(str.upper), bad_epc, hex_epc),
            st.one_of(st.none(), st.floats(-128, 0)),
            st.integers(0, 10**9),
            st.integers(-3, 10**6),
            st.integers(-1, 9),
        ),
        max_size=8,
    )
)
def test_batch_accepts_exactly_what_the_constructor_accepts(
    rows: list[tuple[int, str, float | None, int, int, int]],
) -> None:
    expected: list[TagRead] | None = []
    for antenna, epc, rssi, first, extra, count in rows:
        try:
            assert expected is not None
            expected.append(TagRead(READER, antenna, Epc(epc), rssi, first, first + extra, count))
        except ValueError:
            expected = None
            break
    try:
        got: list[TagRead] | None = list(
            TagRead.batch(
                READER,
                antennas=[r[0] for r in rows],
                epcs=[r[1] for r in rows],
                rssi_dbm=[r[2] for r in rows],
                first_seen_us=[r[3] for r in rows],
                last_seen_us=[r[3] + r[4] for r in rows],
                seen_counts=[r[5] for r in rows],
            )
        )
    except ValueError:
        got = None
    assert got == expected


def test_a_tag_read_is_validated_however_it_is_built() -> None:
    read = TagRead(DeviceId("r"), 1, Epc("30AB"), -50.0, 10, 20)
    assert read._replace(antenna=2).antenna == 2
    for bad in ({"antenna": 70_000}, {"epc": "30ab"}, {"last_seen_us": 5}, {"seen_count": 0}):
        with pytest.raises(ValueError, match=r"antenna|EPC|last_seen|seen_count"):
            read._replace(**bad)


def test_a_reply_that_cannot_be_sent_is_a_lost_connection_not_a_crash() -> None:
    """sllurp answers a KEEPALIVE at once, from the frame loop: a connection that broke
    meanwhile must end the session with a reason, not escape as a thread crash."""
    events: list[tuple[Any, ...]] = []

    def post(fn: Any, *args: Any) -> None:
        events.append((fn, *args))

    sink = SessionSink(
        reports=lambda *a: None,
        message=lambda *a: None,
        refused=lambda *a: None,
        inventorying=lambda *a: None,
        failed=lambda *a: None,
        disconnected=lambda *a: None,
        thread_exited=lambda *a: None,
    )
    client = ReaderClient(
        host="127.0.0.1",
        port=5084,
        config=reader_config(
            antennas=[1], keepalive_s=5, report_every_ms=200, report_every_tags=0, tx_power_dbm=None
        ),
        socket_timeout_s=1.0,
        max_frame_bytes=1 << 20,
        post=post,
        session=1,
        sink=sink,
        reader_id=DeviceId("door-1-reader"),
    )

    def broken_pipe(_data: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    client.llrp.transport_tx_write = broken_pipe  # what sllurp sends through (its send_data)
    client.raw_data_received(codec.Keepalive(msg_id=7).encode())
    failures = [args for fn, *args in events if fn is sink.failed]
    assert len(failures) == 1
    session, reason, cause = failures[0]
    assert session == 1
    assert reason.startswith("connection lost while answering the reader")
    assert isinstance(cause, BrokenPipeError)
