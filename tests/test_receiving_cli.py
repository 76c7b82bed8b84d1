"""``dockwatch receipts check|load|list`` (and its older name ``receiving``): expected receipts
validated and handed to the gateway through its ``receiving.expected_file``."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from gateway.app import load_expected
from gateway.cli import main

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def gateway_config(tmp_path: Path, expected: Path) -> Path:
    data = yaml.safe_load((ROOT / "deploy" / "demo.yaml").read_text())
    data["receiving"] = {"expected_file": str(expected)}
    return write(tmp_path / "gw.yaml", data)


ASN = {
    "receipts": [{"id": "ASN-1", "door": "door-1", "lines": [{"sku": "SKU-1001", "quantity": 12}]}]
}


def test_check_accepts_a_valid_file_against_the_catalog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asn = write(tmp_path / "asn.yaml", ASN)
    config = ROOT / "deploy" / "demo.yaml"
    assert main(["receiving", "check", str(asn), "--config", str(config)]) == 0
    assert "ASN-1: door door-1, 1 line(s), 12 eaches" in capsys.readouterr().out


def test_check_names_an_unknown_sku_and_a_bad_quantity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_qty = write(
        tmp_path / "qty.yaml",
        {"receipts": [{"id": "A", "lines": [{"sku": "SKU-1001", "quantity": -3}]}]},
    )
    assert main(["receiving", "check", str(bad_qty)]) == 2
    assert "receipts[0].lines[0].quantity" in capsys.readouterr().err
    unknown = write(
        tmp_path / "sku.yaml",
        {"receipts": [{"id": "B", "lines": [{"sku": "NOPE", "quantity": 1}]}]},
    )
    config = ROOT / "deploy" / "demo.yaml"
    assert main(["receiving", "check", str(unknown), "--config", str(config)]) == 2
    assert "NOPE" in capsys.readouterr().err


def test_add_merges_into_the_expected_file_and_refuses_a_repeated_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = tmp_path / "expected.yaml"
    expected.write_text("")  # an empty file expects nothing
    config = gateway_config(tmp_path, expected)
    asn = write(tmp_path / "asn.yaml", ASN)
    more = write(
        tmp_path / "more.yaml", [{"id": "ASN-2", "lines": [{"sku": "SKU-1002", "quantity": 5}]}]
    )
    assert main(["receiving", "add", str(asn), "--config", str(config)]) == 0
    assert main(["receiving", "add", str(more), "--config", str(config)]) == 0
    assert [r.receipt_id for r in load_expected(expected)] == ["ASN-1", "ASN-2"]
    capsys.readouterr()
    assert main(["receiving", "add", str(asn), "--config", str(config)]) == 2
    assert "ASN-1" in capsys.readouterr().err
    assert [r.receipt_id for r in load_expected(expected)] == ["ASN-1", "ASN-2"]


def test_receipts_load_then_list_shows_what_the_gateway_will_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = tmp_path / "expected.yaml"
    expected.write_text("")
    config = gateway_config(tmp_path, expected)
    assert main(["receipts", "list", "-c", str(config)]) == 0
    assert f"{expected}: 0 expected receipt(s)" in capsys.readouterr().out
    asn = write(tmp_path / "asn.yaml", ASN)
    assert main(["receipts", "load", str(asn), "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"loaded 1 receipt(s) into {expected} (1 in all)" in out
    assert main(["receipts", "list", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"{expected}: 1 expected receipt(s)" in out
    assert "ASN-1: door door-1, 1 line(s), 12 eaches" in out
    # The file stays readable by the gateway, which usually runs as another user.
    assert expected.stat().st_mode & 0o044 == 0o044


def test_receipts_load_reads_standard_input_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``docker compose exec -T gateway dockwatch receipts load - < ASN.yaml``."""
    expected = tmp_path / "expected.yaml"
    expected.write_text("")
    config = gateway_config(tmp_path, expected)
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(ASN)))
    assert main(["receipts", "load", "-", "-c", str(config)]) == 0
    assert "<stdin>: OK, 1 receipt(s)" in capsys.readouterr().out
    assert [r.receipt_id for r in load_expected(expected)] == ["ASN-1"]


def test_receipts_check_names_a_door_that_is_not_a_portal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asn = write(
        tmp_path / "asn.yaml",
        {
            "receipts": [
                {"id": "X", "door": "door-9", "lines": [{"sku": "SKU-1001", "quantity": 1}]}
            ]
        },
    )
    config = ROOT / "deploy" / "demo.yaml"
    assert main(["receipts", "check", str(asn), "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "X: door 'door-9' is not a configured portal (door-1, door-2)" in err


def test_receipts_load_needs_a_config_with_an_expected_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKWATCH_CONFIG", raising=False)
    asn = write(tmp_path / "asn.yaml", ASN)
    assert main(["receipts", "load", str(asn)]) == 2
    assert "DOCKWATCH_CONFIG is not set (give --config FILE)" in capsys.readouterr().err
    config = ROOT / "deploy" / "demo.yaml"  # no receiving.expected_file
    assert main(["receipts", "load", str(asn), "-c", str(config)]) == 2
    assert "receiving.expected_file is not set" in capsys.readouterr().err
    assert main(["receipts", "list", "-c", str(config)]) == 2
    assert main(["receipts", "load", "-c", str(config)]) == 2
    assert "receipts load needs the FILE" in capsys.readouterr().err


def test_receipts_list_exits_1_when_the_expected_file_is_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = tmp_path / "expected.yaml"
    expected.write_text("receipts: 5\n")
    config = gateway_config(tmp_path, expected)
    assert main(["receipts", "list", "-c", str(config)]) == 1
    assert str(expected) in capsys.readouterr().err
    asn = write(tmp_path / "asn.yaml", ASN)
    assert main(["receipts", "load", str(asn), "-c", str(config)]) == 1
    assert expected.read_text() == "receipts: 5\n"  # left as it was


def test_receipts_uses_dockwatch_config_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = tmp_path / "expected.yaml"
    expected.write_text("")
    monkeypatch.setenv("DOCKWATCH_CONFIG", os.fspath(gateway_config(tmp_path, expected)))
    asn = write(tmp_path / "asn.yaml", ASN)
    assert main(["receipts", "load", str(asn)]) == 0
    assert [r.receipt_id for r in load_expected(expected)] == ["ASN-1"]


def test_the_example_in_the_operators_guide_is_valid_for_the_dc_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    blocks = [b.split("```", 1)[0] for b in guide.split("```yaml\n")[1:]]
    (example,) = [b for b in blocks if b.startswith("receipts:")]
    asn = tmp_path / "asn.yaml"
    asn.write_text(example)
    config = ROOT / "deploy" / "dc.example.yaml"
    assert main(["receipts", "check", str(asn), "-c", str(config)]) == 0
    assert "1 tagged case(s)" in capsys.readouterr().out


def test_loads_running_at_once_lose_no_receipts(tmp_path: Path) -> None:
    """Two ASN feeds loading at the same moment: each load reads, merges and replaces the file,
    so without a lock the last writer would drop the other's receipts."""
    expected = tmp_path / "expected.yaml"
    expected.write_text("")  # an empty file expects nothing
    config = gateway_config(tmp_path, expected)
    feeds = [
        write(
            tmp_path / f"asn-{n}.yaml",
            [{"id": f"ASN-{n}", "lines": [{"sku": "SKU-1001", "quantity": n + 1}]}],
        )
        for n in range(12)
    ]
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(
            pool.map(lambda f: main(["receipts", "load", str(f), "-c", str(config)]), feeds)
        )
    assert codes == [0] * len(feeds)
    loaded = sorted(r.receipt_id for r in load_expected(expected))
    assert loaded == sorted(f"ASN-{n}" for n in range(12))


def test_load_refuses_an_epc_another_expected_receipt_already_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each file alone is valid; together the gateway would reject the file: write nothing."""
    epc = "urn:epc:id:sgtin:0614141.012345.1001"
    expected = tmp_path / "expected.yaml"
    expected.write_text("")
    config = gateway_config(tmp_path, expected)
    first = write(tmp_path / "a.yaml", [{"id": "ASN-A", "lines": [{"epcs": [epc]}]}])
    second = write(tmp_path / "b.yaml", [{"id": "ASN-B", "lines": [{"epcs": [epc]}]}])
    assert main(["receipts", "load", str(first), "-c", str(config)]) == 0
    before = expected.read_bytes()
    capsys.readouterr()
    assert main(["receipts", "load", str(second), "-c", str(config)]) == 2
    assert epc in capsys.readouterr().err
    assert expected.read_bytes() == before
    assert [r.receipt_id for r in load_expected(expected)] == ["ASN-A"]
