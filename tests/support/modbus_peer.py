"""A scripted Modbus/TCP transmitter for fault tests: a real TCP server speaking real MBAP
frames, whose answers can be made malformed on purpose (the project's simulator only ever sends
well-formed frames, as a real transmitter should)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import struct
from types import TracebackType
from typing import Self


class Fault(enum.StrEnum):
    NONE = "none"
    WRONG_BYTE_COUNT = "wrong_byte_count"
    """The byte count says two bytes more than follow."""
    ODD_BYTE_COUNT = "odd_byte_count"
    """Three data bytes: not a whole number of registers."""
    UNKNOWN_FUNCTION = "unknown_function"
    """A function code nobody asked for."""
    PROTOCOL_ID = "protocol_id"
    """A frame header whose protocol id is not Modbus (0)."""
    LONG_EXCEPTION = "long_exception"
    """An exception answer with extra bytes."""


class ScriptedTransmitter:
    """Answers holding/input register reads from ``registers`` (address -> 16-bit word, 0 for
    unset), or with the current ``fault``."""

    def __init__(self) -> None:
        self.registers: dict[int, int] = {}
        self.fault = Fault.NONE
        self.requests = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()

    def answer(self, function: int, address: int, count: int) -> bytes:
        words = b"".join(
            struct.pack(">H", self.registers.get(address + i, 0) & 0xFFFF) for i in range(count)
        )
        fault = self.fault
        if fault is Fault.WRONG_BYTE_COUNT:
            return bytes([function, len(words) + 2]) + words
        if fault is Fault.ODD_BYTE_COUNT:
            return bytes([function, 3]) + words[:3]
        if fault is Fault.UNKNOWN_FUNCTION:
            return bytes([0x55, 0x00, 0x00])
        if fault is Fault.LONG_EXCEPTION:
            return bytes([function | 0x80, 0x04, 0x00, 0x00])
        return bytes([function, len(words)]) + words

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                tid, _protocol, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                function, address, count = struct.unpack(">BHH", pdu[:5])
                self.requests += 1
                body = self.answer(function, address, count)
                protocol = 7 if self.fault is Fault.PROTOCOL_ID else 0
                writer.write(struct.pack(">HHHB", tid, protocol, len(body) + 1, unit) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
