"""Read journal: the LLRP tag reports of the last minute or two, on disk, replayed at start.

Theory of operation
-------------------
A door decides a pass only once the tag has been silent for ``idle_close_s`` (and loads settle a
few seconds later): the passes open at any instant live in the portal engine's memory, and a
killed process loses them (measured: 15 to 49 case crossings per SIGKILL). The journal keeps the
reports themselves, so that a restarted gateway can decide those passes as if nothing happened.

* **What is written.** Each reader's sllurp thread appends, per socket read, the raw
  RO_ACCESS_REPORT frames it decoded (the LLRP bytes as the reader sent them), prefixed by the
  wall-clock time they arrived: one record, ``u64 received_us, u32 length, frames``, one
  ``os.write``. No conversion, no copy beyond the join: the cost is a system call per socket
  read (64 KiB at most), off the event loop.
* **Why that survives a crash.** SIGKILL loses the process, not the kernel's page cache: a
  ``write`` that returned is in the file for any later reader. A power cut can lose the last
  seconds (no fsync; the store's own transactions are what must survive that). A record cut
  short (the process killed inside ``write``) ends the replay of its segment.
* **Bounded.** Records go to segment files ``{reader}.{first_us}.jrn``; a segment is closed after
  ``segment_s`` (60 s) and the segment before the previous one is deleted, so between one and two
  ``segment_s`` of reads are kept, whatever the read rate. Replay needs them to cover the longest
  undecided pass (``stray_dwell_s``, 20 s by default, plus settling).
* **Replay** (:func:`replay_journal`, at start, before the readers connect): every record of every
  reader, in time order, through the same conversion as live reports
  (:func:`~gateway.adapters.llrp_reports.tag_reads_from_sllurp`). The app feeds the portal engine
  with each record's arrival time and then advances it to now. Passes open at the kill are decided;
  passes decided before it are decided again, identically (movement ids are pure functions of the
  evidence, and the engine ignores a read it already has), and the store keeps each movement once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sllurp.llrp import LLRPMessage

from dockwatch_core.errors import ProtocolError, StoreError
from gateway.adapters.llrp_reports import DECODE_ERRORS, tag_reads_from_sllurp
from gateway.domain.model import DeviceId, TagRead
from gateway.llrp import codec

logger = logging.getLogger(__name__)

_RECORD: Final = struct.Struct("!QI")  # received_us, length of the frames
_SUFFIX: Final = ".jrn"
_MAX_RECORD: Final = 64 * 1024 * 1024


def _wall_us() -> int:
    return time.time_ns() // 1000


class JournalWriter:
    """One reader's journal; used by that reader's sllurp thread only (and closed by the app)."""

    def __init__(
        self,
        directory: Path,
        reader_id: str,
        *,
        segment_s: float = 60.0,
        wall_us: Callable[[], int] = _wall_us,
    ) -> None:
        if not segment_s > 0:
            raise ValueError(f"segment_s must be > 0, got {segment_s}")
        self.directory = directory
        self.reader_id = reader_id
        self._segment_us = round(segment_s * 1_000_000)
        self.wall_us = wall_us
        self._fd: int | None = None
        self._opened_us = 0
        self.failed: str | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the read journal directory {directory}: {exc}"
            ) from exc

    def append(self, received_us: int, frames: bytes) -> None:
        """One record. A journal that cannot be written is given up (logged once): reads still
        flow, only crash safety is lost."""
        if self.failed is not None or not frames:
            return
        try:
            if self._fd is None or received_us - self._opened_us >= self._segment_us:
                self._rotate(received_us)
            assert self._fd is not None
            os.write(self._fd, _RECORD.pack(received_us, len(frames)) + frames)
        except OSError as exc:
            self.failed = str(exc)
        if self.failed is not None:
            logger.error(
                "read journal of %s in %s failed, reads are no longer journaled: %s",
                self.reader_id,
                self.directory,
                self.failed,
                extra={"reader_id": self.reader_id},
            )
            self.close()

    def _rotate(self, now_us: int) -> None:
        self.close()
        path = self.directory / f"{self.reader_id}.{now_us:020d}{_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._opened_us = now_us
        for old in segments(self.directory, self.reader_id)[:-2]:  # keep previous + current
            with contextlib.suppress(FileNotFoundError):
                old.unlink()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def segments(directory: Path, reader_id: str) -> list[Path]:
    """One reader's segment files, oldest first (their names sort by time)."""
    return sorted(directory.glob(f"{reader_id}.*{_SUFFIX}"))


@dataclass(frozen=True, slots=True)
class JournaledReport:
    """The reads of one journal record (one socket read of one reader) and when they arrived."""

    reader_id: DeviceId
    received_us: int
    reads: tuple[TagRead, ...]


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    data = path.read_bytes()
    offset = 0
    while offset + _RECORD.size <= len(data):
        received_us, length = _RECORD.unpack_from(data, offset)
        start = offset + _RECORD.size
        if length > _MAX_RECORD or start + length > len(data):
            logger.warning("read journal %s: a record cut short at byte %d", path, offset)
            return
        yield received_us, data[start : start + length]
        offset = start + length


def _frames(blob: bytes) -> Iterator[bytes]:
    """The whole frames of one record; a frame the record cuts short ends it."""
    framer = codec.LlrpFramer(max_length=max(len(blob), codec.HEADER_LENGTH))
    with contextlib.suppress(ProtocolError):
        yield from framer.frames(blob)


def replay_journal(
    directory: Path, reader_ids: list[str], *, since_us: int = 0
) -> list[JournaledReport]:
    """Every journaled report of these readers received after ``since_us``, in time order.

    Blocking (file reads and sllurp decoding): run it in an executor. A frame that does not
    decode is skipped (logged); nothing here raises but an unreadable directory.
    """
    out: list[JournaledReport] = []
    for reader_id in reader_ids:
        rid = DeviceId(reader_id)
        for path in segments(directory, reader_id):
            try:
                records = list(_records(path))
            except OSError as exc:
                logger.warning("read journal %s unreadable: %s", path, exc)
                continue
            for received_us, blob in records:
                if received_us <= since_us:
                    continue
                reads: list[TagRead] = []
                for frame in _frames(blob):
                    try:
                        message = LLRPMessage(msgbytes=frame)
                        entries = message.msgdict["RO_ACCESS_REPORT"]["TagReportData"]
                    except DECODE_ERRORS as exc:
                        logger.warning("read journal %s: undecodable frame: %r", path, exc)
                        continue
                    reads.extend(tag_reads_from_sllurp(rid, entries).reads)
                if reads:
                    out.append(JournaledReport(rid, received_us, tuple(reads)))
    out.sort(key=lambda r: r.received_us)
    return out
