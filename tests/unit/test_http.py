"""http.py: no version banner, and a connection without a complete request is closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from worker.health import Health
from worker.http import build_app, start_server
from worker.settings import HttpSettings

READ_TIMEOUT = 0.5


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = build_app(CollectorRegistry(), Health(time.monotonic))
    runner, bound = await start_server(
        HttpSettings(host="127.0.0.1", port=0), app, read_timeout=READ_TIMEOUT
    )
    try:
        yield bound
    finally:
        await runner.cleanup()


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()  # until the server closes ("Connection: close")
    writer.close()
    await writer.wait_closed()
    return answer


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/nowhere"])
async def test_no_response_names_the_server_software(port: int, path: str) -> None:
    answer = await _raw(
        port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 ")
    assert b"\r\nserver:" not in head
    assert b"python" not in head
    assert b"aiohttp" not in head


async def test_a_client_trickling_its_headers_is_cut_off(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    closed = asyncio.create_task(reader.read())
    for n in range(100):  # one more header line every 0.1 s: never a complete request
        if closed.done():
            break
        writer.write(f"X-Slow-{n}: y\r\n".encode())
        await asyncio.sleep(0.1)
    assert closed.done()  # the server gave up long before 10 s of trickling
    assert await closed == b""
    writer.close()
