"""The canonical EPCIS event hash (``ni:///sha-256;<hex>?ver=CBV2.0``), as GS1 published it.

Theory of operation
-------------------
EPCIS 2.0 (section 8.9.2 of the standard, and GS1's reference implementation
``epcis-event-hash-generator``) derives an event's identity from its content: the same
observation captured twice, by anyone, has the same ``eventID``. The event is written as one
*pre-hash string* (UTF-8), whose SHA-256 is the id:

1. ``eventType=<type>``;
2. then the standard fields in a fixed order, each ``name=value`` (or ``name`` followed by its
   children for a list or an object), with the elements of a list sorted as strings:
   ``eventTime``, ``eventTimeZoneOffset``, ``certificationInfo``, ``parentID``, ``epcList``
   (``epc=``...), ``inputEPCList``, ``childEPCs``, ``quantityList`` (``quantityElement`` +
   ``epcClass=``, ``quantity=``, ``uom=``), ``childQuantityList``, ``inputQuantityList``,
   ``outputEPCList``, ``outputQuantityList``, ``action``, ``transformationID``, ``bizStep``,
   ``disposition``, ``persistentDisposition``, ``readPoint`` (``id=``), ``bizLocation``
   (``id=``);
3. then every other field (user extensions, and, as the reference implementation does it, the
   ``bizTransactionList``/``sourceList``/``destinationList``, whose key/value pairs it does not
   match against its order table), each rendered generically (``name=value`` or ``name`` +
   children), the whole tail sorted; ``eventID``, ``recordTime``, ``type`` and
   ``errorDeclaration`` are left out. An extension's name is written with its namespace expanded
   (``{https://example.org/ns/}reason``), from the document's ``@context``.

Values are canonicalised before they are written: timestamps to UTC with milliseconds
(``2026-11-22T10:00:00.123Z``); bare CBV values (``receiving``) and old CBV URNs
(``urn:epcglobal:cbv:bizstep:receiving``) to the GS1 web vocabulary
(``https://ref.gs1.org/cbv/BizStep-receiving``); numbers to their shortest form (``24.0`` ->
``24``); GS1 keys in EPC URIs (SGTIN, SSCC, SGLN, PGLN, GRAI, GIAI, SGTIN class patterns) to the
canonical GS1 Digital Link URI (``https://id.gs1.org/01/<GTIN-14>/21/<serial>``).

Scope: the field set and identifier schemes the gateway emits (ObjectEvent and AggregationEvent,
the EPC schemes of :mod:`gateway.domain.epc`, canonical ``https://id.gs1.org`` URIs). Any other
URI is taken as it is (as the reference implementation does for a URI it cannot normalise).
``tests/test_epcis_hash.py`` checks every event shape the gateway emits against the reference
implementation's output.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from gateway.domain.gs1 import gs1_check_digit

__all__ = ["canonical_value", "event_hash", "prehash", "to_digital_link"]

_CBV_WEB: Final = "https://ref.gs1.org/cbv/"
# Which CBV vocabulary a bare value of each field belongs to (the JSON-LD context's mapping).
_BARE_VOCABULARY: Final[Mapping[str, str]] = {
    "bizStep": "BizStep-",
    "disposition": "Disp-",
    "bizTransactionType": "BTT-",
    "sourceDestType": "SDT-",
    "errorReason": "ER-",
}
_OLD_CBV_URNS: Final = (
    ("urn:epcglobal:cbv:bizstep:", _CBV_WEB + "BizStep-"),
    ("urn:epcglobal:cbv:disp:", _CBV_WEB + "Disp-"),
    ("urn:epcglobal:cbv:btt:", _CBV_WEB + "BTT-"),
    ("urn:epcglobal:cbv:sdt:", _CBV_WEB + "SDT-"),
    ("urn:epcglobal:cbv:er:", _CBV_WEB + "ER-"),
)
_IGNORED: Final = frozenset({"eventID", "recordTime", "type", "errorDeclaration", "@context"})
_QUANTITY_ORDER: Final = ("epcClass", "quantity", "uom")

# The standard fields in pre-hash order, and how each is written.
_EPC_LISTS: Final = ("epcList", "inputEPCList", "childEPCs", "outputEPCList")
_QUANTITY_LISTS: Final = (
    "quantityList",
    "childQuantityList",
    "inputQuantityList",
    "outputQuantityList",
)
_ORDER: Final = (
    "eventTime",
    "eventTimeZoneOffset",
    "certificationInfo",
    "parentID",
    "epcList",
    "inputEPCList",
    "childEPCs",
    "quantityList",
    "childQuantityList",
    "inputQuantityList",
    "outputEPCList",
    "outputQuantityList",
    "action",
    "transformationID",
    "bizStep",
    "disposition",
    "persistentDisposition",
    "readPoint",
    "bizLocation",
)
_ID_OBJECTS: Final = frozenset({"readPoint", "bizLocation"})
_TYPED_MEMBERS: Final = ("bizTransaction", "source", "destination")
# The vocabulary of a ``type`` inside these lists' members.
_TYPE_VOCABULARY: Final[Mapping[str, str]] = {
    "bizTransactionList": "bizTransactionType",
    "sourceList": "sourceDestType",
    "destinationList": "sourceDestType",
}

# EPC pure-identity URNs (TDS) -> GS1 Digital Link. The serial/extension alphabet is the TDS one.
_CHAR: Final = (
    r"(?:%2[125-9A-Fa-f]|%3[0-9A-Fa-f]|%4[1-9A-Fa-f]|%5[0-9AaFf]|%6[1-9A-Fa-f]|%7[0-9Aa]"
    r"|[!')(*+,.0-9:;=A-Za-z_-])"
)
# Company prefix (6..12 digits) "." reference: 13 digits in all (GTIN), or 12 (GLN).
_CP_REF_13: Final = "(" + "|".join(rf"\d{{{n}}}\.\d{{{13 - n}}}" for n in range(6, 13)) + ")"
_CP_REF_12: Final = "(" + "|".join(rf"\d{{{n}}}\.\d{{{12 - n}}}" for n in range(6, 13)) + ")"
_SGTIN: Final = re.compile(rf"urn:epc:id:sgtin:{_CP_REF_13}\.({_CHAR}{{1,20}})")
_SGTIN_CLASS: Final = re.compile(rf"urn:epc:idpat:sgtin:{_CP_REF_13}\.\*")
_SSCC: Final = re.compile(
    r"urn:epc:id:sscc:(\d{6}\.\d{11}|\d{7}\.\d{10}|\d{8}\.\d{9}|\d{9}\.\d{8}|\d{10}\.\d{7}"
    r"|\d{11}\.\d{6}|\d{12}\.\d{5})"
)
_PGLN: Final = re.compile(rf"urn:epc:id:pgln:{_CP_REF_12}")
_SGLN: Final = re.compile(rf"urn:epc:id:sgln:{_CP_REF_12}\.({_CHAR}{{1,20}})")
_GRAI_FULL: Final = re.compile(
    r"urn:epc:id:grai:(\d{6}\.\d{6}|\d{7}\.\d{5}|\d{8}\.\d{4}|\d{9}\.\d{3}|\d{10}\.\d{2}"
    rf"|\d{{11}}\.\d|\d{{12}}\.\.)\.({_CHAR}{{1,16}})"
)
_GIAI: Final = re.compile(rf"urn:epc:id:giai:(\d{{6,12}})\.({_CHAR}{{1,24}})")
_GIAI_MAX: Final = {6: 24, 7: 23, 8: 22, 9: 21, 10: 20, 11: 19, 12: 18}
_DL_CANONICAL: Final = re.compile(
    r"https://id\.gs1\.org/(?:00/\d{18}|01/\d{14}(?:/(?:21|10)/[\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F"
    r"\x41-\x5A\x5F\x61-\x7A]{0,20})?|414/\d{13}(?:/254/[\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F\x41-"
    r"\x5A\x5F\x61-\x7A]{0,20})?|8003/\d{14}[\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F\x41-\x5A\x5F\x61-"
    r"\x7A]{0,16}|8004/[\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F\x41-\x5A\x5F\x61-\x7A]{0,30})"
)
_DL_ESCAPES: Final = str.maketrans(
    {"!": "%21", "(": "%28", ")": "%29", "*": "%2A", "+": "%2B", ",": "%2C", ":": "%3A"}
)


def _check_digit(body: str) -> str:
    return str(gs1_check_digit(body))


def _gtin(company_prefix_and_reference: str) -> str:
    prefix, reference = company_prefix_and_reference.split(".")
    body = reference[:1] + prefix + reference[1:]
    return body + _check_digit(body)


def to_digital_link(uri: str) -> str | None:
    """The canonical GS1 Digital Link URI of an EPC URI (or a canonical DL URI), else None."""
    if uri.startswith("https://id.gs1.org/"):
        return uri if _DL_CANONICAL.fullmatch(uri) else None
    if not uri.startswith("urn:epc:"):
        return None
    if match := _SGTIN.fullmatch(uri):
        serial = match.group(2).translate(_DL_ESCAPES)
        return f"https://id.gs1.org/01/{_gtin(match.group(1))}/21/{serial}"
    if match := _SGTIN_CLASS.fullmatch(uri):
        return f"https://id.gs1.org/01/{_gtin(match.group(1))}"
    if match := _SSCC.fullmatch(uri):
        prefix, reference = match.group(1).split(".")
        body = reference[:1] + prefix + reference[1:]
        return f"https://id.gs1.org/00/{body}{_check_digit(body)}"
    if match := _SGLN.fullmatch(uri):
        prefix, reference = match.group(1).split(".")
        body = prefix + reference
        gln = f"https://id.gs1.org/414/{body}{_check_digit(body)}"
        extension = match.group(2)
        return gln if extension == "0" else f"{gln}/254/{extension.translate(_DL_ESCAPES)}"
    if match := _PGLN.fullmatch(uri):
        body = match.group(1).replace(".", "")
        return f"https://id.gs1.org/417/{body}{_check_digit(body)}"
    if match := _GRAI_FULL.fullmatch(uri):
        prefix, asset_type = match.group(1).split(".", 1)
        body = "0" + prefix + asset_type.rstrip(".")
        return f"https://id.gs1.org/8003/{body}{_check_digit(body)}" + match.group(2).translate(
            _DL_ESCAPES
        )
    if (match := _GIAI.fullmatch(uri)) and len(match.group(2)) <= _GIAI_MAX[len(match.group(1))]:
        return f"https://id.gs1.org/8004/{match.group(1)}{match.group(2).translate(_DL_ESCAPES)}"
    return None


def _numeric(text: str) -> str:
    """Numbers in their shortest form, as the reference implementation writes them."""
    try:
        number = float(text)
    except ValueError:
        return text
    if number.is_integer():
        return str(int(number))
    return str(number)


def canonical_value(text: str) -> str:
    """A value as the pre-hash string writes it (not for timestamps or bare CBV values)."""
    for old, new in _OLD_CBV_URNS:
        text = text.replace(old, new)
    text = _numeric(text)
    normalised = to_digital_link(text) if "." in text else None
    return normalised if normalised is not None else text


def _timestamp(text: str) -> str:
    """UTC, milliseconds (rounded half to even, like the reference), ``Z``."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a zone-less time is local time to the reference too
    moment = moment.astimezone(UTC)
    micro = round(moment.microsecond, -3)
    moment = moment.replace(microsecond=0) + timedelta(microseconds=micro)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"  # Python's str(), as in the reference
    return str(value).strip()


def _vocabulary(field: str, value: str) -> str:
    prefix = _BARE_VOCABULARY.get(field)
    if prefix is not None and value and ":" not in value:
        return _CBV_WEB + prefix + value
    return canonical_value(value)


def _expand_name(name: str, namespaces: Mapping[str, str]) -> str:
    prefix, sep, local = name.partition(":")
    if sep and prefix in namespaces:
        return "{" + namespaces[prefix] + "}" + local
    return name


def _generic(name: str, value: object, namespaces: Mapping[str, str], parent: str = "") -> str:
    """One element of the unordered tail: ``name=value`` or ``name`` followed by its children.

    Children are sorted, except the members of a business transaction, source or destination,
    which keep ``type`` before the value (as the reference implementation writes them).
    """
    key = _expand_name(name, namespaces)
    if isinstance(value, Mapping):
        owner = name or parent  # a list's members belong to the list
        if any(k in value for k in _TYPED_MEMBERS):
            keys = [k for k in ("type", *_TYPED_MEMBERS) if k in value]
            return key + "".join(_generic(k, value[k], namespaces, owner) for k in keys)
        return key + "".join(sorted(_generic(k, v, namespaces, owner) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return key + "".join(sorted(_generic("", v, namespaces, name) for v in value))
    text = _scalar(value)
    if not text:
        return key
    if name == "type" and parent == "":
        text = canonical_value(text)
    elif name == "type":
        text = _vocabulary(_TYPE_VOCABULARY.get(parent, ""), text)
    else:
        text = canonical_value(text)
    return f"{key}={text}"


def _epc_list(name: str, values: Sequence[object]) -> str:
    items = sorted("epc=" + canonical_value(_scalar(v)) for v in values if _scalar(v))
    return name + "".join(items) if items else ""


def _quantity_list(name: str, values: Sequence[object]) -> str:
    items = []
    for element in values:
        if not isinstance(element, Mapping):
            continue
        parts = []
        for key in _QUANTITY_ORDER:
            if key in element and _scalar(element[key]):
                parts.append(f"{key}={canonical_value(_scalar(element[key]))}")
        if parts:
            items.append("quantityElement" + "".join(parts))
    return name + "".join(sorted(items)) if items else ""


def _ordered(name: str, value: object) -> str:
    if name in _EPC_LISTS and isinstance(value, list | tuple):
        return _epc_list(name, value)
    if name in _QUANTITY_LISTS and isinstance(value, list | tuple):
        return _quantity_list(name, value)
    if name in _ID_OBJECTS and isinstance(value, Mapping):
        ident = _scalar(value.get("id", ""))
        return f"{name}id={canonical_value(ident)}" if ident else ""
    if name == "persistentDisposition" and isinstance(value, Mapping):
        parts = []
        for key in ("set", "unset"):
            entries = value.get(key, [])
            if isinstance(entries, list | tuple):
                parts.extend(
                    sorted(f"{key}={_vocabulary('disposition', _scalar(e))}" for e in entries)
                )
        return name + "".join(parts) if parts else ""
    text = _scalar(value)
    if not text:
        return ""
    if name == "eventTime":
        return f"{name}={_timestamp(text)}"
    if name in _BARE_VOCABULARY:
        return f"{name}={_vocabulary(name, text)}"
    return f"{name}={canonical_value(text)}"


def prehash(event: Mapping[str, object], namespaces: Mapping[str, str] | None = None) -> str:
    """The pre-hash string of one event. ``namespaces``: extension prefix -> namespace IRI."""
    names = namespaces or {}
    parts = ["eventType=" + _scalar(event.get("type", ""))]
    for name in _ORDER:
        if name in event:
            text = _ordered(name, event[name])
            if text:
                parts.append(text)
    tail = sorted(
        _generic(name, value, names)
        for name, value in event.items()
        if name not in _IGNORED and name not in _ORDER
    )
    return "".join(parts) + "".join(tail)


def event_hash(event: Mapping[str, object], namespaces: Mapping[str, str] | None = None) -> str:
    """The event's canonical hash, the EPCIS 2.0 ``eventID`` of its content."""
    digest = hashlib.sha256(prehash(event, namespaces).encode("utf-8")).hexdigest()
    return f"ni:///sha-256;{digest}?ver=CBV2.0"
