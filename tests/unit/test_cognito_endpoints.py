"""cognito.endpoint_for: one URL, a `{region}` placeholder, or a map; unset is botocore's own."""

from __future__ import annotations

from typing import Any

import pytest

from worker.cognito import endpoint_for
from worker.settings import CognitoSettings


@pytest.mark.parametrize(
    ("configured", "region", "expected"),
    [
        (None, "eu-west-1", None),
        ("http://127.0.0.1:5000", "eu-west-1", "http://127.0.0.1:5000"),
        ("http://127.0.0.1:5000/{region}", "eu-west-1", "http://127.0.0.1:5000/eu-west-1"),
        ({"eu-west-1": "http://127.0.0.1:5001"}, "eu-west-1", "http://127.0.0.1:5001"),
        ({"eu-west-1": "http://127.0.0.1:5001"}, "us-east-1", None),
    ],
)
def test_endpoint_for_each_form(configured: Any, region: str, expected: str | None) -> None:
    settings = CognitoSettings.model_validate({"endpoint_url": configured})
    assert endpoint_for(settings, region) == expected
