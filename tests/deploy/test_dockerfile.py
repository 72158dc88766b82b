"""The Dockerfile, without a Docker engine: its contract read from the file, hadolint, and checkov
over the Dockerfile and both rendered overlays (every skipped check must carry its reason)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tests.deploy.conftest import OVERLAYS, REPO, Rendered, find_tool, run
from tests.deploy.dockerfile import DOCKERFILE, parse

INSTALL = "sh deploy/docker/install.sh"


def test_both_stages_use_the_same_pinned_python() -> None:
    dockerfile = parse()
    assert [s.base for s in dockerfile.stages] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", dockerfile.args["PYTHON_IMAGE"])


def test_builder_installs_through_the_shared_script() -> None:
    builder = parse().stage("builder")
    runs = builder.all("RUN")
    assert [i.command() for i in runs] == [
        f"{INSTALL} tools",
        f"{INSTALL} deps /opt/venv",
        f"{INSTALL} project /opt/venv",
    ]
    # A proxy's CA bundle reaches every download as a secret mount, never as a layer.
    assert all(i.args.startswith("--mount=type=secret,id=ca ") for i in runs)
    copies = [i.args for i in builder.all("COPY")]
    # The dependency layer depends on the lock only: the sources come after it.
    assert copies.index("pyproject.toml uv.lock ./") < copies.index("worker/ worker/")


def test_image_uv_is_the_makefile_uv() -> None:
    makefile = (REPO / "Makefile").read_text()
    make_uv = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert make_uv, "UV_VERSION not found in the Makefile"
    pinned = (REPO / "deploy/docker/build-tools.txt").read_text()
    assert f"uv=={make_uv.group(1)} " in pinned, "deploy/docker/build-tools.in pins another uv"
    assert "--hash=sha256:" in pinned


def test_runtime_stage_is_minimal_and_runs_the_worker() -> None:
    final = parse().final
    # It installs nothing (no compiler, no caches); it only removes the base's pip and setuptools.
    assert [i.args for i in final.all("RUN")] == [
        "python -m pip uninstall --quiet --yes --root-user-action=ignore pip setuptools wheel"
    ]
    assert [i.args for i in final.all("COPY")] == ["--from=builder /opt/venv /opt/venv"]
    user = final.last("USER").args
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"numeric non-root USER, got {user}"
    assert final.last("ENTRYPOINT").exec_form() == ["signout-worker"]
    assert final.last("CMD").exec_form() == ["run"]
    env = final.env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert final.last("EXPOSE").args == "8080"
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert version, "no version in pyproject.toml"
    assert final.last("ARG").args == f"VERSION={version.group(1)}", "the image label's version"
    healthcheck = final.last("HEALTHCHECK").args
    assert "/healthz" in healthcheck
    assert "SIGNOUT_HTTP__PORT" in healthcheck


def test_dockerignore_sends_only_the_sources() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: everything else stays out of the build context"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for instruction in parse().stage("builder").all("COPY"):
        *sources, _destination = instruction.args.split()
        copied |= {s.rstrip("/") for s in sources}
    for source in copied:
        assert any(source == a or source.startswith(a + "/") for a in allowed), source
        assert (REPO / source).exists(), source


def test_hadolint() -> None:
    hadolint = find_tool("hadolint")
    result = run([hadolint, "--failure-threshold", "info", DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov(kustomize_build: Callable[[str], Rendered]) -> None:
    checkov = find_tool("checkov")
    manifests = [kustomize_build(overlay).path for overlay in OVERLAYS]
    result = run(
        [
            checkov,
            "--skip-download",
            "--framework",
            "kubernetes",
            "dockerfile",
            "--output",
            "json",
            "--file",
            DOCKERFILE,
            *manifests,
        ],
        cwd=REPO,
    )
    reports: Any = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {r["check_type"]: r["results"] for r in reports}
    assert set(by_type) == {"kubernetes", "dockerfile"}, result.stdout[:2000]
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports), result.stdout[:2000]
    for check_type, results in by_type.items():
        failed = [
            f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]
        ]
        assert not failed, f"checkov {check_type} failures:\n" + "\n".join(failed)
        assert results["passed_checks"], f"checkov ran no {check_type} checks"
        unexplained = [
            c["check_id"]
            for c in results["skipped_checks"]
            if len(c["check_result"].get("suppress_comment", "").strip()) < 20
        ]
        assert not unexplained, f"skipped without a reason: {unexplained}"
