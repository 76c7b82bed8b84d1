"""Device status: what each reader and transmitter says about itself, stored, published, and
turned into ``device_down`` alerts.

Adapters call :meth:`DeviceBoard.report` on the loop thread when a device changes state; one
task (:meth:`DeviceBoard.run`) handles the statuses in arrival order. The queue is unbounded
because it holds state *changes* only, a handful per device at most. A status that arrives
while the gateway stops is stored but not alerted on: devices go offline because WE stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.adapters.sink import Sink, StateSink
from gateway.console.feed import ConsoleFeed
from gateway.domain.model import Alert, AlertKind, DeviceId, DeviceState, DeviceStatus, Severity
from gateway.runtime.recorder import Recorder


class DeviceBoard:
    """The last status of every device, and the one task that records status changes."""

    def __init__(self, recorder: Recorder, *, sinks: Sequence[Sink], feed: ConsoleFeed) -> None:
        self._recorder = recorder
        self._state_sinks = tuple(s for s in sinks if isinstance(s, StateSink))
        self._feed = feed
        self._queue: asyncio.Queue[DeviceStatus] = asyncio.Queue()
        self.devices: dict[str, DeviceStatus] = {}
        self.stopping = False

    def report(self, status: DeviceStatus) -> None:
        """An adapter's status change (call on the loop thread; never blocks)."""
        self._queue.put_nowait(status)

    async def run(self) -> None:
        while True:
            await self._handle(await self._queue.get())

    async def drain(self) -> None:
        """Record the adapters' last word (at stop, once their tasks ended)."""
        self.stopping = True
        while not self._queue.empty():
            await self._handle(self._queue.get_nowait())

    def implausible_weight(self, alert: Alert) -> None:
        """A transmitter reading garbage is a device fault: its shelf shows degraded (the alert
        says why, once) until it reads a sane settled weight again."""
        previous = self.devices.get(alert.subject)
        if previous is not None and previous.state is DeviceState.OFFLINE:
            return  # an outage says more than the garbage before it
        self.report(
            DeviceStatus(
                device_id=DeviceId(alert.subject),
                device_type="modbus_shelf",
                state=DeviceState.DEGRADED if alert.active else DeviceState.ONLINE,
                since=alert.raised_at,
                detail=alert.message if alert.active else "",
            )
        )

    async def _handle(self, status: DeviceStatus) -> None:
        self.devices[status.device_id] = status
        worker = self._recorder.worker
        await worker.call(worker.store.set_device_status, status)
        if self.stopping:
            return  # devices go offline because WE stop: a status, not an outage to alert on
        for sink in self._state_sinks:
            sink.publish_device_status(status)
        self._feed.device(status)
        down = status.state is DeviceState.OFFLINE
        alert_id = f"{AlertKind.DEVICE_DOWN}:{status.device_id}"
        if down == (alert_id in self._recorder.active):
            return  # only a change of up/down is an alert (degraded is a status, not an outage)
        await self._recorder.raise_alert(
            Alert(
                alert_id=alert_id,
                kind=AlertKind.DEVICE_DOWN,
                severity=Severity.CRITICAL if down else Severity.INFO,
                subject=status.device_id,
                message=f"{status.device_type} {status.device_id} is {status.state}"
                + (f": {status.detail}" if status.detail else ""),
                raised_at=status.since,
                active=down,
            )
        )
