"""The `/metrics` exposition passes `promtool check metrics` and honours contracts.md §8."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.exposition import exercised_metrics, exposition, sample_labels
from worker.cognito import ADMIN, GLOBAL
from worker.metrics import DLQ_WRITE_ERRORS, OPERATIONS, Metrics

# contracts.md §8, binding: name -> (type, label names).
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "signout_events_total": ("counter", frozenset({"outcome", "reason", "lane"})),
    "signout_cognito_requests_total": ("counter", frozenset({"operation", "result", "region"})),
    "signout_cognito_request_duration_seconds": ("histogram", frozenset({"operation", "region"})),
    "signout_event_latency_seconds": ("histogram", frozenset({"lane"})),
    "signout_retries_total": ("counter", frozenset({"code"})),
    "signout_dlq_records_total": ("counter", frozenset({"reason"})),
    "signout_dlq_write_errors_total": ("counter", frozenset({"error"})),
    "signout_inflight_events": ("gauge", frozenset()),
    "signout_rate_limit_per_second": ("gauge", frozenset({"region"})),
    "signout_rate_limiter_wait_seconds": ("histogram", frozenset({"region"})),
    "signout_consumer_lag": ("gauge", frozenset({"topic", "partition"})),
    "signout_assigned_partitions": ("gauge", frozenset()),
    "signout_last_commit_timestamp_seconds": ("gauge", frozenset()),
    "signout_commit_stall_seconds": ("gauge", frozenset()),
    "signout_undecodable_records_total": ("counter", frozenset()),
    "signout_build_info": ("gauge", frozenset({"version"})),
}


def family_name(name: str, kind: str) -> str:
    """The exposition's family name: a counter's family drops the `_total` suffix."""
    return name.removesuffix("_total") if kind == "counter" else name


def check_metrics(promtool: str, text: str) -> tuple[int, str]:
    """`promtool check metrics` on an exposition: its exit code and everything it printed."""
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def test_promtool_finds_no_problem_in_the_exposition(promtool: str) -> None:
    code, output = check_metrics(promtool, exposition(exercised_metrics()))
    assert code == 0, output
    assert output.strip() == ""


def test_promtool_check_metrics_does_report_lint_problems(promtool: str) -> None:
    """The check above is not vacuous: promtool flags a badly named counter."""
    bad = "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n"
    _, output = check_metrics(promtool, bad)
    assert 'counter metrics should have "_total" suffix' in output


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_each_contract_metric_is_exposed_with_its_type_and_labels(name: str) -> None:
    kind, labels = CONTRACT[name]
    families = {f.name: f for f in text_string_to_metric_families(exposition(exercised_metrics()))}
    family = families.get(family_name(name, kind))
    assert family is not None, f"{name} is missing from the exposition"
    assert family.type == kind
    assert family.samples, f"{name} has no samples"
    for sample in family.samples:
        assert set(sample.labels) - {"le"} == labels, (sample.name, sample.labels)
    main = name if kind != "histogram" else f"{name}_bucket"
    assert main in {s.name for s in family.samples}


def test_the_exposition_has_no_metric_beyond_the_contract() -> None:
    """A new instrument is a contract change: add it to contracts.md §8 and to CONTRACT above."""
    exported = {f.name for f in text_string_to_metric_families(exposition(exercised_metrics()))}
    contracted = {family_name(name, kind) for name, (kind, _) in CONTRACT.items()}
    created = {f"{family_name(name, kind)}_created" for name, (kind, _) in CONTRACT.items()}
    assert exported - created == contracted


def test_no_label_carries_a_user_a_token_or_an_event_id() -> None:
    forbidden = {"user", "username", "token", "access_token", "event_id", "sub", "target"}
    for name, labels in sample_labels(exposition(exercised_metrics())).items():
        assert not labels & forbidden, (name, labels)


# contracts.md §2: outcome -> reasons.
OUTCOMES = {
    "signed_out": {"global_sign_out", "admin_sign_out", "admin_fallback"},
    "duplicate": {"duplicate_event"},
    "dead_lettered": {
        "not_authorized",
        "token_revoked",
        "token_expired",
        "token_invalid",
        "resource_not_found",
        "user_not_found",
        "invalid_parameter",
        "password_reset_required",
        "user_not_confirmed",
        "operation_not_enabled",
        "invalid_payload",
        "admin_disabled",
        "retries_exhausted",
        "internal_error",
        "pool_not_allowed",
    },
}


def zero_series(name: str) -> set[tuple[tuple[str, str], ...]]:
    """The label sets of `name`'s samples in a fresh worker's exposition (all at 0)."""
    text = exposition(Metrics(regions=["us-east-1"]))
    found = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                assert sample.value == 0, sample
                found.add(tuple(sorted(sample.labels.items())))
    return found


def test_a_fresh_worker_exposes_every_outcome_and_dead_letter_reason_at_zero() -> None:
    """A series born at 1 is invisible to rate()/increase(): a first dead letter would not alert."""
    assert zero_series("signout_events_total") == {
        (("lane", lane), ("outcome", outcome), ("reason", reason))
        for lane in ("bulk", "urgent")
        for outcome, reasons in OUTCOMES.items()
        for reason in reasons
    }
    assert zero_series("signout_dlq_records_total") == {
        (("reason", reason),) for reason in OUTCOMES["dead_lettered"]
    }
    assert zero_series("signout_retries_total") == {(("code", "TooManyRequestsException"),)}
    assert zero_series("signout_dlq_write_errors_total") == {
        (("error", error),) for error in DLQ_WRITE_ERRORS
    }
    assert ("error", "other") in {pair for (pair,) in zero_series("signout_dlq_write_errors_total")}
    assert zero_series("signout_cognito_requests_total") == {
        (("operation", operation), ("region", "us-east-1"), ("result", result))
        for operation in (GLOBAL, ADMIN)
        for result in ("ok", "TooManyRequestsException")
    }


def test_the_operation_label_values_are_the_operations_the_signer_calls() -> None:
    assert set(OPERATIONS) == {GLOBAL, ADMIN}
