"""Expected-receipts files (ASNs): YAML or JSON validated into the domain's receipts.

The document is ``{"receipts": [...]}`` or the list itself. Each receipt: ``id``, optional
``door`` (a portal id), ``lines``, optional ``po`` (the purchase order, carried to EPCIS) and
optional ``supplier``/``reference`` (accepted, not kept). A line is ``{sku, quantity}`` (eaches)
or ``{epcs: [...]}`` (pure-identity URNs or 96-bit hex, kept as URNs) with an optional ``sku``.

Validation is :mod:`gateway.validation`'s, as for the config: every problem of the file at once,
one line each, by key path (``receipts[3].lines[0].quantity: must be an integer in
1..2147483647, got -3``). The limits are the domain's (:mod:`gateway.domain.receiving`); the
domain's types (:class:`ExpectedReceipt`, :class:`ExpectedLine`) are what comes out, so the pure
domain never sees a document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final

from pydantic import Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import core_schema

from dockwatch_core.errors import ConfigError
from gateway.domain.epc import decode_epc, encode_uri
from gateway.domain.model import Sku
from gateway.domain.receiving import (
    MAX_QUANTITY,
    MAX_RECEIPT_ID_CHARS,
    ExpectedLine,
    ExpectedReceipt,
)
from gateway.validation import (
    MODEL_CONFIG,
    Items,
    Num,
    Section,
    Text,
    lines,
    problem,
    problems_of,
)

__all__ = ["ReceiptsError", "parse_expected"]

_MAX_REF_CHARS: Final = 64
"""Doors and SKUs: ids of the config (64 characters at most, no blank, '/', '+' or '#')."""
_RECEIPT_ID_RE: Final = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_RECEIPT_ID_CHARS - 1}}}")
_REF_RE: Final = re.compile(rf"[^/+#\s\x00-\x1f\x7f-\x9f]{{1,{_MAX_REF_CHARS}}}")


class ReceiptsError(ConfigError, ValueError):
    """An expected-receipts document is invalid; ``problems`` holds one line per problem.

    A ValueError too: callers of the receiving contract catch ValueError for a bad document.
    """


class _Epc(Text):
    """An EPC as a pure-identity URN (``urn:epc:id:...``) or 96-bit hex; the URN is kept."""

    def __init__(self) -> None:
        super().__init__(what="an EPC URN or 96-bit hex EPC")

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        text = str(super().check(value, info)).strip()
        if text.startswith("urn:epc:id:"):
            try:
                encode_uri(text)
            except ValueError as exc:
                raise problem(str(exc)) from exc
            return text
        decoded = decode_epc(text)
        if not decoded.recognised:
            raise problem(f"{text!r} is neither an EPC URN nor a decodable 96-bit EPC")
        return decoded.uri


_REF_WHAT: Final = "without blanks, '/', '+', '#' or control characters"
_SKU: Final = Text(
    pattern=_REF_RE, what=f"a SKU {_REF_WHAT}", normalize=str.strip, max_chars=_MAX_REF_CHARS
)


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _Line(Section):
    sku: Annotated[str, _SKU] | None = None
    quantity: Annotated[int, Num(int, lo=1, hi=MAX_QUANTITY)] | None = None
    epcs: Annotated[tuple[Annotated[str, _Epc()], ...], Items("EPCs", nonempty=True)] = ()

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        if len(set(self.epcs)) != len(self.epcs):
            yield "epcs", "lists an EPC twice"
        if self.epcs and self.quantity is not None:
            yield "", "give either quantity or epcs, not both"
        if not self.epcs:
            if self.sku is None:
                yield "sku", "required when the line has no epcs"
            if self.quantity is None:
                yield "quantity", "required when the line has no epcs"


_FREE_TEXT: Final = Text(normalize=str.strip)


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _Receipt(Section):
    id: Annotated[
        str,
        Text(
            pattern=_RECEIPT_ID_RE,
            what="a receipt id of letters, digits, '.', '_', ':' or '-' starting with a letter "
            "or digit",
            normalize=str.strip,
            max_chars=MAX_RECEIPT_ID_CHARS,
        ),
    ]
    lines: Annotated[tuple[_Line, ...], Items("lines", nonempty=True)]
    door: (
        Annotated[
            str,
            Text(
                pattern=_REF_RE,
                what=f"a portal id {_REF_WHAT}",
                normalize=str.strip,
                max_chars=_MAX_REF_CHARS,
            ),
        ]
        | None
    ) = None
    po: Annotated[str, _FREE_TEXT] | None = None
    """The purchase order the shipment fills (EPCIS ``bizTransactionList``)."""
    supplier: Annotated[str, _FREE_TEXT] | None = None
    reference: Annotated[str, _FREE_TEXT] | None = None


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _Document(Section):
    receipts: Annotated[tuple[_Receipt, ...], Items("receipts")] = Field()

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        seen_ids: set[str] = set()
        seen_epcs: dict[str, str] = {}
        for i, receipt in enumerate(self.receipts):
            if receipt.id in seen_ids:
                yield f"receipts[{i}].id", f"duplicate receipt id {receipt.id!r}"
            seen_ids.add(receipt.id)
            for n, line in enumerate(receipt.lines):
                for urn in line.epcs:
                    first = seen_epcs.setdefault(urn, receipt.id)
                    if first != receipt.id:
                        yield (
                            f"receipts[{i}].lines[{n}].epcs",
                            f"{urn} is already expected in {first}",
                        )


def _adapter() -> TypeAdapter[_Document]:
    return TypeAdapter(_Document)


_ADAPTER: Final = _adapter()


def parse_expected(data: object) -> list[ExpectedReceipt]:
    """The expected receipts of a parsed document (see the module doc); ``[]`` for an empty
    list. Raises :class:`ReceiptsError` with every problem, each naming its key path."""
    document = data if isinstance(data, Mapping) else {"receipts": data}
    try:
        parsed = _ADAPTER.validate_python(document)
    except ValidationError as exc:
        raise ReceiptsError(lines(problems_of(exc))) from exc
    return [
        ExpectedReceipt(
            receipt_id=r.id,
            lines=tuple(
                ExpectedLine(
                    sku=None if line.sku is None else Sku(line.sku),
                    quantity=line.quantity,
                    epcs=frozenset(line.epcs),
                )
                for line in r.lines
            ),
            door=r.door,
            po=r.po,
        )
        for r in parsed.receipts
    ]
