"""The config loader: sample configs load, every class of mistake is reported with its key path,
all mistakes at once, environment overrides, secrets, and ``dockwatch check-config``."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockwatch_core.errors import ConfigError
from gateway.cli import main as cli_main
from gateway.config import (
    GatewayConfig,
    PortalKinds,
    Secret,
    config_keys,
    load_config,
    parse_config,
    resolve_secret,
)
from gateway.domain.gs1 import gs1_check_digit
from gateway.domain.model import MovementKind
from gateway.domain.params import AntennaParams, PortalParams, ShelfParams
from gateway.runtime.site import catalog_of, epcis_site

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "deploy" / "demo.yaml"
EXAMPLE = REPO / "deploy" / "gateway.example.yaml"
NO_ENV: dict[str, str] = {}

DESIGN_EXAMPLE = """\
site: {id: dc-east}
store: {url: "sqlite:///./var/edge.db"}        # or postgresql+psycopg://...
catalog:
  items:
    - {sku: SKU-1001, gtin: "00614141123452", name: Widget, unit_weight_g: 250.0,
       weight_tolerance_g: 15.0, pack_size: 1, reorder_point: 10}
locations: [{id: yard}, {id: receiving}, {id: shelf-a1}]
readers:
  - {id: door-1-reader, host: 127.0.0.1, port: 5084, antennas: [1, 2, 3, 4]}
portals:
  - {id: door-1, reader: door-1-reader, outside_antennas: [1, 2], inside_antennas: [3, 4],
     outside_location: yard, inside_location: receiving}
shelves:
  - id: shelf-a1
    location: shelf-a1
    sku: SKU-1001
    modbus: {host: 127.0.0.1, port: 5020, unit: 1}
    weight: {table: holding, address: 0, type: float32, word_order: big, scale: 1.0}
    status: {table: holding, address: 2, stable_bit: 0}     # optional
sinks:
  mqtt: {url: "mqtt://127.0.0.1:1883", topic_prefix: "dockwatch/dc-east", qos: 1}
  central: {target: "127.0.0.1:50070"}                        # optional
api: {grpc_listen: "127.0.0.1:50061", metrics_listen: "127.0.0.1:9108"}
"""


def base() -> dict[str, Any]:
    """A valid config with two of everything, as plain data (a fresh copy each call)."""
    return {
        "site": {"id": "dc-east"},
        "catalog": {
            "items": [
                {"sku": "SKU-1001", "gtin": "00614141123452", "name": "Widget",
                 "unit_weight_g": 250.0},
                {"sku": "SKU-1002", "gtin": "00614141123469", "name": "Gadget",
                 "unit_weight_g": 120.0},
                {"sku": "SKU-1003", "gtin": "00614141123476", "name": "Gizmo"},
            ]
        },
        "locations": [
            {"id": "yard", "kind": "dock"},
            {"id": "receiving"},
            {"id": "staging"},
            {"id": "shelf-a1"},
            {"id": "shelf-a2"},
        ],
        "readers": [
            {"id": "door-1-reader", "host": "127.0.0.1", "antennas": [1, 2, 3, 4]},
            {"id": "door-2-reader", "host": "127.0.0.1", "port": 5085, "antennas": [1, 2, 3, 4]},
        ],
        "portals": [
            {"id": "door-1", "reader": "door-1-reader", "outside_antennas": [1, 2],
             "inside_antennas": [3, 4], "outside_location": "yard",
             "inside_location": "receiving"},
            {"id": "door-2", "reader": "door-2-reader", "role": "outbound",
             "outside_antennas": [1, 2], "inside_antennas": [3, 4],
             "outside_location": "yard", "inside_location": "staging"},
        ],
        "shelves": [
            {"id": "shelf-a1", "location": "shelf-a1", "sku": "SKU-1001",
             "modbus": {"host": "127.0.0.1", "unit": 1},
             "weight": {"address": 0, "type": "float32"}},
            {"id": "shelf-a2", "location": "shelf-a2", "sku": "SKU-1002",
             "modbus": {"host": "127.0.0.1", "unit": 2},
             "weight": {"address": 0, "type": "float32"}},
        ],
        "sinks": {"mqtt": {"url": "mqtt://127.0.0.1:1883"}},
    }  # fmt: skip


def problems_of(data: object, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, environ=NO_ENV if environ is None else environ)
    return exc.value.problems


def mutated(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = base()
    change(data)
    return data


# ---------------------------------------------------------------------------------------------
# Valid configs


def test_demo_config_loads_with_the_demo_devices() -> None:
    cfg = load_config(DEMO, environ=NO_ENV)
    assert cfg.site.id == "demo"
    assert cfg.store.url == "sqlite:///./var/demo.db"
    assert [(r.id, r.host, r.port, r.antennas) for r in cfg.readers] == [
        ("door-1-reader", "127.0.0.1", 15084, (1, 2, 3, 4)),
        ("door-2-reader", "127.0.0.1", 15085, (1, 2, 3, 4)),
    ]
    door1, door2 = cfg.portals
    assert (door1.role, door1.kinds) == (
        "inbound",
        PortalKinds(MovementKind.RECEIPT, MovementKind.RETURN),
    )
    assert (door2.role, door2.kinds) == (
        "outbound",
        PortalKinds(MovementKind.RETURN, MovementKind.SHIPMENT),
    )
    assert door1.outside_antennas == (1, 2)
    assert door1.inside_antennas == (3, 4)
    units = [(s.modbus.port, s.modbus.unit) for s in cfg.shelves]
    assert units == [(15020, u) for u in (1, 2, 3, 4)]
    for shelf in cfg.shelves:
        assert (shelf.weight.type, shelf.weight.word_order, shelf.weight.address) == (
            "float32",
            "big",
            0,
        )
        assert shelf.status is not None
        assert (shelf.status.address, shelf.status.stable_bit) == (2, 0)
    assert 3 <= len(cfg.catalog.items) <= 5
    for item in cfg.catalog.items:
        assert item.gtin is not None
        assert item.gtin[1:8] == "0614141"
        assert int(item.gtin[13]) == gs1_check_digit(item.gtin[:13])
    ids = {loc.id for loc in cfg.locations}
    assert {"yard", "receiving", "staging", "shipping", "shelf-a1", "shelf-a2"} <= ids
    assert cfg.location("picked").kind == "virtual"
    assert cfg.location("backroom").kind == "virtual"
    assert cfg.sinks.mqtt is not None
    assert (cfg.sinks.mqtt.host, cfg.sinks.mqtt.port) == ("127.0.0.1", 11883)
    assert cfg.source == str(DEMO)


def test_example_config_loads_and_sets_every_section() -> None:
    cfg = load_config(EXAMPLE, environ=NO_ENV)
    text = EXAMPLE.read_text()
    for section in ("site", "store", "catalog", "locations", "readers", "portals", "shelves",
                    "debounce", "sinks", "api", "receiving", "logging"):  # fmt: skip
        assert re.search(rf"^{section}:", text, re.MULTILINE), section
    assert cfg.sinks.mqtt is not None
    assert cfg.sinks.central is not None
    assert cfg.debounce.portal == PortalParams()
    assert cfg.debounce.shelf == ShelfParams()


def test_design_example_loads_with_defaults_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(DESIGN_EXAMPLE)
    cfg = load_config(path, environ=NO_ENV)
    reader = cfg.reader("door-1-reader")
    assert (reader.keepalive_s, reader.connect_timeout_s, reader.report_every_ms) == (10, 10, 200)
    assert (reader.reconnect.initial_s, reader.reconnect.max_s) == (0.5, 30.0)
    shelf = cfg.shelves[0]
    assert (shelf.pick_to, shelf.restock_from, shelf.modbus.timeout_s) == (
        "picked",
        "backroom",
        1.0,
    )
    assert (shelf.weight.unit, shelf.weight.count) == ("g", 2)
    mqtt = cfg.sinks.mqtt
    assert mqtt is not None
    assert (mqtt.client_id, mqtt.protocol, mqtt.keepalive_s, mqtt.inflight_max) == (
        "dockwatch-dc-east",
        "5",
        30,
        100,
    )
    assert cfg.sinks.central is not None
    assert cfg.sinks.central.batch_max == 500
    assert cfg.item("SKU-1001").pack_size == 1
    assert cfg.item_for_gtin("00614141123452") == cfg.item("SKU-1001")
    assert (cfg.logging.level, cfg.logging.format) == ("INFO", "text")
    assert cfg.receiving.idle_close_s == 300.0


def test_an_item_without_a_gtin_is_known_by_its_sku_only() -> None:
    data = base()
    del data["catalog"]["items"][0]["gtin"]  # SKU-1001, the item of shelf-a1
    cfg = parse_config(data, environ=NO_ENV)
    item = cfg.item("SKU-1001")
    assert item.gtin is None
    assert cfg.item_for_gtin("00614141123452") is None
    assert catalog_of(cfg).by_sku("SKU-1001") is item
    assert epcis_site(cfg).epc_class("SKU-1001").endswith("/dc-east/sku/SKU-1001")
    assert epcis_site(cfg).epc_class("SKU-1002") == "https://id.gs1.org/01/00614141123469"


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = parse_config({"site": {"id": "s1"}}, environ=NO_ENV)
    assert cfg.store.url == "sqlite:///./var/edge.db"
    assert (cfg.api.grpc_listen, cfg.api.metrics_listen) == ("127.0.0.1:50061", "127.0.0.1:9108")
    assert cfg.sinks.mqtt is None
    assert cfg.sinks.central is None
    assert cfg.readers == ()
    assert cfg.locations == ()
    assert cfg.api.token is None


def test_derived_defaults_follow_site_and_role() -> None:
    data = base()
    data["portals"][0]["role"] = "internal"
    data["portals"][1]["kinds"] = {"in": "transfer"}
    cfg = parse_config(data, environ=NO_ENV)
    assert cfg.portals[0].kinds == PortalKinds(MovementKind.TRANSFER, MovementKind.TRANSFER)
    # A partial kinds mapping keeps the role's default for the other direction.
    assert cfg.portals[1].kinds == PortalKinds(MovementKind.TRANSFER, MovementKind.SHIPMENT)
    assert cfg.sinks.mqtt is not None
    assert cfg.sinks.mqtt.topic_prefix == "dockwatch/dc-east"


def test_config_tree_is_frozen() -> None:
    cfg = parse_config(base(), environ=NO_ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.readers[0].port = 1  # type: ignore[misc]  # the point: assignment must fail


def test_postgresql_url_is_normalised_to_psycopg() -> None:
    data = base()
    data["store"] = {"url": "postgresql://dockwatch@db.example/edge"}
    cfg = parse_config(data, environ=NO_ENV)
    assert cfg.store.url == "postgresql+psycopg://dockwatch@db.example/edge"
    assert not cfg.store.is_sqlite


def test_listed_implicit_location_is_not_duplicated() -> None:
    data = base()
    data["locations"].append({"id": "picked", "kind": "storage"})
    cfg = parse_config(data, environ=NO_ENV)
    assert [loc.kind for loc in cfg.locations if loc.id == "picked"] == ["storage"]
    assert cfg.location("backroom").kind == "virtual"
    assert cfg.location("adjustment").kind == "virtual"


def test_debounce_keys_are_the_params_fields() -> None:
    """Every field of the domain params is a key, and its value lands in the params object."""

    def changed(params: object) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in dataclasses.fields(params):  # type: ignore[arg-type]  # params are dataclasses
            value = getattr(params, f.name)
            if isinstance(value, bool):
                out[f.name] = not value
            elif isinstance(value, int):
                out[f.name] = value + 1
            elif isinstance(value, float):
                out[f.name] = min(value * 0.5 + 0.1, 1.0) if value <= 1 else value + 1.5
            elif value is None:  # optional numbers (learned when not set)
                out[f.name] = 7.5
            else:
                out[f.name] = f"x-{value}"
        return out

    portal, shelf = changed(PortalParams()), changed(ShelfParams())
    antenna = changed(AntennaParams())
    data = base()
    data["debounce"] = {"portal": portal, "shelf": shelf, "antenna": antenna}
    cfg = parse_config(data, environ=NO_ENV)
    assert cfg.debounce.antenna == AntennaParams(**antenna)  # type: ignore[arg-type]
    assert cfg.debounce.antenna != AntennaParams()
    assert cfg.debounce.portal == PortalParams(**portal)  # type: ignore[arg-type]
    assert cfg.debounce.shelf == ShelfParams(**shelf)  # type: ignore[arg-type]
    assert cfg.debounce.portal != PortalParams()
    assert cfg.debounce.shelf != ShelfParams()


def test_docs_describe_every_key() -> None:
    docs = (REPO / "docs" / "config.md").read_text()
    missing = [key for key in config_keys() if f"`{key}`" not in docs]
    assert not missing, f"add these keys to docs/config.md: {missing}"
    assert "debounce.portal.min_reads" in config_keys()


# ---------------------------------------------------------------------------------------------
# Mistakes, each reported with its key path


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        node: Any = data
        parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        node: Any = data
        parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        for part in parts[:-1]:
            node = node[part]
        del node[parts[-1]]

    return change


def _append(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        node: Any = data
        for part in path.split("."):
            node = node[part]
        node.append(value)

    return change


DUP_ITEM = {"sku": "SKU-1001", "gtin": "00614141123483", "name": "Again"}

MISTAKES: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    ("wrong type", _set("readers.1.port", "abc"),
     "readers[1].port: must be an integer in 1..65535, got 'abc'"),
    ("bool is not an int", _set("readers.0.port", True),
     "readers[0].port: must be an integer in 1..65535, got true"),
    ("float is not an int", _set("shelves.0.modbus.unit", 1.5),
     "shelves[0].modbus.unit: must be an integer in 0..247, got 1.5"),
    ("out of range", _set("sinks.mqtt.qos", 3),
     "sinks.mqtt.qos: must be an integer in 0..2, got 3"),
    ("non-positive timeout", _set("readers.0.connect_timeout_s", 0),
     "readers[0].connect_timeout_s: must be a number > 0, got 0"),
    ("bad enum", _set("shelves.1.weight.type", "float64"),
     "shelves[1].weight.type: must be one of 'uint16', 'int16', 'uint32', 'int32', 'float32', "
     "got 'float64'"),
    ("bad portal kind", _set("portals.0.kinds", {"in": "pick"}),
     "portals[0].kinds.in: must be one of 'receipt', 'shipment', 'transfer', 'return', "
     "got 'pick'"),
    ("unknown key", _set("shelves.0.colour", "red"),
     "shelves[0].colour: unknown key (allowed: id, location, sku, modbus, weight, pick_to, "
     "restock_from, status, division_g, capacity_g, sgln)"),
    ("unknown section", _set("sink", {}), "sink: unknown key (allowed: site, store, catalog, "
     "locations, readers, portals, shelves, debounce, sinks, api, receiving, logging); "
     "did you mean 'sinks'?"),
    ("missing key", _delete("readers.0.host"), "readers[0].host: missing required key"),
    ("missing site", _delete("site"), "site: missing required key"),
    ("not a mapping", _set("readers.1", "door-2-reader"),
     "readers[1]: must be a mapping, got 'door-2-reader'"),
    ("not a list", _set("readers.0.antennas", 1), "readers[0].antennas: must be a list of "
     "an integer in 1..65535, got 1"),
    ("empty antennas", _set("readers.0.antennas", []),
     "readers[0].antennas: must be a non-empty list"),
    ("duplicate antenna", _set("readers.0.antennas", [1, 2, 2]),
     "readers[0].antennas[2]: duplicate value 2 (first at readers[0].antennas[1])"),
    ("bad id", _set("site.id", "dc east"),
     "site.id: must be an id of at most 64 letters, digits, '.', '_' or '-', got 'dc east'"),
    ("dangling reader", _set("portals.0.reader", "door-9-reader"),
     "portals[0].reader: unknown reader 'door-9-reader' (known: door-1-reader, door-2-reader)"),
    ("antenna not on reader", _set("portals.1.inside_antennas", [3, 5]),
     "portals[1].inside_antennas[1]: antenna 5 is not one of reader 'door-2-reader' antennas "
     "(1, 2, 3, 4)"),
    ("antenna both sides", _set("portals.0.inside_antennas", [2, 3]),
     "portals[0].inside_antennas[0]: antenna 2 is also an outside antenna"),
    ("antenna shared by two portals",
     lambda d: d["portals"][1].update(reader="door-1-reader"),
     "portals[1].outside_antennas[0]: antenna 1 of reader 'door-1-reader' is already used by "
     "portals[0]"),
    ("portal location", _set("portals.0.inside_location", "dock-9"),
     "portals[0].inside_location: unknown location 'dock-9' (known: yard, receiving, staging, "
     "shelf-a1, shelf-a2)"),
    ("shelf location", _set("shelves.0.location", "shelf-z9"),
     "shelves[0].location: unknown location 'shelf-z9' (known: yard, receiving, staging, "
     "shelf-a1, shelf-a2)"),
    ("explicit pick_to must exist", _set("shelves.0.pick_to", "floor"),
     "shelves[0].pick_to: unknown location 'floor' (known: picked, backroom, yard, receiving, "
     "staging, shelf-a1, shelf-a2)"),
    ("shelf sku", _set("shelves.1.sku", "SKU-9"),
     "shelves[1].sku: unknown sku 'SKU-9' (known: SKU-1001, SKU-1002, SKU-1003)"),
    ("shelf sku without unit weight", _set("shelves.1.sku", "SKU-1003"),
     "shelves[1].sku: item 'SKU-1003' (catalog.items[2]) has no unit_weight_g, which a weight "
     "shelf needs to count packs"),
    ("duplicate sku", _append("catalog.items", DUP_ITEM),
     "catalog.items[3].sku: duplicate id 'SKU-1001' (first at catalog.items[0])"),
    ("duplicate gtin", _set("catalog.items.2.gtin", "00614141123452"),
     "catalog.items[2].gtin: duplicate GTIN '00614141123452' (first at catalog.items[0])"),
    ("duplicate location", _append("locations", {"id": "yard"}),
     "locations[5].id: duplicate id 'yard' (first at locations[0])"),
    ("duplicate reader", _set("readers.1.id", "door-1-reader"),
     "readers[1].id: duplicate id 'door-1-reader' (first at readers[0])"),
    ("duplicate portal", _set("portals.1.id", "door-1"),
     "portals[1].id: duplicate id 'door-1' (first at portals[0])"),
    ("duplicate shelf", _set("shelves.1.id", "shelf-a1"),
     "shelves[1].id: duplicate id 'shelf-a1' (first at shelves[0])"),
    ("bad check digit", _set("catalog.items.0.gtin", "00614141123453"),
     "catalog.items[0].gtin: bad GS1 check digit in '00614141123453': the last digit should "
     "be 2"),
    ("gtin read as a number", _set("catalog.items.0.gtin", 614141123452),
     "catalog.items[0].gtin: must be a GTIN (8, 12, 13 or 14 digits) as a quoted string, got "
     "614141123452 (YAML read a number: quote the value)"),
    ("pack size", _set("catalog.items.0.pack_size", 0),
     "catalog.items[0].pack_size: must be an integer in 1..1000000, got 0"),
    ("registers overlap", _set("shelves.1.modbus.unit", 1),
     "shelves[1].weight.address: registers 0..1 overlap those of shelves[0] on the same Modbus "
     "unit 127.0.0.1:502/1"),
    ("status overlaps weight", _set("shelves.0.status", {"address": 1, "stable_bit": 0}),
     "shelves[0].status.address: register 1 overlaps the weight register(s) 0..1"),
    ("store scheme", _set("store", {"url": "mysql://db/edge"}),
     "store.url: must be a 'sqlite:///path' or 'postgresql+psycopg://' URL, got "
     "'mysql://db/edge'"),
    ("store password inline", _set("store", {"url": "postgresql://u:hunter2@db/edge"}),
     "store.url: must not hold a password: use store.password_file or store.password_env "
     "(or libpq's PGPASSFILE)"),
    ("mqtt scheme", _set("sinks.mqtt.url", "http://broker"),
     "sinks.mqtt.url: must be an mqtt:// or mqtts:// URL, got 'http://broker'"),
    ("mqtt tls needs mqtts", _set("sinks.mqtt.tls", {"insecure": True}),
     "sinks.mqtt.tls: given but url is mqtt://; use mqtts:// to enable TLS"),
    ("inline secret", _set("sinks.mqtt.password", "hunter2"),
     "sinks.mqtt.password: secrets are never written in the config: use password_file or "
     "password_env"),
    ("secret env unset", _set("sinks.mqtt.password_env", "MQTT_PASSWORD"),
     "sinks.mqtt.password_env: environment variable 'MQTT_PASSWORD' is not set"),
    ("secret file missing", _set("sinks.mqtt.password_file", "/nonexistent/mqtt-password"),
     "sinks.mqtt.password_file: file not found: '/nonexistent/mqtt-password'"),
    ("tls file missing", _set("api", {"tls": {"cert_file": "/nonexistent/server.pem",
                                              "key_file": "/nonexistent/server.key"}}),
     "api.tls.cert_file: file not found: '/nonexistent/server.pem'"),
    ("central target", _set("sinks.central", {"target": "central.example"}),
     "sinks.central.target: must be 'host:port', got 'central.example'"),
    ("reader ipv6", _set("readers.0.host", "::1"),
     "readers[0].host: must be an IPv4 address or host name (sllurp is IPv4-only), got '::1'"),
    ("backoff order", _set("readers.0.reconnect", {"initial_s": 5, "max_s": 1}),
     "readers[0].reconnect.max_s: must be >= initial_s (5), got 1"),
    ("debounce type", _set("debounce", {"portal": {"min_reads": "two"}}),
     "debounce.portal.min_reads: must be an integer >= 1, got 'two'"),
    ("debounce unknown", _set("debounce", {"shelf": {"stable_ms": 1}}),
     "debounce.shelf.stable_ms: unknown key (allowed: " + ", ".join(
         f.name for f in dataclasses.fields(ShelfParams)) + "); did you mean 'stable_hold_s'?"),
    ("device id clash", _set("shelves.0.id", "door-1-reader"),
     "shelves[0].id: 'door-1-reader' is also the id of readers[0] (device ids share MQTT "
     "status topics)"),
    ("log level", _set("logging", {"level": "verbose"}),
     "logging.level: must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', got 'verbose'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_mistake_is_reported_with_its_key_path(
    change: Callable[[dict[str, Any]], object], expected: str
) -> None:
    assert expected in problems_of(mutated(change))


def test_three_mistakes_are_reported_together() -> None:
    data = base()
    data["readers"][1]["port"] = "abc"
    data["portals"][0]["reader"] = "door-9-reader"
    data["shelves"][0]["colour"] = "red"
    problems = problems_of(data)
    assert len(problems) == 3, problems
    assert problems[0] == "readers[1].port: must be an integer in 1..65535, got 'abc'"
    assert problems[1].startswith("shelves[0].colour: unknown key (allowed: id, location")
    assert problems[2] == (
        "portals[0].reader: unknown reader 'door-9-reader' (known: door-1-reader, door-2-reader)"
    )


def test_cross_references_are_checked_even_next_to_type_errors() -> None:
    data = base()
    data["portals"][0]["role"] = "sideways"  # the portal itself is invalid...
    data["portals"][0]["inside_location"] = "nowhere"  # ...its references are still checked
    problems = problems_of(data)
    assert "portals[0].role: must be one of 'inbound', 'outbound', 'internal', got 'sideways'" in (
        problems
    )
    assert any(
        p.startswith("portals[0].inside_location: unknown location 'nowhere'") for p in problems
    )


def test_domain_params_own_validation_is_reported_with_key_path() -> None:
    data = base()
    data["debounce"] = {"shelf": {"adjust_location": "adjust ments"}}
    assert problems_of(data) == [
        "debounce.shelf.adjust_location: must be an id of at most 64 letters, digits, '.', '_' "
        "or '-', got 'adjust ments'"
    ]


def test_domain_params_cross_field_rules_are_reported_with_key_path() -> None:
    data = base()
    data["debounce"] = {"portal": {"idle_close_s": 5.0, "stray_dwell_s": 4.0}}
    problems = problems_of(data)
    assert len(problems) == 1, problems
    assert problems[0].startswith("debounce.portal.stray_dwell_s: ")
    assert "idle_close_s" in problems[0]


def test_top_level_must_be_a_mapping() -> None:
    assert problems_of([1, 2]) == ["(top level): must be a mapping of sections, got a list"]
    assert problems_of(None) == ["the config is empty"]


# ---------------------------------------------------------------------------------------------
# YAML


def _load_problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ=NO_ENV)
    return exc.value.problems


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    problems = _load_problems(tmp_path, "site:\n  id: x\nreaders: [\n  {id: a, host: b\n")
    assert len(problems) == 1
    assert re.match(r"YAML syntax: line \d+, column \d+: ", problems[0]), problems


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    assert _load_problems(tmp_path, "# only a comment\n") == [
        "the file is empty (no YAML document)"
    ]


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    text = "site:\n  id: a\n  id: b\nstore: {url: 'sqlite://'}\nstore: {}\n"
    assert _load_problems(tmp_path, text) == [
        "line 3, column 3: duplicate key 'id' (first at line 2)",
        "line 5, column 1: duplicate key 'store' (first at line 4)",
    ]


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "site: {id: a}\n"
        "x-reader: &reader {host: 127.0.0.1, antennas: [1, 2]}\n"  # x- keys hold anchors
        "readers:\n"
        "  - {<<: *reader, id: r1, host: 10.0.0.1}\n"  # an explicit key beats a merged one
        "  - {<<: *reader, id: r2}\n"
    )
    cfg = load_config(path, environ=NO_ENV)
    assert [(r.id, r.host, r.antennas) for r in cfg.readers] == [
        ("r1", "10.0.0.1", (1, 2)),
        ("r2", "127.0.0.1", (1, 2)),
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.yaml", environ=NO_ENV)


# ---------------------------------------------------------------------------------------------
# Environment overrides


def test_named_overrides_replace_file_values() -> None:
    data = base()
    original = copy.deepcopy(data)
    environ = {
        "DOCKWATCH_SITE_ID": "dc-west",
        "DOCKWATCH_STORE_URL": "postgresql://gw@db.example/edge",
        "DOCKWATCH_MQTT_URL": "mqtts://broker.example",
        "DOCKWATCH_MQTT_USERNAME": "gw",
        "DOCKWATCH_CENTRAL_TARGET": "central.example:443",
        "DOCKWATCH_LOG_LEVEL": "debug",
        "UNRELATED": "x",
    }
    cfg = parse_config(data, environ=environ)
    assert cfg.site.id == "dc-west"
    assert cfg.store.url == "postgresql+psycopg://gw@db.example/edge"
    mqtt = cfg.sinks.mqtt
    assert mqtt is not None
    assert (mqtt.host, mqtt.port, mqtt.use_tls, mqtt.username) == (
        "broker.example",
        8883,
        True,
        "gw",
    )
    assert mqtt.topic_prefix == "dockwatch/dc-west"  # derived from the overridden site id
    assert cfg.sinks.central is not None
    assert (cfg.sinks.central.host, cfg.sinks.central.port) == ("central.example", 443)
    assert cfg.logging.level == "DEBUG"
    assert data == original  # the caller's data is not modified


def test_generic_overrides_parse_yaml_scalars() -> None:
    environ = {
        "DOCKWATCH__SINKS__MQTT__QOS": "0",
        "DOCKWATCH__DEBOUNCE__PORTAL__MIN_READS": "3",
        "DOCKWATCH__DEBOUNCE__SHELF__USE_STABLE_BIT": "false",
        "DOCKWATCH__API__METRICS_LISTEN": "null",
        "DOCKWATCH__SINKS__MQTT__CLIENT_ID": "0042",
        "DOCKWATCH__RECEIVING__IDLE_CLOSE_S": "",  # empty: ignored
    }
    cfg = parse_config(base(), environ=environ)
    assert cfg.sinks.mqtt is not None
    assert (cfg.sinks.mqtt.qos, cfg.sinks.mqtt.client_id) == (0, "0042")
    assert cfg.debounce.portal.min_reads == 3
    assert cfg.debounce.shelf.use_stable_bit is False
    assert cfg.api.metrics_listen is None
    assert cfg.receiving.idle_close_s == 300.0


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"DOCKWATCH__SINKS__MQTT__QOS": "7"},
         "sinks.mqtt.qos: must be an integer in 0..2, got 7 (set by DOCKWATCH__SINKS__MQTT__QOS)"),
        ({"DOCKWATCH_LOG_LEVEL": "loud"},
         "logging.level: must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', got 'loud' "
         "(set by DOCKWATCH_LOG_LEVEL)"),
        ({"DOCKWATCH__SINKS__MQTT__QOZ": "1"},
         "DOCKWATCH__SINKS__MQTT__QOZ: no key 'qoz' in sinks.mqtt (allowed: url, topic_prefix, "
         "qos, client_id, protocol, keepalive_s, inflight_max, username, password_file, "
         "password_env, tls, reconnect, lag_alert_s)"),
        ({"DOCKWATCH__READERS__PORT": "1"},
         "DOCKWATCH__READERS__PORT: readers is a list; only scalar keys of sections can be "
         "overridden"),
        ({"DOCKWATCH__SINKS__MQTT": "x"},
         "DOCKWATCH__SINKS__MQTT: sinks.mqtt is a section, not a scalar key"),
        ({"DOCKWATCH__DEBOUNCE__PORTAL__MIN_READS": "[1, 2]"},
         "DOCKWATCH__DEBOUNCE__PORTAL__MIN_READS: must be a single value, got a list"),
        ({"DOCKWATCH_CENTRAL_TARGET": "central.example:443",
          "DOCKWATCH__SINKS__CENTRAL__TARGET": "central.example:444"},
         "DOCKWATCH_CENTRAL_TARGET: sinks.central.target is already set by "
         "DOCKWATCH__SINKS__CENTRAL__TARGET"),
        ({"DOCKWATCH__SINKS__CENTRAL__BATCH_MAX": "10"},
         "sinks.central.target: missing required key "
         "(set by DOCKWATCH__SINKS__CENTRAL__BATCH_MAX)"),
    ],
)  # fmt: skip
def test_bad_override_names_the_variable(environ: dict[str, str], expected: str) -> None:
    assert expected in problems_of(base(), environ)


# ---------------------------------------------------------------------------------------------
# Secrets


def test_secrets_resolve_but_never_show(tmp_path: Path) -> None:
    secret_file = tmp_path / "mqtt-password"
    secret_file.write_text("hunter2-from-file\n")
    data = base()
    data["sinks"]["mqtt"].update(username="gw", password_file=str(secret_file))
    data["sinks"]["central"] = {"target": "central.example:443", "token_env": "CENTRAL_TOKEN"}
    data["api"] = {"token_env": "API_TOKEN"}
    environ = {
        "CENTRAL_TOKEN": "tok-from-env",
        "API_TOKEN": "api-tok",
        "DB_PASSWORD": "db-pass",
    }
    data["store"] = {"url": "postgresql+psycopg://gw@db/edge", "password_env": "DB_PASSWORD"}
    cfg = parse_config(data, environ=environ)
    assert cfg.sinks.mqtt is not None
    assert cfg.sinks.central is not None
    assert isinstance(cfg.sinks.mqtt.password, Secret)
    assert cfg.sinks.mqtt.password.reveal() == "hunter2-from-file"
    assert resolve_secret(cfg.sinks.central.token) == "tok-from-env"
    assert resolve_secret(cfg.api.token) == "api-tok"
    assert resolve_secret(cfg.store.password) == "db-pass"
    # asdict must not copy the environment the secrets were resolved from.
    for text in (repr(cfg), str(cfg), repr(dataclasses.asdict(cfg))):
        for secret in ("hunter2-from-file", "tok-from-env", "api-tok", "db-pass"):
            assert secret not in text
    assert repr(cfg.sinks.mqtt.password) == str(cfg.sinks.mqtt.password) == "***"


def test_secret_gone_after_load_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("t0ken")
    data = base()
    data["sinks"]["central"] = {"target": "central.example:443", "token_file": str(secret_file)}
    cfg = parse_config(data, environ=NO_ENV)
    assert cfg.sinks.central is not None
    secret_file.write_text("  \n")
    with pytest.raises(ConfigError, match=r"^sinks\.central\.token_file: .* is empty$"):
        resolve_secret(cfg.sinks.central.token)
    secret_file.unlink()
    with pytest.raises(ConfigError, match=r"^sinks\.central\.token_file: cannot read"):
        resolve_secret(cfg.sinks.central.token)


def test_secret_env_read_lazily_from_the_given_environment() -> None:
    data = base()
    data["api"] = {"token_env": "API_TOKEN"}
    environ = {"API_TOKEN": "first"}
    cfg = parse_config(data, environ=environ)
    assert cfg.api.token is not None
    assert cfg.api.token.reveal({"API_TOKEN": "rotated"}) == "rotated"
    with pytest.raises(ConfigError, match=r"^api\.token_env: environment variable 'API_TOKEN'"):
        cfg.api.token.reveal({})


def test_one_secret_source_only(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("pw")
    data = base()
    data["sinks"]["mqtt"].update(username="gw", password_file=str(secret_file), password_env="PW")
    assert "sinks.mqtt.password_env: give only one of password_file and password_env" in (
        problems_of(data, {"PW": "x"})
    )


# ---------------------------------------------------------------------------------------------
# dockwatch check-config


def test_check_config_valid_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check-config", "--no-env", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert f"{DEMO}: OK" in out
    assert re.search(r"site:\s+demo", out)
    assert re.search(r"readers:\s+2", out)
    assert re.search(r"portals:\s+2", out)
    assert re.search(r"shelves:\s+4", out)
    assert re.search(r"items:\s+5", out)
    assert "mqtt mqtt://127.0.0.1:11883" in out


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_listener_run_would_refuse_is_invalid_for_check_config_and_run_alike(
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """check-config validates as start-up does: an unauthenticated API off loopback is refused
    by both, with exit 2 and the key named (run refuses before it opens the store)."""
    monkeypatch.setenv("DOCKWATCH__API__GRPC_LISTEN", "0.0.0.0:50061")
    monkeypatch.setenv("DOCKWATCH_STORE_URL", f"sqlite:///{tmp_path / 'edge.db'}")
    argv = ["check-config", str(DEMO)] if command == "check-config" else ["run", "-c", str(DEMO)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "api.grpc_listen: refusing to serve the gRPC API without authentication" in err
    assert "0.0.0.0:50061" in err


def test_check_config_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check-config", "--no-env", str(EXAMPLE)]) == 0
    assert "central 127.0.0.1:50070" in capsys.readouterr().out


def test_check_config_invalid_prints_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        DESIGN_EXAMPLE.replace("port: 5084", "port: abc")
        .replace("reader: door-1-reader", "reader: door-9-reader")
        .replace("sku: SKU-1001\n    modbus", "sku: SKU-1001\n    colour: red\n    modbus")
    )
    assert cli_main(["check-config", "--no-env", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines == [
        f"{path}: readers[0].port: must be an integer in 1..65535, got 'abc'",
        f"{path}: shelves[0].colour: unknown key (allowed: id, location, sku, modbus, weight, "
        "pick_to, restock_from, status, division_g, capacity_g, sgln)",
        f"{path}: portals[0].reader: unknown reader 'door-9-reader' (known: door-1-reader)",
    ]


def test_check_config_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["check-config", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: cannot read the config file" in capsys.readouterr().err


def test_gateway_config_type_is_exported() -> None:
    assert isinstance(parse_config(base(), environ=NO_ENV), GatewayConfig)


def test_the_readme_config_example_is_valid(tmp_path: Path) -> None:
    """The site file a newcomer copies from the README loads (its secret files stood in)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    found = re.search(r"```yaml\n(.*?)```", readme, re.DOTALL)
    assert found, "README.md has no yaml example"
    secret, ca = tmp_path / "mqtt-password", tmp_path / "ca.pem"
    secret.write_text("s3cret\n")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    text = (
        found[1]
        .replace("/run/secrets/mqtt-password", str(secret))
        .replace("/etc/dockwatch/ca.pem", str(ca))
    )
    site = tmp_path / "site.yaml"
    site.write_text(text)
    cfg = load_config(site, environ={})
    assert cfg.site.id == "dc-east"
    assert [p.id for p in cfg.portals] == ["door-1"]
    assert [s.id for s in cfg.shelves] == ["shelf-a1"]
    assert cfg.sinks.central is not None
