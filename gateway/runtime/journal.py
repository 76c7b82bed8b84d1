"""Journal replay at start: the reads a killed predecessor journaled, fed to the portal engine
so that the passes it left open are decided now (gateway/adapters/journal.py); those it had
decided come out again with the same movement ids, and the store keeps them once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from edge_store.records import RecordResult
from edge_store.repository import EdgeStore
from gateway.adapters.journal import replay_journal
from gateway.domain.model import Movement, SourceType
from gateway.domain.portal import PortalEngine
from gateway.runtime.recorder import StoreWorker

log = logging.getLogger(__name__)

RECENT_MOVEMENTS = 5000
"""At most this many of the latest movements tell a replayed journal where tags already went."""


def recent_destinations(
    store: EdgeStore, last_seq: int, since: datetime
) -> dict[str, tuple[str, int]]:
    """EPC URI -> (location, crossing moment us) of the door movements observed since ``since``
    among the latest ``RECENT_MOVEMENTS`` (the portal engine's memory, for a journal replay)."""
    out: dict[str, tuple[str, int]] = {}
    after = max(0, last_seq - RECENT_MOVEMENTS)
    while page := store.movements_since(after):
        for recorded in page:
            m = recorded.movement
            if m.source_type == SourceType.RFID_PORTAL and m.observed_at >= since:
                moment = (m.to_location, round(m.observed_at.timestamp() * 1_000_000))
                for epc in (*m.epcs, *((m.container,) if m.container else ())):
                    out[epc] = moment
        after = page[-1].seq
    return out


async def replay(
    path: Path,
    reader_ids: Sequence[str],
    *,
    engine: PortalEngine,
    worker: StoreWorker,
    last_seq: int,
    horizon_s: float,
    record: Callable[[Sequence[Movement]], Awaitable[RecordResult[Movement] | None]],
) -> None:
    """Replay the journal at ``path`` of ``reader_ids`` through ``engine`` (see the module
    docstring); ``horizon_s`` is the portal engine's memory of where tags went."""
    started = time.monotonic()
    reports = await asyncio.to_thread(replay_journal, path, list(reader_ids))
    if not reports:
        return
    since = datetime.fromtimestamp(reports[0].received_us / 1e6 - horizon_s, UTC)
    engine.assume_locations(await worker.call(recent_destinations, worker.store, last_seq, since))
    crossings = []
    for report in reports:
        crossings += engine.feed(report.reads, report.received_us)
    engine.take_pass_events()  # news of passes long gone: not for the door's lights
    result = await record(engine.movements(crossings)) if crossings else None
    log.info(
        "read journal: %d reads of %d reports from %.0f s replayed in %.2f s; "
        "%d movement(s) recorded, %d already were (the rest is decided as reads go on)",
        sum(len(r.reads) for r in reports),
        len(reports),
        (reports[-1].received_us - reports[0].received_us) / 1e6,
        time.monotonic() - started,
        0 if result is None else len(result.recorded),
        0 if result is None else len(result.duplicates),
    )
