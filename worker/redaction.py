"""What keeps an access token out of the output: fingerprints, scrubbing, value redaction.

Every function here is total: whatever text or bytes arrive (lone surrogates, deep nesting, huge
numbers, megabytes of one character), it returns a result and never raises. The scrubber costs time
linear in its input: it looks once at each maximal run of token-like characters.
"""

from __future__ import annotations

import hashlib
import json
import re

REDACTED = "<redacted>"
# The prefix a redacted `access_token` value carries in a dead letter (contracts.md §3).
REDACTED_TOKEN_PREFIX = "redacted:"  # noqa: S105 - a marker, not a password
# Anything JWT-shaped: three base64url segments, the first two non-trivial.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*")
# A maximal run of characters a token (or its base64 form) is made of: one character class, so
# the search never backtracks and each run is found once.
_RUN = re.compile(r"[A-Za-z0-9_\-+/=.]+")
_JWT_DOTS = 2
# Runs at least this long are opaque (emulators echo even garbage tokens in their messages).
OPAQUE_RUN = 40


class Fingerprint(str):
    """Text that is a token's fingerprint and nothing else: the log scrubber lets it through."""

    __slots__ = ()


def fingerprint(token: str) -> Fingerprint:
    """A stable, non-reversible name for a token: safe in logs, metrics and headers."""
    # surrogatepass: a token decoded from "\ud800" still gets a name instead of an exception.
    digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return Fingerprint("sha256:" + digest)


def scrub(message: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove tokens from text (Cognito emulators echo the token in their error messages)."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, REDACTED)
    if len(message) < OPAQUE_RUN and message.count(".") < _JWT_DOTS:
        return message  # no run long enough to be opaque, too few dots for a JWT: most log text
    return _RUN.sub(_scrub_run, message)


def _scrub_run(match: re.Match[str]) -> str:
    run = match.group()
    if len(run) >= OPAQUE_RUN:
        return REDACTED
    # A short run: the JWT pattern's cost is bounded by OPAQUE_RUN squared, a constant.
    return _JWT_SHAPE.sub(REDACTED, run)


def redact_value(value: bytes | None) -> bytes | None:
    """Replace a JSON object's `access_token` with its fingerprint; other payloads as they came.

    Raises nothing for input it cannot parse (kept as it came); the caller decides what to do if
    re-serialising the redacted document fails (`RedactionFailed`).
    """
    if value is None:
        return None
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, too deep, or numbers past the digit limit
        return value
    token = document.get("access_token") if isinstance(document, dict) else None
    if not isinstance(token, str):
        return value
    document["access_token"] = REDACTED_TOKEN_PREFIX + fingerprint(token)
    return _dump(document)


class RedactionFailed(Exception):
    """A document held a token but could not be written back without it."""


def _dump(document: dict[str, object]) -> bytes:
    try:
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError) as exc:
        raise RedactionFailed(type(exc).__name__) from None
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate escape: keep it escaped, still valid JSON
        return json.dumps(document, separators=(",", ":")).encode()


def is_redacted_token(value: bytes | None) -> bool:
    """Whether a dead letter's value carries a redacted token (it cannot be replayed as it is)."""
    return b'"' + (REDACTED_TOKEN_PREFIX + "sha256:").encode() in (value or b"")


def utf8(text: str) -> bytes:
    """Text as UTF-8 for a header or a message, even when it holds a lone surrogate."""
    return text.encode("utf-8", "replace")
