"""Unit tests run with a clean `SIGNOUT_*` environment so that `Settings()` means the defaults."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_signout_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SIGNOUT_"):
            monkeypatch.delenv(name)
