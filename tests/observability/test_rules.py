"""The alert rules load in Prometheus, pass their unit tests, and carry what on-call needs."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.promql import RULE_TESTS, RULES, alert_rules, panels

SEVERITIES = {"critical", "warning", "info"}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rule_file(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_the_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_broken_expectation_fails_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    """promtool really compares: the same tests against a rule with a changed threshold fail."""
    document = yaml.safe_load(RULES.read_text())
    for rule in document["groups"][0]["rules"]:
        if rule["alert"] == "SignoutCognitoThrottled":
            rule["expr"] = rule["expr"].replace("> 0.05", "> 0.5")
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(document))
    (tmp_path / "alerts.test.yaml").write_text(RULE_TESTS.read_text())
    result = run(promtool, "test", "rules", str(tmp_path / "alerts.test.yaml"))
    assert result.returncode != 0
    assert "SignoutCognitoThrottled" in result.stdout + result.stderr


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_has_a_severity_a_summary_and_a_runbook_description(
    rule: dict[str, Any],
) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    description = annotations["description"]
    for part in ("First checks:", "Fix:"):
        assert part in description, f"{rule['alert']}: the description lacks {part!r}"


def test_every_alert_is_unit_tested_both_firing_and_silent() -> None:
    cases: dict[str, set[bool]] = defaultdict(set)
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases[case["alertname"]].add(bool(case.get("exp_alerts")))
    for rule in alert_rules():
        assert cases[rule["alert"]] == {True, False}, (
            f"{rule['alert']}: needs a test case where it fires and one where it does not"
        )


def test_every_panel_a_runbook_names_is_on_the_dashboard() -> None:
    """A renamed panel must not leave on-call looking for a title that is gone."""
    titles = [panel["title"] for panel in panels()]
    named = {
        name
        for rule in alert_rules()
        for name in re.findall(r'"([A-Z][\w -]+)" panels?', rule["annotations"]["description"])
    }
    named |= {
        name
        for rule in alert_rules()
        for group in re.findall(
            r'the ((?:"[^"]+",? (?:and )?)+)panels', rule["annotations"]["description"]
        )
        for name in re.findall(r'"([^"]+)"', group)
    }
    assert len(named) >= 10, named  # the patterns above really find the names
    missing = {name for name in named if not any(t.startswith(name) for t in titles)}
    assert not missing, f"runbooks name panels the dashboard does not have: {sorted(missing)}"
