"""logs.py: one JSON object per line, with extra fields, and nothing JWT-shaped gets out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.fakes import make_jwt
from worker.logs import ConsoleFormatter, JsonFormatter

TOKEN = make_jwt(exp=1_700_003_600)


class Captured:
    def __init__(self, logger: logging.Logger, stream: io.StringIO) -> None:
        self.logger = logger
        self._stream = stream

    @property
    def text(self) -> str:
        return self._stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        raw = self.text.splitlines()
        assert raw, "nothing was logged"
        return [json.loads(line) for line in raw]


def _capture(name: str, formatter: logging.Formatter) -> Iterator[Captured]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield Captured(logger, stream)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


@pytest.fixture
def json_log() -> Iterator[Captured]:
    yield from _capture("tests.logs.json", JsonFormatter())


@pytest.fixture
def console_log() -> Iterator[Captured]:
    yield from _capture("tests.logs.console", ConsoleFormatter())


def test_one_json_object_per_line_with_extra_fields(json_log: Captured) -> None:
    json_log.logger.info("signed out", extra={"event_id": "e-1", "attempts": 2, "ok": True})
    json_log.logger.warning("second\nline", extra={"partitions": [0, 1]})
    first, second = json_log.lines()
    assert first["msg"] == "signed out"
    assert first["level"] == "info"
    assert first["logger"] == "tests.logs.json"
    assert first["event_id"] == "e-1"
    assert first["attempts"] == 2
    assert first["ok"] is True
    assert first["ts"].endswith("+00:00")
    assert second["msg"] == "second\nline"  # escaped, still one line
    assert second["level"] == "warning"
    assert second["partitions"] == [0, 1]
    assert "args" not in first
    assert "levelno" not in first


def test_a_jwt_in_the_message_is_scrubbed(json_log: Captured) -> None:
    json_log.logger.info("refused %s", TOKEN)
    json_log.logger.info(f"inline {TOKEN}")
    assert TOKEN not in json_log.text
    first, second = json_log.lines()
    assert first["msg"] == "refused <redacted>"
    assert second["msg"] == "inline <redacted>"


def test_a_jwt_in_an_extra_field_is_scrubbed(json_log: Captured) -> None:
    json_log.logger.info(
        "oops",
        extra={
            "token": TOKEN,
            "nested": {"t": TOKEN},
            "many": [TOKEN, 1],
            "error": ValueError(TOKEN),
        },
    )
    assert TOKEN not in json_log.text
    (line,) = json_log.lines()
    assert line["token"] == "<redacted>"
    assert line["many"] == ["<redacted>", 1]
    assert "<redacted>" in line["nested"]
    assert "<redacted>" in line["error"]


def test_a_jwt_in_an_exception_is_scrubbed(json_log: Captured) -> None:
    try:
        raise RuntimeError(f"emulator said: {TOKEN}")
    except RuntimeError:
        json_log.logger.exception("call failed")
    assert TOKEN not in json_log.text
    (line,) = json_log.lines()
    assert line["exc_type"] == "RuntimeError"
    assert "emulator said: <redacted>" in line["exc"]


def test_console_format_is_scrubbed_too(console_log: Captured) -> None:
    console_log.logger.info("refused %s", TOKEN, extra={"token": TOKEN, "partition": 3})
    text = console_log.text
    assert TOKEN not in text
    assert "refused <redacted>" in text
    assert "partition=3" in text
    assert "INFO" in text
