"""A stand-in for Amazon Cognito's two sign-out operations, for tests and benchmarks.

Runs as its own process and prints its base URL as the FIRST line on stdout:

    python devstack/cognito_stub.py --port 0 [--config FILE] [--config-json JSON]
    python -m devstack.cognito_stub --port 0 --quota 25 --latency-ms 40

Cognito surface (JSON 1.1 protocol, what botocore sends and parses):
    POST /  with `X-Amz-Target: AWSCognitoIdentityProviderService.GlobalSignOut` and body
    `{"AccessToken": ...}`, or `...AdminUserGlobalSignOut` and `{"UserPoolId", "Username"}`.
    Success: 200 `{}`. Error: 400 (500 for InternalErrorException) with body
    `{"__type": "XxxException", "message": "..."}` and header `x-amzn-ErrorType: XxxException`.
    botocore takes the error code from `__type` (and the message from `message`).

Control API (same server):
    GET  /_stub/health          {"ok": true}
    GET  /_stub/config          the current configuration
    POST /_stub/config          merge a partial configuration (JSON object); 400 when invalid
    GET  /_stub/calls?since=N   {"calls": [...], **stats}: the call record from sequence N on
    GET  /_stub/stats           {"total", "counts", "in_flight", "max_in_flight", "dropped", ...}
    POST /_stub/reset           forget calls, revocations, quota window and counters; restores
                                the start-up configuration unless the body is {"keep_config": true}

Configuration (JSON object, every key optional; the same keys at start-up and at run time):
    seed                  int|null  seeds the fault and latency generators (null: random)
    latency               ms number (fixed) or {"dist": "fixed", "ms"} | {"dist": "uniform",
                          "min_ms", "max_ms"} | {"dist": "normal", "mean_ms", "stddev_ms",
                          "min_ms", "max_ms" (0: no upper clamp)}; slept per request, concurrently
    quota_per_second      int|null  accepted requests per sliding window (null: unlimited);
                          above it TooManyRequestsException "Rate exceeded" (does not use quota)
    quota_window_seconds  float (1.0)
    internal_error_ratio  0..1  InternalErrorException (HTTP 500), random
    reset_ratio           0..1  close the connection with a TCP RST, no response (aiobotocore:
                          EndpointConnectionError)
    close_ratio           0..1  close the connection cleanly (FIN), no response (aiobotocore:
                          ConnectionClosedError)
    timeout_ratio         0..1  hold the request for hang_seconds, then reset it
    hang_seconds          float (600)
    outage_seconds        float: a full outage from now on (0 or null: none); with
                          outage_in_seconds it starts later. Or "outage": {"start", "end"} /
                          "outage_start" + "outage_end" as wall-clock epoch seconds.
    outage_fault          what an outage answers: an error code (InternalErrorException),
                          "reset", "close" or "timeout"
    fail_targets          {target: fault}: a token fingerprint ("sha256:<16 hex>"), "pool/username"
                          or "username" that always fails with the fault (code, "reset", "close",
                          "timeout")
    known_users           [usernames or "pool/username"]|null: others get UserNotFoundException
    unknown_users         [usernames or "pool/username"]: UserNotFoundException
    known_pools           [pool ids]|null: others get ResourceNotFoundException
    unknown_pools         [pool ids]: ResourceNotFoundException
    check_expiry          bool (true): a JWT whose `exp` passed -> "Access Token has expired"
    user_revocation       bool (true): a sign-out also revokes the user's other tokens issued
                          before it (matched by the `username` claim and the pool in `iss`)
    max_calls             int (200000): size of the in-memory call record (oldest dropped)

Order of checks per request: malformed request -> outage -> quota -> reset/close/timeout/internal
ratios -> fail_targets -> Cognito semantics. State changes happen at arrival; the latency is slept
afterwards. Raw tokens are never stored, logged or returned: only `fingerprint(token)`.

`StubProcess` (below) starts this file as a subprocess and drives the control API.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

import aiohttp
from aiohttp import web

GLOBAL_SIGN_OUT: Final = "GlobalSignOut"
ADMIN_SIGN_OUT: Final = "AdminUserGlobalSignOut"
OPERATIONS: Final = frozenset({GLOBAL_SIGN_OUT, ADMIN_SIGN_OUT})
TARGET_PREFIX: Final = "AWSCognitoIdentityProviderService."
CONTENT_TYPE: Final = "application/x-amz-json-1.1"

OK: Final = "ok"
RESET: Final = "reset"
CLOSE: Final = "close"
TIMEOUT: Final = "timeout"
THROTTLED: Final = "TooManyRequestsException"
INTERNAL_ERROR: Final = "InternalErrorException"
NOT_AUTHORIZED: Final = "NotAuthorizedException"

MSG_REVOKED: Final = "Access Token has been revoked"
MSG_EXPIRED: Final = "Access Token has expired"
MSG_INVALID: Final = "Invalid Access Token"

_DEFAULT_MESSAGES: Final[Mapping[str, str]] = {
    THROTTLED: "Rate exceeded",
    INTERNAL_ERROR: "Internal server error",
    "ForbiddenException": "Request blocked by AWS WAF",
    "UserNotFoundException": "User does not exist.",
}
_STATUS: Final[Mapping[str, int]] = {INTERNAL_ERROR: 500}
_CODE_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
_DROPS: Final = frozenset({RESET, CLOSE, TIMEOUT})
_DIST_NAMES: Final = frozenset({"fixed", "uniform", "normal"})
_LATENCY_KEYS: Final = ("ms", "min_ms", "max_ms", "mean_ms", "stddev_ms")
_STARTED_BANNER_TIMEOUT: Final = 15.0
_THIS_FILE: Final = Path(__file__).resolve()


def fingerprint(token: str) -> str:
    """`sha256:` + the first 16 hex digits of the token's SHA-256 (contracts.md §3)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _b64url(data: Mapping[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_token(
    *,
    sub: str | None = None,
    exp_in: float = 3600.0,
    username: str | None = None,
    pool: str | None = None,
    iat: float | None = None,
    **claims: Any,
) -> str:
    """An unsigned, access-token-shaped JWT (header `{"alg": "none"}`, signature `sig`).

    Every token is unique (random `jti`). `pool` sets `iss` to a us-east-1 Cognito issuer;
    `iat` defaults to now with millisecond resolution.
    """
    now = time.time()
    payload: dict[str, Any] = {
        "sub": sub or str(uuid.uuid4()),
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "iat": round(now if iat is None else iat, 3),
        "exp": int(now + exp_in),
        "jti": str(uuid.uuid4()),
    }
    if username is not None:
        payload["username"] = username
    if pool is not None:
        payload["iss"] = f"https://cognito-idp.us-east-1.amazonaws.com/{pool}"
    payload.update(claims)
    return f"{_b64url({'alg': 'none', 'typ': 'JWT'})}.{_b64url(payload)}.sig"


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a structurally valid JWT (signature not checked), else None."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    try:
        header, payload = (
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            for part in parts[:2]
        )
    except ValueError:
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return None
    return payload


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class Latency:
    dist: str = "fixed"
    ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    stddev_ms: float = 0.0

    def sample(self, rng: random.Random) -> float:
        """One delay in seconds."""
        if self.dist == "uniform":
            ms = rng.uniform(self.min_ms, self.max_ms)
        elif self.dist == "normal":
            ms = max(rng.gauss(self.mean_ms, self.stddev_ms), self.min_ms)
            if self.max_ms > 0:
                ms = min(ms, self.max_ms)
        else:
            ms = self.ms
        return ms / 1000.0

    def to_json(self) -> dict[str, Any]:
        if self.dist == "fixed":
            return {"dist": "fixed", "ms": self.ms}
        if self.dist == "uniform":
            return {"dist": "uniform", "min_ms": self.min_ms, "max_ms": self.max_ms}
        return {
            "dist": "normal",
            "mean_ms": self.mean_ms,
            "stddev_ms": self.stddev_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
        }


@dataclass(frozen=True, slots=True)
class StubConfig:
    seed: int | None = None
    latency: Latency = field(default_factory=Latency)
    quota_per_second: int | None = None
    quota_window_seconds: float = 1.0
    internal_error_ratio: float = 0.0
    reset_ratio: float = 0.0
    close_ratio: float = 0.0
    timeout_ratio: float = 0.0
    hang_seconds: float = 600.0
    outage_start: float | None = None
    outage_end: float | None = None
    outage_fault: str = INTERNAL_ERROR
    fail_targets: Mapping[str, str] = field(default_factory=dict)
    known_users: frozenset[str] | None = None
    unknown_users: frozenset[str] = frozenset()
    known_pools: frozenset[str] | None = None
    unknown_pools: frozenset[str] = frozenset()
    check_expiry: bool = True
    user_revocation: bool = True
    max_calls: int = 200_000

    def in_outage(self, wall: float) -> bool:
        if self.outage_start is None and self.outage_end is None:
            return False
        start = self.outage_start if self.outage_start is not None else float("-inf")
        end = self.outage_end if self.outage_end is not None else float("inf")
        return start <= wall < end

    def apply(self, changes: Mapping[str, Any], now: float | None = None) -> StubConfig:
        """A new configuration with `changes` merged in; ValueError names a bad key."""
        now = time.time() if now is None else now
        fields: dict[str, Any] = {}
        for key, value in changes.items():
            try:
                if key in _PARSERS:
                    fields[key] = _PARSERS[key](value)
                elif key in _WINDOW_PARSERS:
                    fields.update(_WINDOW_PARSERS[key](value, changes, now))
                else:
                    raise ValueError("unknown key")
            except (ValueError, TypeError) as exc:
                raise ValueError(f"config {key!r}: {exc}") from None
        return replace(self, **fields)

    def to_json(self) -> dict[str, Any]:
        def listed(values: frozenset[str] | None) -> list[str] | None:
            return None if values is None else sorted(values)

        return {
            "seed": self.seed,
            "latency": self.latency.to_json(),
            "quota_per_second": self.quota_per_second,
            "quota_window_seconds": self.quota_window_seconds,
            "internal_error_ratio": self.internal_error_ratio,
            "reset_ratio": self.reset_ratio,
            "close_ratio": self.close_ratio,
            "timeout_ratio": self.timeout_ratio,
            "hang_seconds": self.hang_seconds,
            "outage_start": self.outage_start,
            "outage_end": self.outage_end,
            "outage_fault": self.outage_fault,
            "fail_targets": dict(self.fail_targets),
            "known_users": listed(self.known_users),
            "unknown_users": listed(self.unknown_users),
            "known_pools": listed(self.known_pools),
            "unknown_pools": listed(self.unknown_pools),
            "check_expiry": self.check_expiry,
            "user_revocation": self.user_revocation,
            "max_calls": self.max_calls,
        }


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _non_negative(value: Any) -> float:
    number = _number(value)
    if not number >= 0:
        raise ValueError(f"expected a number >= 0, got {value!r}")
    return number


def _positive(value: Any) -> float:
    number = _number(value)
    if not number > 0:
        raise ValueError(f"expected a number > 0, got {value!r}")
    return number


def _ratio(value: Any) -> float:
    number = _number(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"expected a ratio in [0, 1], got {value!r}")
    return number


def _integer(value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
    return value


def _optional_float(value: Any) -> float | None:
    return None if value is None else _number(value)


def _optional_seed(value: Any) -> int | None:
    return None if value is None else _integer(value, -(2**63))


def _optional_quota(value: Any) -> int | None:
    return None if value is None else _integer(value, 0)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _fault(value: Any) -> str:
    if not isinstance(value, str) or not _CODE_RE.match(value):
        raise ValueError(f"expected an error code, 'reset', 'close' or 'timeout', got {value!r}")
    return value


def _strings(value: Any) -> frozenset[str]:
    if not isinstance(value, list | tuple | set | frozenset):
        raise ValueError("expected a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of strings")
    return frozenset(value)


def _optional_strings(value: Any) -> frozenset[str] | None:
    return None if value is None else _strings(value)


def _fail_targets(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ValueError("expected an object {target: fault}")
    return {key: _fault(fault) for key, fault in value.items()}


def _latency(value: Any) -> Latency:
    if not isinstance(value, Mapping):
        return Latency(ms=_non_negative(value))
    unknown = set(value) - {"dist", *_LATENCY_KEYS}
    if unknown:
        raise ValueError(f"unknown latency keys {sorted(unknown)}")
    dist = value.get("dist", "fixed")
    if dist not in _DIST_NAMES:
        raise ValueError(f"dist must be one of {sorted(_DIST_NAMES)}")
    numbers = {key: _non_negative(value[key]) for key in _LATENCY_KEYS if key in value}
    latency = Latency(dist=dist, **numbers)
    if dist == "uniform" and latency.max_ms < latency.min_ms:
        raise ValueError("uniform latency needs min_ms <= max_ms")
    if dist == "normal" and 0 < latency.max_ms < latency.min_ms:
        raise ValueError("normal latency needs min_ms <= max_ms")
    return latency


def _outage_window(value: Any, _changes: Mapping[str, Any], _now: float) -> dict[str, Any]:
    if value is None:
        return {"outage_start": None, "outage_end": None}
    if not isinstance(value, Mapping) or set(value) - {"start", "end"}:
        raise ValueError('expected {"start": epoch seconds, "end": epoch seconds} or null')
    return {
        "outage_start": _optional_float(value.get("start")),
        "outage_end": _optional_float(value.get("end")),
    }


def _outage_for(value: Any, changes: Mapping[str, Any], now: float) -> dict[str, Any]:
    if value is None or value == 0:
        return {"outage_start": None, "outage_end": None}
    start = now + _non_negative(changes.get("outage_in_seconds", 0))
    return {"outage_start": start, "outage_end": start + _positive(value)}


def _outage_in(_value: Any, changes: Mapping[str, Any], _now: float) -> dict[str, Any]:
    if "outage_seconds" not in changes:
        raise ValueError("only together with outage_seconds")
    return {}


_PARSERS: Final[Mapping[str, Callable[[Any], Any]]] = {
    "seed": _optional_seed,
    "latency": _latency,
    "quota_per_second": _optional_quota,
    "quota_window_seconds": _positive,
    "internal_error_ratio": _ratio,
    "reset_ratio": _ratio,
    "close_ratio": _ratio,
    "timeout_ratio": _ratio,
    "hang_seconds": _positive,
    "outage_start": _optional_float,
    "outage_end": _optional_float,
    "outage_fault": _fault,
    "fail_targets": _fail_targets,
    "known_users": _optional_strings,
    "unknown_users": _strings,
    "known_pools": _optional_strings,
    "unknown_pools": _strings,
    "check_expiry": _flag,
    "user_revocation": _flag,
    "max_calls": lambda value: _integer(value, 1),
}
_WindowParser = Callable[[Any, Mapping[str, Any], float], dict[str, Any]]
_WINDOW_PARSERS: Final[Mapping[str, _WindowParser]] = {
    "outage": _outage_window,
    "outage_seconds": _outage_for,
    "outage_in_seconds": _outage_in,
}


# --------------------------------------------------------------------------- call record


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the stub saw it. `target` is a fingerprint or `pool/username`."""

    seq: int
    wall: float  # time.time() at arrival
    mono: float  # time.monotonic() at arrival (the stub process's clock)
    operation: str
    target: str
    result: str  # "ok", an error code, "reset", "close" or "timeout"
    in_flight: int  # requests being handled at arrival, this one included
    delay_ms: float  # latency applied

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "wall": self.wall,
            "mono": self.mono,
            "operation": self.operation,
            "target": self.target,
            "result": self.result,
            "in_flight": self.in_flight,
            "delay_ms": self.delay_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Call:
        return cls(
            seq=int(data["seq"]),
            wall=float(data["wall"]),
            mono=float(data["mono"]),
            operation=str(data["operation"]),
            target=str(data["target"]),
            result=str(data["result"]),
            in_flight=int(data["in_flight"]),
            delay_ms=float(data["delay_ms"]),
        )


@dataclass(frozen=True, slots=True)
class Stats:
    total: int  # calls recorded since the last reset
    counts: dict[str, int]  # by result
    in_flight: int
    max_in_flight: int
    dropped: int  # calls no longer held (max_calls)
    revoked: int  # distinct tokens signed out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stats:
        return cls(
            total=int(data["total"]),
            counts={str(key): int(value) for key, value in data["counts"].items()},
            in_flight=int(data["in_flight"]),
            max_in_flight=int(data["max_in_flight"]),
            dropped=int(data["dropped"]),
            revoked=int(data["revoked"]),
        )


# --------------------------------------------------------------------------- the stub


@dataclass(frozen=True, slots=True)
class Answer:
    result: str  # "ok", "reset", "close", "timeout" or an error code
    message: str = ""


_ANSWER_OK: Final = Answer(OK)


def _fault_answer(fault: str) -> Answer:
    return Answer(fault, _DEFAULT_MESSAGES.get(fault, f"Injected {fault}"))


@dataclass(frozen=True, slots=True)
class _Request:
    operation: str
    target: str = ""
    token: str | None = None
    pool: str = ""
    username: str = ""
    error: Answer | None = None


def _invalid(operation: str, name: str) -> _Request:
    message = f"1 validation error detected: Value at '{name}' failed to satisfy constraint"
    return _Request(operation, error=Answer("InvalidParameterException", message))


def parse_request(target_header: str, body: bytes) -> _Request:
    operation = target_header.removeprefix(TARGET_PREFIX)
    if operation not in OPERATIONS:
        return _Request(operation[:64] or "-", error=Answer("UnknownOperationException"))
    try:
        params = json.loads(body or b"{}")
    except ValueError:
        params = None
    if not isinstance(params, dict):
        return _Request(operation, error=Answer("SerializationException", "Malformed JSON"))
    if operation == GLOBAL_SIGN_OUT:
        token = params.get("AccessToken")
        if not isinstance(token, str) or not token:
            return _invalid(operation, "accessToken")
        return _Request(operation, target=fingerprint(token), token=token)
    pool, username = params.get("UserPoolId"), params.get("Username")
    if not isinstance(pool, str) or not pool:
        return _invalid(operation, "userPoolId")
    if not isinstance(username, str) or not username:
        return _invalid(operation, "username")
    return _Request(operation, target=f"{pool}/{username}", pool=pool, username=username)


def _user_keys(claims: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(pool, username) keys a token belongs to; pool "" matches a token without `iss`."""
    username = claims.get("username", claims.get("cognito:username"))
    if not isinstance(username, str):
        return []
    issuer = claims.get("iss")
    pool = issuer.rstrip("/").rsplit("/", 1)[-1] if isinstance(issuer, str) else ""
    return [(pool, username), ("", username)] if pool else [("", username)]


class CognitoStub:
    """The state and the request handlers. One instance per server process."""

    def __init__(self, config: StubConfig) -> None:
        self._initial = config
        self.config = config
        self.in_flight = 0
        self._clear()

    def _clear(self) -> None:
        self._fault_rng = random.Random(self.config.seed)
        self._latency_rng = random.Random(self.config.seed)
        self._window: deque[float] = deque()
        self._revoked: set[str] = set()
        self._user_signouts: dict[tuple[str, str], float] = {}
        self._calls: deque[Call] = deque(maxlen=self.config.max_calls)
        self._counts: Counter[str] = Counter()
        self._seq = 0
        self.max_in_flight = self.in_flight

    def configure(self, changes: Mapping[str, Any]) -> StubConfig:
        config = self.config.apply(changes)
        self.config = config
        if "seed" in changes:
            self._fault_rng.seed(config.seed)
            self._latency_rng.seed(config.seed)
        if config.max_calls != self._calls.maxlen:
            self._calls = deque(self._calls, maxlen=config.max_calls)
        return config

    def reset(self, *, keep_config: bool = False) -> None:
        if not keep_config:
            self.config = self._initial
        self._clear()

    # ----------------------------------------------------------------- decisions (synchronous)

    def arrive(self, request: _Request, in_flight: int) -> tuple[Answer, float]:
        """Decide the answer at arrival (state changes happen here) and record the call."""
        mono, wall = time.monotonic(), time.time()
        answer = request.error or self._gate(mono, wall) or self._decide(request, wall)
        delay = 0.0
        if answer.result not in _DROPS:
            delay = self.config.latency.sample(self._latency_rng)
        seq = self._seq
        self._seq += 1
        self._counts[answer.result] += 1
        self._calls.append(
            Call(
                seq=seq,
                wall=wall,
                mono=mono,
                operation=request.operation,
                target=request.target,
                result=answer.result,
                in_flight=in_flight,
                delay_ms=round(delay * 1000.0, 3),
            )
        )
        return answer, delay

    def _gate(self, mono: float, wall: float) -> Answer | None:
        config = self.config
        if config.in_outage(wall):
            return _fault_answer(config.outage_fault)
        if not self._admit(mono):
            return _fault_answer(THROTTLED)
        draw = self._fault_rng.random
        if config.reset_ratio and draw() < config.reset_ratio:
            return Answer(RESET)
        if config.close_ratio and draw() < config.close_ratio:
            return Answer(CLOSE)
        if config.timeout_ratio and draw() < config.timeout_ratio:
            return Answer(TIMEOUT)
        if config.internal_error_ratio and draw() < config.internal_error_ratio:
            return _fault_answer(INTERNAL_ERROR)
        return None

    def _admit(self, mono: float) -> bool:
        """Sliding window: at most `quota_per_second` accepted in any window."""
        limit = self.config.quota_per_second
        if limit is None:
            return True
        window = self._window
        horizon = mono - self.config.quota_window_seconds
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(mono)
        return True

    def _decide(self, request: _Request, wall: float) -> Answer:
        if request.token is not None:
            return self._global_sign_out(request.target, request.token, wall)
        return self._admin_sign_out(request.pool, request.username, wall)

    def _global_sign_out(self, target: str, token: str, wall: float) -> Answer:
        fault = self.config.fail_targets.get(target)
        if fault is not None:
            return _fault_answer(fault)
        claims = jwt_claims(token)
        if claims is None:
            return Answer(NOT_AUTHORIZED, MSG_INVALID)
        expires = claims.get("exp")
        if self.config.check_expiry and isinstance(expires, int | float) and expires <= wall:
            return Answer(NOT_AUTHORIZED, MSG_EXPIRED)
        if target in self._revoked or self._revoked_by_user(claims):
            return Answer(NOT_AUTHORIZED, MSG_REVOKED)
        self._revoked.add(target)
        if self.config.user_revocation:
            for key in _user_keys(claims):
                self._user_signouts[key] = wall
        return _ANSWER_OK

    def _revoked_by_user(self, claims: Mapping[str, Any]) -> bool:
        if not self.config.user_revocation or not self._user_signouts:
            return False
        issued = claims.get("iat")
        for key in _user_keys(claims):
            signed_out = self._user_signouts.get(key)
            if signed_out is not None and (
                not isinstance(issued, int | float) or issued <= signed_out
            ):
                return True
        return False

    def _admin_sign_out(self, pool: str, username: str, wall: float) -> Answer:
        config = self.config
        key = f"{pool}/{username}"
        fault = config.fail_targets.get(key) or config.fail_targets.get(username)
        if fault is not None:
            return _fault_answer(fault)
        if pool in config.unknown_pools or (
            config.known_pools is not None and pool not in config.known_pools
        ):
            return Answer("ResourceNotFoundException", f"User pool {pool} does not exist.")
        if _listed(config.unknown_users, key, username) or (
            config.known_users is not None and not _listed(config.known_users, key, username)
        ):
            return _fault_answer("UserNotFoundException")
        if config.user_revocation:
            self._user_signouts[(pool, username)] = wall
            self._user_signouts[("", username)] = wall
        return _ANSWER_OK

    # ----------------------------------------------------------------- HTTP

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        in_flight = self.in_flight
        try:
            body = await request.read()
            parsed = parse_request(request.headers.get("X-Amz-Target", ""), body)
            answer, delay = self.arrive(parsed, in_flight)
            if answer.result in _DROPS:
                return await self._drop(request, answer.result)
            if delay > 0:
                await asyncio.sleep(delay)
            return _response(answer)
        finally:
            self.in_flight -= 1

    async def _drop(self, request: web.Request, mode: str) -> web.StreamResponse:
        """No answer. `close`: FIN. `reset`: RST (SO_LINGER 0). `timeout`: hang, then RST.

        The server runs with handler cancellation, so a client that gives up (or the closed
        connection itself) cancels this handler and frees its in-flight slot.
        """
        if mode == TIMEOUT:
            await asyncio.sleep(self.config.hang_seconds)
        transport = request.transport
        if transport is not None and mode == CLOSE:
            transport.close()
        elif transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        await asyncio.sleep(5.0)  # cancelled by connection_lost long before this ends
        raise web.HTTPServiceUnavailable

    def stats(self) -> dict[str, Any]:
        return {
            "total": self._seq,
            "counts": dict(self._counts),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "dropped": self._seq - len(self._calls),
            "revoked": len(self._revoked),
        }

    async def get_calls(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return _control_error("since must be an integer")
        first = self._seq - len(self._calls)
        calls = itertools.islice(self._calls, max(since - first, 0), None)
        return web.json_response({"calls": [call.to_json() for call in calls], **self.stats()})

    async def get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def get_config(self, _request: web.Request) -> web.Response:
        return web.json_response({"config": self.config.to_json()})

    async def post_config(self, request: web.Request) -> web.Response:
        changes = await _json_object(request)
        if changes is None:
            return _control_error("expected a JSON object")
        try:
            config = self.configure(changes)
        except ValueError as exc:
            return _control_error(str(exc))
        return web.json_response({"config": config.to_json()})

    async def post_reset(self, request: web.Request) -> web.Response:
        options = await _json_object(request)
        if options is None:
            return _control_error("expected a JSON object or an empty body")
        self.reset(keep_config=bool(options.get("keep_config", False)))
        return web.json_response({"config": self.config.to_json()})

    async def get_health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def _listed(names: frozenset[str], key: str, username: str) -> bool:
    return key in names or username in names


def _response(answer: Answer) -> web.Response:
    headers = {"x-amzn-RequestId": str(uuid.uuid4())}
    if answer.result == OK:
        return web.Response(body=b"{}", content_type=CONTENT_TYPE, headers=headers)
    code = answer.result
    headers["x-amzn-ErrorType"] = code
    body = json.dumps({"__type": code, "message": answer.message}).encode()
    return web.Response(
        body=body, status=_STATUS.get(code, 400), content_type=CONTENT_TYPE, headers=headers
    )


def _control_error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    body = await request.read()
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def build_app(stub: CognitoStub) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/", stub.handle)
    app.router.add_get("/_stub/health", stub.get_health)
    app.router.add_get("/_stub/config", stub.get_config)
    app.router.add_post("/_stub/config", stub.post_config)
    app.router.add_get("/_stub/calls", stub.get_calls)
    app.router.add_get("/_stub/stats", stub.get_stats)
    app.router.add_post("/_stub/reset", stub.post_reset)
    return app


# --------------------------------------------------------------------------- process


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop when stdin reaches EOF: the parent closed it or died."""

    def wait_for_eof() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 65536):
                pass
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, name="stdin-eof", daemon=True).start()


async def serve(
    config: StubConfig, *, host: str, port: int, watch_stdin: bool, shutdown_timeout: float
) -> None:
    stub = CognitoStub(config)
    runner = web.AppRunner(
        build_app(stub),
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        sys.stdout.write(f"http://{shown}:{bound_port}\n")
        sys.stdout.flush()
        if watch_stdin:
            _watch_stdin(loop, stop)
        await stop.wait()
    finally:
        await runner.cleanup()


def _load_config(args: argparse.Namespace) -> StubConfig:
    config = StubConfig()
    if args.config is not None:
        config = config.apply(_object(Path(args.config).read_text(), args.config))
    if args.config_json is not None:
        config = config.apply(_object(args.config_json, "--config-json"))
    flags = {
        "seed": args.seed,
        "quota_per_second": args.quota,
        "latency": args.latency_ms,
    }
    return config.apply({key: value for key, value in flags.items() if value is not None})


def _object(text: str, where: str) -> Mapping[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object")
    return data


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cognito_stub", description="Cognito sign-out stub for tests and benchmarks."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (default)")
    parser.add_argument("--config", help="a JSON configuration file")
    parser.add_argument("--config-json", help="a JSON configuration object (after --config)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--quota", type=int, help="quota_per_second")
    parser.add_argument("--latency-ms", type=float, help="fixed latency")
    parser.add_argument(
        "--watch-stdin", action="store_true", help="exit when stdin reaches EOF (parent gone)"
    )
    parser.add_argument(
        "--shutdown-timeout", type=float, default=0.5, help="seconds to drain on SIGTERM"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load_config(args)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"cognito_stub: bad configuration: {exc}\n")
        return 2
    asyncio.run(
        serve(
            config,
            host=args.host,
            port=args.port,
            watch_stdin=args.watch_stdin,
            shutdown_timeout=args.shutdown_timeout,
        )
    )
    return 0


# --------------------------------------------------------------------------- test helper


class StubError(RuntimeError):
    """The stub process failed to start or the control API failed."""


class StubProcess:
    """Runs the stub as a subprocess; `async with StubProcess({...}) as stub: stub.endpoint_url`.

    The child watches its stdin and exits when this process dies, so no stub outlives a test run.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = _STARTED_BANNER_TIMEOUT,
        python: str = sys.executable,
        stderr: int | IO[Any] | None = None,
    ) -> None:
        self._config = dict(config or {})
        StubConfig().apply(self._config)  # fail early, in the caller, on a bad configuration
        self._host = host
        self._port = port
        self._startup_timeout = startup_timeout
        self._python = python
        self._stderr = stderr
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url: str | None = None

    @property
    def endpoint_url(self) -> str:
        if self._url is None:
            raise StubError("the stub is not running")
        return self._url

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise StubError("the stub is not running")
        return self._proc.pid

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> Self:
        if self._proc is not None:
            raise StubError("already started")
        command = [
            self._python,
            str(_THIS_FILE),
            "--host",
            self._host,
            "--port",
            str(self._port),
            "--watch-stdin",
            "--config-json",
            json.dumps(self._config),
        ]
        self._proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
        )
        try:
            self._url = await self._read_banner(self._proc)
        except BaseException:
            await self.stop()
            raise
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def _read_banner(self, proc: asyncio.subprocess.Process) -> str:
        if proc.stdout is None:
            raise StubError("no stdout pipe")
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self._startup_timeout)
        except TimeoutError:
            raise StubError(f"the stub printed no URL within {self._startup_timeout} s") from None
        url = line.decode(errors="replace").strip()
        if not url.startswith("http://"):
            code = await proc.wait()
            raise StubError(f"the stub exited with code {code} before listening")
        return url

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        proc, self._proc = self._proc, None
        self._url = None
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        if proc.stdin is not None:
            proc.stdin.close()
        return await proc.wait()

    async def _call(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        if self._session is None:
            raise StubError("the stub is not running")
        async with self._session.request(
            method, f"{self.endpoint_url}{path}", json=payload
        ) as response:
            data = await response.json()
            if response.status == 400:
                raise ValueError(f"{method} {path}: {data.get('error')}")
            if response.status != 200 or not isinstance(data, dict):
                raise StubError(f"{method} {path}: HTTP {response.status}")
            return data

    async def configure(self, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into the running configuration; returns the new one."""
        data = await self._call("POST", "/_stub/config", changes)
        config: dict[str, Any] = data["config"]
        return config

    async def config(self) -> dict[str, Any]:
        config: dict[str, Any] = (await self._call("GET", "/_stub/config"))["config"]
        return config

    async def calls(self, since: int = 0) -> list[Call]:
        data = await self._call("GET", f"/_stub/calls?since={since}")
        return [Call.from_json(item) for item in data["calls"]]

    async def stats(self) -> Stats:
        return Stats.from_json(await self._call("GET", "/_stub/stats"))

    async def reset(self, *, keep_config: bool = False) -> None:
        """Forget calls and state; back to the start-up configuration unless `keep_config`."""
        await self._call("POST", "/_stub/reset", {"keep_config": keep_config})


if __name__ == "__main__":
    raise SystemExit(main())
