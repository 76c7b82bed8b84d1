"""SGTIN-96 and SSCC-96 EPC encoding (GS1 EPC Tag Data Standard), for the simulators.

Theory of operation
-------------------
A 96-bit EPC is a bit string: an 8-bit header (0x30 SGTIN-96, 0x31 SSCC-96), a 3-bit filter, a
3-bit partition, then two numeric fields whose widths the partition selects so that the GS1
company prefix (6 to 12 digits) and the rest share a fixed number of bits:

* SGTIN-96: company prefix + item reference (the GTIN's indicator digit followed by the item
  reference digits, 13 digits together), then a 38-bit serial;
* SSCC-96: company prefix + serial reference (the SSCC's extension digit followed by the serial
  reference digits, 17 digits together), then 24 reserved zero bits.

Partition tables (TDS section 14.5): partition p gives the company prefix 12 - p digits.

The gateway decodes EPCs with its own decoder (``gateway.domain.epc``); a cross-test checks the two
agree, and the TDS worked example (GTIN 80614141123458, serial 6789, company prefix 0614141,
filter 3 -> ``3074257BF7194E4000001A85``) pins both.
"""

from __future__ import annotations

# One GS1 check digit for the whole project: the core's. The encoder's own bit layout stays
# independent of the gateway's decoder, which is what the cross-test compares.
from gateway.domain.gs1 import gs1_check_digit

__all__ = ["gtin14", "sgtin96", "sscc18", "sscc96"]

# partition -> (company prefix bits, company prefix digits, other field bits, other field digits)
SGTIN_PARTITIONS: dict[int, tuple[int, int, int, int]] = {
    0: (40, 12, 4, 1),
    1: (37, 11, 7, 2),
    2: (34, 10, 10, 3),
    3: (30, 9, 14, 4),
    4: (27, 8, 17, 5),
    5: (24, 7, 20, 6),
    6: (20, 6, 24, 7),
}
SSCC_PARTITIONS: dict[int, tuple[int, int, int, int]] = {
    0: (40, 12, 18, 5),
    1: (37, 11, 21, 6),
    2: (34, 10, 24, 7),
    3: (30, 9, 28, 8),
    4: (27, 8, 31, 9),
    5: (24, 7, 34, 10),
    6: (20, 6, 38, 11),
}
SGTIN96_HEADER = 0x30
SSCC96_HEADER = 0x31
SGTIN_SERIAL_BITS = 38


def _partition(table: dict[int, tuple[int, int, int, int]], prefix_digits: int) -> int:
    for p, (_, digits, _, _) in table.items():
        if digits == prefix_digits:
            return p
    raise ValueError(f"a GS1 company prefix has 6 to 12 digits, got {prefix_digits}")


def _check_filter(filter_value: int) -> None:
    if not 0 <= filter_value <= 7:
        raise ValueError(f"filter must be 0..7, got {filter_value}")


def sgtin96(gtin: str, company_prefix: str, serial: int, *, filter_value: int = 1) -> str:
    """SGTIN-96 of a GTIN-14 and serial number, as 24 upper-case hex digits.

    ``company_prefix`` says where the company prefix ends inside the GTIN (a GTIN alone does not
    tell). Filter values: 1 point-of-sale item, 2 full case, 3 reserved... (TDS table 10-3).
    """
    gtin = gtin.strip()
    if len(gtin) != 14 or not gtin.isdigit():
        raise ValueError(f"GTIN must be 14 digits, got {gtin!r}")
    if gs1_check_digit(gtin[:13]) != int(gtin[13]):
        raise ValueError(f"GTIN {gtin} has a wrong check digit")
    if not company_prefix.isdigit() or gtin[1 : 1 + len(company_prefix)] != company_prefix:
        raise ValueError(f"company prefix {company_prefix!r} is not in GTIN {gtin}")
    if not 0 <= serial < (1 << SGTIN_SERIAL_BITS):
        raise ValueError(f"SGTIN-96 serial must be 0..2^38-1, got {serial}")
    _check_filter(filter_value)
    partition = _partition(SGTIN_PARTITIONS, len(company_prefix))
    cp_bits, _, ref_bits, _ = SGTIN_PARTITIONS[partition]
    item_reference = int(gtin[0] + gtin[1 + len(company_prefix) : 13])
    value = SGTIN96_HEADER
    value = (value << 3) | filter_value
    value = (value << 3) | partition
    value = (value << cp_bits) | int(company_prefix)
    value = (value << ref_bits) | item_reference
    value = (value << SGTIN_SERIAL_BITS) | serial
    return f"{value:024X}"


def sscc96(
    company_prefix: str, serial_reference: int, *, extension: int = 0, filter_value: int = 2
) -> str:
    """SSCC-96 of a company prefix, serial reference and extension digit, as 24 hex digits.

    ``serial_reference`` has at most ``16 - len(company_prefix)`` digits. Filter 2 = full case /
    pallet load is the common value for logistic units (TDS table 10-5 lists 0..7).
    """
    if not company_prefix.isdigit():
        raise ValueError(f"company prefix must be digits, got {company_prefix!r}")
    partition = _partition(SSCC_PARTITIONS, len(company_prefix))
    cp_bits, _, ref_bits, ref_digits = SSCC_PARTITIONS[partition]
    if not 0 <= extension <= 9:
        raise ValueError(f"extension digit must be 0..9, got {extension}")
    serial_digits = ref_digits - 1
    if not 0 <= serial_reference < 10**serial_digits:
        raise ValueError(
            f"serial reference must have at most {serial_digits} digits with a "
            f"{len(company_prefix)}-digit company prefix, got {serial_reference}"
        )
    _check_filter(filter_value)
    reference = int(f"{extension}{serial_reference:0{serial_digits}d}")
    value = SSCC96_HEADER
    value = (value << 3) | filter_value
    value = (value << 3) | partition
    value = (value << cp_bits) | int(company_prefix)
    value = (value << ref_bits) | reference
    value <<= 24  # reserved
    return f"{value:024X}"


def sscc18(company_prefix: str, serial_reference: int, *, extension: int = 0) -> str:
    """The 18-digit SSCC (with its check digit) that :func:`sscc96` encodes."""
    serial_digits = 16 - len(company_prefix)
    body = f"{extension}{company_prefix}{serial_reference:0{serial_digits}d}"
    return body + str(gs1_check_digit(body))


def gtin14(company_prefix: str, item_reference: int, *, indicator: int = 0) -> str:
    """A GTIN-14 from its parts, check digit computed."""
    ref_digits = 12 - len(company_prefix)
    body = f"{indicator}{company_prefix}{item_reference:0{ref_digits}d}"
    if len(body) != 13:
        raise ValueError(f"item reference {item_reference} too long for {company_prefix}")
    return body + str(gs1_check_digit(body))
