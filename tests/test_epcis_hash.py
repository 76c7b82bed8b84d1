"""The canonical event hash against GS1's reference implementation (epcis-event-hash-generator).

The reference runs in a subprocess: it configures logging and a JSON-LD document loader globally
at import, and warns on Python 3.11 (``importlib.resources.open_text``), which this suite turns
into errors. It reads the vendored EPCIS context from its own package, so it needs no network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.domain.epcis import (
    EXTENSION_NAMESPACE,
    EXTENSION_PREFIX,
    document,
    movement_events,
    receipt_closed_event,
)
from gateway.domain.epcis_hash import event_hash, prehash, to_digital_link
from tests.support.epcis import SITE_WITH_GLNS, SITE_WITHOUT_GLNS, T0, closures, variety

_REFERENCE = """
import json, sys
from epcis_event_hash_generator import events_from_file_reader, hash_generator
events = events_from_file_reader.event_list_from_file(sys.argv[1])
prehashes = hash_generator.derive_prehashes_from_events(events)
print(json.dumps({"prehashes": prehashes,
                  "hashes": hash_generator.calculate_hashes_from_pre_hashes(prehashes)}))
"""


def _reference(path: Path) -> dict[str, list[str]]:
    pytest.importorskip("epcis_event_hash_generator")  # the dev extra installs it
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _REFERENCE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


def _events() -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    for site in (SITE_WITH_GLNS, SITE_WITHOUT_GLNS):
        for recorded in variety(24):
            events.extend(movement_events(recorded, site))
        events.extend(receipt_closed_event(c, site) for c in closures())
    return events


def test_event_ids_match_the_reference_implementation(tmp_path: Path) -> None:
    events = _events()
    assert len(events) >= 20
    kinds = {(e["type"], e.get("bizStep"), e.get("disposition")) for e in events}
    assert len(kinds) >= 12, kinds  # every row of the mapping table is in the sample
    path = tmp_path / "events.jsonld"
    path.write_text(json.dumps(document(events, creation_date=T0)), encoding="utf-8")
    reference = _reference(path)
    namespaces = {EXTENSION_PREFIX: EXTENSION_NAMESPACE}
    ours = [prehash({k: v for k, v in e.items() if k != "eventID"}, namespaces) for e in events]
    assert ours == reference["prehashes"]
    assert [e["eventID"] for e in events] == reference["hashes"]


def test_hand_written_events_match_the_reference(tmp_path: Path) -> None:
    """Shapes the mapping does not emit today but a future row might: old CBV URNs, a local
    time zone, class patterns, GRAI/GIAI, persistent dispositions, decimals."""
    events: list[dict[str, object]] = [
        {
            "type": "ObjectEvent",
            "eventTime": "2026-11-22T11:00:00.1234+01:00",
            "eventTimeZoneOffset": "+01:00",
            "epcList": ["urn:epc:id:grai:0614141.12345.400", "urn:epc:id:giai:0614141.32a%2Fb"],
            "action": "OBSERVE",
            "bizStep": "urn:epcglobal:cbv:bizstep:receiving",
            "disposition": "urn:epcglobal:cbv:disp:in_progress",
            "persistentDisposition": {"set": ["damaged"], "unset": ["active"]},
            "readPoint": {"id": "urn:epc:id:sgln:061414112345..7"},
        },
        {
            "type": "ObjectEvent",
            "eventTime": "2026-11-22T10:00:00Z",
            "eventTimeZoneOffset": "-05:00",
            "quantityList": [
                {
                    "epcClass": "urn:epc:idpat:sgtin:0614141.812345.*",
                    "quantity": 2.50,
                    "uom": "KGM",
                },
                {"epcClass": "https://id.gs1.org/01/00614141123452", "quantity": 3.0},
            ],
            "action": "OBSERVE",
            "bizStep": "picking",
            "sourceList": [{"type": "owning_party", "source": "urn:epc:id:pgln:0614141.00001"}],
            f"{EXTENSION_PREFIX}:note": "x",
        },
    ]
    path = tmp_path / "events.jsonld"
    path.write_text(json.dumps(document(events, creation_date=T0)), encoding="utf-8")
    reference = _reference(path)
    namespaces = {EXTENSION_PREFIX: EXTENSION_NAMESPACE}
    assert [prehash(e, namespaces) for e in events] == reference["prehashes"]


def test_the_same_movement_always_gets_the_same_event_id() -> None:
    first = [movement_events(r, SITE_WITH_GLNS) for r in variety(16)]
    again = [movement_events(r, SITE_WITH_GLNS) for r in variety(16)]
    assert first == again
    ids = [e["eventID"] for events in first for e in events]
    assert len(set(ids)) == len(ids)  # different movements, different events
    assert all(str(i).startswith("ni:///sha-256;") and str(i).endswith("?ver=CBV2.0") for i in ids)


def test_the_event_id_does_not_depend_on_key_or_list_order() -> None:
    event = movement_events(variety(1)[0], SITE_WITH_GLNS)[0]
    body = {k: v for k, v in event.items() if k != "eventID"}
    shuffled = dict(reversed(list(body.items())))
    epcs = body.get("epcList")
    if isinstance(epcs, list):
        shuffled["epcList"] = list(reversed(epcs))
    assert event_hash(shuffled, {EXTENSION_PREFIX: EXTENSION_NAMESPACE}) == event["eventID"]


@pytest.mark.parametrize(
    ("uri", "link"),
    [
        ("urn:epc:id:sgtin:0614141.812345.6789", "https://id.gs1.org/01/80614141123458/21/6789"),
        ("urn:epc:id:sscc:0614141.1234567890", "https://id.gs1.org/00/106141412345678908"),
        ("urn:epc:id:sgln:0614141.00777.0", "https://id.gs1.org/414/0614141007776"),
        ("urn:epc:idpat:sgtin:0614141.812345.*", "https://id.gs1.org/01/80614141123458"),
        ("https://example.invalid/dockwatch/site/dc/readpoint/door-1", None),
        ("urn:epc:raw:96.x3074257BF7194E4000001A85", None),
    ],
)
def test_digital_link_of_epc_uris(uri: str, link: str | None) -> None:
    assert to_digital_link(uri) == link
