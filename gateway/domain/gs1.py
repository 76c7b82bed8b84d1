"""GS1 keys: the one mod-10 check digit and the one GTIN rule of dockwatch.

Every GS1 key (GTIN, SSCC, GLN, GRAI...) ends with a check digit computed over the digits before
it: weights 3, 1, 3... from the rightmost digit, and the digit that brings the sum to a multiple
of ten (the GS1 General Specifications' check digit calculation). A GTIN is written with 8, 12, 13
or 14 digits; dockwatch keeps every GTIN as the 14-digit GTIN, left-padded with zeros, which is
also what an SGTIN EPC decodes to. The config, the catalog item, the EPC codec, the EPCIS event
hash and the simulators all use these two functions.
"""

from __future__ import annotations

__all__ = ["gs1_check_digit", "normalise_gtin"]


def gs1_check_digit(digits: str) -> int:
    """The GS1 mod-10 check digit for ``digits`` (the key without its check digit)."""
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"digits must be decimal digits, got {digits!r}")
    total = 0
    # Weights alternate 3, 1, 3... starting from the rightmost digit.
    for position, char in enumerate(reversed(digits)):
        total += int(char) * (3 if position % 2 == 0 else 1)
    return (10 - total % 10) % 10


def normalise_gtin(gtin: str) -> str:
    """A GTIN-8/12/13/14 as the 14-digit GTIN, after checking its check digit."""
    text = gtin.strip()
    if not text.isascii() or not text.isdigit() or len(text) not in (8, 12, 13, 14):
        raise ValueError(f"a GTIN has 8, 12, 13 or 14 digits, got {gtin!r}")
    padded = text.rjust(14, "0")
    expected = gs1_check_digit(padded[:13])
    if int(padded[13]) != expected:
        raise ValueError(f"GTIN {gtin!r} has check digit {padded[13]}, expected {expected}")
    return padded
