"""The write side of one client connection of the simulated reader (:class:`Link`).

Writes are synchronous ``transport.write`` calls from one event loop, so messages never
interleave; report loops ``await drain()`` so a slow client slows the reader down instead of
growing a buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import TYPE_CHECKING

from gateway.llrp import codec as c

if TYPE_CHECKING:
    from simulators.llrp.server import LlrpReaderSimulator


class Link:
    """One client's socket as the reader writes to it.

    Every message the reader sends on its own (events, reports, keepalives) takes its ID from
    :meth:`next_id`, one sequence per connection. Nothing is written while the simulator is
    frozen or once the socket is closing; every message written is counted in the simulator's
    stats. ``closing`` becomes true on the first close or abort and never goes back.
    """

    def __init__(self, sim: LlrpReaderSimulator, writer: asyncio.StreamWriter) -> None:
        self._sim = sim
        self._writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._ids = itertools.count(1)
        self._closing = False

    def next_id(self) -> int:
        return next(self._ids) & 0xFFFFFFFF

    def send(self, msg: c.LlrpMessage) -> None:
        if self._writer.is_closing() or self._sim.frozen:
            return
        self._writer.write(msg.encode())
        self._sim._count_out(msg)

    async def drain(self) -> None:
        if self._writer.is_closing():
            return
        try:
            await self._writer.drain()
        except ConnectionError:
            self.abort()

    async def write_raw(self, data: bytes) -> None:
        if self._writer.is_closing():
            return
        self._writer.write(data)
        await self.drain()

    def is_closing(self) -> bool:
        return self._closing

    async def finish(self) -> None:
        """Let a graceful close flush (bounded), then make sure the socket is gone."""
        self._closing = True
        if self._writer.transport.is_closing():
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._writer.wait_closed()
        self.abort()

    def abort(self) -> None:
        self._closing = True
        transport = self._writer.transport
        if not transport.is_closing():
            transport.abort()

    def close(self) -> None:
        """Close gracefully: what was written is flushed first."""
        self._closing = True
        self._writer.close()
