"""The wheel holds the product and nothing else: no development stack, no demo command.

The wheel is built from the work tree with uv, as the image's install step builds it, then run
straight from the zip (a pure-Python wheel is importable), away from the work tree, so the product
is proven to stand on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, find_tool, run

PRODUCT_COMMANDS = {"run", "publish", "schema", "dlq"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = find_tool("uv")
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    result = run(
        [uv, "build", "--wheel", "--python", sys.executable, "--out-dir", out, REPO], env=env
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("*.whl")
    return built


def wheel_modules(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if name.endswith(".py")}


def from_wheel(wheel: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m worker ...` importing the worker from the wheel alone (not the work tree)."""
    env = {**os.environ, "PYTHONPATH": str(wheel)}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def listed_commands(help_text: str) -> set[str]:
    """The sub-command names argparse prints under COMMAND in `--help`."""
    lines = help_text.split("COMMAND\n", 2)[-1].split("\n\n", 1)[0].splitlines()
    return {line.split()[0] for line in lines if line.startswith("    ")}


def test_the_wheel_packages_only_the_worker(wheel: Path) -> None:
    modules = wheel_modules(wheel)
    assert modules, "the wheel holds no Python module"
    assert {m.split("/", 1)[0] for m in modules} == {"worker"}
    assert "worker/publish.py" in modules
    assert "worker/replay.py" in modules
    assert "worker/cli.py" in modules


@pytest.mark.parametrize("tooling", ["devstack", "sandbox", "demo", "stub", "broker", "moto"])
def test_the_wheel_holds_no_development_tooling(wheel: Path, tooling: str) -> None:
    found = [m for m in wheel_modules(wheel) if tooling in m]
    assert found == []


def test_the_packaged_command_lists_exactly_the_product_commands(
    wheel: Path, tmp_path: Path
) -> None:
    printed = from_wheel(wheel, tmp_path, "--help")
    assert printed.returncode == 0, printed.stderr
    assert listed_commands(printed.stdout) == PRODUCT_COMMANDS
    assert "demo" not in printed.stdout


def test_the_packaged_command_refuses_demo(wheel: Path, tmp_path: Path) -> None:
    refused = from_wheel(wheel, tmp_path, "demo")
    assert refused.returncode == 2
    assert "invalid choice: 'demo'" in refused.stderr
    assert not (tmp_path / ".demo").exists()


def test_the_packaged_command_runs_from_the_wheel_not_the_work_tree(
    wheel: Path, tmp_path: Path
) -> None:
    located = subprocess.run(
        [sys.executable, "-c", "import worker; print(worker.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(wheel)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert located.returncode == 0, located.stderr
    assert located.stdout.strip().startswith(str(wheel))
