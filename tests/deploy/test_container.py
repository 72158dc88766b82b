"""The image for real: the Dockerfile built with buildah, the image run with podman.

No container registry is reachable from the test machines, so the base is a stand-in for
python:3.11-slim-bookworm built from Debian packages (deploy/docker/python-base.sh, mmdebstrap),
cached in ~/.cache/signout-worker by the recipe's hash, and passed as PYTHON_IMAGE. The host's CA
bundle goes to the install steps as a build secret, so a TLS-intercepting proxy works and the
bundle never lands in a layer.

The container runs as a pod of the base Deployment would: uid 10001, read-only root with a tmpfs
/tmp, every capability dropped, no privilege escalation. On the host's network it reaches the
session's broker and moto on loopback, signs out one user by access token and one by admin call,
answers /healthz and its HEALTHCHECK, and on SIGTERM drains and exits 0. The image holds no pip,
setuptools, uv, compiler or project sources.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.conftest import PoolFactory, TopicFactory
from tests.deploy.conftest import (
    REPO,
    base_pod,
    find_tool,
    http_get,
    memory_limit_mib,
    signed_out_by_token,
    wait_until,
)
from tests.integration.conftest import publish, read_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

CACHE = Path.home() / ".cache" / "signout-worker"
RECIPE = REPO / "deploy" / "docker" / "python-base.sh"
IMAGE = "localhost/signout-worker:test"
# This host's cgroup mode is refused by podman's default runtime (crun), and so are the default
# rlimits: runc with explicit ones.
RUNTIME = ["--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
# What the official python image sets and the stand-in's rootfs tarball cannot carry.
BASE_CONFIG = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]
APT = "apt-get install buildah podman runc mmdebstrap"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


class Endpoint(Protocol):
    endpoint_url: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(args: list[str | Path], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )


def checked(args: list[str | Path], timeout: float = 120) -> str:
    result = run(args, timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def stand_in_base(podman: Path) -> str:
    """The stand-in base in podman's store; its rootfs is built only when the cache lacks it."""
    find_tool("mmdebstrap", install=APT)
    key = hashlib.sha256(RECIPE.read_bytes() + "\n".join(BASE_CONFIG).encode()).hexdigest()[:16]
    tag = f"localhost/signout-worker-python-base:{key}"
    if run([podman, "image", "exists", tag]).returncode == 0:
        return tag
    tarball = CACHE / f"python-base-{key}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        checked(["sh", RECIPE, partial], timeout=900)
        partial.rename(tarball)
    changes = [arg for change in BASE_CONFIG for arg in ("--change", change)]
    checked([podman, "import", *changes, tarball, tag], timeout=300)
    return tag


def ca_bundle() -> Path | None:
    """The host's CA bundle (the one a TLS-intercepting proxy's CA is added to)."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def podman() -> Path:
    """podman's path (session-scoped so a missing podman skips before the broker starts)."""
    return find_tool("podman", install=APT)


@pytest.fixture(scope="module")
def build_seconds() -> dict[str, float]:
    """How long the image fixture took (printed by the test that inspects the image)."""
    return {}


@pytest.fixture(scope="module")
def image(podman: Path, build_seconds: dict[str, float]) -> str:
    """The Dockerfile built with buildah on the stand-in base (layers cached between runs)."""
    buildah = find_tool("buildah", install=APT)
    started = time.monotonic()
    base = stand_in_base(podman)
    args: list[str | Path] = [buildah, "build", *RUNTIME, *ULIMITS, "--format", "docker"]
    args += ["--layers", "--build-arg", f"PYTHON_IMAGE={base}", "--tag", IMAGE]
    # The host's network: pip and uv reach PyPI without container network plugins.
    args += ["--network", "host"]
    bundle = ca_bundle()
    if bundle:
        args += ["--secret", f"id=ca,src={bundle}"]
    for name in PROXY_VARIABLES:
        if name in os.environ:
            args += ["--build-arg", f"{name}={os.environ[name]}"]
    checked([*args, REPO], timeout=1200)
    build_seconds["image"] = round(time.monotonic() - started, 1)
    return IMAGE


def in_image(podman: Path, image: str, script: str) -> subprocess.CompletedProcess[str]:
    """`sh -c script` in the image, as its user, with no network."""
    return run([podman, "run", "--rm", *RUNTIME, *ULIMITS, "--network", "none",
                "--entrypoint", "sh", image, "-c", script])  # fmt: skip


def test_image_holds_no_installer_compiler_or_sources(podman: Path, image: str) -> None:
    for tool in ("pip", "pip3", "uv", "gcc", "cc"):
        found = in_image(podman, image, f"command -v {tool}")
        assert found.returncode != 0, f"{tool} is in the image: {found.stdout}"
    for module in ("pip", "setuptools", "uv"):
        imported = in_image(podman, image, f"python -c 'import {module}'")
        assert "ModuleNotFoundError" in imported.stderr, f"{module}: {imported.stderr}"
    sources = in_image(
        podman,
        image,
        "ls -d /src; find / -xdev \\( -name pyproject.toml -o -name uv.lock "
        "-o -path '*/worker/cli.py' \\) 2>/dev/null",
    )
    assert sources.stdout.split() == ["/opt/venv/lib/python3.11/site-packages/worker/cli.py"]
    assert "/src" in sources.stderr, "the builder's /src is in the image"
    assert "ca-certificates.crt" not in in_image(podman, image, "ls /run/secrets 2>&1").stdout


def test_image_runs_as_a_numeric_non_root_user_and_keeps_its_healthcheck(
    podman: Path, image: str, build_seconds: dict[str, float]
) -> None:
    config = json.loads(checked([podman, "image", "inspect", image]))[0]
    assert config["User"] == "10001:10001"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    # For the record (`pytest -rP` shows it); sizes and times are never asserted.
    print(f"image: {config['Size'] / 2**20:.0f} MiB, built in {build_seconds.get('image')} s")
    assert in_image(podman, image, "id -u").stdout.strip() == "10001"


class Container:
    """The image run detached with podman, as the base Deployment's pod would run it."""

    def __init__(self, podman: Path, image: str, env: dict[str, str]) -> None:
        self.podman = podman
        self.name = f"signout-worker-test-{uuid.uuid4().hex[:8]}"
        pod = base_pod()["containers"][0]
        options = [
            *RUNTIME,
            *ULIMITS,
            "--detach",
            "--name", self.name,
            "--network", "host",
            "--user", "10001:10001",
            "--read-only",
            "--read-only-tmpfs=false",
            "--tmpfs", "/tmp:rw,size=64m,mode=1777",  # noqa: S108 - the pod's emptyDir
            "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges",
            "--memory", pod["resources"]["limits"]["memory"].replace("Mi", "m"),
        ]  # fmt: skip
        for key, value in env.items():
            options += ["--env", f"{key}={value}"]
        checked([podman, "run", *options, image])

    def logs(self) -> str:
        result = run([self.podman, "logs", self.name])
        return result.stdout + result.stderr

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(checked([self.podman, "inspect", self.name]))[0]["State"]
        return state

    def remove(self) -> None:
        run([self.podman, "rm", "--force", "--time", "0", self.name])


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


def worker_environment(
    kafka_bootstrap: str, endpoint: Endpoint, topics: dict[str, str], port: int
) -> dict[str, str]:
    return {
        "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SIGNOUT_KAFKA__TOPIC": topics["requests"],
        "SIGNOUT_KAFKA__GROUP_ID": f"container-{uuid.uuid4().hex[:8]}",
        "SIGNOUT_KAFKA__DLQ_TOPIC": topics["dlq"],
        "SIGNOUT_KAFKA__RESULTS_TOPIC": topics["results"],
        "SIGNOUT_COGNITO__ENDPOINT_URL": endpoint.endpoint_url,
        "SIGNOUT_COGNITO__REGION": "us-east-1",
        "SIGNOUT_HTTP__HOST": "127.0.0.1",
        "SIGNOUT_HTTP__PORT": str(port),
        "SIGNOUT_LOG__FORMAT": "json",
        # moto wants credentials for the IAM-signed admin call; IRSA provides them in a pod.
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


async def test_container_signs_out_and_stops_cleanly_on_sigterm(
    podman: Path,
    image: str,
    kafka_bootstrap: str,
    moto_server: Endpoint,
    make_pool: PoolFactory,
    make_topic: TopicFactory,
    containers: list[Container],
) -> None:
    pool = await make_pool(2)
    topic = await make_topic("container", partitions=2)
    results = await make_topic("container-results")
    topics = {"requests": topic, "results": results, "dlq": await make_topic("container-dlq")}
    port = free_port()
    env = worker_environment(kafka_bootstrap, moto_server, topics, port)
    container = Container(podman, image, env)
    containers.append(container)

    token_user, admin_user = pool.users
    requests = {
        "container-token": {"event_id": "container-token", "access_token": token_user.access_token},
        "container-admin": {
            "event_id": "container-admin",
            "user_pool_id": pool.pool_id,
            "username": admin_user.username,
        },
    }
    await publish(
        kafka_bootstrap,
        topic,
        [(key.encode(), json.dumps(value).encode()) for key, value in requests.items()],
    )

    async def ready() -> bool:
        if not container.state()["Running"]:
            pytest.fail(f"the container exited early:\n{container.logs()[-3000:]}")
        try:
            return (await asyncio.to_thread(http_get, port, "/readyz"))[0] == 200
        except OSError:
            return False

    await wait_until(ready, 120, "/readyz")

    async def both_signed_out() -> bool:
        records = [json.loads(r.value) for r in await read_all(kafka_bootstrap, results)]
        done = {r["event_id"]: r["outcome"] for r in records}
        return all(done.get(event) == "signed_out" for event in requests)

    await wait_until(both_signed_out, 90, "two signed_out results")

    lines = container.lines()
    outcomes = {line["event_id"]: line for line in lines if line.get("msg") == "outcome"}
    assert outcomes["container-token"]["reason"] == "global_sign_out"
    assert outcomes["container-admin"]["reason"] == "admin_sign_out"
    started = next(line for line in lines if line.get("msg") == "starting")
    assert started["version"] == "0.1.0", "the installed wheel's metadata, not a source tree"
    assert token_user.access_token not in container.logs()

    status, live = await asyncio.to_thread(http_get, port, "/healthz")
    assert status == 200, live
    status, metrics = await asyncio.to_thread(http_get, port, "/metrics")
    assert status == 200
    assert signed_out_by_token(metrics) == 1.0

    # The image's own HEALTHCHECK, run by podman inside the container.
    health = run([podman, "healthcheck", "run", container.name], timeout=30)
    assert health.returncode == 0, health.stdout + health.stderr

    grace = base_pod()["terminationGracePeriodSeconds"]
    checked([podman, "kill", "--signal", "TERM", container.name])
    code = run([podman, "wait", container.name], timeout=grace + 10).stdout.strip()
    assert code == "0", container.logs()[-3000:]
    messages = [line.get("msg") for line in container.lines()]
    assert "signal received; draining" in messages
    assert messages[-1] == "stopped"
    assert container.state()["OOMKilled"] is False, f"over {memory_limit_mib()} MiB"
