"""The item catalog: which SKU a tag belongs to, and how many eaches a tagged case holds.

A tag's meaning comes from its EPC scheme (see ``gateway.domain.epc``):

- SGTIN (a trade item): a *case* of ``pack_size`` eaches of the catalog item with that GTIN, or
  *unknown* when the GTIN is not in the catalog;
- SSCC (a logistic unit): a *pallet*; its pure identity is the movement's ``container``;
- GRAI / GIAI (returnable or individual assets: crates, skids, forklifts): an *asset*, which moves
  no stock;
- SGLN (a location tag, e.g. fixed on the door frame): a *location*, which moves no stock;
- anything else: *unknown* (kept as its raw URN so it can still be counted and traced).

Quantities are always in eaches: ``eaches(item, cases) == cases * item.pack_size``. The items
are the core's ``CatalogItem``; one without a GTIN (a weight-shelf-only item) is found by its SKU,
and no tag is ever one of its cases.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gateway.domain.epc import DecodedEpc, EpcScheme, decode_epc
from gateway.domain.gs1 import normalise_gtin
from gateway.domain.model import CatalogItem, Sku

__all__ = ["Catalog", "EpcInfo", "EpcKind"]


class EpcKind(enum.StrEnum):
    CASE = "case"
    PALLET = "pallet"
    ASSET = "asset"
    LOCATION = "location"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class EpcInfo:
    """What a tag means to the gateway."""

    kind: EpcKind
    decoded: DecodedEpc
    item: CatalogItem | None = None

    @property
    def uri(self) -> str:
        return self.decoded.uri

    @property
    def sku(self) -> Sku | None:
        return self.item.sku if self.item is not None else None

    @property
    def container(self) -> str | None:
        """The container identity this tag stands for (the SSCC URN of a pallet tag)."""
        return self.decoded.uri if self.kind is EpcKind.PALLET else None


_ASSET_SCHEMES = frozenset({EpcScheme.GRAI_96, EpcScheme.GIAI_96})


class Catalog:
    """Items by SKU and by GTIN; classifies EPCs. Immutable after construction."""

    __slots__ = ("_by_gtin", "_by_sku")

    def __init__(self, items: Iterable[CatalogItem] = ()) -> None:
        by_sku: dict[str, CatalogItem] = {}
        by_gtin: dict[str, CatalogItem] = {}
        for item in items:
            if item.sku in by_sku:
                raise ValueError(f"duplicate sku {item.sku!r} in the catalog")
            by_sku[item.sku] = item
            if item.gtin is None:
                continue  # known by its SKU only: no tag names it
            if item.gtin in by_gtin:
                raise ValueError(
                    f"GTIN {item.gtin} is used by both {by_gtin[item.gtin].sku!r} and {item.sku!r}"
                )
            by_gtin[item.gtin] = item
        self._by_sku = by_sku
        self._by_gtin = by_gtin

    def __len__(self) -> int:
        return len(self._by_sku)

    def __iter__(self) -> Iterator[CatalogItem]:
        return iter(self._by_sku.values())

    def by_sku(self, sku: str) -> CatalogItem | None:
        return self._by_sku.get(sku)

    def by_gtin(self, gtin: str) -> CatalogItem | None:
        """The item with this GTIN (any of GTIN-8/12/13/14), or None (also for a malformed one)."""
        try:
            return self._by_gtin.get(normalise_gtin(gtin))
        except ValueError:
            return None

    @staticmethod
    def eaches(item: CatalogItem, cases: int) -> int:
        """How many eaches ``cases`` tagged units of ``item`` hold."""
        if cases < 0:
            raise ValueError(f"cases must be >= 0, got {cases}")
        return cases * item.pack_size

    def classify(self, epc: str | DecodedEpc) -> EpcInfo:
        """What the tag with this EPC (hex, or already decoded) is."""
        decoded = epc if isinstance(epc, DecodedEpc) else decode_epc(epc)
        scheme = decoded.scheme
        if not decoded.recognised or scheme is None:
            return EpcInfo(EpcKind.UNKNOWN, decoded)
        if scheme is EpcScheme.SGTIN_96:
            item = self._by_gtin.get(decoded.gtin or "")
            return EpcInfo(EpcKind.CASE if item else EpcKind.UNKNOWN, decoded, item)
        if scheme is EpcScheme.SSCC_96:
            return EpcInfo(EpcKind.PALLET, decoded)
        if scheme in _ASSET_SCHEMES:
            return EpcInfo(EpcKind.ASSET, decoded)
        return EpcInfo(EpcKind.LOCATION, decoded)
