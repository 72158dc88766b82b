"""redaction.py: fingerprints, scrubbing and value redaction, total and linear for any input."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.fakes import make_jwt
from worker import redaction
from worker.redaction import (
    OPAQUE_RUN,
    RedactionFailed,
    fingerprint,
    is_redacted_token,
    redact_value,
    scrub,
    utf8,
)

NOW = 1_700_000_000
TOKEN = make_jwt(exp=NOW + 3600)
FINGERPRINT = re.compile(r"sha256:[0-9a-f]{16}")


def test_fingerprint_is_sha256_prefix_and_16_hex() -> None:
    value = fingerprint(TOKEN)
    assert FINGERPRINT.fullmatch(value)
    assert value == fingerprint(TOKEN)  # stable
    assert value != fingerprint(TOKEN + "x")
    assert fingerprint("abc") == "sha256:ba7816bf8f01cfea"  # known SHA-256 of "abc"


def test_scrub_removes_a_jwt() -> None:
    text = scrub(f"Invalid Access Token: {TOKEN} (try again)")
    assert TOKEN not in text
    assert "<redacted>" in text
    assert text.startswith("Invalid Access Token: ")
    assert text.endswith(" (try again)")


def test_scrub_removes_each_segment_of_a_jwt() -> None:
    header, payload, _ = TOKEN.split(".")
    text = scrub(f"token={TOKEN}")
    assert header not in text
    assert payload not in text


def test_scrub_removes_an_explicit_secret_even_when_short() -> None:
    text = scrub("the password s3cr3t was echoed", ("s3cr3t",))
    assert text == "the password <redacted> was echoed"


def test_scrub_ignores_empty_secrets() -> None:
    assert scrub("nothing to hide", ("",)) == "nothing to hide"


def test_scrub_removes_a_long_opaque_run() -> None:
    opaque = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0+/="
    assert len(opaque) >= 40
    text = scrub(f"bad token {opaque}")
    assert opaque not in text
    assert text == "bad token <redacted>"


@pytest.mark.parametrize(
    "text",
    [
        "Access Token has been revoked",
        "Access Token has expired",
        "User does not exist.",
        "Rate exceeded",
        "Invalid Access Token",
        "gave up after 10 attempts; last error InternalErrorException",
        "User pool us-east-1_AbCdEfGhI does not exist.",
    ],
)
def test_scrub_keeps_normal_text(text: str) -> None:
    assert scrub(text) == text


def test_redact_value() -> None:
    assert redact_value(None) is None
    assert redact_value(b"garbage") == b"garbage"
    assert redact_value(b'{"access_token": 5}') == b'{"access_token": 5}'
    redacted = redact_value(json.dumps({"access_token": TOKEN, "username": "zoë"}).encode())
    assert redacted is not None
    assert json.loads(redacted) == {
        "access_token": "redacted:" + fingerprint(TOKEN),
        "username": "zoë",
    }


def test_redact_value_keeps_a_lone_surrogate_escaped_instead_of_raising() -> None:
    # json.loads turns "\ud800" into a str that cannot be UTF-8 encoded.
    value = b'{"access_token": "%s", "username": "\\ud800"}' % TOKEN.encode()
    redacted = redact_value(value)
    assert redacted is not None
    assert TOKEN.encode() not in redacted
    assert json.loads(redacted)["username"] == "\ud800"
    assert is_redacted_token(redacted)


def test_redact_value_keeps_unparseable_input_as_it_came() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000  # RecursionError inside json
    assert redact_value(deep) == deep
    huge = b'{"access_token": "x", "n": ' + b"9" * 5_000 + b"}"  # past the int digit limit
    assert redact_value(huge) == huge


def test_fingerprint_names_a_token_with_a_lone_surrogate() -> None:
    assert FINGERPRINT.fullmatch(fingerprint("abc\ud800"))
    assert fingerprint("abc\ud800") != fingerprint("abc")


def test_utf8_never_raises_on_a_lone_surrogate() -> None:
    assert utf8("a\ud800b") == b"a?b"


def test_is_redacted_token() -> None:
    assert not is_redacted_token(None)
    assert not is_redacted_token(json.dumps({"access_token": TOKEN}).encode())
    assert is_redacted_token(redact_value(json.dumps({"access_token": TOKEN}).encode()))


# -- scrub: linear and complete ----------------------------------------------------------------


def test_scrub_of_a_megabyte_without_separators_is_one_redaction() -> None:
    # The old pattern retried `[A-Za-z0-9_-]{8,}\.` from every start: quadratic in this input.
    adversarial = "a" * 1_000_000
    assert scrub(adversarial) == "<redacted>"


def test_scrub_of_a_megabyte_of_short_dotted_runs_keeps_them() -> None:
    # Short runs with dots: each costs a bounded look, and none is long enough to be opaque.
    chunk = "abcdefg.hij "  # 7 chars then a dot: never JWT-shaped
    text = chunk * (1_000_000 // len(chunk))
    assert scrub(text) == text


def test_scrub_removes_every_token_in_a_megabyte_of_noise() -> None:
    text = (" noise " * 10_000 + TOKEN) * 20
    out = scrub(text)
    assert TOKEN not in out
    assert out.count("<redacted>") == 20


def test_scrub_removes_a_short_jwt_shape_inside_other_text() -> None:
    short = "abcdefgh.ijklmnop.qr"  # under the opaque length: caught by its shape
    assert len(short) < OPAQUE_RUN
    assert scrub(f"x {short} y") == "x <redacted> y"


_TOKENISH = st.text(alphabet="abcXYZ019_-+/=. \n:ü\ud800", max_size=300)
# Secrets of characters "<redacted>" lacks, so that no replacement can rebuild one.
_SECRETS = st.lists(st.text(alphabet="XYZ019", min_size=1, max_size=8), max_size=3)
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.")


def _nest(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=5), children, max_size=3
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(), _nest, max_leaves=20
)
_VALUES = (
    st.binary(max_size=400)
    | _JSON.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries({"access_token": st.text(), "x": _JSON}).map(
        lambda v: json.dumps(v).encode()
    )
)


@settings(max_examples=300, deadline=None)
@given(_TOKENISH, _SECRETS)
def test_scrub_is_total_and_leaves_nothing_token_like(text: str, secrets: list[str]) -> None:
    out = scrub(text, tuple(secrets))
    longest = max((len(run) for run in re.findall(r"[A-Za-z0-9_\-+/=.]+", out)), default=0)
    assert longest < OPAQUE_RUN
    assert _JWT_SHAPE.search(out) is None
    for secret in secrets:
        assert secret not in out


@settings(max_examples=500, deadline=None)
@given(_TOKENISH | st.text(alphabet="ab.-_", max_size=60))
def test_the_short_text_shortcut_changes_nothing_the_full_scrub_would(text: str) -> None:
    """Text under OPAQUE_RUN characters with fewer than two dots skips the regexes: it can hold
    neither an opaque run nor a JWT shape, so the full scrub would return it unchanged."""
    assert scrub(text) == redaction._RUN.sub(redaction._scrub_run, text)


@settings(max_examples=200, deadline=None)
@given(_VALUES)
def test_redact_value_is_total(raw: bytes) -> None:
    try:
        out = redact_value(raw)
    except RedactionFailed:
        return  # the caller's fallback: a dead letter without the value
    assert out is not None
    if out != raw:
        assert is_redacted_token(out)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fingerprint_is_total(token: str) -> None:
    assert FINGERPRINT.fullmatch(fingerprint(token))
