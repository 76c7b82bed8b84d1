"""``dockwatch config schema``: the JSON Schema of the config, what editors check against.

The sample configs and the config examples in the docs must pass it (with the ``jsonschema``
package, as an editor's YAML language server would), the copy shipped in deploy/ must be
current, and it must reject what the loader rejects value by value.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dockwatch_core.errors import ConfigError
from gateway.cli import main as cli_main
from gateway.config import config_schema, parse_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "deploy" / "dockwatch.schema.json"
SAMPLES = sorted(
    p for p in (REPO / "deploy").glob("*.yaml") if re.search(r"^site:", p.read_text(), re.M)
)
MODELINE = "# yaml-language-server: $schema=./dockwatch.schema.json"


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _errors(data: object) -> list[str]:
    """Every schema error, with those under an ``anyOf`` (an optional section) spelled out."""
    out: list[str] = []
    pending = list(_validator().iter_errors(data))
    while pending:
        error = pending.pop(0)
        out.append(f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}")
        pending.extend(error.context or ())
    return out


def _doc_examples() -> list[tuple[str, dict[str, Any]]]:
    """Fenced YAML blocks of the docs that are whole configs (a mapping with ``site``)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)):
            if "..." in block:
                continue  # a fragment ("{id: door-1, ..., sgln: ...}")
            try:
                data = yaml.safe_load(block)
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and isinstance(data.get("site"), dict):
                found.append((f"{doc.name}#{i}", data))
    return found


def test_the_command_prints_the_schema_and_the_shipped_copy_is_current(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli_main(["config", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == config_schema()
    assert json.loads(SHIPPED.read_text()) == printed, (
        "deploy/dockwatch.schema.json is stale: run `dockwatch config schema "
        "-o deploy/dockwatch.schema.json`"
    )
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert printed["required"] == ["site"]
    # What an editor shows on hover: the docstring under each field, the domain's ones too.
    defs = printed["$defs"]
    assert "5085 (encrypted-llrp)" in defs["ReaderConfig"]["properties"]["port"]["description"]
    assert "TagSeenCount" in defs["PortalParams"]["properties"]["min_reads"]["description"]


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_configs_pass_the_schema_and_name_it(sample: Path) -> None:
    assert _errors(yaml.safe_load(sample.read_text())) == []
    assert sample.read_text().splitlines()[0] == MODELINE


def test_there_are_samples_and_doc_examples_to_check() -> None:
    assert {p.name for p in SAMPLES} >= {"demo.yaml", "gateway.example.yaml", "dc.example.yaml"}
    assert any(name.startswith("README.md") for name, _ in _doc_examples())


@pytest.mark.parametrize(
    ("name", "data"), _doc_examples(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_config_examples_in_the_docs_pass_the_schema(name: str, data: dict[str, Any]) -> None:
    assert _errors(data) == [], name


GOOD: dict[str, Any] = {
    "site": {"id": "dc-east"},
    "x-reader": {"host": "127.0.0.1"},
    "catalog": {"items": [{"sku": "SKU-1", "gtin": "00614141123452", "name": "Widget"}]},
    "readers": [{"id": "r1", "host": "127.0.0.1", "antennas": [1, 2]}],
    "portals": [
        {"id": "door-1", "reader": "r1", "outside_antennas": [1], "inside_antennas": [2],
         "outside_location": "yard", "inside_location": "receiving", "kinds": {"in": "receipt"}}
    ],
    "locations": [{"id": "yard"}, {"id": "receiving"}],
    "sinks": {"mqtt": {"url": "mqtt://127.0.0.1:1883", "protocol": "3.1.1"}},
    "debounce": {"portal": {"min_reads": 3}, "shelf": {"stable_band_g": None}},
    "logging": {"level": "DEBUG"},
}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("readers", 0, "port"), 70000, "70000 is greater than the maximum of 65535"),
        (("readers", 0, "colour"), "red", "Additional properties are not allowed"),
        (("sink",), {}, "'sink' does not match any of the regexes: '^x-'"),
        (("site", "id"), "dc east", "does not match"),
        (("readers", 0, "antennas"), [], "should be non-empty"),
        (("portals", 0, "kinds", "in"), "pick", "is not one of"),
        (("debounce", "portal", "min_reads"), 0, "less than the minimum of 1"),
        (("sinks", "mqtt", "qos"), "1", "is not of type 'integer'"),
        (("sinks", "mqtt", "password"), "hunter2", "Additional properties are not allowed"),
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(
    path: tuple[str | int, ...], value: object, expected: str
) -> None:
    assert _errors(GOOD) == []
    parse_config(GOOD, environ={})  # the loader takes the good config too
    data = copy.deepcopy(GOOD)
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = _errors(data)
    assert any(expected in e for e in errors), errors
    with pytest.raises(ConfigError):
        parse_config(data, environ={})
