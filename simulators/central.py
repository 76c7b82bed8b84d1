"""Central inventory simulator: a gRPC ``InventoryIngest`` server that persists, acks and checks.

Run it with ``dockwatch simulate central --listen 127.0.0.1:50070 --db var/central.db``.

Theory of operation
-------------------
Each gateway opens one ``Ingest`` stream and sends batches of movements in seq order. For every
batch the simulator

1. checks the stream's contract (one site per stream, movements of that site, seq strictly
   increasing within and across the stream's batches, each movement valid); a violation ends the
   stream with ``INVALID_ARGUMENT``;
2. stores the batch in ONE SQLite transaction (``synchronous=FULL``: an ack is only sent for
   what survives a crash or power cut) and classifies every movement:

   - *unique*: a new ``movement_id``; stored;
   - *duplicate*: a ``movement_id`` already stored for the site (an at-least-once replay);
     counted, not stored again;
   - *conflict*: a new ``movement_id`` with a seq already taken by another movement (a gateway
     whose store was wiped and restarted its seq space); counted, logged as an error, not stored;
   - a *gap* is detected when a unique movement's seq is above the site's high-water mark + 1:
     the skipped range is logged and counted. ``missing`` is how many seqs up to the high-water
     mark are still absent (a later resend fills them);

   In the same transaction every *unique* movement is applied to the site's totals: the on-hand
   quantity per (location, SKU), ``from_location -= quantity``, ``to_location += quantity``,
   exactly the gateway's stock arithmetic. Duplicates and conflicts change nothing, so the
   totals equal the gateway's stock whenever central holds every seq up to the gateway's last;
3. answers with ``IngestAck{acked_through_seq = the batch's last seq}`` (cumulative: the stream
   is in seq order, so everything before it was stored too).

A batch is stored with one lookup of its ids and one of its seqs (in chunks of
``LOOKUP_CHUNK``) and bulk inserts, not a query per movement: a batch costs about one fsync.

``GetCursor`` returns the site's high-water mark. The ledger's counters and totals live in the
database, so they survive restarts (a ledger written before totals existed gets them rebuilt from
its stored movements when opened).

Reports: a summary line is printed every ``--summary-interval`` seconds when something changed;
at exit the totals per site, location and SKU are printed as a table; ``--totals-file PATH``
keeps a JSON report (counters and totals per site) up to date on the same schedule (written
atomically); ``--report`` prints the report of an existing ``--db`` and exits without serving.
Optional TLS (``--tls-cert``/``--tls-key``) and bearer-token auth (``--token-file``; metadata
``authorization: Bearer <token>``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import sqlite3
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc

from dockwatch_core.errors import ProtocolError
from gateway.adapters.proto_convert import movement_from_proto
from gateway.domain.model import RecordedMovement
from gateway.proto.dockwatch.central.v1 import ingest_pb2, ingest_pb2_grpc
from gateway.proto.dockwatch.edge.v1 import types_pb2

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:50070"
DEFAULT_DB = "var/central.db"
LOOKUP_CHUNK = 500
"""Ids (or seqs) per lookup query, well below SQLite's limit on bound parameters."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sites (
    site TEXT PRIMARY KEY,
    high_water INTEGER NOT NULL DEFAULT 0,
    received INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0,
    gaps INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS movements (
    arrival INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    seq INTEGER NOT NULL,
    movement_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (site, movement_id),
    UNIQUE (site, seq)
);
CREATE TABLE IF NOT EXISTS gap_events (
    site TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    detected_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS totals (
    site TEXT NOT NULL,
    location TEXT NOT NULL,
    sku TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (site, location, sku)
);
"""

_ADD_TOTALS = (
    "INSERT INTO totals (site, location, sku, on_hand, last_seq) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (site, location, sku) DO UPDATE SET on_hand = on_hand + excluded.on_hand, "
    "last_seq = max(last_seq, excluded.last_seq)"
)


@dataclass(frozen=True, slots=True)
class SiteStats:
    """What central holds for one site. ``missing`` = seqs up to ``acked_through_seq`` absent."""

    site: str
    acked_through_seq: int
    received: int
    unique: int
    duplicates: int
    conflicts: int
    gaps: int

    @property
    def missing(self) -> int:
        return self.acked_through_seq - self.unique


@dataclass(frozen=True, slots=True)
class SiteTotal:
    """Central's on-hand quantity of one SKU at one location of one site, after the unique
    movements it stored (``last_seq``: the highest seq that changed it)."""

    site: str
    location: str
    sku: str
    on_hand: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    stored: int
    duplicates: int
    conflicts: int
    gaps: tuple[tuple[int, int], ...]
    """Seq ranges (first, last) found missing while storing this batch."""


class CentralLedger:
    """The simulator's own SQLite file: stored movements and per-site counters. Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the server's worker threads, serialised by the lock.
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.executescript(_SCHEMA)
            self._rebuild_totals_if_missing()

    def _rebuild_totals_if_missing(self) -> None:
        """Totals for a ledger written before they existed (stored movements, no totals)."""
        conn = self._conn
        if conn.execute("SELECT 1 FROM totals LIMIT 1").fetchone() is not None:
            return
        if conn.execute("SELECT 1 FROM movements LIMIT 1").fetchone() is None:
            return
        log.info("central ledger %s: computing totals from the stored movements", self.path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for (site,) in conn.execute("SELECT DISTINCT site FROM movements").fetchall():
                rows = conn.execute(
                    "SELECT payload FROM movements WHERE site = ? ORDER BY seq", (site,)
                ).fetchall()
                pbs = [types_pb2.Movement.FromString(row[0]) for row in rows]
                conn.executemany(_ADD_TOTALS, _total_deltas(site, pbs))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def apply(
        self, site: str, movements: Sequence[types_pb2.Movement], *, now: datetime
    ) -> BatchOutcome:
        """Store one batch of ``site`` (already validated, in seq order) in one transaction."""
        duplicates = conflicts = 0
        gaps: list[tuple[int, int]] = []
        stored: list[types_pb2.Movement] = []
        at = now.isoformat()
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT OR IGNORE INTO sites (site) VALUES (?)", (site,))
                (high,) = conn.execute(
                    "SELECT high_water FROM sites WHERE site = ?", (site,)
                ).fetchone()
                # What is already stored under the batch's ids and seqs; updated as the batch
                # is classified, so a repeat inside the batch counts as a duplicate too.
                seq_of = self._lookup(conn, "movement_id, seq", "movement_id", site, movements)
                id_at = self._lookup(conn, "seq, movement_id", "seq", site, movements)
                for pb in movements:
                    stored_seq = seq_of.get(pb.movement_id)
                    if stored_seq is not None:
                        duplicates += 1
                        if stored_seq != pb.seq:
                            log.warning(
                                "site %s: movement %s resent with seq %s, stored with seq %s",
                                site,
                                pb.movement_id,
                                pb.seq,
                                stored_seq,
                            )
                        continue
                    taken = id_at.get(pb.seq)
                    if taken is not None:
                        conflicts += 1
                        log.error(
                            "site %s: CONFLICT seq %s is %s here but %s arrived; not stored "
                            "(was the gateway's store reset?)",
                            site,
                            pb.seq,
                            taken,
                            pb.movement_id,
                        )
                        continue
                    if pb.seq > high + 1:
                        gaps.append((high + 1, pb.seq - 1))
                    seq_of[pb.movement_id] = pb.seq
                    id_at[pb.seq] = pb.movement_id
                    stored.append(pb)
                    high = max(high, pb.seq)
                conn.executemany(
                    "INSERT INTO movements (site, seq, movement_id, payload, received_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(site, pb.seq, pb.movement_id, pb.SerializeToString(), at) for pb in stored],
                )
                conn.executemany(
                    "INSERT INTO gap_events VALUES (?, ?, ?, ?)",
                    [(site, first, last, at) for first, last in gaps],
                )
                conn.executemany(_ADD_TOTALS, _total_deltas(site, stored))
                conn.execute(
                    "UPDATE sites SET high_water = ?, received = received + ?, "
                    "duplicates = duplicates + ?, conflicts = conflicts + ?, gaps = gaps + ? "
                    "WHERE site = ?",
                    (high, len(movements), duplicates, conflicts, len(gaps), site),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        for first, last in gaps:
            log.warning(
                "site %s: GAP seq %d..%d missing (%d movements)",
                site,
                first,
                last,
                last - first + 1,
            )
        return BatchOutcome(len(stored), duplicates, conflicts, tuple(gaps))

    @staticmethod
    def _lookup(
        conn: sqlite3.Connection,
        columns: str,
        key: str,
        site: str,
        movements: Sequence[types_pb2.Movement],
    ) -> dict[Any, Any]:
        """``{key: other column}`` of the stored movements of ``site`` whose ``key`` (movement_id
        or seq) is one of the batch's."""
        keys = [getattr(pb, key) for pb in movements]
        found: dict[Any, Any] = {}
        for i in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[i : i + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            # Only placeholders are formatted in; the column names are our own constants.
            query = f"SELECT {columns} FROM movements WHERE site = ? AND {key} IN ({marks})"  # noqa: S608
            found.update(conn.execute(query, (site, *chunk)).fetchall())
        return found

    def cursor(self, site: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT high_water FROM sites WHERE site = ?", (site,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def stats(self) -> list[SiteStats]:
        """Per-site counters, ordered by site."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT s.site, s.high_water, s.received, "
                "(SELECT COUNT(*) FROM movements m WHERE m.site = s.site), "
                "s.duplicates, s.conflicts, s.gaps FROM sites s ORDER BY s.site"
            ).fetchall()
        return [SiteStats(*row) for row in rows]

    def totals(self, site: str | None = None) -> list[SiteTotal]:
        """On-hand per (site, location, SKU), ordered so; only ``site``'s when given."""
        query = "SELECT site, location, sku, on_hand, last_seq FROM totals"
        params: tuple[str, ...] = ()
        if site is not None:
            query += " WHERE site = ?"
            params = (site,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY site, location, sku", params).fetchall()
        return [SiteTotal(*row) for row in rows]

    def movements(self, site: str) -> list[RecordedMovement]:
        """The stored movements of ``site`` in the order they arrived."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT payload FROM movements WHERE site = ? ORDER BY arrival", (site,)
            ).fetchall()
        return [movement_from_proto(types_pb2.Movement.FromString(row[0])) for row in rows]


def _total_deltas(
    site: str, movements: Sequence[types_pb2.Movement]
) -> list[tuple[str, str, str, int, int]]:
    """Rows for ``_ADD_TOTALS``: the movements' net change per (location, sku), summed."""
    deltas: dict[tuple[str, str], list[int]] = {}
    for pb in movements:
        for location, sign in ((pb.from_location, -1), (pb.to_location, 1)):
            entry = deltas.setdefault((location, pb.sku), [0, 0])
            entry[0] += sign * pb.quantity
            entry[1] = max(entry[1], pb.seq)
    return [(site, loc, sku, change, last) for (loc, sku), (change, last) in deltas.items()]


def summary_line(stats: Sequence[SiteStats]) -> str:
    """One line for people: totals, then each site's high-water mark."""
    total = {
        "received": sum(s.received for s in stats),
        "unique": sum(s.unique for s in stats),
        "duplicates": sum(s.duplicates for s in stats),
        "gaps": sum(s.gaps for s in stats),
        "missing": sum(s.missing for s in stats),
        "conflicts": sum(s.conflicts for s in stats),
    }
    sites = " ".join(f"{s.site}@{s.acked_through_seq}" for s in stats) or "-"
    return "central: " + " ".join(f"{k}={v}" for k, v in total.items()) + f" sites={sites}"


def totals_table(totals: Sequence[SiteTotal]) -> str:
    """The totals as an aligned text table, one row per (site, location, SKU)."""
    header = ("SITE", "LOCATION", "SKU", "ON_HAND", "LAST_SEQ")
    rows = [(t.site, t.location, t.sku, str(t.on_hand), str(t.last_seq)) for t in totals]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    right = {3, 4}
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in (header, *rows)
    ]
    if not rows:
        lines.append("(no movements stored)")
    return "\n".join(lines)


def report(ledger: CentralLedger) -> dict[str, Any]:
    """Counters and totals per site, as JSON-ready data (the ``--totals-file`` contents)."""
    totals = ledger.totals()
    return {
        "sites": {
            s.site: {
                "acked_through_seq": s.acked_through_seq,
                "received": s.received,
                "unique": s.unique,
                "duplicates": s.duplicates,
                "gaps": s.gaps,
                "missing": s.missing,
                "conflicts": s.conflicts,
                "totals": [
                    {
                        "location": t.location,
                        "sku": t.sku,
                        "on_hand": t.on_hand,
                        "last_seq": t.last_seq,
                    }
                    for t in totals
                    if t.site == s.site
                ],
            }
            for s in ledger.stats()
        }
    }


def write_report(ledger: CentralLedger, path: Path) -> None:
    """Write :func:`report` to ``path`` atomically (a reader never sees half a file)."""
    text = json.dumps(report(ledger), indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class IngestService(ingest_pb2_grpc.InventoryIngestServicer):
    """The ``InventoryIngest`` servicer over a :class:`CentralLedger`."""

    def __init__(
        self,
        ledger: CentralLedger,
        *,
        token: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ledger = ledger
        self._expected = None if token is None else f"Bearer {token}".encode()
        self._clock = clock
        # Guards _high_water and _streams; notified when either changes.
        self._changed = asyncio.Condition()
        self._high_water: dict[str, int] = {}
        self._streams = 0
        self._closing = asyncio.Event()

    async def wait_stored(self, site: str, seq: int) -> None:
        """Return once a batch of ``site`` reaching ``seq`` or beyond was stored by this server."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._high_water.get(site, 0) >= seq)

    async def close(self, wait_s: float) -> None:
        """End every open stream with UNAVAILABLE, waiting up to ``wait_s`` for them to finish.

        Streams never end on their own; ending them here, between batches, spares them being
        cancelled by ``grpc.aio.Server.stop`` (which grpc logs as an unhandled error).
        """
        self._closing.set()
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._changed.wait_for(lambda: self._streams == 0)

    async def _next_batch(
        self, batches: AsyncIterator[ingest_pb2.IngestBatch]
    ) -> ingest_pb2.IngestBatch | None:
        """The next batch; None at the end of the stream or when the server is closing."""
        read = asyncio.ensure_future(anext(batches, None))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({read, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not read.done():
                read.cancel()
        return read.result() if read.done() and not read.cancelled() else None

    async def _authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self._expected is None:
            return
        metadata = context.invocation_metadata() or ()
        given = next((v for k, v in metadata if k == "authorization"), "")
        given_bytes = given if isinstance(given, bytes) else given.encode()
        if not hmac.compare_digest(given_bytes, self._expected):
            log.warning("refused a call from %s: bad or missing bearer token", context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad or missing bearer token")

    async def Ingest(
        self,
        request_iterator: AsyncIterator[ingest_pb2.IngestBatch],
        context: grpc.aio.ServicerContext[ingest_pb2.IngestBatch, ingest_pb2.IngestAck],
    ) -> AsyncIterator[ingest_pb2.IngestAck]:
        await self._authorize(context)
        async with self._changed:
            self._streams += 1
        try:
            async for ack in self._ingest(request_iterator, context):
                yield ack
            if self._closing.is_set():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "central is shutting down")
        finally:
            async with self._changed:
                self._streams -= 1
                self._changed.notify_all()

    async def _ingest(
        self,
        batches: AsyncIterator[ingest_pb2.IngestBatch],
        context: grpc.aio.ServicerContext[ingest_pb2.IngestBatch, ingest_pb2.IngestAck],
    ) -> AsyncIterator[ingest_pb2.IngestAck]:
        stream_site: str | None = None
        last_seq = 0
        while (batch := await self._next_batch(batches)) is not None:
            problem = _batch_problem(batch, stream_site, last_seq)
            if problem is not None:
                log.error("ingest stream from %s refused: %s", context.peer(), problem)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            if stream_site is None:
                log.info("site %s: ingest stream opened from %s", batch.site, context.peer())
            stream_site = batch.site
            last_seq = batch.movements[-1].seq
            outcome = await asyncio.to_thread(
                self._ledger.apply, batch.site, batch.movements, now=self._clock()
            )
            log.debug(
                "site %s: batch through seq %d stored=%d duplicates=%d",
                batch.site,
                last_seq,
                outcome.stored,
                outcome.duplicates,
            )
            async with self._changed:
                self._high_water[batch.site] = max(self._high_water.get(batch.site, 0), last_seq)
                self._changed.notify_all()
            yield ingest_pb2.IngestAck(site=batch.site, acked_through_seq=last_seq)
        if stream_site is not None:
            log.info("site %s: ingest stream from %s ended", stream_site, context.peer())

    async def GetCursor(
        self,
        request: ingest_pb2.CursorRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.CursorRequest, ingest_pb2.Cursor],
    ) -> ingest_pb2.Cursor:
        await self._authorize(context)
        seq = await asyncio.to_thread(self._ledger.cursor, request.site)
        return ingest_pb2.Cursor(site=request.site, acked_through_seq=seq)


def _batch_problem(batch: ingest_pb2.IngestBatch, site: str | None, last_seq: int) -> str | None:
    """Why ``batch`` breaks the stream contract, or None."""
    if not batch.site:
        return "batch without site"
    if site is not None and batch.site != site:
        return f"stream of site {site!r} got a batch of site {batch.site!r}"
    if not batch.movements:
        return "empty batch"
    previous = last_seq
    for pb in batch.movements:
        if pb.site != batch.site:
            return f"movement {pb.movement_id!r} of site {pb.site!r} in a batch of {batch.site!r}"
        if pb.seq <= previous:
            return f"seq {pb.seq} after seq {previous}: a stream must be in increasing seq order"
        try:
            movement_from_proto(pb)
        except ProtocolError as exc:
            return f"invalid movement: {exc}"
        previous = pb.seq
    return None


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert_chain: bytes
    private_key: bytes


class CentralServer:
    """The simulator's gRPC server on ``listen`` (``host:port``; port 0 picks a free one)."""

    def __init__(
        self,
        ledger: CentralLedger,
        *,
        listen: str = DEFAULT_LISTEN,
        token: str | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self.ledger = ledger
        self._listen = listen
        self._token = token
        self._service: IngestService | None = None
        self._tls = tls
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; return the bound port."""
        # No SO_REUSEPORT: a second simulator on the same port must fail, not share the traffic.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        service = IngestService(self.ledger, token=self._token)
        ingest_pb2_grpc.add_InventoryIngestServicer_to_server(service, server)
        try:
            if self._tls is None:
                port = server.add_insecure_port(self._listen)
            else:
                creds = grpc.ssl_server_credentials([(self._tls.private_key, self._tls.cert_chain)])
                port = server.add_secure_port(self._listen, creds)
        except RuntimeError as exc:  # grpc's "Failed to bind to address ..."
            raise OSError(f"cannot listen on {self._listen}: {exc}") from exc
        await server.start()
        self._server, self._service, self.port = server, service, port
        log.info(
            "central simulator listening on %s (port %d, %s, db %s)",
            self._listen,
            port,
            "TLS" if self._tls else "plaintext",
            self.ledger.path,
        )
        return port

    async def wait_stored(self, site: str, seq: int) -> None:
        """Return once this server stored a batch of ``site`` reaching ``seq`` (for tests, demo)."""
        if self._service is None:
            raise RuntimeError("the server is not started")
        await self._service.wait_stored(site, seq)

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving: open streams end with UNAVAILABLE after their current batch (waiting
        up to ``grace`` seconds, 1 s when None), then the server stops."""
        if self._service is not None:
            await self._service.close(1.0 if grace is None else grace)
            self._service = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


# --- command line ----------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"host:port to serve on ({DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--db", default=DEFAULT_DB, help=f"SQLite file of received movements ({DEFAULT_DB})"
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain (enables TLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="require 'authorization: Bearer <token>' with the token in this file",
    )
    parser.add_argument(
        "--summary-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="print a summary line every S seconds when something changed (5)",
    )
    parser.add_argument(
        "--totals-file",
        type=Path,
        metavar="PATH",
        help="keep a JSON report (counters and totals per site, location and SKU) in PATH, "
        "rewritten with each summary and at exit",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="print the summary and the totals of --db, then exit (no server)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")


def main(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging

    configure_logging(args.log_level)
    try:
        token, tls = _secrets(args)
    except (OSError, ValueError) as exc:
        print(f"dockwatch simulate central: {exc}", file=sys.stderr)
        return 2
    if args.summary_interval <= 0:
        print("dockwatch simulate central: --summary-interval must be > 0", file=sys.stderr)
        return 2
    if args.report and not Path(args.db).is_file():
        print(f"dockwatch simulate central: --report: no ledger at {args.db}", file=sys.stderr)
        return 2
    try:
        with CentralLedger(args.db) as ledger:
            if not args.report:
                server = CentralServer(ledger, listen=args.listen, token=token, tls=tls)
                asyncio.run(_serve(server, args.summary_interval, args.totals_file))
            _final_report(ledger, args.totals_file)
    except (OSError, sqlite3.Error) as exc:
        print(f"dockwatch simulate central: {exc}", file=sys.stderr)
        return 1
    return 0


def _final_report(ledger: CentralLedger, totals_file: Path | None) -> None:
    """The totals table, then the summary line (the last line printed), and the JSON file."""
    print("central totals per site, location and SKU:")
    print(totals_table(ledger.totals()))
    print(summary_line(ledger.stats()), flush=True)
    if totals_file is not None:
        write_report(ledger, totals_file)


def _secrets(args: argparse.Namespace) -> tuple[str | None, ServerTls | None]:
    token: str | None = None
    if args.token_file is not None:
        token = args.token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"--token-file {args.token_file} is empty")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    tls = None
    if args.tls_cert is not None:
        tls = ServerTls(args.tls_cert.read_bytes(), args.tls_key.read_bytes())
    return token, tls


async def _serve(server: CentralServer, summary_interval: float, totals_file: Path | None) -> None:
    """Serve until SIGINT/SIGTERM, printing the summary line (and rewriting ``totals_file``)
    every ``summary_interval`` seconds when something changed; the final report is the
    caller's."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    last = ""
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(summary_interval):
                    await stop.wait()
            if stop.is_set():
                break
            line = summary_line(await asyncio.to_thread(server.ledger.stats))
            if line != last:
                print(line, flush=True)
                last = line
                if totals_file is not None:
                    await asyncio.to_thread(write_report, server.ledger, totals_file)
    finally:
        await server.stop(grace=1.0)


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m simulators.central")
    configure_parser(_parser)
    sys.exit(main(_parser.parse_args()))
