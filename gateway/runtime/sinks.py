"""Where sinks are built: every configured sink, from its slice of ``sinks:``.

A new sink is its module (a class satisfying :class:`~gateway.adapters.sink.Sink` with a
``from_config``) plus one line in :func:`build_sinks`; its ``name`` is its key under ``sinks:``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from dockwatch_core.errors import ConfigError
from edge_store.repository import EdgeStore
from gateway.adapters.central import CentralRelay
from gateway.adapters.epcis import EpcisRelay
from gateway.adapters.mqtt import MqttSink
from gateway.adapters.sink import Sink
from gateway.domain.model import Alert
from gateway.runtime.site import epcis_site

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

C = TypeVar("C")


def _sink(key: str, part: C | None, build: Callable[[C], Sink]) -> list[Sink]:
    try:
        return [] if part is None else [build(part)]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"sinks.{key}: {exc}") from exc


def build_sinks(
    cfg: GatewayConfig,
    store: EdgeStore,
    *,
    environ: Mapping[str, str] | None,
    on_alert: Callable[[Alert], Awaitable[None]],
) -> list[Sink]:
    """Every configured sink, not yet running."""
    s, site = cfg.sinks, cfg.site.id
    return [
        *_sink(
            "mqtt", s.mqtt, lambda c: MqttSink.from_config(c, store, site=site, environ=environ)
        ),
        *_sink("central", s.central, lambda c: CentralRelay.from_config(c, store, site=site)),
        *_sink(
            "epcis",
            s.epcis,
            lambda c: EpcisRelay.from_config(c, store, site=epcis_site(cfg), on_alert=on_alert),
        ),
    ]


def lag_thresholds(cfg: GatewayConfig, names: list[str]) -> dict[str, float]:
    """``sinks.<name>.lag_alert_s`` of the sinks that set one."""
    lags = {name: getattr(cfg.sinks, name).lag_alert_s for name in names}
    return {name: lag for name, lag in lags.items() if lag is not None}


def publish_pass(sinks: Mapping[str, Sink], portal_id: str, payload: bytes) -> None:
    """A door's pass event, on MQTT when that sink is configured (news of the moment: no
    outbox, no other sink)."""
    mqtt = sinks.get("mqtt")
    if isinstance(mqtt, MqttSink):
        mqtt.publish_pass(portal_id, payload)
