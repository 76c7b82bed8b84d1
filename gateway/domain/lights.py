"""Stack lights and horns on a reader's GPO ports: pass outcomes in, port levels out.

Theory of operation
-------------------
A portal's reader drives a stack light (green, amber, red) and a horn from its GPO outputs. Each
portal has *rules*: an outcome (see :class:`Outcome`) lights a set of GPO ports, steady or
blinking, for ``for_s`` seconds (or until the next outcome when ``for_s`` is None). The newest
outcome of a portal owns its lights: showing one ends the rules of the previous one, so a pass
that goes from *deciding* (amber) to *matched* (green) switches amber off as green comes on.
A port is high while any active rule of its portal holds it high; a blinking rule is high for
the first half of every ``blink_s`` period from when it was shown.

:meth:`StackLights.show` and :meth:`StackLights.advance` return the port levels that changed,
per reader, so the caller writes only changes (one SET_READER_CONFIG per reader). Time is
``monotonic`` seconds, passed in. Ports are per reader: two portals on one reader must not share
a port (the config refuses it).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.domain.model import DeviceId

__all__ = ["LightRule", "Outcome", "PortalLights", "StackLights", "outcome_of"]


class Outcome(enum.StrEnum):
    DECIDING = "deciding"
    """A pass started and is not settled yet, or settled below the lights' confidence."""
    MATCHED = "matched"
    """The pass fits an open expected receipt so far."""
    MISMATCH = "mismatch"
    """An unexpected EPC, an SKU not expected, or more than expected (over-receipt)."""
    DECIDED = "decided"
    """The pass settled and there is no expected receipt to compare it with."""


def outcome_of(
    *, settled: bool, confidence: float, low_confidence: float, matched: bool | None
) -> Outcome:
    """A pass event's outcome. ``matched``: None without expected receipts to compare with,
    else whether the pass fits the one it would go to. A mismatch shows at once, even while
    the pass is still deciding: the driver can stop before unloading more."""
    if matched is False:
        return Outcome.MISMATCH
    if not settled or confidence < low_confidence:
        return Outcome.DECIDING
    return Outcome.DECIDED if matched is None else Outcome.MATCHED


@dataclass(frozen=True, slots=True)
class LightRule:
    outcome: Outcome
    ports: tuple[int, ...]
    for_s: float | None = 3.0
    """How long the ports stay on; None: until the portal's next outcome."""
    blink: bool = False

    def __post_init__(self) -> None:
        if not self.ports or any(not 1 <= p <= 0xFFFF for p in self.ports):
            raise ValueError(f"GPO ports must be a non-empty list of 1..65535, got {self.ports}")
        if self.for_s is not None and not self.for_s > 0:
            raise ValueError(f"for_s must be > 0, got {self.for_s}")


@dataclass(frozen=True, slots=True)
class PortalLights:
    portal_id: str
    reader_id: DeviceId
    rules: tuple[LightRule, ...]
    low_confidence: float = 0.8
    """A settled pass below this confidence shows as DECIDING (amber): look at it."""

    @property
    def ports(self) -> frozenset[int]:
        return frozenset(p for rule in self.rules for p in rule.ports)


@dataclass(slots=True)
class _Shown:
    rule: LightRule
    since: float

    def expired(self, now: float) -> bool:
        return self.rule.for_s is not None and now - self.since >= self.rule.for_s


class StackLights:
    """The lights of every portal that has rules; see the module docstring."""

    def __init__(self, portals: Sequence[PortalLights], *, blink_s: float = 1.0) -> None:
        if not blink_s > 0:
            raise ValueError(f"blink_s must be > 0, got {blink_s}")
        self._portals = {p.portal_id: p for p in portals}
        self._blink_s = blink_s
        self._shown: dict[str, list[_Shown]] = {p.portal_id: [] for p in portals}
        # (reader, port) -> the level last returned (ports start low)
        self._levels: dict[tuple[DeviceId, int], bool] = {
            (p.reader_id, port): False for p in portals for port in sorted(p.ports)
        }

    @property
    def portals(self) -> Mapping[str, PortalLights]:
        return self._portals

    def show(self, portal_id: str, outcome: Outcome, now: float) -> dict[DeviceId, dict[int, bool]]:
        """``outcome`` now owns the portal's lights; the levels that change, per reader."""
        lights = self._portals.get(portal_id)
        if lights is None:
            return {}
        shown = [s for s in self._shown[portal_id] if not s.expired(now)]
        if not (shown and all(s.rule.outcome is outcome for s in shown)):
            # (The same outcome again, as a pass grows, keeps its rules' time: a horn sounds
            # for_s from the first event that called for it.)
            self._shown[portal_id] = [_Shown(r, now) for r in lights.rules if r.outcome is outcome]
        return self.advance(now)

    def advance(self, now: float) -> dict[DeviceId, dict[int, bool]]:
        """Expire rules and step blinking ones; the levels that change, per reader."""
        changes: dict[DeviceId, dict[int, bool]] = {}
        for portal_id, lights in self._portals.items():
            shown = self._shown[portal_id] = [
                s for s in self._shown[portal_id] if not s.expired(now)
            ]
            high: set[int] = set()
            for s in shown:
                if not s.rule.blink or int((now - s.since) / (self._blink_s / 2)) % 2 == 0:
                    high.update(s.rule.ports)
            for port in sorted(lights.ports):
                key = (lights.reader_id, port)
                level = port in high
                if self._levels[key] != level:
                    self._levels[key] = level
                    changes.setdefault(lights.reader_id, {})[port] = level
        return changes

    def levels(self, reader_id: DeviceId) -> dict[int, bool]:
        """Every port's level on ``reader_id`` (to restore them after a reconnect)."""
        return {
            port: level for (reader, port), level in self._levels.items() if reader == reader_id
        }
