"""Supervision: every long-running part runs under :meth:`Supervisor.supervised`.

A bug that escapes a part is logged with its traceback (the ONE place that catches
``Exception``: the adapters let what they cannot handle escape to here) and the part restarts
after ``pause_s``, so one broken device or sink never takes the gateway down. While a part waits
to restart, its name is in ``restarting`` (``/readyz`` says so).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

RESTART_PAUSE_S = 1.0


class Supervisor:
    """Restarts crashed parts; remembers which are waiting to restart."""

    def __init__(self, *, pause_s: float = RESTART_PAUSE_S) -> None:
        self.pause_s = pause_s
        self.restarting: set[str] = set()
        """Parts pausing before a restart (for /readyz)."""

    async def supervised(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()`` for ever: a crash is logged with its traceback and the part
        restarts."""
        while True:
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception:  # the top of a task: log, pause, restart (STYLE.md rule 3)
                log.exception("%s crashed; restarting in %.0f s", name, self.pause_s)
            else:
                log.warning("%s stopped unexpectedly; restarting in %.0f s", name, self.pause_s)
            self.restarting.add(name)
            try:
                await asyncio.sleep(self.pause_s)
            finally:
                self.restarting.discard(name)

    def start(
        self, group: asyncio.TaskGroup, name: str, factory: Callable[[], Awaitable[None]]
    ) -> asyncio.Task[None]:
        """``factory`` supervised, as a task of ``group``."""
        return group.create_task(self.supervised(name, factory), name=name)
