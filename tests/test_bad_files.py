"""Hostile files (issue 16): every file the gateway or the CLI reads gives exit 2 and one clear
line naming the file and the key path, never a traceback, a crash or an hour of parsing.

Each row of the issue's table about files has its test here; the property-based suite
(``test_bad_input_properties.py``) mutates valid files at random on top of these.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockwatch_core.errors import ConfigError
from gateway.cli import main
from gateway.config import load_config
from gateway.documents import (
    CONFIG_LIMITS,
    RECEIPTS_LIMITS,
    DocumentError,
    parse_yaml,
    read_yaml,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "deploy" / "demo.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``dockwatch argv`` in-process: an exception would fail the test with its traceback.
    Root log handlers another test left (on a stream since closed) are set aside meanwhile, and
    what earlier tests left for the garbage collector is collected first: a finalizer's complaint
    (an asyncio task an earlier test's loop never finished) would otherwise land in this
    command's stderr, which must carry no traceback of its own."""
    gc.collect()
    root = logging.getLogger()
    saved, root.handlers[:] = root.handlers[:], []
    try:
        status = main(list(argv))
    finally:
        root.handlers[:] = saved
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def demo_config() -> dict[str, Any]:
    data = yaml.safe_load(DEMO.read_text())
    assert isinstance(data, dict)
    return data


def nested_list(depth: int) -> str:
    return "site: {id: x}\ncatalog: " + "[" * depth + "]" * depth + "\n"


def nested_mapping(depth: int) -> str:
    return "site: {id: x}\nextra: " + '{"a": ' * depth + "1" + "}" * depth + "\n"


# --- check-config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (nested_list(10_000), "line 2"),  # libyaml stops at 1,000 levels: its line is named
        (nested_list(40), "catalog" + "[0]" * 31),
        (nested_mapping(2_000), "line 2"),
        (nested_mapping(40), "extra" + ".a" * 31),
        ("- " * 10_000 + "x\n", "line 1"),
    ],
    ids=["list-10000", "list-40", "mapping-2000", "mapping-40", "block-10000"],
)
def test_check_config_refuses_deep_nesting_naming_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str
) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text(text)
    status, err = run(capsys, "check-config", "--no-env", str(config))
    assert status == 2
    assert f"{config}: " in err
    assert where in err
    assert "nested more than 32 levels deep, the most a config file may be" in err


def test_check_config_refuses_a_nul_byte_naming_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "nul.yaml"
    config.write_bytes(b"site: {id: x}\nstore: {url: 'sqlite:///a\x00b'}\n")
    status, err = run(capsys, "check-config", "--no-env", str(config))
    assert status == 2
    assert f"{config}: line 2, column 26: a NUL byte (this is binary data, not YAML text)" in err


def test_check_config_refuses_a_file_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "latin1.yaml"
    config.write_bytes("site: {id: x}\ncatalog: {items: [{name: caf\xe9}]}\n".encode("latin-1"))
    status, err = run(capsys, "check-config", "--no-env", str(config))
    assert status == 2
    assert "line 2, column 29: not UTF-8 text (byte 0xE9); save the file as UTF-8" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["api"].update(tls={"cert_file": "a" * 100_000, "key_file": "k.pem"}),
            "api.tls.cert_file: the file path is 100000 bytes long, more than the 4095 allowed",
        ),
        (
            lambda d: d["api"].update(tls={"cert_file": "/tmp/" + "b" * 300, "key_file": "k"}),
            "api.tls.cert_file: a part of the file path is 300 bytes long, more than the 255",
        ),
        (
            lambda d: d["api"].update(tls={"cert_file": "a\x00b", "key_file": "k"}),
            "api.tls.cert_file: a file path cannot contain a NUL character",
        ),
        (
            lambda d: d["site"].update(id="s" * 65),
            "site.id: must be an id of at most 64 letters",
        ),
        (
            lambda d: d["catalog"]["items"][0].update(sku="S" * 65),
            "catalog.items[0].sku: must be a SKU of at most 64 characters",
        ),
        (
            lambda d: d["catalog"]["items"][0].update(name="n" * 5000),
            "catalog.items[0].name: must be at most 4096 characters, got",
        ),
        (
            lambda d: d["catalog"]["items"][0].update(name="bell\x07"),
            "catalog.items[0].name: must not contain control characters",
        ),
        (
            lambda d: d["catalog"]["items"][0].update(pack_size=10**30),
            "catalog.items[0].pack_size: must be an integer in 1..1000000, got an integer "
            "of 31 digits",
        ),
        (
            lambda d: d["readers"][0].update(reconnect={"initial_s": 10**30}),
            "readers[0].reconnect.initial_s",
        ),
    ],
    ids=["path-100kB", "path-component", "path-nul", "id", "sku", "text", "control", "qty", "num"],
)
def test_check_config_bounds_every_value(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Any,
    message: str,
) -> None:
    data = demo_config()
    change(data)
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(data))
    status, err = run(capsys, "check-config", "--no-env", str(config))
    assert status == 2
    assert message in err


def test_check_config_refuses_a_50_mb_file_at_once_without_reading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "huge.yaml"
    with config.open("wb") as out:  # sparse: the test costs no disk and no time
        out.truncate(50 * 1000 * 1000)
    started = time.perf_counter()
    status, err = run(capsys, "check-config", "--no-env", str(config))
    assert status == 2
    assert time.perf_counter() - started < 1.0
    assert f"{config}: the file is 50.0 MB, larger than the 4 MiB a config file may be" in err


def test_check_config_with_a_100_kb_file_name_is_one_short_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, err = run(capsys, "check-config", "--no-env", "x" * 100_000)
    assert status == 2
    assert "the file path is 100000 bytes long, more than the 4095 allowed" in err
    assert len(err) < 400


def test_check_config_on_a_directory_or_a_fifo_does_not_hang(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        status, err = run(capsys, "check-config", "--no-env", str(path))
        assert status == 2
        assert "not a regular file" in err


def test_yaml_aliases_cannot_expand_a_small_file_into_billions_of_values() -> None:
    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for n in range(1, 9):
        prev, name = chr(ord("a") + n - 1), chr(ord("a") + n)
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(DocumentError, match="values \\(through YAML aliases\\)"):
        parse_yaml("\n".join(levels), CONFIG_LIMITS, "bomb.yaml")
    with pytest.raises(DocumentError, match="a recursive structure"):
        parse_yaml("a: &x [1, *x]", CONFIG_LIMITS, "loop.yaml")


def test_an_integer_of_5000_digits_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "digits.yaml"
    config.write_text("site: {id: x}\nn: 1" + "0" * 5000 + "\n")
    with pytest.raises(ConfigError, match="not a usable YAML value"):
        load_config(config, environ={})


def test_a_json_document_is_read_fast_and_within_the_same_limits() -> None:
    assert parse_yaml('{"receipts": []}', RECEIPTS_LIMITS, "r.json") == {"receipts": []}
    with pytest.raises(DocumentError, match="nested more than 16 levels"):
        parse_yaml("[" * 17 + "]" * 17, RECEIPTS_LIMITS, "r.json")
    with pytest.raises(DocumentError, match="nested more than 16 levels"):
        parse_yaml("[" * 100_000 + "]" * 100_000, RECEIPTS_LIMITS, "r.json")


# --- receipts -------------------------------------------------------------------------------


def receipts_file(tmp_path: Path, receipts: object, name: str = "asn.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"receipts": receipts}))
    return path


def test_receipts_load_refuses_a_file_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asn = tmp_path / "asn.yaml"
    asn.write_bytes(b"receipts:\n- id: ASN-\xff\n")
    status, err = run(capsys, "receipts", "check", str(asn))
    assert status == 2
    assert f"{asn}: line 2, column 11: not UTF-8 text (byte 0xFF)" in err


def test_receipts_load_refuses_nesting_10000_deep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asn = tmp_path / "asn.yaml"
    asn.write_text("receipts: " + "[" * 10_000 + "]" * 10_000 + "\n")
    status, err = run(capsys, "receipts", "check", str(asn))
    assert status == 2
    assert "nested more than 16 levels deep, the most an expected receipts file may be" in err


def loading_config(tmp_path: Path) -> tuple[Path, Path]:
    """A gateway config whose expected file exists (empty) and can be merged into."""
    expected = tmp_path / "expected.yaml"
    expected.write_text("")
    data = demo_config()
    data["receiving"] = {"expected_file": str(expected)}
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(data))
    return config, expected


def test_receipts_load_refuses_a_quantity_beyond_what_the_store_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, expected = loading_config(tmp_path)
    asn = receipts_file(tmp_path, [{"id": "A", "lines": [{"sku": "SKU-1001", "quantity": 10**30}]}])
    status, err = run(capsys, "receipts", "load", str(asn), "-c", str(config))
    assert status == 2
    assert (
        f"{asn}: receipts[0].lines[0].quantity: must be an integer in 1..2147483647, "
        "got an integer of 31 digits"
    ) in err
    assert expected.read_text() == ""  # nothing merged


def test_receipts_load_refuses_a_10_mb_receipt_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, expected = loading_config(tmp_path)
    asn = tmp_path / "asn.json"  # JSON is YAML; and libyaml takes seconds over a 10 MB scalar
    asn.write_text(
        json.dumps(
            {"receipts": [{"id": "A" * 10_000_000, "lines": [{"sku": "SKU-1001", "quantity": 1}]}]}
        )
    )
    status, err = run(capsys, "receipts", "load", str(asn), "-c", str(config))
    assert status == 2
    assert "receipts[0].id: must be at most 128 characters, got 'AAAA" in err
    assert "(10000000 characters)" in err
    assert len(err) < 400
    assert expected.read_text() == ""


@pytest.mark.slow
def test_receipts_load_of_30000_is_linear_and_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """76 s before (quadratic duplicate checks, each part checked twice); seconds now. The
    bound only catches a return to quadratic time on a loaded machine."""
    config, expected = loading_config(tmp_path)
    receipts = [
        {
            "id": f"ASN-{i:05d}",
            "door": "door-1",
            "lines": [
                {"sku": "SKU-1001", "quantity": 12},
                {"epcs": [f"urn:epc:id:sgtin:0614141.012345.{i}"]},
            ],
        }
        for i in range(30_000)
    ]
    asn = tmp_path / "asn.json"
    asn.write_text(json.dumps({"receipts": receipts}))
    started = time.perf_counter()
    status, _ = run(capsys, "receipts", "load", str(asn), "-c", str(config))
    took = time.perf_counter() - started
    assert status == 0
    assert took < 30.0, f"receipts load of 30,000 took {took:.1f} s"
    assert "ASN-29999" in expected.read_text()


def test_the_pure_python_loader_is_held_to_the_same_limits() -> None:
    """Without libyaml the composer recurses: the events are checked before it runs."""
    deep = "a: " + "[" * 40 + "]" * 40
    with pytest.raises(DocumentError, match=r"a\[0\]\[0\].*nested more than 32 levels"):
        parse_yaml(deep, CONFIG_LIMITS, "x.yaml", loader_class=yaml.SafeLoader)
    deeper = "a: " + "[" * 5_000 + "]" * 5_000  # libyaml's scanner stops first: its mark
    with pytest.raises(DocumentError, match=r"line 1, column \d+: nested more than 32 levels"):
        parse_yaml(deeper, CONFIG_LIMITS, "x.yaml", loader_class=yaml.SafeLoader)
    block = "\n".join("  " * i + "k:" for i in range(100)) + " 1\n"
    with pytest.raises(DocumentError, match=r"k\.k\.k.*nested more than 32 levels"):
        parse_yaml(block, CONFIG_LIMITS, "x.yaml", loader_class=yaml.SafeLoader)
    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for n in range(1, 9):
        prev, name = chr(ord("a") + n - 1), chr(ord("a") + n)
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(DocumentError, match="through YAML aliases"):
        parse_yaml("\n".join(levels), CONFIG_LIMITS, "x.yaml", loader_class=yaml.SafeLoader)
    with pytest.raises(DocumentError, match="not valid YAML"):
        parse_yaml("a: \x01", CONFIG_LIMITS, "x.yaml", loader_class=yaml.SafeLoader)


@pytest.mark.parametrize(
    ("receipt", "message"),
    [
        (
            {"id": "ASN/1", "lines": [{"sku": "X", "quantity": 1}]},
            "receipts[0].id: must be a receipt id of letters, digits",
        ),
        (
            {"id": "A", "door": "door 1", "lines": [{"sku": "X", "quantity": 1}]},
            "receipts[0].door: must be a portal id without blanks",
        ),
        (
            {"id": "A", "lines": [{"sku": "X+#", "quantity": 1}]},
            "receipts[0].lines[0].sku: must be a SKU without blanks, '/', '+', '#'",
        ),
        (
            {"id": "A", "lines": [{"sku": "S" * 65, "quantity": 1}]},
            "receipts[0].lines[0].sku: must be at most 64 characters",
        ),
    ],
)
def test_receipt_ids_doors_and_skus_stay_valid_in_topics_uris_and_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], receipt: object, message: str
) -> None:
    asn = receipts_file(tmp_path, [receipt])
    status, err = run(capsys, "receipts", "check", str(asn))
    assert status == 2
    assert message in err


def test_the_gateway_ignores_a_bad_expected_file_with_one_clear_reason(tmp_path: Path) -> None:
    from gateway.app import load_expected

    bad = tmp_path / "expected.yaml"
    bad.write_bytes(b"receipts:\n- id: \x00\n")
    with pytest.raises(ValueError, match="line 2, column 7: a NUL byte"):
        load_expected(bad)
    with pytest.raises(DocumentError, match="cannot read: No such file"):
        read_yaml(tmp_path / "absent.yaml", RECEIPTS_LIMITS)
