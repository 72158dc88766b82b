"""Fixtures for the observability tests: Prometheus' binaries, a worker running in this event loop,
and a client for its HTTP probes.

`promtool` and `prometheus` come from the machine (Debian's `prometheus` package in CI). Without
them these tests skip locally and fail in CI (`CI=true`), where they must not be skipped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import names as names  # re-exported fixture
from worker.app import Worker
from worker.metrics import Metrics
from worker.settings import Settings


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (Debian/Ubuntu: apt-get install prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return _binary("prometheus")


class Probe:
    """GET the worker's (or any) HTTP endpoints on 127.0.0.1."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self._session = session
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self._session.get(self.base + path) as response:
            return response.status, await response.json()

    async def text(self, path: str, **headers: str) -> tuple[int, str, str]:
        async with self._session.get(self.base + path, headers=headers) as response:
            return response.status, response.headers["Content-Type"], await response.text()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Worker]:
    """The real `Worker` as a task of this loop, yielded once its HTTP port is bound; on exit it
    is stopped through `worker.stop` and must finish (drain included) within 30 s."""
    worker = Worker(settings, metrics or Metrics())
    task = asyncio.create_task(worker.run(), name="worker")
    try:
        async with asyncio.timeout(30):
            while worker.http_port is None:
                if task.done():
                    task.result()  # raises what stopped the worker
                    raise RuntimeError("the worker returned before serving HTTP")
                await asyncio.sleep(0.02)
        yield worker
    finally:
        worker.stop.set()
        async with asyncio.timeout(30):
            await task


async def eventually(
    check: Any, within: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Await `check()` until it returns something truthy; fail after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {within}s (last: {last!r})")
