"""EPC decoding and encoding (GS1 EPC Tag Data Standard), and catalog classification of tags.

Worked examples: the GS1 EPC Tag Data Standard's encoding examples (TDS 1.x section 14.5 /
TDS 2.x section 14.5, "EPC Binary Encoding" worked examples for SGTIN-96, SSCC-96, SGLN-96,
GRAI-96 and GIAI-96 with company prefix 0614141 and filter 3), as transcribed in the GS1 Tag Data
Translation test suite of dannyhaak/TagDataTranslation (TDSStandard.cs, "Tests based on TDS
specification examples"), including their GS1 element strings ((01), (00), (414), (8003),
(8004)). The SGTIN-96 one is also the TDS appendix example
(``urn:epc:tag:sgtin-96:3.0614141.812345.6789``).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.catalog import Catalog, EpcKind
from gateway.domain.epc import (
    EpcScheme,
    decode_epc,
    encode_giai96,
    encode_grai96,
    encode_sgln96,
    encode_sgtin96,
    encode_sgtin96_from_gtin,
    encode_sscc96,
    encode_uri,
)
from gateway.domain.gs1 import gs1_check_digit, normalise_gtin
from gateway.domain.model import CatalogItem, Sku

# (hex, pure identity URI, filter, GS1 key from the element string)
TDS_EXAMPLES = [
    (
        "3074257BF7194E4000001A85",
        "urn:epc:id:sgtin:0614141.812345.6789",
        EpcScheme.SGTIN_96,
        "80614141123458",  # (01)80614141123458(21)6789
    ),
    (
        "3174257BF4499602D2000000",
        "urn:epc:id:sscc:0614141.1234567890",
        EpcScheme.SSCC_96,
        "106141412345678908",  # (00)106141412345678908
    ),
    (
        "3274257BF46072000000162E",
        "urn:epc:id:sgln:0614141.12345.5678",
        EpcScheme.SGLN_96,
        "0614141123452",  # (414)0614141123452(254)5678
    ),
    (
        "3374257BF40C0E400000162E",
        "urn:epc:id:grai:0614141.12345.5678",
        EpcScheme.GRAI_96,
        "00614141123452",  # (8003)00614141123452 5678
    ),
    (
        "3474257BF40000000000162E",
        "urn:epc:id:giai:0614141.5678",
        EpcScheme.GIAI_96,
        "06141415678",  # (8004)06141415678
    ),
]


@pytest.mark.parametrize(("hex_epc", "uri", "scheme", "gs1_key"), TDS_EXAMPLES)
def test_tds_worked_examples_decode(
    hex_epc: str, uri: str, scheme: EpcScheme, gs1_key: str
) -> None:
    decoded = decode_epc(hex_epc)
    assert decoded.recognised
    assert decoded.uri == uri
    assert decoded.scheme is scheme
    assert decoded.filter == 3
    assert decoded.company_prefix == "0614141"
    assert decoded.gs1_key == gs1_key
    assert decoded.hex == hex_epc
    assert decoded.reason is None


def test_tds_sgtin_example_fields_and_gtin() -> None:
    decoded = decode_epc("3074257BF7194E4000001A85")
    assert decoded.partition == 5
    assert decoded.reference == "812345"
    assert decoded.serial == "6789"
    # Indicator digit 8, prefix 0614141, item reference 12345, check digit 8.
    assert decoded.gtin == "80614141123458"


def test_tds_worked_examples_encode() -> None:
    assert encode_sgtin96("0614141", "812345", 6789, filter=3) == TDS_EXAMPLES[0][0]
    assert encode_sscc96("0614141", "1234567890", filter=3) == TDS_EXAMPLES[1][0]
    assert encode_sgln96("0614141", "12345", 5678, filter=3) == TDS_EXAMPLES[2][0]
    assert encode_grai96("0614141", "12345", 5678, filter=3) == TDS_EXAMPLES[3][0]
    assert encode_giai96("0614141", 5678, filter=3) == TDS_EXAMPLES[4][0]
    assert encode_sgtin96_from_gtin("80614141123458", 7, 6789, filter=3) == TDS_EXAMPLES[0][0]


def test_other_published_examples() -> None:
    # Partitions other than 5 (7-digit prefix), from other libraries' documented examples.
    assert decode_epc("31AC16465751CCD0C2000000").uri == "urn:epc:id:sscc:023356789.30200002"
    assert decode_epc("33140E511C56ED0000000001").uri == "urn:epc:id:grai:0234567.89012.1"
    assert decode_epc("341401388000000000000001").uri == "urn:epc:id:giai:0020000.1"


def test_lower_case_and_zero_padded_epc_banks_decode() -> None:
    assert decode_epc("3074257bf7194e4000001a85").uri == TDS_EXAMPLES[0][1]
    padded = decode_epc("3074257BF7194E4000001A850000")  # a 128-bit EPC bank, zero padded
    assert padded.recognised
    assert padded.uri == TDS_EXAMPLES[0][1]
    assert padded.hex == "3074257BF7194E4000001A850000"


@pytest.mark.parametrize(
    ("hex_epc", "reason"),
    [
        ("E280116060000209A1B2C3D4", "header 0xE2"),  # a TID-like value: unknown header
        ("3077257BF7194E4000001A85", "company prefix"),  # prefix field exceeds 7 digits
        ("307C257BF7194E4000001A85", "partition value 7"),
        ("3174257BF4499602D2000001", "reserved bits"),  # SSCC-96 tail must be zero
        ("3074257BF7194E4000001A850010", "non-zero bits past bit 96"),
        ("3074257BF7", "shorter than a 96-bit EPC"),
    ],
)
def test_unrecognised_values_are_kept_as_raw_uris(hex_epc: str, reason: str) -> None:
    decoded = decode_epc(hex_epc)
    assert not decoded.recognised
    assert decoded.uri == f"urn:epc:raw:{len(hex_epc) * 4}.x{hex_epc}"
    assert decoded.reason is not None
    assert reason in decoded.reason
    assert decoded.scheme is None
    assert decoded.gtin is None


def test_sgtin_item_reference_too_large_is_unrecognised() -> None:
    # Partition 6: 6-digit prefix, 7-digit item reference in 24 bits; 9,999,999 < 2**24 - 1.
    value = (0x30 << 88) | (6 << 82) | (614141 << 62) | (((1 << 24) - 1) << 38) | 1
    decoded = decode_epc(f"{value:024X}")
    assert not decoded.recognised
    assert decoded.reason is not None
    assert "reference" in decoded.reason


@pytest.mark.parametrize("text", ["", "   ", "not-hex!", "30 74"])
def test_non_hex_input_never_raises(text: str) -> None:
    decoded = decode_epc(text)
    assert not decoded.recognised
    assert decoded.uri.startswith("urn:epc:raw:")


any_96_bits = st.one_of(
    st.integers(0, (1 << 96) - 1),
    st.builds(
        lambda header, rest: (header << 88) | rest,
        st.sampled_from([0x30, 0x31, 0x32, 0x33, 0x34]),
        st.integers(0, (1 << 88) - 1),
    ),
)


@given(any_96_bits)
def test_any_96_bit_value_decodes_and_recognised_ones_reencode_exactly(value: int) -> None:
    hex_epc = f"{value:024X}"
    decoded = decode_epc(hex_epc)
    if not decoded.recognised:
        assert decoded.uri == f"urn:epc:raw:96.x{hex_epc}"
        return
    assert decoded.filter is not None
    assert decoded.company_prefix is not None
    assert decoded.serial is not None or decoded.scheme is EpcScheme.SSCC_96
    cp, f = decoded.company_prefix, decoded.filter
    if decoded.scheme is EpcScheme.SGTIN_96:
        again = encode_sgtin96(cp, decoded.reference or "", int(decoded.serial or 0), filter=f)
    elif decoded.scheme is EpcScheme.SSCC_96:
        again = encode_sscc96(cp, decoded.reference or "", filter=f)
    elif decoded.scheme is EpcScheme.SGLN_96:
        again = encode_sgln96(cp, decoded.reference or "", int(decoded.serial or 0), filter=f)
    elif decoded.scheme is EpcScheme.GRAI_96:
        again = encode_grai96(cp, decoded.reference or "", int(decoded.serial or 0), filter=f)
    else:
        again = encode_giai96(cp, int(decoded.serial or 0), filter=f)
    assert again == hex_epc


@st.composite
def prefix_and_reference(draw: st.DrawFn, total_digits: int) -> tuple[str, str]:
    """A company prefix of 6..12 digits and a reference filling ``total_digits`` with it."""
    cp_digits = draw(st.integers(6, 12))
    cp = draw(st.text("0123456789", min_size=cp_digits, max_size=cp_digits))
    ref_digits = total_digits - cp_digits
    ref = draw(st.text("0123456789", min_size=ref_digits, max_size=ref_digits))
    return cp, ref


filters = st.integers(0, 7)


@given(prefix_and_reference(13), st.integers(0, (1 << 38) - 1), filters)
def test_sgtin96_round_trip_every_partition(
    cp_ref: tuple[str, str], serial: int, filter_value: int
) -> None:
    cp, ref = cp_ref
    decoded = decode_epc(encode_sgtin96(cp, ref, serial, filter=filter_value))
    assert decoded.recognised
    assert decoded.uri == f"urn:epc:id:sgtin:{cp}.{ref}.{serial}"
    assert (decoded.filter, decoded.partition) == (filter_value, 12 - len(cp))
    body = ref[0] + cp + ref[1:]
    assert decoded.gtin == body + str(gs1_check_digit(body))
    assert normalise_gtin(decoded.gtin) == decoded.gtin


@given(prefix_and_reference(17), filters)
def test_sscc96_round_trip_every_partition(cp_ref: tuple[str, str], filter_value: int) -> None:
    cp, ref = cp_ref
    decoded = decode_epc(encode_sscc96(cp, ref, filter=filter_value))
    assert decoded.recognised
    assert decoded.uri == f"urn:epc:id:sscc:{cp}.{ref}"
    assert decoded.filter == filter_value
    assert decoded.gs1_key is not None
    assert len(decoded.gs1_key) == 18


@given(prefix_and_reference(12), st.integers(0, (1 << 41) - 1), filters)
def test_sgln96_round_trip_every_partition(
    cp_ref: tuple[str, str], extension: int, filter_value: int
) -> None:
    cp, ref = cp_ref
    decoded = decode_epc(encode_sgln96(cp, ref, extension, filter=filter_value))
    assert decoded.recognised
    assert decoded.uri == f"urn:epc:id:sgln:{cp}.{ref}.{extension}"
    assert decoded.filter == filter_value


@given(prefix_and_reference(12), st.integers(0, (1 << 38) - 1), filters)
def test_grai96_round_trip_every_partition(
    cp_ref: tuple[str, str], serial: int, filter_value: int
) -> None:
    cp, ref = cp_ref
    decoded = decode_epc(encode_grai96(cp, ref, serial, filter=filter_value))
    assert decoded.recognised
    assert decoded.uri == f"urn:epc:id:grai:{cp}.{ref}.{serial}"  # 12-digit prefix: "cp..serial"
    assert decoded.filter == filter_value


@given(st.integers(6, 12).flatmap(lambda n: st.tuples(st.just(n), st.data())), filters)
def test_giai96_round_trip_every_partition(
    size_and_data: tuple[int, st.DataObject], filter_value: int
) -> None:
    cp_digits, data = size_and_data
    cp = data.draw(st.text("0123456789", min_size=cp_digits, max_size=cp_digits))
    asset_bits = {12: 42, 11: 45, 10: 48, 9: 52, 8: 55, 7: 58, 6: 62}[cp_digits]
    asset = data.draw(st.integers(0, (1 << asset_bits) - 1))
    decoded = decode_epc(encode_giai96(cp, asset, filter=filter_value))
    assert decoded.recognised
    assert decoded.uri == f"urn:epc:id:giai:{cp}.{asset}"
    assert decoded.filter == filter_value


def test_encoders_name_the_bad_argument() -> None:
    with pytest.raises(ValueError, match="company_prefix must have 6 to 12 digits"):
        encode_sgtin96("12345", "12345678", 1)
    with pytest.raises(ValueError, match="item_reference must have 6 digits"):
        encode_sgtin96("0614141", "12345", 1)
    with pytest.raises(ValueError, match="serial must be within"):
        encode_sgtin96("0614141", "812345", 1 << 38)
    with pytest.raises(ValueError, match="filter must be within"):
        encode_sscc96("0614141", "1234567890", filter=8)
    with pytest.raises(ValueError, match="asset_reference must be within"):
        encode_giai96("0614141", 1 << 58)
    with pytest.raises(ValueError, match="extension must be within"):
        encode_sgln96("0614141", "12345", -1)
    with pytest.raises(ValueError, match="company_prefix must be decimal digits"):
        encode_grai96("06141x1", "12345", 1)


# --- GTINs and the catalog --------------------------------------------------------------------


def test_gtin_check_digits_and_normalisation() -> None:
    assert gs1_check_digit("0061414112345") == 2
    assert normalise_gtin("614141123452") == "00614141123452"  # GTIN-12 (UPC-A)
    assert normalise_gtin("00614141123452") == "00614141123452"
    assert normalise_gtin("96385074") == "00000096385074"  # GTIN-8
    with pytest.raises(ValueError, match="check digit 3, expected 2"):
        normalise_gtin("00614141123453")
    with pytest.raises(ValueError, match="8, 12, 13 or 14 digits"):
        normalise_gtin("12345")


def _catalog() -> Catalog:
    return Catalog(
        [
            CatalogItem(
                sku=Sku("SKU-1001"), gtin="80614141123458", name="Widget case", pack_size=24
            ),
            CatalogItem(sku=Sku("SKU-1002"), gtin="614141999996", pack_size=1),
        ]
    )


def test_catalog_classifies_tags() -> None:
    catalog = _catalog()
    case = catalog.classify("3074257BF7194E4000001A85")
    assert case.kind is EpcKind.CASE
    assert case.sku == "SKU-1001"
    assert case.item is not None
    assert catalog.eaches(case.item, 3) == 72
    assert case.container is None

    pallet = catalog.classify("3174257BF4499602D2000000")
    assert (pallet.kind, pallet.container) == (EpcKind.PALLET, "urn:epc:id:sscc:0614141.1234567890")
    assert catalog.classify("3374257BF40C0E400000162E").kind is EpcKind.ASSET
    assert catalog.classify("3474257BF40000000000162E").kind is EpcKind.ASSET
    assert catalog.classify("3274257BF46072000000162E").kind is EpcKind.LOCATION
    stranger = catalog.classify(encode_sgtin96_from_gtin("00614141000005", 7, 1))
    assert (stranger.kind, stranger.sku) == (EpcKind.UNKNOWN, None)
    assert catalog.classify("E280116060000209A1B2C3D4").kind is EpcKind.UNKNOWN


def test_catalog_lookups() -> None:
    catalog = _catalog()
    assert len(catalog) == 2
    assert catalog.by_gtin("614141999996") is catalog.by_sku("SKU-1002")
    assert catalog.by_gtin("00614141999996") is catalog.by_sku("SKU-1002")
    assert catalog.by_gtin("garbage") is None
    assert [item.sku for item in catalog] == ["SKU-1001", "SKU-1002"]


def test_catalog_rejects_bad_items() -> None:
    with pytest.raises(ValueError, match=r"gtin of X: .* has check digit 3, expected 2"):
        CatalogItem(sku=Sku("X"), gtin="00614141123453")
    with pytest.raises(ValueError, match="pack_size of X must be >= 1"):
        CatalogItem(sku=Sku("X"), gtin="00614141123452", pack_size=0)
    with pytest.raises(ValueError, match="duplicate sku"):
        Catalog([CatalogItem(sku=Sku("X"), gtin="00614141123452")] * 2)
    with pytest.raises(ValueError, match="used by both 'X' and 'Y'"):
        Catalog(
            [
                CatalogItem(sku=Sku("X"), gtin="00614141123452"),
                CatalogItem(sku=Sku("Y"), gtin="614141123452"),
            ]
        )


def test_an_item_without_a_gtin_is_known_by_its_sku_only() -> None:
    shelf_only = CatalogItem(sku=Sku("SKU-BOLTS"), name="Bolts", unit_weight_g=12.5)
    catalog = Catalog([*_catalog(), shelf_only, CatalogItem(sku=Sku("SKU-NUTS"))])
    assert catalog.by_sku("SKU-BOLTS") is shelf_only
    assert shelf_only.gtin is None
    case = catalog.classify("3074257BF7194E4000001A85")
    assert (case.kind, case.sku) == (EpcKind.CASE, "SKU-1001")


def test_encode_uri_inverts_the_pure_identity() -> None:
    for hex_epc, uri, _, _ in TDS_EXAMPLES:
        assert encode_uri(uri, filter=3) == hex_epc
    with pytest.raises(ValueError, match="not a pure-identity EPC URN"):
        encode_uri("urn:epc:tag:sgtin-96:3.0614141.812345.6789")
    with pytest.raises(ValueError, match="scheme 'gdti' is not supported"):
        encode_uri("urn:epc:id:gdti:0614141.12345.5678")
    with pytest.raises(ValueError, match="must have 3 dot-separated fields"):
        encode_uri("urn:epc:id:sgtin:0614141.812345")
    with pytest.raises(ValueError, match="serial '06789' is not a 96-bit numeric serial"):
        encode_uri("urn:epc:id:sgtin:0614141.812345.06789")
