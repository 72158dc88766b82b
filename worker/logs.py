"""Logging: JSON lines (or a console format for humans), with a last line of defence for secrets.

Call sites pass structured fields through `extra=`; every message and every text field is run
through `redaction.scrub` so that nothing JWT-shaped can reach the output even by mistake. Only
values safe by construction skip it: numbers, members of the bounded vocabularies (`StrEnum`) and
token fingerprints (`redaction.Fingerprint`). Free text, whatever its field, is always scrubbed.

DEBUG is the worker's own detail. The client libraries' wire logging (aiokafka's protocol lines
carry the SASL PLAIN password and every produced value; botocore's carry bearer tokens) stays at
WARNING unless `wire_debug` is set on purpose. aiokafka's repeated lines (about nine a second per
broker during an outage) are collapsed for the whole life of the process (`repeats.RepeatFilter`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime
from enum import StrEnum
from typing import Any

from worker.redaction import Fingerprint, scrub
from worker.repeats import RepeatFilter

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


# Types whose values cannot hold a token; `type(v) in` is exact: a str subclass is not let through.
_PLAIN = frozenset({int, float, bool, type(None)})
# One encoder for every line (json.dumps with options builds a new one on each call).
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def _safe(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is str:
        return scrub(value)
    if isinstance(value, StrEnum | Fingerprint):  # bounded vocabulary, or a sha256 prefix
        return str.__str__(value)
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return scrub(str(value))


class _UtcStamps:
    """ISO 8601 UTC to the millisecond; the part up to the second is built once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}+00:00"


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._stamp = _UtcStamps()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        # `_fields` and `_safe` inline: this runs once per sign-out, and most values are numbers.
        line.update(
            {
                k: v if type(v) in _PLAIN else _safe(v)
                for k, v in record.__dict__.items()
                if k not in _STANDARD and k[:1] != "_"
            }
        )
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["exc"] = scrub(self.formatException(record.exc_info))
        return _ENCODE(line)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={_safe(v)}" for k, v in _fields(record).items())
        text = f"{when} {record.levelname:<7} {scrub(record.getMessage())} {fields}".rstrip()
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + scrub(self.formatException(record.exc_info))
        return text


# Loggers of client libraries whose DEBUG/INFO output is wire traffic.
WIRE_LOGGERS = ("aiokafka", "botocore", "aiobotocore", "urllib3", "aiohttp")


def configure(level: str, fmt: str, stream: Any = None, *, wire_debug: bool = False) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No line shows the caller's file, thread or process: skip collecting them (the logging
    # HOWTO's "Optimization"), about a fifth of a line's cost at one line per sign-out.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for library in WIRE_LOGGERS:
        logging.getLogger(library).setLevel(level if wire_debug else "WARNING")
