"""Capped exponential backoff with full jitter, for anything that reconnects.

Theory of operation
-------------------
After the n-th consecutive failure (n = 0, 1, 2, ...) the caller waits a delay drawn uniformly from
``[0, min(max_s, initial_s * multiplier**n))`` ("full jitter", as in the AWS architecture note on
backoff): the ceiling grows geometrically up to a cap, and the random draw spreads reconnect storms
when many devices lose the same switch at once.

A link that stayed healthy for ``reset_after_s`` seconds earns a fresh start: the next failure waits
with n = 0 again. A link that flaps (connects, then fails at once) does NOT reset, so a reader that
accepts TCP and then breaks every handshake is retried ever more slowly, up to the cap.

The object reads no clock and draws from an injected ``rng`` (a callable returning a float in
``[0, 1)``, e.g. ``random.Random(42).random``), so tests decide both time and luck.

Defaults: ``initial_s=0.5``, ``multiplier=2``, ``max_s=30``, ``reset_after_s=60``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """The parameters of a :class:`Backoff`; validated so a bad config fails at start-up."""

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    reset_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0:
            raise ValueError(f"initial_s must be > 0, got {self.initial_s}")
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if self.reset_after_s < 0:
            raise ValueError(f"reset_after_s must be >= 0, got {self.reset_after_s}")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay after ``attempt`` consecutive failures (0-based)."""
        # Stop multiplying once past the cap: ``multiplier**attempt`` would overflow a float after
        # ~1,000 attempts of a device that stays dead for days.
        ceiling = self.initial_s
        for _ in range(attempt):
            ceiling *= self.multiplier
            if ceiling >= self.max_s:
                return self.max_s
        return min(ceiling, self.max_s)


class Backoff:
    """Delays between reconnection attempts of ONE device (it keeps that device's failure count)."""

    __slots__ = ("_attempt", "_healthy_since", "_rng", "policy")

    def __init__(
        self, policy: BackoffPolicy | None = None, *, rng: Callable[[], float] | None = None
    ) -> None:
        self.policy = policy if policy is not None else BackoffPolicy()
        # Jitter only spreads load; it needs no cryptographic quality.
        self._rng = rng if rng is not None else random.Random().random
        self._attempt = 0
        self._healthy_since: float | None = None

    @property
    def attempt(self) -> int:
        """Consecutive failures counted so far (0 after a reset)."""
        return self._attempt

    def succeeded(self, now: float) -> None:
        """The link became healthy at monotonic time ``now``."""
        self._healthy_since = now

    def next_delay(self, now: float) -> float:
        """The link failed at ``now``: return how long to wait before the next attempt."""
        if (
            self._healthy_since is not None
            and now - self._healthy_since >= self.policy.reset_after_s
        ):
            self._attempt = 0
        self._healthy_since = None
        draw = self._rng()
        if not 0.0 <= draw <= 1.0:
            raise ValueError(f"rng must return a float in [0, 1], got {draw!r}")
        delay = draw * self.policy.ceiling(self._attempt)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """Forget every failure (e.g. after an operator fixed the device)."""
        self._attempt = 0
        self._healthy_since = None
