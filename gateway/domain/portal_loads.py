"""The portal engine's loads: decided crossings chained per door and direction, settled, emitted.

Internal to :class:`~gateway.domain.portal.PortalEngine`, whose docstring states the rules
("Loads"). :class:`LoadAssembler` takes the crossings the engine decided in one call, in order of
decision, and chains each into an open load of its door and direction when their crossing
moments are within ``group_window_s`` (and the load stays within ``stray_dwell_s``), else starts
a load. A load settles once its reader's time passes ``settle_at`` (its latest member's decision
+ ``settle_s``) and no pass that could still join it is pending; its members are then emitted
as ``TagCrossed`` sharing one ``pass_id``. Along the way each load gives ``PassEvent`` news:
STARTED, UPDATED, DECIDED.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from typing import Final

from gateway.domain.catalog import Catalog, EpcKind
from gateway.domain.model import Epc
from gateway.domain.params import PortalParams
from gateway.domain.portal_decide import Decided
from gateway.domain.portal_model import Direction, PassEvent, PassPhase, TagCrossed
from gateway.domain.portal_state import Counters, DoorLayout

_MAX_PASS_EVENTS: Final = 10_000


class Load:
    """Crossings of one door in one direction, chained by their moments, not yet emitted."""

    __slots__ = ("direction", "key", "m_max", "m_min", "members", "portal", "settle_at")

    def __init__(self, first: Decided, settle_pad: int, key: str) -> None:
        self.key = key
        self.portal = first.portal
        self.direction = first.direction
        self.members = [first]
        self.m_min = first.moment_us
        self.m_max = first.moment_us
        self.settle_at = first.decided_us + settle_pad


class LoadAssembler:
    """Open loads, their settling, and the pass events they give.

    ``pair_open(portal, readers)`` tells whether an open pass heard on both sides of ``portal``
    was last read by one of ``readers`` (``TagTracker.pair_open``): a load waits for those."""

    __slots__ = (
        "_c",
        "_catalog",
        "_group_us",
        "_loads",
        "_pair_open",
        "_passes",
        "_portal_reader",
        "_portals",
        "_settle_pad_us",
        "_window_us",
    )

    def __init__(
        self,
        layout: DoorLayout,
        catalog: Catalog,
        params: PortalParams,
        counters: Counters,
        pair_open: Callable[[int, set[int]], bool],
    ) -> None:
        self._portals = layout.portals
        self._portal_reader = layout.portal_reader
        self._catalog = catalog
        self._c = counters
        self._pair_open = pair_open
        self._group_us = round(params.group_window_s * 1e6)
        self._window_us = round(params.stray_dwell_s * 1e6)
        # A load is complete settle_s after its latest member was decided: a pallet's cases are
        # decided within a few antenna cycles of each other (their origin side falls silent as
        # the pallet's back clears the door). A member decided later starts a new load.
        self._settle_pad_us = round(params.settle_s * 1e6)
        self._loads: list[Load] = []
        # Taken by take_events(); a caller that never takes them keeps only the newest.
        self._passes: deque[PassEvent] = deque(maxlen=_MAX_PASS_EVENTS)

    @property
    def pending(self) -> int:
        """Crossings decided and waiting in an open load."""
        return sum(len(load.members) for load in self._loads)

    def take_events(self) -> list[PassEvent]:
        """The pass events since the last call, in order."""
        events = list(self._passes)
        self._passes.clear()
        return events

    def settle(self, decided: list[Decided], reader_now: list[int]) -> list[TagCrossed]:
        """Chain ``decided`` (in order of decision) into loads, then emit the loads that
        settled by ``reader_now`` (each reader's present time); crossings in moment order."""
        emitted: list[TagCrossed] = []
        decided.sort(key=lambda d: (d.decided_us, d.epc))
        for crossing in decided:
            self._offer(crossing, emitted)
        for load in list(self._loads):
            if load.settle_at <= reader_now[
                self._portal_reader[load.portal]
            ] and not self._may_still_join(load, reader_now):
                self._loads.remove(load)
                self._emit(load, emitted)
        emitted.sort(key=lambda x: (x.moment_us, x.portal_id, x.epc))
        return emitted

    def _may_still_join(self, load: Load, reader_now: list[int]) -> bool:
        """Whether an open pass heard on both sides of the load's door could still be decided
        at or before the load's settle time: one last read by a reader whose clock has not
        reached that time yet (its reports still on their way, or, when it is silent, its clock
        lagging by the in-flight allowance), so its decision is not known yet. Only readers
        behind are looked at: with one reader per door, a due load never waits."""
        at = load.settle_at
        lagging = {r for r, t in enumerate(reader_now) if t < at}
        if not lagging:
            return False
        return self._pair_open(load.portal, lagging)

    def _offer(self, crossing: Decided, emitted: list[TagCrossed]) -> None:
        """Chain a crossing into an open load of its door and direction, or start a load. A
        load whose settle time passed before the crossing was decided is emitted first: the
        grouping depends on reader time, not on how often the engine is called."""
        group = self._group_us
        for load in list(self._loads):
            if load.portal != crossing.portal or load.direction is not crossing.direction:
                continue
            if load.settle_at < crossing.decided_us:
                # Reader time passed this load's settle time before the crossing was decided.
                self._loads.remove(load)
                self._emit(load, emitted)
                continue
            moment = crossing.moment_us
            if (
                load.m_min - group <= moment <= load.m_max + group
                and max(load.m_max, moment) - min(load.m_min, moment) <= self._window_us
            ):
                load.members.append(crossing)
                load.m_min = min(load.m_min, moment)
                load.m_max = max(load.m_max, moment)
                load.settle_at = max(load.settle_at, crossing.decided_us + self._settle_pad_us)
                self._pass_event(load, PassPhase.UPDATED, crossing.decided_us)
                return
        spec = self._portals[crossing.portal]
        digest = hashlib.sha256(
            f"{spec.portal_id}\n{crossing.direction}\n{crossing.epc}\n{crossing.moment_us}".encode()
        ).hexdigest()
        load = Load(crossing, self._settle_pad_us, f"{spec.portal_id}:{digest[:12]}")
        self._loads.append(load)
        self._pass_event(load, PassPhase.STARTED, crossing.decided_us)

    def _pass_event(
        self, load: Load, phase: PassPhase, at_us: int, pass_id: str | None = None
    ) -> None:
        """News of ``load`` for ``take_events``; DECIDED carries the ``pass_id``."""
        members = load.members
        self._passes.append(
            PassEvent(
                pass_key=load.key,
                portal_id=self._portals[load.portal].portal_id,
                phase=phase,
                direction=load.direction,
                at_us=at_us,
                moment_us=load.m_min,
                epcs=tuple(d.epc for d in members),
                confidence=round(sum(d.confidence for d in members) / len(members), 4),
                pass_id=pass_id,
            )
        )

    def _emit(self, load: Load, emitted: list[TagCrossed]) -> None:
        """The settled load's crossings, sharing a ``pass_id`` recomputable from them."""
        spec = self._portals[load.portal]
        members = sorted(load.members, key=lambda d: d.epc)
        digest = hashlib.sha256(
            "\n".join(
                [
                    spec.portal_id,
                    str(load.direction),
                    str(load.m_min // 1_000_000),
                    *(d.epc for d in members),
                ]
            ).encode()
        ).hexdigest()
        pass_id = f"{spec.portal_id}:{digest[:20]}"
        self._pass_event(load, PassPhase.DECIDED, load.settle_at, pass_id)
        inward = load.direction is Direction.IN
        for d in members:
            if self._catalog.classify(d.decoded).kind is EpcKind.UNKNOWN:
                self._c.unknown_crossings += 1
            emitted.append(
                TagCrossed(
                    epc=Epc(d.epc),
                    uri=d.decoded.uri,
                    portal_id=spec.portal_id,
                    direction=load.direction,
                    kind=spec.kind_in if inward else spec.kind_out,
                    from_location=spec.outside_location if inward else spec.inside_location,
                    to_location=spec.inside_location if inward else spec.outside_location,
                    confidence=d.confidence,
                    first_seen_us=d.first_us,
                    last_seen_us=d.last_us,
                    moment_us=d.moment_us,
                    reads=d.reads,
                    pass_id=pass_id,
                    evidence=d.evidence,
                )
            )
