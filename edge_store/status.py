"""Alerts and device statuses: the gateway's current state, as opposed to its history.

Both tables hold one row per key (``alert_id``, ``device_id``) that each write replaces whole: an
alert is raised and later cleared under the same id, a device's row is its latest state. They
carry no seq and take no part in the outbox: the gateway publishes them itself when they change,
and the API and the MQTT state topics read them back (all alerts, or the active ones, oldest
first; the devices by id). Each write is its own small transaction, independent of ``record``.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select

from edge_store.access import StoreAccess, table
from edge_store.models import AlertRow, DeviceStatusRow
from edge_store.records import AlertFields, AlertRecord, DeviceRecord, DeviceStatusFields


class AlertsAndDevices:
    """Reads and writes the ``alerts`` and ``device_status`` tables of one store."""

    __slots__ = ("_db",)

    def __init__(self, db: StoreAccess) -> None:
        self._db = db

    def upsert_alert(self, alert: AlertFields) -> None:
        """Store ``alert``, replacing the alert with the same ``alert_id`` (raise or clear)."""
        row = {
            "alert_id": alert.alert_id,
            "kind": str(alert.kind),
            "severity": str(alert.severity),
            "subject": alert.subject,
            "message": alert.message,
            "raised_at": alert.raised_at,
            "active": alert.active,
            "details": dict(alert.details),
        }
        columns = tuple(k for k in row if k != "alert_id")
        with self._db.write("upsert_alert") as conn:
            conn.execute(self._db.upsert(table(AlertRow), ("alert_id",), columns), row)

    def alerts(self, *, active_only: bool = True) -> list[AlertRecord]:
        """Alerts, oldest first; only the active ones unless ``active_only`` is false."""
        alerts = table(AlertRow)
        query = select(alerts).order_by(alerts.c.raised_at, alerts.c.alert_id)
        if active_only:
            query = query.where(alerts.c.active.is_(True))
        with self._db.read("alerts") as conn:
            rows = conn.execute(query).all()
        return [
            AlertRecord(
                alert_id=row.alert_id,
                kind=row.kind,
                severity=row.severity,
                subject=row.subject,
                message=row.message,
                raised_at=row.raised_at,
                active=bool(row.active),
                details=_details(row.details),
            )
            for row in rows
        ]

    def set_device_status(self, status: DeviceStatusFields) -> None:
        """Store ``status`` as the device's current state, replacing the previous one."""
        row = {
            "device_id": status.device_id,
            "device_type": status.device_type,
            "state": str(status.state),
            "since": status.since,
            "detail": status.detail,
        }
        columns = ("device_type", "state", "since", "detail")
        with self._db.write("set_device_status") as conn:
            conn.execute(self._db.upsert(table(DeviceStatusRow), ("device_id",), columns), row)

    def device_statuses(self) -> list[DeviceRecord]:
        """The current state of every device that ever reported one, sorted by device id."""
        devices = table(DeviceStatusRow)
        with self._db.read("device_statuses") as conn:
            rows = conn.execute(select(devices).order_by(devices.c.device_id)).all()
        return [
            DeviceRecord(
                device_id=row.device_id,
                device_type=row.device_type,
                state=row.state,
                since=row.since,
                detail=row.detail,
            )
            for row in rows
        ]


def _details(value: object) -> Mapping[str, object]:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return {}
