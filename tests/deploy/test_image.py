"""What the image does, without a Docker engine: the Dockerfile's own install steps build a
virtualenv, and the Dockerfile's entrypoint runs from it against the local stack.

The builder's RUN lines that call deploy/docker/install.sh are taken from the Dockerfile and run
as they are, with /opt/venv pointed at a temporary directory; the worker then runs with only the
runtime stage's ENV plus SIGNOUT_* settings (as a pod would get them), signs out one user by
access token and one by admin call, answers /healthz, /readyz, /metrics and the image's
HEALTHCHECK, and on SIGTERM drains and exits 0 within the Deployment's grace period.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.moto import MotoServer
from devstack.ports import free_port
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
from tests.deploy.dockerfile import parse
from tests.integration.conftest import publish, read_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

IMAGE_VENV = "/opt/venv"


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/opt/venv of the image, built by the Dockerfile's own RUN steps."""
    uv = find_tool("uv")
    venv = tmp_path_factory.mktemp("image") / "opt-venv"
    runs = [i.command() for i in parse().stage("builder").all("RUN")]
    steps = [run for run in runs if re.search(r"install\.sh (deps|project) ", run)]
    assert len(steps) == 2, runs
    env = {**os.environ, "UV": str(uv), "PYTHON": sys.executable}
    env.pop("VIRTUAL_ENV", None)
    for step in steps:
        command = step.replace(IMAGE_VENV, str(venv))
        result = subprocess.run(  # noqa: S602 - the Dockerfile's RUN line, as the image runs it
            command, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=240
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return venv


def runtime_environment(venv: Path, home: Path) -> dict[str, str]:
    """The runtime stage's ENV, with /opt/venv moved and the base image's PATH."""
    env = {k: v.replace(IMAGE_VENV, str(venv)) for k, v in parse().final.env().items()}
    env["PATH"] = env["PATH"].replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = str(home)
    return env


class ImageProcess:
    """The image's ENTRYPOINT + CMD, run from the virtualenv with a container-like environment."""

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        final = parse().final
        argv = final.last("ENTRYPOINT").exec_form() + final.last("CMD").exec_form()
        executable = Path(env["PATH"].split(":")[0]) / argv[0]
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(executable), *argv[1:]], env=env, cwd=cwd, stdout=log, stderr=log
            )

    def lines(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    async def exit_code(self, within: float) -> int:
        async with asyncio.timeout(within):
            while self.proc.poll() is None:  # noqa: ASYNC110 - polls a child process
                await asyncio.sleep(0.1)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def processes() -> Iterator[list[ImageProcess]]:
    started: list[ImageProcess] = []
    yield started
    for process in started:
        process.kill()


async def test_image_signs_out_and_stops_cleanly_on_sigterm(
    image_venv: Path,
    kafka_bootstrap: str,
    moto_server: MotoServer,
    make_pool: PoolFactory,
    make_topic: TopicFactory,
    tmp_path: Path,
    processes: list[ImageProcess],
) -> None:
    pool = await make_pool(2)
    topic = await make_topic("image", partitions=2)
    results = await make_topic("image-results")
    dlq = await make_topic("image-dlq")
    port = free_port()
    env = runtime_environment(image_venv, tmp_path) | {
        "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SIGNOUT_KAFKA__TOPIC": topic,
        "SIGNOUT_KAFKA__GROUP_ID": f"image-{uuid.uuid4().hex[:8]}",
        "SIGNOUT_KAFKA__DLQ_TOPIC": dlq,
        "SIGNOUT_KAFKA__RESULTS_TOPIC": results,
        "SIGNOUT_COGNITO__ENDPOINT_URL": moto_server.endpoint_url,
        "SIGNOUT_COGNITO__REGION": "us-east-1",
        "SIGNOUT_HTTP__HOST": "127.0.0.1",
        "SIGNOUT_HTTP__PORT": str(port),
        "SIGNOUT_LOG__FORMAT": "json",
        # moto wants credentials for the IAM-signed admin call; IRSA provides them in a pod.
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    worker = ImageProcess(env, cwd=tmp_path, log_path=tmp_path / "worker.log")
    processes.append(worker)

    token_user, admin_user = pool.users
    requests = {
        "image-token": {"event_id": "image-token", "access_token": token_user.access_token},
        "image-admin": {
            "event_id": "image-admin",
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
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker exited early:\n{worker.log_path.read_text()[-3000:]}")
        try:
            return (await asyncio.to_thread(http_get, port, "/readyz"))[0] == 200
        except OSError:
            return False

    await wait_until(ready, 90, "/readyz")

    async def both_signed_out() -> bool:
        records = [json.loads(r.value) for r in await read_all(kafka_bootstrap, results)]
        done = {r["event_id"]: r["outcome"] for r in records}
        return all(done.get(event) == "signed_out" for event in requests)

    await wait_until(both_signed_out, 90, "two signed_out results")

    outcomes = {line["event_id"]: line for line in worker.lines() if line.get("msg") == "outcome"}
    assert outcomes["image-token"]["reason"] == "global_sign_out"
    assert outcomes["image-admin"]["reason"] == "admin_sign_out"
    started = next(line for line in worker.lines() if line.get("msg") == "starting")
    assert started["version"] == "0.1.0", "the installed wheel's metadata, not a source tree"
    assert token_user.access_token not in worker.log_path.read_text()

    status, live = await asyncio.to_thread(http_get, port, "/healthz")
    assert status == 200, live
    status, metrics = await asyncio.to_thread(http_get, port, "/metrics")
    assert status == 200
    assert signed_out_by_token(metrics) == 1.0
    assert 'signout_build_info{version="0.1.0"} 1.0' in metrics

    healthcheck = parse().final.last("HEALTHCHECK").args.split(" CMD ", 1)[1]
    probe = await asyncio.to_thread(
        subprocess.run,  # the image's HEALTHCHECK command, in the same environment
        json.loads(healthcheck),
        env=env,
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr

    # Headroom under the base Deployment's memory limit after real work.
    assert worker.rss_mib() < memory_limit_mib() * 0.75, f"RSS {worker.rss_mib():.0f} MiB"

    worker.proc.send_signal(signal.SIGTERM)
    code = await worker.exit_code(within=base_pod()["terminationGracePeriodSeconds"])
    assert code == 0, worker.log_path.read_text()[-3000:]
    messages = [line.get("msg") for line in worker.lines()]
    assert "signal received; draining" in messages
    assert messages[-1] == "stopped"
