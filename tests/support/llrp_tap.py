"""A transparent TCP relay between an LLRP client and a reader that counts what the reader sent.

An independent reader (llrpkit's emulator, run as shipped) says nothing about how many tag reports
it sent; the relay sees its bytes and counts them: LLRP messages by type in each direction and,
in every RO_ACCESS_REPORT, the TagReportData parameters (type 240) at its top level. It frames
LLRP by the header's length only and forwards every byte unchanged, so it is as neutral as a
capture. Each client connection gets its own upstream connection; when either side closes, the
other is closed too, so a restarted reader looks like a dropped connection to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from typing import Self

_HEADER = struct.Struct("!HII")
_PARAM = struct.Struct("!HH")
RO_ACCESS_REPORT = 61
TAG_REPORT_DATA = 240


def tag_report_entries(body: bytes) -> int:
    """TagReportData parameters at the top level of an RO_ACCESS_REPORT body."""
    count = 0
    offset = 0
    while offset + _PARAM.size <= len(body):
        head, length = _PARAM.unpack_from(body, offset)
        if head & 0x8000:  # a TV parameter: none can appear at this level
            raise ValueError(f"unexpected TV parameter {head & 0x7F} in RO_ACCESS_REPORT")
        if (head & 0x3FF) == TAG_REPORT_DATA:
            count += 1
        if length < _PARAM.size:
            raise ValueError(f"parameter length {length} in RO_ACCESS_REPORT")
        offset += length
    return count


class _Direction:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.messages: Counter[int] = Counter()
        self.tag_entries = 0

    def feed(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= _HEADER.size:
            type_field, length, _ = _HEADER.unpack_from(buffer)
            if len(buffer) < length:
                return
            msg_type = type_field & 0x3FF
            self.messages[msg_type] += 1
            if msg_type == RO_ACCESS_REPORT:
                self.tag_entries += tag_report_entries(bytes(buffer[_HEADER.size : length]))
            del buffer[:length]


class LlrpTap:
    """``async with LlrpTap(upstream_port) as tap``: clients connect to ``tap.port``.

    ``tap.tag_entries``: TagReportData entries the reader sent (all connections);
    ``tap.from_reader`` / ``tap.from_client``: messages by LLRP type; ``tap.connections``.
    """

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream_port = upstream_port
        self.host = host
        self.connections = 0
        self._from_reader: list[_Direction] = []
        self._from_client: list[_Direction] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def tag_entries(self) -> int:
        return sum(d.tag_entries for d in self._from_reader)

    @property
    def from_reader(self) -> Counter[int]:
        return sum((d.messages for d in self._from_reader), Counter())

    @property
    def from_client(self) -> Counter[int]:
        return sum((d.messages for d in self._from_client), Counter())

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._on_client, self.host, 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _on_client(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        self._writers.add(client_w)
        try:
            reader_r, reader_w = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            client_w.close()
            self._writers.discard(client_w)
            return
        self._writers.add(reader_w)
        self.connections += 1
        from_reader, from_client = _Direction(), _Direction()
        self._from_reader.append(from_reader)
        self._from_client.append(from_client)
        pumps = [
            asyncio.create_task(self._pump(reader_r, client_w, from_reader)),
            asyncio.create_task(self._pump(client_r, reader_w, from_client)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for writer in (client_w, reader_w):
            writer.close()
            self._writers.discard(writer)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, seen: _Direction
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                seen.feed(data)
                sink.write(data)
                await sink.drain()
        # Half-close: the other side still gets what was sent before the end.
        with contextlib.suppress(ConnectionError, OSError):
            if sink.can_write_eof():
                sink.write_eof()
