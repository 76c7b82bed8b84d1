"""The LLRP readers the config lists: their adapters, one bounded hand-off queue, their read
journals, and the journal replay at start (gateway/runtime/journal.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge_store.records import RecordResult
from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.journal import JournalWriter
from gateway.adapters.llrp import LlrpReaderAdapter, ReadBatch
from gateway.domain.model import DeviceId, DeviceStatus, Movement
from gateway.domain.portal import PortalEngine
from gateway.runtime import journal
from gateway.runtime.recorder import StoreWorker
from gateway.runtime.site import device_tls

if TYPE_CHECKING:
    from gateway.config import ReaderConfig

READ_QUEUE_BATCHES = 1024
"""Hand-off queue between the LLRP adapters and the portal engine (adapters drop the OLDEST
batch when it is full and count it: see docs/llrp.md)."""


class ReaderSet:
    """The readers of ``readers[]``; ``reads`` is where their batches go."""

    def __init__(
        self,
        readers: Sequence[ReaderConfig],
        *,
        journal_path: Path | None,
        journal_segment_s: float,
        queue_batches: int = READ_QUEUE_BATCHES,
    ) -> None:
        self._configs = tuple(readers)
        self._journal_path = journal_path
        self._journal_segment_s = journal_segment_s
        self.reads: asyncio.Queue[ReadBatch] = asyncio.Queue(maxsize=queue_batches)
        self.adapters: dict[str, LlrpReaderAdapter] = {}
        self._journals: list[JournalWriter] = []

    def build(
        self,
        *,
        on_status: Callable[[DeviceStatus], None],
        on_antenna: Callable[[DeviceId, int, bool], None],
        on_gpi: Callable[[DeviceId, int, bool, int], None] | None = None,
    ) -> dict[str, LlrpReaderAdapter]:
        """One adapter per configured reader (each with its read journal, if configured)."""
        for i, reader in enumerate(self._configs):
            self.adapters[reader.id] = LlrpReaderAdapter(
                reader_id=reader.id,
                host=reader.host,
                port=reader.port,
                antennas=reader.antennas,
                out=self.reads,
                on_status=on_status,
                backoff=Backoff(
                    BackoffPolicy(
                        initial_s=reader.reconnect.initial_s, max_s=reader.reconnect.max_s
                    )
                ),
                keepalive_s=reader.keepalive_s,
                connect_timeout_s=reader.connect_timeout_s,
                report_every_ms=reader.report_every_ms,
                tx_power_dbm=reader.tx_power_dbm,
                tls=device_tls(reader.tls, f"readers[{i}].tls"),
                on_antenna=on_antenna,
                on_gpi=on_gpi,
                journal=self._journal(reader.id),
            )
        return self.adapters

    def write_gpo(self, reader_id: DeviceId, levels: Mapping[int, bool]) -> None:
        """Set a reader's GPO outputs (its stack lights); a reader not configured is ignored."""
        adapter = self.adapters.get(reader_id)
        if adapter is not None:
            adapter.write_gpo(levels)

    def set_antenna_down(self, reader_id: DeviceId, antenna: int, detail: str | None) -> None:
        """Tell a reader's adapter that an antenna is down (``detail``) or up again (None)."""
        adapter = self.adapters.get(reader_id)
        if adapter is not None:
            adapter.set_antenna_down(antenna, detail)

    def _journal(self, reader_id: str) -> JournalWriter | None:
        if self._journal_path is None:
            return None
        writer = JournalWriter(self._journal_path, reader_id, segment_s=self._journal_segment_s)
        self._journals.append(writer)
        return writer

    async def replay(
        self,
        engine: PortalEngine,
        *,
        worker: StoreWorker,
        last_seq: int,
        horizon_s: float,
        record: Callable[[Sequence[Movement]], Awaitable[RecordResult[Movement] | None]],
    ) -> None:
        """Feed ``engine`` what a killed predecessor journaled (gateway/runtime/journal.py)."""
        if self._journal_path is None or not self._configs:
            return
        await journal.replay(
            self._journal_path,
            [reader.id for reader in self._configs],
            engine=engine,
            worker=worker,
            last_seq=last_seq,
            horizon_s=horizon_s,
            record=record,
        )

    def close(self) -> None:
        """Close the journals (once the readers' threads have been joined)."""
        for writer in self._journals:
            writer.close()
