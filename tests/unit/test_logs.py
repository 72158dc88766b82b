"""logs.py: one JSON object per line, with extra fields, and nothing JWT-shaped gets out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pytest

from tests.unit.fakes import make_jwt
from worker.logs import WIRE_LOGGERS, ConsoleFormatter, JsonFormatter, configure
from worker.redaction import fingerprint
from worker.settings import LogSettings, load_settings

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


class _Kind(StrEnum):
    ONE = "one_kind"


class _Text(str):
    """A str subclass that is neither vocabulary nor fingerprint: still free text."""


def test_only_values_safe_by_construction_skip_the_scrubber(json_log: Captured) -> None:
    fingerprint_ = fingerprint(TOKEN)
    json_log.logger.info(
        "outcome",
        extra={
            "outcome": _Kind.ONE,
            "target": fingerprint_,
            "event_id": TOKEN,  # free text from the publisher
            "trace_id": _Text(TOKEN),
            "offset": 7,
        },
    )
    assert TOKEN not in json_log.text
    (line,) = json_log.lines()
    assert line["outcome"] == "one_kind"
    assert line["target"] == fingerprint_
    assert line["target"].startswith("sha256:")
    assert line["event_id"] == "<redacted>"
    assert line["trace_id"] == "<redacted>"
    assert line["offset"] == 7


def test_a_jwt_in_free_text_of_a_message_is_still_scrubbed(json_log: Captured) -> None:
    json_log.logger.warning("Cognito said: token %s is revoked (%s)", TOKEN, _Kind.ONE)
    (line,) = json_log.lines()
    assert TOKEN not in json_log.text
    assert line["msg"] == "Cognito said: token <redacted> is revoked (one_kind)"


@pytest.mark.parametrize(
    "created", [0.0, 1_700_000_000.0, 1_700_000_000.1234, 1_700_000_059.9999, 4_102_444_799.5]
)
def test_the_timestamp_is_utc_iso_8601_to_the_millisecond(created: float) -> None:
    record = logging.LogRecord("t", logging.INFO, "f", 1, "m", None, None)
    record.created = created
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert json.loads(JsonFormatter().format(record))["ts"] == expected


def test_the_timestamp_follows_the_seconds_of_one_formatter() -> None:
    formatter = JsonFormatter()
    stamps = []
    for created in (1_700_000_000.5, 1_700_000_001.25, 1_700_000_000.75):
        record = logging.LogRecord("t", logging.INFO, "f", 1, "m", None, None)
        record.created = created
        stamps.append(json.loads(formatter.format(record))["ts"])
    assert stamps == [
        "2023-11-14T22:13:20.500+00:00",
        "2023-11-14T22:13:21.250+00:00",
        "2023-11-14T22:13:20.750+00:00",
    ]


def test_console_format_is_scrubbed_too(console_log: Captured) -> None:
    console_log.logger.info("refused %s", TOKEN, extra={"token": TOKEN, "partition": 3})
    text = console_log.text
    assert TOKEN not in text
    assert "refused <redacted>" in text
    assert "partition=3" in text
    assert "INFO" in text


# -- third-party wire logging ------------------------------------------------------------------


@pytest.fixture
def configured_root() -> Iterator[io.StringIO]:
    """`configure` rewires the root logger: give it back as it was afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    libraries = {name: logging.getLogger(name).level for name in WIRE_LOGGERS}
    stream = io.StringIO()
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, old in libraries.items():
            logging.getLogger(name).setLevel(old)


def test_debug_does_not_turn_on_wire_logging(configured_root: io.StringIO) -> None:
    configure("DEBUG", "json", configured_root)
    logging.getLogger("aiokafka.conn").debug("<- SaslAuthenticate password=hunter2")
    logging.getLogger("aiokafka.producer.sender").debug("produce value=%s", "secret-value")
    logging.getLogger("botocore.endpoint").debug("body AccessToken=abc")
    logging.getLogger("aiohttp.access").info("GET /metrics")
    logging.getLogger("worker.handler").debug("our own detail")
    text = configured_root.getvalue()
    assert "hunter2" not in text
    assert "secret-value" not in text
    assert "AccessToken" not in text
    assert "/metrics" not in text
    assert "our own detail" in text  # DEBUG itself works


def test_wire_logging_has_its_own_switch(configured_root: io.StringIO) -> None:
    configure("DEBUG", "json", configured_root, wire_debug=True)
    logging.getLogger("aiokafka.conn").debug("wire line")
    assert "wire line" in configured_root.getvalue()


def test_library_warnings_still_get_through(configured_root: io.StringIO) -> None:
    configure("INFO", "json", configured_root)
    logging.getLogger("aiokafka").warning("broker went away")
    assert "broker went away" in configured_root.getvalue()


def test_the_wire_switch_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LogSettings().wire_debug is False
    monkeypatch.setenv("SIGNOUT_LOG__WIRE_DEBUG", "true")
    assert load_settings().log.wire_debug is True


def test_aiokafka_repeats_are_collapsed_for_the_whole_life(configured_root: io.StringIO) -> None:
    configure("INFO", "json", configured_root)
    for _ in range(50):
        logging.getLogger("aiokafka.client").error("Unable connect to node with id %s", 1)
        logging.getLogger("worker.consumer").warning("commit failed; will retry")
    lines = [json.loads(line) for line in configured_root.getvalue().splitlines()]
    assert [line["logger"] for line in lines].count("aiokafka.client") == 1
    assert [line["logger"] for line in lines].count("worker.consumer") == 50  # ours are not
