"""``dockwatch receiving check|add``: expected receipts validated and handed to the gateway."""

from __future__ import annotations

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
