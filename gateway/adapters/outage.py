"""The outage policy of every link the gateway retries: a broker, central, a repository, a reader,
a transmitter, the edge store.

Theory of operation
-------------------
A link that fails is an *outage* from its first failure until it works again. The operator
reads ONE error line when the outage starts and ONE info line when it ends (with how long it
lasted and how many attempts it took); the retries in between log at debug level, except a
failure for a reason not seen yet in this outage, which may be worth a warning (``still``). In
between, attempts are spaced by the link's :class:`~gateway.adapters.backoff.Backoff` (capped
exponential with full jitter), which the recovery resets as a healthy link earns it.

Wording is the adapter's (the operator knows "MQTT broker", not "link"): ``OutageWords`` are
``str.format`` templates with the fields ``link``, ``reason``, ``seconds``, ``attempts`` (and
``delay`` for ``next``).
The clock is injected (monotonic seconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.adapters.backoff import Backoff


@dataclass(frozen=True, slots=True)
class OutageWords:
    """What the operator reads (``str.format`` templates; see the module docstring)."""

    down: str = "{link} unavailable: {reason}; retrying with backoff"
    back: str = "{link} reachable again after {seconds:.1f} s"
    still: str | None = None
    """A new reason during the outage: a warning when set, else a debug line."""
    next: str = "{link}: next attempt in {delay:.2f} s"
    """The debug line before each wait (field ``delay``)."""
    down_level: int = logging.ERROR


class Outage:
    """The outage state of ONE link (see the module docstring)."""

    __slots__ = (
        "_attempts",
        "_clock",
        "_extra",
        "_log",
        "_reasons",
        "_since",
        "backoff",
        "link",
        "words",
    )

    def __init__(
        self,
        link: str,
        *,
        log: logging.Logger,
        backoff: Backoff | None = None,
        words: OutageWords | None = None,
        clock: Callable[[], float] = time.monotonic,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        self.link = link
        self.backoff = backoff if backoff is not None else Backoff()
        self.words = words if words is not None else OutageWords()
        self._log = log
        self._clock = clock
        self._extra = dict(extra) if extra is not None else None
        self._since: float | None = None
        self._attempts = 0
        self._reasons: set[str] = set()

    @property
    def down(self) -> bool:
        """An outage is going on (failed, not recovered yet)."""
        return self._since is not None

    @property
    def attempts(self) -> int:
        """Failed attempts in the current outage (0 when up)."""
        return self._attempts

    def failed(self, reason: str) -> bool:
        """An attempt failed for ``reason``; True when this failure starts an outage."""
        self._attempts += 1
        words = self.words
        if self._since is None:
            self._since = self._clock()
            self._reasons = {reason}
            self._say(words.down_level, words.down, reason, 0.0)
            return True
        if words.still is not None and reason not in self._reasons:
            self._reasons.add(reason)
            self._say(logging.WARNING, words.still, reason, self._elapsed())
        else:
            self._log.debug(
                "%s: attempt failed (%d in this outage): %s", self.link, self._attempts, reason
            )
        return False

    def recovered(self) -> float | None:
        """The link works (again); how long the outage lasted, or None when there was none."""
        self.backoff.succeeded(self._clock())
        if self._since is None:
            return None
        seconds = self._elapsed()
        self._say(logging.INFO, self.words.back, "", seconds)
        self._since = None
        self._attempts = 0
        self._reasons = set()
        return seconds

    async def pause(self) -> None:
        """Wait the backoff's next delay before the next attempt."""
        delay = self.backoff.next_delay(self._clock())
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("%s", self.words.next.format(link=self.link, delay=delay))
        await asyncio.sleep(delay)

    def _say(self, level: int, template: str, reason: str, seconds: float) -> None:
        # Formatted here: the adapter's template names the fields it wants (module docstring).
        text = template.format(
            link=self.link, reason=reason, seconds=seconds, attempts=self._attempts
        )
        self._log.log(level, "%s", text, extra=self._extra)

    def _elapsed(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since
