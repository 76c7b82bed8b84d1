"""What every sink is, and the one outbox pager they all read with.

A sink delivers the store's movements, in ``seq`` order, somewhere else (an MQTT broker, central,
an EPCIS repository). The store's outbox is the queue: every sink keeps its own durable cursor
in it and reads the movements after that cursor page by page. The application sees a sink
through :class:`Sink` only: its ``name`` (also its cursor's name, its metric label and its
``sync_behind`` subject), whether it is ``connected``, how far it is acknowledged
(``acked_seq``), ``notify()`` after each commit, and ``run()`` for the sink's whole life.

Theory of operation of :class:`OutboxPager`
-------------------------------------------
``run(after, deliver)`` reads the page after ``after`` (``read``, typically a store call in a
worker thread), hands it to ``deliver`` and goes on after the page's last seq; a page with no
movement means the outbox is drained: ``when_idle`` may add a page of its own (EPCIS closures
waiting for their movements), otherwise the pager sleeps until ``notify()`` or
``poll_interval_s`` (the poll only covers commits by another process). The wake-up is cleared
BEFORE each read, so a ``notify()`` that lands during a read is never lost. ``deliver`` decides
the back-pressure: a bounded queue's ``put`` makes reading wait while sending lags.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, Protocol, TypeVar, runtime_checkable

from gateway.domain.views import AlertView, DeviceStatusView, StockView

PageT = TypeVar("PageT")


@runtime_checkable
class Sink(Protocol):
    """A destination of the store's movements (see the module docstring)."""

    @property
    def name(self) -> str:
        """The sink's name: its cursor in the store, its metric label, its lag alert subject."""
        ...

    @property
    def connected(self) -> bool: ...

    @property
    def acked_seq(self) -> int:
        """Every movement up to this seq is delivered (0 until the sink read its cursor)."""
        ...

    def notify(self) -> None:
        """New movements were committed: look at the outbox now (from the event loop)."""

    async def run(self) -> None:
        """Deliver until cancelled."""


@runtime_checkable
class StateSink(Sink, Protocol):
    """A sink that also carries the site's live state (stock, devices, alerts), not only the
    movements: the application tells it every change, in the order it happened."""

    def publish_stock(self, levels: Iterable[StockView]) -> None: ...

    def publish_device_status(self, status: DeviceStatusView) -> None: ...

    def publish_alert(self, alert: AlertView) -> None: ...


class OutboxPager(Generic[PageT]):
    """Pages through the outbox after a position, for ever (see the module docstring)."""

    def __init__(
        self,
        read: Callable[[int], Awaitable[PageT]],
        last_seq: Callable[[PageT], int | None],
        *,
        poll_interval_s: float,
        when_idle: Callable[[int], Awaitable[PageT | None]] | None = None,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        self._read = read
        self._last_seq = last_seq
        self._poll_interval_s = poll_interval_s
        self._when_idle = when_idle
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """New movements were committed: read now rather than at the next poll."""
        self._wake.set()

    async def run(self, after: int, deliver: Callable[[PageT], Awaitable[None]]) -> None:
        """Hand every page after ``after`` to ``deliver``, in order, until cancelled."""
        while True:
            self._wake.clear()  # BEFORE reading: a notify() during the read is not lost
            page = await self._read(after)
            last = self._last_seq(page)
            if last is not None:
                await deliver(page)
                after = last
                continue
            if self._when_idle is not None:
                extra = await self._when_idle(after)
                if extra is not None:
                    await deliver(extra)
                    continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval_s):
                    await self._wake.wait()
