"""What the config says about the site, as the domain and the adapters take it: the catalog, the
EPCIS view of the site, a device's TLS context."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from edge_store.records import LocationRecord
from gateway.adapters.tls import client_context
from gateway.domain.catalog import Catalog
from gateway.domain.epcis import DEFAULT_BASE_URI, EpcisSite
from gateway.domain.model import CatalogItem

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, TlsClientConfig


def catalog_of(config: GatewayConfig) -> Catalog:
    # The config's items are the core's CatalogItem (one shape, one GTIN rule).
    return Catalog(config.catalog.items)


def epcis_site(config: GatewayConfig) -> EpcisSite:
    """What the EPCIS mapping needs to know about the site (ids, GTINs, optional SGLNs)."""
    sink = config.sinks.epcis
    return EpcisSite(
        site=config.site.id,
        base_uri=sink.base_uri if sink is not None else DEFAULT_BASE_URI,
        site_sgln=config.site.sgln,
        read_points={
            **{p.id: p.sgln for p in config.portals if p.sgln},
            **{s.id: s.sgln for s in config.shelves if s.sgln},
        },
        locations={loc.id: loc.sgln for loc in config.locations if loc.sgln},
        gtins={i.sku: i.gtin for i in config.catalog.items if i.gtin is not None},
        inside={p.id: p.inside_location for p in config.portals},
        shelves={s.id: s.location for s in config.shelves},
    )


def device_tls(tls: TlsClientConfig | None, key: str) -> ssl.SSLContext | None:
    """The TLS context of a reader's or shelf's ``tls:`` block (``key``: its config path)."""
    if tls is None:
        return None
    return client_context(
        ca_file=tls.ca_file,
        cert_file=tls.cert_file,
        key_file=tls.key_file,
        check_hostname=not tls.insecure,
        key=key,
    )


def catalog_records(
    config: GatewayConfig,
) -> tuple[tuple[CatalogItem, ...], list[LocationRecord]]:
    """The catalog (its items as they are: the store takes them by their fields) and the locations
    as the edge store keeps them (synced at start)."""
    locations = [LocationRecord(id=loc.id, kind=loc.kind) for loc in config.locations]
    return config.catalog.items, locations
