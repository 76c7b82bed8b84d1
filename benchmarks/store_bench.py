"""Edge store write throughput: ``EdgeStore.record`` in batches, on SQLite and PostgreSQL.

What is measured
----------------
- ``store``: ``EdgeStore.record(batch)`` for COUNT movements in batches of BATCH (default 100,000
  in 500s). Each call is the real write path: one transaction that locks the seq counter, checks
  the batch's ids for duplicates, inserts the movements, upserts the stock levels and commits.
  Timed with ``perf_counter`` around the record loop only (opening, migrating and syncing the
  catalog are excluded; the movements are built before the clock starts).
- ``raw sqlite3``: the same rows (same columns, same values as the store writes them) inserted
  with plain ``sqlite3.executemany`` into the store's own ``movements`` table (same indexes and
  foreign keys, same WAL/synchronous=NORMAL settings), one commit per batch. It is the floor the
  store's overhead is compared with; the ratio is taken within the same run.
- Every run uses a fresh database: a new SQLite file, or a new schema in a private PostgreSQL
  database that the benchmark creates and drops (``DOCKWATCH_BENCH_PG_URL`` names the server,
  default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Figures are medians of RUNS.

Run: ``.venv/bin/python benchmarks/store_bench.py [--count N] [--batch N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import sqlalchemy

from edge_store import EdgeStore, LocationRecord, redact_url
from gateway.domain.model import (
    CatalogItem,
    LocationId,
    Movement,
    MovementId,
    MovementKind,
    Sku,
    SourceType,
)

PG_URL = os.environ.get(
    "DOCKWATCH_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SITE = "bench"
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
SKUS = [f"SKU-{i:04d}" for i in range(50)]
LOCATIONS = ["yard", "receiving", "shelf-a1", "shelf-a2", "shelf-b1", "customer"]
ROUTES = [
    ("yard", "receiving", MovementKind.RECEIPT),
    ("receiving", "shelf-a1", MovementKind.TRANSFER),
    ("receiving", "shelf-a2", MovementKind.TRANSFER),
    ("shelf-a1", "customer", MovementKind.PICK),
    ("shelf-b1", "customer", MovementKind.PICK),
    ("yard", "shelf-b1", MovementKind.RESTOCK),
]


def build_movements(count: int) -> list[Movement]:
    out = []
    for n in range(count):
        src, dst, kind = ROUTES[n % len(ROUTES)]
        out.append(
            Movement(
                movement_id=MovementId(f"door-1:{n:024X}:{1767600000000000 + n}"),
                kind=kind,
                sku=Sku(SKUS[n % len(SKUS)]),
                quantity=n % 12 + 1,
                from_location=LocationId(src),
                to_location=LocationId(dst),
                source_type=SourceType.RFID_PORTAL,
                source_id="door-1",
                observed_at=T0 + timedelta(milliseconds=n),
                confidence=0.97,
                epcs=(f"{0x3074257BF7194E4000000000 + n:024X}",),
            )
        )
    return out


def batches(movements: Sequence[Movement], size: int) -> list[Sequence[Movement]]:
    return [movements[i : i + size] for i in range(0, len(movements), size)]


def open_fresh(url: str) -> EdgeStore:
    store = EdgeStore.open(url, site=SITE)
    store.sync_catalog(
        [CatalogItem(sku=Sku(s), name=s) for s in SKUS], [LocationRecord(loc) for loc in LOCATIONS]
    )
    return store


def time_store(url: str, chunks: list[Sequence[Movement]]) -> tuple[float, float]:
    """Wall and CPU seconds of this process to record every chunk through a fresh store."""
    with open_fresh(url) as store:
        start, cpu = time.perf_counter(), time.process_time()
        for i, chunk in enumerate(chunks):
            store.record(chunk, now=T0 + timedelta(seconds=i))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert store.last_seq() == sum(len(c) for c in chunks)
    return elapsed, cpu


Row = tuple[object, ...]


def raw_rows(chunks: list[Sequence[Movement]]) -> list[list[Row]]:
    """The store's movement rows as SQLite receives them (naive-UTC datetime text, JSON epcs)."""
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    out: list[list[Row]] = []
    seq = 0
    for i, chunk in enumerate(chunks):
        now = (T0 + timedelta(seconds=i)).replace(tzinfo=None).strftime(fmt)
        rows: list[Row] = []
        for m in chunk:
            seq += 1
            rows.append(
                (
                    seq,
                    m.movement_id,
                    m.kind.value,
                    m.sku,
                    m.quantity,
                    m.from_location,
                    m.to_location,
                    m.source_type.value,
                    m.source_id,
                    m.observed_at.replace(tzinfo=None).strftime(fmt),
                    now,
                    m.confidence,
                    m.container,
                    json.dumps(list(m.epcs), separators=(",", ":")),
                )
            )
        out.append(rows)
    return out


RAW_INSERT = (
    "INSERT INTO movements (seq, movement_id, kind, sku, quantity, from_location, to_location,"
    " source_type, source_id, observed_at, recorded_at, confidence, container, epcs)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def time_raw_sqlite(path: Path, rows: list[list[Row]]) -> tuple[float, float]:
    """Wall and CPU seconds of plain sqlite3.executemany of the same rows into the same table."""
    open_fresh(f"sqlite:///{path}").close()  # same schema, same catalog for the foreign keys
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        start, cpu = time.perf_counter(), time.process_time()
        for chunk in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(RAW_INSERT, chunk)
            conn.execute("COMMIT")
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        conn.close()
    return elapsed, cpu


@contextmanager
def private_pg_database(admin_url: str) -> Iterator[str | None]:
    """A fresh database on the server of ``admin_url`` (None if unreachable); dropped after."""
    conninfo = admin_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"dockwatch_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL at {redact_url(admin_url)} unreachable, skipped: {exc}".strip())
        yield None
        return
    try:
        yield str(sqlalchemy.make_url(admin_url).set(database=name).render_as_string(False))
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_pg(url: str) -> None:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


def median_rate(count: int, seconds: list[float]) -> tuple[float, str]:
    rates = [count / s for s in seconds]
    return statistics.median(rates), ", ".join(f"{r:,.0f}" for r in rates)


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args(argv)

    movements = build_movements(args.count)
    chunks = batches(movements, args.batch)
    rows = raw_rows(chunks)
    print(
        f"edge store benchmark: {args.count:,} movements in batches of {args.batch}, "
        f"median of {args.runs} runs, fresh database per run"
    )
    print(
        f"python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"SQLite {sqlite3.sqlite_version}, psycopg {psycopg.__version__}"
    )

    print(f"load average before: {load()}")
    store_s: list[tuple[float, float]] = []
    raw_s: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="dockwatch-bench-") as tmp:
        for i in range(args.runs):
            store_s.append(time_store(f"sqlite:///{Path(tmp) / f'store-{i}.db'}", chunks))
            raw_s.append(time_raw_sqlite(Path(tmp) / f"raw-{i}.db", rows))
    ratios = [raw[0] / store[0] for store, raw in zip(store_s, raw_s, strict=True)]
    store_rate, store_all = median_rate(args.count, [wall for wall, _ in store_s])
    store_cpu, _ = median_rate(args.count, [cpu for _, cpu in store_s])
    raw_rate, raw_all = median_rate(args.count, [wall for wall, _ in raw_s])
    raw_cpu, _ = median_rate(args.count, [cpu for _, cpu in raw_s])
    print("SQLite (file, WAL, synchronous=NORMAL)")
    print(f"    EdgeStore.record:            {store_rate:>9,.0f} movements/s; runs: {store_all}")
    print(f"    plain sqlite3.executemany:   {raw_rate:>9,.0f} rows/s; runs: {raw_all}")
    print(
        f"    ratio store/raw (same run):  median {statistics.median(ratios):.2f}; "
        f"runs: {', '.join(f'{r:.2f}' for r in ratios)}"
    )
    print(
        f"    per CPU-second of this process (insensitive to other load): store "
        f"{store_cpu:,.0f}/s, raw {raw_cpu:,.0f}/s"
    )
    verdict = "met" if store_rate >= 20_000 else "NOT met (see load average)"
    print(f"    target >= 20,000 movements/s wall clock: {verdict}")

    if not args.no_pg:
        run_pg(args.count, chunks, args.runs)
    print(f"load average after: {load()}")
    return 0


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


def run_pg(count: int, chunks: list[Sequence[Movement]], runs: int) -> None:
    with private_pg_database(PG_URL) as url:
        if url is None:
            return
        seconds: list[float] = []
        for _ in range(runs):
            reset_pg(url)
            seconds.append(time_store(url, chunks)[0])
        rate, every = median_rate(count, seconds)
        print(f"PostgreSQL ({redact_url(PG_URL)}, private database, local server)")
        print(f"    EdgeStore.record:            {rate:>9,.0f} movements/s; runs: {every}")


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
