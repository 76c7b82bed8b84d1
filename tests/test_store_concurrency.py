"""Several writers on one database: seq stays gap-free, nothing is recorded twice, and a reader
paging ``movements_since`` while they write never sees a hole."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import Engine

from edge_store import EdgeStore, MovementRecord, StoredMovement
from edge_store.engine import make_engine
from tests.test_store_support import SITE, T0, movement, open_store

BATCHES = 15
OWN_PER_BATCH = 20
SHARED_PER_BATCH = 5

# A writer process: opens the store (migrating concurrently with its twin), says "ready", waits
# for "go" on stdin, records its batches, prints what it recorded as JSON.
WRITER = """
import json, sys
from sqlalchemy import Engine

from edge_store import EdgeStore
from edge_store.engine import make_engine
from tests.test_store_support import SITE, T0, movement, ITEMS, LOCATIONS
url, name, batches, own, shared = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
with EdgeStore.open(url, site=SITE) as store:
    store.sync_catalog(ITEMS, LOCATIONS)
    print("ready", flush=True)
    sys.stdin.readline()
    recorded, duplicates = [], []
    for b in range(batches):
        batch = [movement(f"{name}-{b}-{i}") for i in range(own)]
        batch[own // 2 : own // 2] = [movement(f"shared-{b}-{i}") for i in range(shared)]
        result = store.record(batch, now=T0)
        recorded += [[r.seq, r.movement.movement_id] for r in result.recorded]
        duplicates += list(result.duplicates)
print(json.dumps({"recorded": recorded, "duplicates": duplicates}), flush=True)
"""


def expected_ids(names: list[str]) -> set[str]:
    own = {f"{n}-{b}-{i}" for n in names for b in range(BATCHES) for i in range(OWN_PER_BATCH)}
    shared = {f"shared-{b}-{i}" for b in range(BATCHES) for i in range(SHARED_PER_BATCH)}
    return own | shared


def assert_consistent(store: EdgeStore, recorded: list[tuple[int, str]], names: list[str]) -> None:
    everything = store.movements_since(0, limit=100_000)
    ids = [r.movement.movement_id for r in everything]
    assert [r.seq for r in everything] == list(range(1, len(everything) + 1))
    assert len(ids) == len(set(ids))
    assert set(ids) == expected_ids(names)
    # Every writer's own report agrees with the store: each id recorded once, by one writer.
    assert sorted(recorded) == [(r.seq, r.movement.movement_id) for r in everything]
    [level] = store.stock(location="receiving")
    assert level.on_hand == len(everything)
    assert level.last_seq == len(everything)


def read_while_writing(
    store: EdgeStore, stop: threading.Event
) -> list[StoredMovement[MovementRecord]]:
    """Page through movements the way a relay does; fail on any hole."""
    seen: list[StoredMovement[MovementRecord]] = []
    cursor = 0
    while True:
        done = stop.is_set()
        page = store.movements_since(cursor, limit=37)
        for r in page:
            assert r.seq == cursor + 1, f"hole: cursor {cursor}, next seq {r.seq}"
            cursor = r.seq
        seen += page
        if done and not page:
            return seen


def test_two_threads_with_their_own_stores(database_url: str) -> None:
    names = ["t0", "t1"]
    recorded: list[tuple[int, str]] = []
    guard = threading.Lock()
    start = threading.Barrier(len(names) + 1)
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            write(name)
        except BaseException as exc:
            failures.append(exc)
            raise

    def write(name: str) -> None:
        with EdgeStore.open(database_url, site=SITE) as store:
            start.wait(timeout=30)
            for b in range(BATCHES):
                batch = [movement(f"{name}-{b}-{i}") for i in range(OWN_PER_BATCH)]
                batch += [movement(f"shared-{b}-{i}") for i in range(SHARED_PER_BATCH)]
                result = store.record(batch, now=T0)
                with guard:
                    recorded.extend((r.seq, r.movement.movement_id) for r in result.recorded)

    with open_store(database_url) as reader:
        threads = [threading.Thread(target=writer, args=(n,)) for n in names]
        for t in threads:
            t.start()
        start.wait(timeout=30)
        seen: list[StoredMovement[MovementRecord]] = []
        reading = threading.Thread(target=lambda: seen.extend(read_while_writing(reader, stop)))
        reading.start()
        for t in threads:
            t.join(timeout=120)
        stop.set()
        reading.join(timeout=60)
        assert failures == []
        assert not reading.is_alive()
        assert len(seen) == len(expected_ids(names))
        assert_consistent(reader, recorded, names)


def test_two_processes_record_at_once_while_this_one_reads(database_url: str) -> None:
    names = ["p0", "p1"]
    repo = Path(__file__).resolve().parent.parent
    sizes = [str(BATCHES), str(OWN_PER_BATCH), str(SHARED_PER_BATCH)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, database_url, name, *sizes],
            cwd=repo,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        with EdgeStore.open(database_url, site=SITE) as reader:
            stop = threading.Event()
            seen: list[StoredMovement[MovementRecord]] = []
            reading = threading.Thread(target=lambda: seen.extend(read_while_writing(reader, stop)))
            reading.start()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            outputs = [p.communicate(timeout=120)[0] for p in procs]
            stop.set()
            reading.join(timeout=60)
            assert [p.returncode for p in procs] == [0, 0]
            reports = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
            recorded = [(seq, mid) for rep in reports for seq, mid in rep["recorded"]]
            duplicates = [mid for rep in reports for mid in rep["duplicates"]]
            # Each shared id was recorded by one process and reported as a duplicate by the other.
            assert sorted(duplicates) == sorted(m for _, m in recorded if m.startswith("shared-"))
            assert len(seen) == len(expected_ids(names))
            assert_consistent(reader, recorded, names)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_processes_opening_a_new_database_at_once_all_get_it(tmp_path: Path) -> None:
    """The gateway and ``dockwatch db upgrade`` (or a test polling the store) may open a new
    SQLite file in the same instant. SQLite does not wait on its busy timeout for the switch to
    WAL: the loser used to fail at once with "database is locked" (seen in CI, about one round
    in ten here)."""
    failures: list[str] = []
    rounds = 150
    for n in range(rounds):
        engines = [make_engine(f"sqlite:///{tmp_path / f'edge-{n}.db'}") for _ in range(3)]
        start = threading.Barrier(len(engines))

        def connect(engine: Engine, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                with engine.connect() as conn:
                    mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
                    assert mode == "wal", mode
            except Exception as exc:  # every failure is the finding
                failures.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=connect, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for engine in engines:
            engine.dispose()
    assert failures == [], f"{len(failures)} of {3 * rounds} connections failed: {failures[:3]}"
