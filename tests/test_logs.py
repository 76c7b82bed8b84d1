"""Logging never shows a password that slipped into a URL, whatever characters it holds."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.logs import JsonFormatter, RedactingFilter, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:se/cr@et:x@h:5432/db then", "postgresql://u:***@h:5432/db then"),
        ("mqtt://:token@broker:1883", "mqtt://:***@broker:1883"),
        ("a://u:p@h and b://v:q@i", "a://u:***@h and b://v:***@i"),
        ("see http://host/path, nothing secret", "see http://host/path, nothing secret"),
    ],
)
def test_redact_hides_the_password_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_logged_url_reaches_the_handler_without_its_password() -> None:
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "cannot open %s", ("postgresql://gw:hunter2@db/x",), None
    )
    assert RedactingFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "hunter2" not in line
    assert json.loads(line)["message"] == "cannot open postgresql://gw:***@db/x"
