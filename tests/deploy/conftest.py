"""Fixtures for the deployment checks: the offline tools, the rendered kustomize overlays, and what
the image tests share (the base pod spec, a GET on the worker's port, polling).

The tools live in `.tools/` (`make deploy-tools`): kustomize in .tools/bin, checkov, hadolint and
kubernetes-validate in the .tools/validate virtualenv. A missing tool skips its tests, except on CI
(CI=true), where it fails them: there the deploy checks must run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
TOOL_DIRS = (REPO / ".tools" / "bin", REPO / ".tools" / "validate" / "bin")
SECRET_PLACEHOLDER = "value-of-a-secret-key"


def find_tool(name: str, install: str = "make deploy-tools") -> Path:
    """The tool's path; skips the test when it is missing (fails it on CI)."""
    for directory in TOOL_DIRS:
        if (directory / name).is_file():
            return directory / name
    found = shutil.which(name)
    if found:
        return Path(found)
    message = f"{name} is not installed: run `{install}`"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def run(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, check=False, **kwargs
    )


def base_pod() -> dict[str, Any]:
    """The base Deployment's pod spec: what a pod of the image gets."""
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def memory_limit_mib() -> float:
    limit = base_pod()["containers"][0]["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), limit
    return float(limit[:-2])


def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body of a GET on the worker's HTTP port (errors as their status)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def wait_until(predicate: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    try:
        async with asyncio.timeout(within):
            while not await predicate():  # noqa: ASYNC110 - polls a process and a topic
                await asyncio.sleep(0.3)
    except TimeoutError:
        pytest.fail(f"timed out after {within}s waiting for {what}")


def load_generator() -> ModuleType:
    """deploy/k8s/generate.py as a module (deploy/ is not a package)."""
    path = K8S / "generate.py"
    spec = importlib.util.spec_from_file_location("k8s_generate", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Rendered:
    """One overlay's `kustomize build` output."""

    overlay: str
    path: Path
    docs: list[dict[str, Any]] = field(repr=False)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str = "signout-worker") -> dict[str, Any]:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def configmap(self, name: str) -> dict[str, Any]:
        """A ConfigMap by its generator name (kustomize appends a content hash)."""
        found = [
            d
            for d in self.all("ConfigMap")
            if d["metadata"]["name"] == name or d["metadata"]["name"].startswith(name + "-")
        ]
        assert len(found) == 1, f"{self.overlay}: expected one ConfigMap {name}, found {found}"
        return found[0]

    def worker_container(self) -> dict[str, Any]:
        containers = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        return next(c for c in containers if c["name"] == "worker")

    def worker_environment(self) -> dict[str, str]:
        """The SIGNOUT_* environment the worker container gets (envFrom, then env on top).

        A value from a Secret (valueFrom) reads as SECRET_PLACEHOLDER.
        """
        container = self.worker_container()
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            cm = [
                d
                for d in self.all("ConfigMap")
                if d["metadata"]["name"] == source["configMapRef"]["name"]
            ]
            assert cm, f"{self.overlay}: envFrom names a ConfigMap that is not rendered: {source}"
            env.update(cm[0].get("data", {}))
        for item in container.get("env", []):
            env[item["name"]] = item.get("value", SECRET_PLACEHOLDER)
        return env


@pytest.fixture(scope="session")
def kustomize_build(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Rendered]:
    """`kustomize build deploy/k8s/overlays/<name>`, once per overlay and session."""
    cache: dict[str, Rendered] = {}
    out = tmp_path_factory.mktemp("rendered")

    def build(overlay: str) -> Rendered:
        if overlay not in cache:
            kustomize = find_tool("kustomize")
            version = run([kustomize, "version"]).stdout.strip()
            assert version.startswith("v5."), f"kustomize v5 needed (components), got {version!r}"
            result = run([kustomize, "build", K8S / "overlays" / overlay])
            assert result.returncode == 0, f"kustomize build {overlay} failed:\n{result.stderr}"
            path = out / f"{overlay}.yaml"
            path.write_text(result.stdout)
            docs = [d for d in yaml.safe_load_all(result.stdout) if d]
            cache[overlay] = Rendered(overlay, path, docs)
        return cache[overlay]

    return build


@pytest.fixture(params=OVERLAYS)
def rendered(
    request: pytest.FixtureRequest, kustomize_build: Callable[[str], Rendered]
) -> Rendered:
    return kustomize_build(request.param)


def signed_out_by_token(exposition: str) -> float:
    """The worker's count of GlobalSignOut sign-outs, from its /metrics text (any lane)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "signout_events_total"
        and sample.labels.get("reason") == "global_sign_out"
    )
