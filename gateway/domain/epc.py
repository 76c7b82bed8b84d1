"""EPC binary encodings (GS1 EPC Tag Data Standard) to pure-identity URNs, and back.

Theory of operation
-------------------
A reader reports the EPC bank as hex. The first 8 bits (the *header*) name the encoding scheme;
this module knows the five 96-bit schemes a dock door meets:

====== ========= =================================== ==========================================
header scheme    fields after header (bits)          pure identity
====== ========= =================================== ==========================================
0x30   SGTIN-96  filter 3, partition 3, prefix+item  ``urn:epc:id:sgtin:CP.ITEMREF.SERIAL``
                 reference 44, serial 38             (trade item: a case or an each)
0x31   SSCC-96   filter 3, partition 3, prefix+      ``urn:epc:id:sscc:CP.SERIALREF``
                 serial reference 58, 24 zero bits   (logistic unit: a pallet)
0x32   SGLN-96   filter 3, partition 3, prefix+      ``urn:epc:id:sgln:CP.LOCREF.EXTENSION``
                 location reference 41, extension 41 (a location)
0x33   GRAI-96   filter 3, partition 3, prefix+asset ``urn:epc:id:grai:CP.ASSETTYPE.SERIAL``
                 type 44, serial 38                  (returnable asset: crate, pallet skid)
0x34   GIAI-96   filter 3, partition 3, prefix+asset ``urn:epc:id:giai:CP.ASSETREF``
                 reference 82                        (individual asset: forklift, cage)
====== ========= =================================== ==========================================

The *partition* value (0..6) says how many of the shared bits belong to the GS1 Company Prefix
(12 down to 6 digits) and how many to the next field; the tables below are the TDS partition
tables. Decimal fields are written with exactly the table's digit count (leading zeros kept),
except serial numbers and the GIAI asset reference, which are plain integers without leading
zeros. A field whose value does not fit its digit count (e.g. a 7-digit prefix field holding
12,345,678), partition 7, a non-zero SSCC reserved field or an unknown header is *not* an EPC
this module can vouch for: ``decode_epc`` then returns ``recognised=False`` with the TDS raw URI
``urn:epc:raw:<bits>.x<HEX>`` (e.g. ``urn:epc:raw:96.x1234...``) so the value stays traceable.
``decode_epc`` never raises on tag data. A 96-bit encoding padded with zero words (a tag whose EPC
bank is longer than its EPC) is decoded; non-zero padding is not.

The encoders (``encode_sgtin96`` ...) are the inverse, used by simulators and round-trip tests;
they validate their arguments and raise ``ValueError`` naming the offending one.

Invariants: ``decode_epc(encode_X(...))`` reproduces every field; decoding is a pure function of
the hex string (no state, no I/O).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from gateway.domain.gs1 import gs1_check_digit, normalise_gtin

__all__ = [
    "DecodedEpc",
    "EpcScheme",
    "decode_epc",
    "encode_giai96",
    "encode_grai96",
    "encode_sgln96",
    "encode_sgtin96",
    "encode_sgtin96_from_gtin",
    "encode_sscc96",
    "encode_uri",
]


class EpcScheme(enum.StrEnum):
    SGTIN_96 = "sgtin-96"
    SSCC_96 = "sscc-96"
    SGLN_96 = "sgln-96"
    GRAI_96 = "grai-96"
    GIAI_96 = "giai-96"


# Partition tables: partition value -> (company prefix bits, prefix digits, next field bits,
# next field digits). Digits of the next field are None where the TDS writes it as a plain integer.
_Partition = tuple[int, int, int, int | None]

_SGTIN_PARTITIONS: Final[tuple[_Partition, ...]] = (
    (40, 12, 4, 1),
    (37, 11, 7, 2),
    (34, 10, 10, 3),
    (30, 9, 14, 4),
    (27, 8, 17, 5),
    (24, 7, 20, 6),
    (20, 6, 24, 7),
)
_SSCC_PARTITIONS: Final[tuple[_Partition, ...]] = (
    (40, 12, 18, 5),
    (37, 11, 21, 6),
    (34, 10, 24, 7),
    (30, 9, 28, 8),
    (27, 8, 31, 9),
    (24, 7, 34, 10),
    (20, 6, 38, 11),
)
_SGLN_PARTITIONS: Final[tuple[_Partition, ...]] = (
    (40, 12, 1, 0),
    (37, 11, 4, 1),
    (34, 10, 7, 2),
    (30, 9, 11, 3),
    (27, 8, 14, 4),
    (24, 7, 17, 5),
    (20, 6, 21, 6),
)
_GRAI_PARTITIONS: Final[tuple[_Partition, ...]] = (
    (40, 12, 4, 0),
    (37, 11, 7, 1),
    (34, 10, 10, 2),
    (30, 9, 14, 3),
    (27, 8, 17, 4),
    (24, 7, 20, 5),
    (20, 6, 24, 6),
)
_GIAI_PARTITIONS: Final[tuple[_Partition, ...]] = (
    (40, 12, 42, None),
    (37, 11, 45, None),
    (34, 10, 48, None),
    (30, 9, 52, None),
    (27, 8, 55, None),
    (24, 7, 58, None),
    (20, 6, 62, None),
)

_HEADERS: Final[dict[int, EpcScheme]] = {
    0x30: EpcScheme.SGTIN_96,
    0x31: EpcScheme.SSCC_96,
    0x32: EpcScheme.SGLN_96,
    0x33: EpcScheme.GRAI_96,
    0x34: EpcScheme.GIAI_96,
}
_HEADER_OF: Final[dict[EpcScheme, int]] = {scheme: header for header, scheme in _HEADERS.items()}

_PARTITIONS: Final[dict[EpcScheme, tuple[_Partition, ...]]] = {
    EpcScheme.SGTIN_96: _SGTIN_PARTITIONS,
    EpcScheme.SSCC_96: _SSCC_PARTITIONS,
    EpcScheme.SGLN_96: _SGLN_PARTITIONS,
    EpcScheme.GRAI_96: _GRAI_PARTITIONS,
    EpcScheme.GIAI_96: _GIAI_PARTITIONS,
}

# Bits after header(8) + filter(3) + partition(3): the prefix+reference block, then the tail.
_BLOCK_BITS: Final[dict[EpcScheme, int]] = {
    EpcScheme.SGTIN_96: 44,
    EpcScheme.SSCC_96: 58,
    EpcScheme.SGLN_96: 41,
    EpcScheme.GRAI_96: 44,
    EpcScheme.GIAI_96: 82,
}
_TAIL_BITS: Final[dict[EpcScheme, int]] = {
    EpcScheme.SGTIN_96: 38,  # serial
    EpcScheme.SSCC_96: 24,  # reserved, must be zero
    EpcScheme.SGLN_96: 41,  # extension
    EpcScheme.GRAI_96: 38,  # serial
    EpcScheme.GIAI_96: 0,
}
_URN_NAME: Final[dict[EpcScheme, str]] = {
    EpcScheme.SGTIN_96: "sgtin",
    EpcScheme.SSCC_96: "sscc",
    EpcScheme.SGLN_96: "sgln",
    EpcScheme.GRAI_96: "grai",
    EpcScheme.GIAI_96: "giai",
}
_HEX_DIGITS: Final = frozenset("0123456789ABCDEF")


@dataclass(frozen=True, slots=True)
class DecodedEpc:
    """What one EPC bank value says.

    ``uri`` is the pure-identity URN when ``recognised``, else the TDS raw URN
    ``urn:epc:raw:<bits>.x<HEX>``. ``reference`` is the scheme's middle field as written in the
    URN (SGTIN indicator+item reference, SSCC serial reference, SGLN location reference, GRAI
    asset type; None for GIAI). ``serial`` is the SGTIN/GRAI serial, the SGLN extension or the
    GIAI individual asset reference (None for SSCC). ``gtin`` (SGTIN only) is the 14-digit GTIN
    with its check digit; ``gs1_key`` is the scheme's GS1 key (GTIN-14, SSCC-18, GLN-13, GRAI,
    GIAI) without the serial.
    """

    hex: str
    uri: str
    recognised: bool
    scheme: EpcScheme | None = None
    filter: int | None = None
    partition: int | None = None
    company_prefix: str | None = None
    reference: str | None = None
    serial: str | None = None
    gtin: str | None = None
    gs1_key: str | None = None
    reason: str | None = None
    """Why the value was not recognised (None when it was)."""


def _raw(hex_text: str, reason: str) -> DecodedEpc:
    return DecodedEpc(
        hex=hex_text,
        uri=f"urn:epc:raw:{len(hex_text) * 4}.x{hex_text}",
        recognised=False,
        reason=reason,
    )


def decode_epc(hex_epc: str) -> DecodedEpc:
    """Decode an EPC bank value (hex) into its pure identity; never raises on tag data."""
    text = hex_epc.strip().upper()
    if not text or not _HEX_DIGITS.issuperset(text):
        cleaned = "".join(c for c in text if c.isascii() and c.isalnum())
        return DecodedEpc(
            hex=text,
            uri=f"urn:epc:raw:invalid.{cleaned}",
            recognised=False,
            reason="not a hexadecimal EPC",
        )
    if len(text) < 24:
        return _raw(text, f"{len(text) * 4} bits is shorter than a 96-bit EPC")
    scheme = _HEADERS.get(int(text[:2], 16))
    if scheme is None:
        return _raw(text, f"header 0x{text[:2]} is not a supported 96-bit scheme")
    if len(text) > 24 and text[24:].strip("0"):
        return _raw(text, "a 96-bit header followed by non-zero bits past bit 96")
    value = int(text[:24], 16)
    return _decode_96(text, scheme, value)


def _decode_96(text: str, scheme: EpcScheme, value: int) -> DecodedEpc:
    filter_value = (value >> 85) & 0b111
    partition = (value >> 82) & 0b111
    if partition > 6:
        return _raw(text, f"partition value {partition} is reserved")
    _, cp_digits, ref_bits, ref_digits = _PARTITIONS[scheme][partition]
    tail_bits = _TAIL_BITS[scheme]
    block = (value >> tail_bits) & ((1 << _BLOCK_BITS[scheme]) - 1)
    tail = value & ((1 << tail_bits) - 1)
    cp_value = block >> ref_bits
    ref_value = block & ((1 << ref_bits) - 1)
    if cp_value >= 10**cp_digits:
        return _raw(text, f"company prefix {cp_value} does not fit {cp_digits} digits")
    company_prefix = str(cp_value).zfill(cp_digits)
    name = _URN_NAME[scheme]

    if scheme is EpcScheme.GIAI_96:
        asset_ref = str(ref_value)
        return DecodedEpc(
            hex=text,
            uri=f"urn:epc:id:{name}:{company_prefix}.{asset_ref}",
            recognised=True,
            scheme=scheme,
            filter=filter_value,
            partition=partition,
            company_prefix=company_prefix,
            serial=asset_ref,
            gs1_key=company_prefix + asset_ref,
        )

    assert ref_digits is not None  # every scheme but GIAI has a fixed-width reference
    if ref_value >= 10**ref_digits:
        return _raw(text, f"reference {ref_value} does not fit {ref_digits} digits")
    reference = str(ref_value).zfill(ref_digits) if ref_digits else ""

    if scheme is EpcScheme.SSCC_96:
        if tail:
            return _raw(text, "SSCC-96 reserved bits are not zero")
        # SSCC-18: extension digit (first of the serial reference), prefix, rest, check digit.
        body = reference[:1] + company_prefix + reference[1:]
        return DecodedEpc(
            hex=text,
            uri=f"urn:epc:id:{name}:{company_prefix}.{reference}",
            recognised=True,
            scheme=scheme,
            filter=filter_value,
            partition=partition,
            company_prefix=company_prefix,
            reference=reference,
            gs1_key=body + str(gs1_check_digit(body)),
        )

    serial = str(tail)
    gtin: str | None = None
    if scheme is EpcScheme.SGTIN_96:
        # GTIN-14: indicator digit (first of the item reference), prefix, rest, check digit.
        body = reference[:1] + company_prefix + reference[1:]
        gtin = body + str(gs1_check_digit(body))
        key = gtin
    elif scheme is EpcScheme.SGLN_96:
        body = company_prefix + reference
        key = body + str(gs1_check_digit(body))
    else:  # GRAI-96: the GRAI starts with a zero digit, then prefix, asset type, check digit.
        body = "0" + company_prefix + reference
        key = body + str(gs1_check_digit(body))
    return DecodedEpc(
        hex=text,
        uri=f"urn:epc:id:{name}:{company_prefix}.{reference}.{serial}",
        recognised=True,
        scheme=scheme,
        filter=filter_value,
        partition=partition,
        company_prefix=company_prefix,
        reference=reference,
        serial=serial,
        gtin=gtin,
        gs1_key=key,
    )


# --- encoders -----------------------------------------------------------------------------------


def _check_digits(name: str, value: str) -> None:
    if not value.isascii() or (value and not value.isdigit()):
        raise ValueError(f"{name} must be decimal digits, got {value!r}")


def _partition_for(scheme: EpcScheme, company_prefix: str) -> int:
    _check_digits("company_prefix", company_prefix)
    for index, (_, cp_digits, _, _) in enumerate(_PARTITIONS[scheme]):
        if cp_digits == len(company_prefix):
            return index
    raise ValueError(f"company_prefix must have 6 to 12 digits, got {len(company_prefix)}")


def _check_filter(filter_value: int) -> None:
    if not 0 <= filter_value <= 7:
        raise ValueError(f"filter must be within 0..7, got {filter_value}")


def _check_int(name: str, value: int, bits: int) -> None:
    if value < 0 or value >= 1 << bits:
        raise ValueError(f"{name} must be within 0..{(1 << bits) - 1}, got {value}")


def _pack(
    scheme: EpcScheme,
    filter_value: int,
    partition: int,
    company_prefix: str,
    *,
    ref: int,
    tail: int,
) -> str:
    cp_bits, _, ref_bits, _ = _PARTITIONS[scheme][partition]
    value = _HEADER_OF[scheme]
    value = (value << 3) | filter_value
    value = (value << 3) | partition
    value = (value << cp_bits) | int(company_prefix)
    value = (value << ref_bits) | ref
    value = (value << _TAIL_BITS[scheme]) | tail
    return f"{value:024X}"


def _fixed_reference(scheme: EpcScheme, partition: int, name: str, reference: str) -> int:
    _check_digits(name, reference)
    digits = _PARTITIONS[scheme][partition][3]
    if len(reference) != digits:
        raise ValueError(
            f"{name} must have {digits} digits with this company prefix, got {reference!r}"
        )
    return int(reference) if reference else 0


def encode_sgtin96(
    company_prefix: str, item_reference: str, serial: int, *, filter: int = 0
) -> str:
    """SGTIN-96 hex. ``item_reference`` includes the indicator digit (13 - prefix digits long)."""
    _check_filter(filter)
    partition = _partition_for(EpcScheme.SGTIN_96, company_prefix)
    ref = _fixed_reference(EpcScheme.SGTIN_96, partition, "item_reference", item_reference)
    _check_int("serial", serial, 38)
    return _pack(EpcScheme.SGTIN_96, filter, partition, company_prefix, ref=ref, tail=serial)


def encode_sgtin96_from_gtin(
    gtin: str,
    company_prefix_digits: int,
    serial: int,
    *,
    filter: int = 0,
) -> str:
    """SGTIN-96 hex for a GTIN (8/12/13/14 digits) whose company prefix has the given length."""
    full = normalise_gtin(gtin)
    if not 6 <= company_prefix_digits <= 12:
        raise ValueError(f"company_prefix_digits must be within 6..12, got {company_prefix_digits}")
    company_prefix = full[1 : 1 + company_prefix_digits]
    item_reference = full[0] + full[1 + company_prefix_digits : 13]
    return encode_sgtin96(company_prefix, item_reference, serial, filter=filter)


def encode_sscc96(company_prefix: str, serial_reference: str, *, filter: int = 0) -> str:
    """SSCC-96 hex. ``serial_reference`` includes the extension digit (17 - prefix digits)."""
    _check_filter(filter)
    partition = _partition_for(EpcScheme.SSCC_96, company_prefix)
    ref = _fixed_reference(EpcScheme.SSCC_96, partition, "serial_reference", serial_reference)
    return _pack(EpcScheme.SSCC_96, filter, partition, company_prefix, ref=ref, tail=0)


def encode_sgln96(
    company_prefix: str,
    location_reference: str,
    extension: int,
    *,
    filter: int = 0,
) -> str:
    """SGLN-96 hex. ``location_reference`` has 12 - prefix digits; extension 0 means none."""
    _check_filter(filter)
    partition = _partition_for(EpcScheme.SGLN_96, company_prefix)
    ref = _fixed_reference(EpcScheme.SGLN_96, partition, "location_reference", location_reference)
    _check_int("extension", extension, 41)
    return _pack(EpcScheme.SGLN_96, filter, partition, company_prefix, ref=ref, tail=extension)


def encode_grai96(company_prefix: str, asset_type: str, serial: int, *, filter: int = 0) -> str:
    """GRAI-96 hex. ``asset_type`` has 12 - prefix digits (none with a 12-digit prefix)."""
    _check_filter(filter)
    partition = _partition_for(EpcScheme.GRAI_96, company_prefix)
    ref = _fixed_reference(EpcScheme.GRAI_96, partition, "asset_type", asset_type)
    _check_int("serial", serial, 38)
    return _pack(EpcScheme.GRAI_96, filter, partition, company_prefix, ref=ref, tail=serial)


def encode_giai96(company_prefix: str, asset_reference: int, *, filter: int = 0) -> str:
    """GIAI-96 hex. ``asset_reference`` is an integer below 2**(82 - prefix bits)."""
    _check_filter(filter)
    partition = _partition_for(EpcScheme.GIAI_96, company_prefix)
    _check_int("asset_reference", asset_reference, _GIAI_PARTITIONS[partition][2])
    return _pack(EpcScheme.GIAI_96, filter, partition, company_prefix, ref=asset_reference, tail=0)


def _serial_number(name: str, text: str) -> int:
    # 96-bit schemes hold numeric serials without leading zeros ("0" itself is fine).
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise ValueError(f"{name} {text!r} is not a 96-bit numeric serial (digits, no leading 0)")
    return int(text)


def encode_uri(uri: str, *, filter: int = 0) -> str:
    """The 96-bit hex encoding of a pure-identity URN (``urn:epc:id:sgtin:...`` etc.).

    The URN carries no filter value, so it is an argument. Raises ``ValueError`` for a URN that
    is not one of the five schemes or does not fit their 96-bit encodings.
    """
    prefix = "urn:epc:id:"
    if not uri.startswith(prefix) or uri.count(":") != 4:
        raise ValueError(f"not a pure-identity EPC URN: {uri!r}")
    name, _, body = uri[len(prefix) :].partition(":")
    fields = body.split(".")
    expected = {"sgtin": 3, "sscc": 2, "sgln": 3, "grai": 3, "giai": 2}.get(name)
    if expected is None:
        raise ValueError(f"EPC scheme {name!r} is not supported (sgtin, sscc, sgln, grai, giai)")
    if len(fields) != expected:
        raise ValueError(f"{uri!r} must have {expected} dot-separated fields")
    if name == "sgtin":
        return encode_sgtin96(
            fields[0], fields[1], _serial_number("serial", fields[2]), filter=filter
        )
    if name == "sscc":
        return encode_sscc96(fields[0], fields[1], filter=filter)
    if name == "sgln":
        return encode_sgln96(
            fields[0], fields[1], _serial_number("extension", fields[2]), filter=filter
        )
    if name == "grai":
        return encode_grai96(
            fields[0], fields[1], _serial_number("serial", fields[2]), filter=filter
        )
    return encode_giai96(fields[0], _serial_number("asset reference", fields[1]), filter=filter)
