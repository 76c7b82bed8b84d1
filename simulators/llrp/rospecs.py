"""The ROSpecs one client added, and LLRP's state machine over them (:class:`RoSpecBook`).

ADD (Disabled) -> ENABLE (Inactive; an Immediate start trigger starts it at once, a Periodic one
after its offset and then every period) -> START (Active) -> STOP (Inactive) -> DISABLE
(Disabled) -> DELETE; ID 0 means "all" for ENABLE, DISABLE and DELETE and is invalid for START
and STOP; a wrong state or unknown ID is M_FieldError/A_Invalid. A GPI start trigger starts an
Inactive ROSpec on its GPI edge, a GPI_With_Timeout stop trigger stops it on its edge or after its
timeout. An active ROSpec is an :class:`~simulators.llrp.inventory.Inventory` task; when it ends
(its own stop trigger, STOP, DISABLE, DELETE) its end-of-ROSpec report goes out
(:meth:`~simulators.llrp.reports.Reports.end_of_rospec`) and, if enabled, a ROSpecEvent.

ADD_ROSPEC is checked against what the capabilities advertise (at most ``max_rospecs``, 8 AISpecs,
priority 0, EPC C1G2 only, GPI ports 1..4, at most two EPC-bank select filters) and refused whole
rather than half applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.llrp import codec as c
from simulators.llrp.capabilities import GPIO_PORTS
from simulators.llrp.filters import check_filters
from simulators.llrp.refusals import field_error, param_error
from simulators.llrp.reports import TagAccum

if TYPE_CHECKING:
    from simulators.llrp.inventory import Inventory
    from simulators.llrp.link import Link
    from simulators.llrp.reports import ReaderEvents, Reports
    from simulators.llrp.server import LlrpReaderSimulator
    from simulators.llrp.settings import ReaderSettings

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RoSpecRun:
    """A ROSpec held by a session, with its run state and the entries not yet reported."""

    rospec: c.ROSpec
    state: c.ROSpecState = c.ROSpecState.DISABLED
    task: asyncio.Task[None] | None = None
    trigger_task: asyncio.Task[None] | None = None
    pending: dict[tuple[bytes, int, int, int], TagAccum] = field(default_factory=dict)


class RoSpecBook:
    """One session's ROSpecs (``runs``, by ID) and their state machine. Tasks (inventories,
    periodic triggers) go into the session's task group, once it runs."""

    def __init__(
        self,
        sim: LlrpReaderSimulator,
        link: Link,
        settings: ReaderSettings,
        *,
        reports: Reports,
        events: ReaderEvents,
        inventory: Inventory,
        task_group: Callable[[], asyncio.TaskGroup | None],
    ) -> None:
        self._sim = sim
        self._link = link
        self._settings = settings
        self._reports = reports
        self._events = events
        self._inventory = inventory
        self._task_group = task_group
        self.runs: dict[int, RoSpecRun] = {}

    @property
    def active(self) -> int:
        """How many ROSpecs are Active."""
        return sum(1 for run in self.runs.values() if run.state == c.ROSpecState.ACTIVE)

    # -- requests -----------------------------------------------------------------------------

    def add(self, rospec: c.ROSpec) -> None:
        """ADD_ROSPEC: check it whole, then hold it Disabled."""
        self._check_new(rospec)
        self.runs[rospec.rospec_id] = RoSpecRun(rospec)
        self._sim._rospecs_added.append(rospec)
        logger.debug(
            "LLRP reader %s: %s added ROSpec %d",
            self._sim.reader_id,
            self._link.peer,
            rospec.rospec_id,
        )

    def enable(self, spec_id: int) -> None:
        for run in self._targets(spec_id, allow_all=True):
            self._enable(run)

    def start(self, spec_id: int) -> None:
        (run,) = self._targets(spec_id, allow_all=False)
        if run.state != c.ROSpecState.INACTIVE:
            raise field_error(
                c.StatusCode.A_INVALID,
                f"ROSpec {spec_id} is {run.state.name}, START needs INACTIVE",
            )
        self._start(run)

    def stop(self, spec_id: int) -> None:
        (run,) = self._targets(spec_id, allow_all=False)
        if run.state != c.ROSpecState.ACTIVE:
            raise field_error(
                c.StatusCode.A_INVALID,
                f"ROSpec {spec_id} is {run.state.name}, STOP needs ACTIVE",
            )
        self._stop(run, c.ROSpecState.INACTIVE)

    def disable(self, spec_id: int) -> None:
        for run in self._targets(spec_id, allow_all=True):
            self._stop(run, c.ROSpecState.DISABLED)

    def delete(self, spec_id: int) -> None:
        for run in self._targets(spec_id, allow_all=True):
            self._stop(run, c.ROSpecState.DISABLED)
            del self.runs[run.rospec.rospec_id]

    def delete_all(self) -> None:
        """Factory reset: every ROSpec stopped (its end-of-ROSpec report goes out) and gone."""
        for run in list(self.runs.values()):
            self._stop(run, c.ROSpecState.DISABLED)
        self.runs.clear()

    def described(self) -> tuple[c.ROSpec, ...]:
        """GET_ROSPECS: each ROSpec with its current state."""
        return tuple(_with_state(run.rospec, run.state) for run in self.runs.values())

    def gpi_edge(self, port: int, high: bool) -> None:
        """Start the Inactive ROSpecs whose GPI start trigger matches the edge, stop the Active
        ones whose GPI_With_Timeout stop trigger does."""
        for run in list(self.runs.values()):
            start, stop = run.rospec.boundary.start, run.rospec.boundary.stop
            if (
                run.state == c.ROSpecState.INACTIVE
                and start.trigger == c.ROSpecStartTriggerType.GPI
                and start.gpi is not None
                and (start.gpi.port, start.gpi.event) == (port, high)
            ):
                self._start(run)
            elif (
                run.state == c.ROSpecState.ACTIVE
                and stop.trigger == c.ROSpecStopTriggerType.GPI_WITH_TIMEOUT
                and stop.gpi is not None
                and (stop.gpi.port, stop.gpi.event) == (port, high)
            ):
                self._stop(run, c.ROSpecState.INACTIVE)

    def cancel_tasks(self) -> None:
        for run in self.runs.values():
            for task in (run.task, run.trigger_task):
                if task is not None:
                    task.cancel()

    # -- the state machine --------------------------------------------------------------------

    def _targets(self, spec_id: int, *, allow_all: bool) -> list[RoSpecRun]:
        if spec_id == 0:
            if not allow_all:
                raise field_error(c.StatusCode.A_INVALID, "ROSpecID 0 is not allowed here")
            return list(self.runs.values())
        run = self.runs.get(spec_id)
        if run is None:
            raise field_error(c.StatusCode.A_INVALID, f"no ROSpec {spec_id}")
        return [run]

    def _enable(self, run: RoSpecRun) -> None:
        if run.state != c.ROSpecState.DISABLED:
            return  # already enabled: enabling again changes nothing
        run.state = c.ROSpecState.INACTIVE
        start = run.rospec.boundary.start
        tg = self._task_group()
        if start.trigger == c.ROSpecStartTriggerType.IMMEDIATE:
            self._start(run)
        elif start.trigger == c.ROSpecStartTriggerType.PERIODIC and tg is not None:
            assert start.periodic is not None  # the codec refuses Periodic without its value
            run.trigger_task = tg.create_task(self._periodic_trigger(run, start.periodic))

    async def _periodic_trigger(self, run: RoSpecRun, periodic: c.PeriodicTriggerValue) -> None:
        await asyncio.sleep(periodic.offset_ms / 1000)
        while True:
            if run.state == c.ROSpecState.INACTIVE:
                self._start(run)
            if periodic.period_ms == 0:
                return
            await asyncio.sleep(periodic.period_ms / 1000)

    def _start(self, run: RoSpecRun) -> None:
        tg = self._task_group()
        if tg is None:
            return
        run.state = c.ROSpecState.ACTIVE
        run.task = tg.create_task(self._active(run))
        self._events.rospec(0, run.rospec.rospec_id)
        self._sim._notify()

    async def _active(self, run: RoSpecRun) -> None:
        await self._inventory.run(run)
        # the ROSpec's own stop trigger ended it
        run.task = None
        run.state = c.ROSpecState.INACTIVE
        self._end_of_rospec(run)
        self._sim._notify()

    def _stop(self, run: RoSpecRun, new_state: c.ROSpecState) -> None:
        """Stop ``run`` now (its end-of-ROSpec report goes out) and move it to ``new_state``."""
        was_active = run.state == c.ROSpecState.ACTIVE
        if run.task is not None:
            run.task.cancel()
            run.task = None
        if new_state == c.ROSpecState.DISABLED and run.trigger_task is not None:
            run.trigger_task.cancel()
            run.trigger_task = None
        if was_active:
            self._end_of_rospec(run)
        run.state = new_state
        self._sim._notify()

    def _end_of_rospec(self, run: RoSpecRun) -> None:
        self._reports.end_of_rospec(run)
        self._events.rospec(1, run.rospec.rospec_id)

    def _check_new(self, rospec: c.ROSpec) -> None:
        """Refuse a ROSpec this reader cannot hold or run as asked."""
        ptype = c.ROSpec.TYPE
        if rospec.rospec_id == 0:
            raise param_error(ptype, "ROSpecID 0 is reserved", c.StatusCode.P_FIELD_ERROR)
        if rospec.rospec_id in self.runs:
            raise param_error(ptype, f"ROSpec {rospec.rospec_id} already exists")
        if rospec.current_state != c.ROSpecState.DISABLED:
            raise param_error(ptype, "a new ROSpec must be Disabled", field_num=2)
        if len(self.runs) >= self._sim.max_rospecs:
            raise param_error(
                ptype,
                f"this reader holds at most {self._sim.max_rospecs} ROSpecs",
                c.StatusCode.P_OVERFLOW_PARAMETER,
            )
        if rospec.priority >= 1:
            raise param_error(ptype, f"priority {rospec.priority} > 0", field_num=1)
        if any(isinstance(p, c.RawParameter) for p in rospec.extensions):
            raise param_error(
                ptype, "only AISpecs are supported", c.StatusCode.P_UNSUPPORTED_PARAMETER
            )
        if not rospec.ai_specs:
            raise param_error(ptype, "ROSpec without AISpec", c.StatusCode.P_MISSING_PARAMETER)
        if len(rospec.ai_specs) > 8:
            raise param_error(ptype, "more than 8 AISpecs", c.StatusCode.P_OVERFLOW_PARAMETER)
        boundary = rospec.boundary
        for trigger, gpi, ptype in (
            (
                boundary.start.trigger == c.ROSpecStartTriggerType.GPI,
                boundary.start.gpi,
                c.ROSpecStartTrigger.TYPE,
            ),
            (
                boundary.stop.trigger == c.ROSpecStopTriggerType.GPI_WITH_TIMEOUT,
                boundary.stop.gpi,
                c.ROSpecStopTrigger.TYPE,
            ),
        ):
            if trigger and (gpi is None or not 1 <= gpi.port <= GPIO_PORTS):
                raise param_error(
                    ptype,
                    f"GPI trigger without a GPI port 1..{GPIO_PORTS}",
                    c.StatusCode.P_MISSING_PARAMETER if gpi is None else c.StatusCode.P_FIELD_ERROR,
                )
        for ai in rospec.ai_specs:
            self._check_aispec(ai)
        report = rospec.report_spec
        if (
            report is not None
            and report.trigger > c.ROReportTriggerType.UPON_N_TAGS_OR_END_OF_ROSPEC
        ):
            raise param_error(c.ROReportSpec.TYPE, f"ROReportTrigger {report.trigger}")

    def _check_aispec(self, ai: c.AISpec) -> None:
        if not ai.antenna_ids:
            raise param_error(c.AISpec.TYPE, "AISpec without antennas")
        for a in ai.antenna_ids:
            self._settings.check_antenna(a, c.AISpec.TYPE)
        if ai.stop.trigger not in (
            c.AISpecStopTriggerType.NULL,
            c.AISpecStopTriggerType.DURATION,
            c.AISpecStopTriggerType.TAG_OBSERVATION,
        ):
            raise param_error(
                c.AISpecStopTrigger.TYPE,
                f"AISpec stop trigger {ai.stop.trigger} not supported",
                c.StatusCode.P_UNSUPPORTED_PARAMETER,
            )
        for ips in ai.inventory_parameter_specs:
            if ips.protocol_id != 1:
                raise param_error(
                    c.InventoryParameterSpec.TYPE,
                    f"air protocol {ips.protocol_id} (only EPC C1G2 = 1)",
                    field_num=1,
                )
            for ac in ips.antenna_configurations:
                self._settings.check_antenna(ac.antenna_id, c.AntennaConfiguration.TYPE)
                for command in ac.inventory_commands:
                    check_filters(command.filters)


def _with_state(rospec: c.ROSpec, state: int) -> c.ROSpec:
    return c.ROSpec(
        rospec_id=rospec.rospec_id,
        priority=rospec.priority,
        current_state=state,
        boundary=rospec.boundary,
        ai_specs=rospec.ai_specs,
        report_spec=rospec.report_spec,
        extensions=rospec.extensions,
    )
