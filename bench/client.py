"""A bare aiobotocore client against the stub: the customer's own app sharing the quota, and the
64-task loop the worker's raw throughput is compared with (`python -m bench.client`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from devstack.cognito_stub import make_token

# Whatever the other client's calls are about, the stub records them under this pool.
OTHER_POOL = "us-east-1_OtherApp"


@contextlib.asynccontextmanager
async def cognito(endpoint: str, connections: int) -> AsyncIterator[Any]:
    config = AioConfig(
        retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=connections
    )
    async with get_session().create_client(
        "cognito-idp",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    ) as client:
        yield client


async def _quietly(call: Any) -> None:
    with contextlib.suppress(ClientError, BotoCoreError):
        await call


async def other_app(endpoint: str, per_second: float, stop: asyncio.Event) -> None:
    """Calls at a steady `per_second`, whatever the answers (an app that does not back off)."""
    async with cognito(endpoint, 16) as client:
        started, sent, pending = time.monotonic(), 0, set()
        while not stop.is_set():
            call = client.admin_user_global_sign_out(UserPoolId=OTHER_POOL, Username=f"u{sent}")
            task = asyncio.create_task(_quietly(call))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
            await asyncio.sleep(max(started + sent / per_second - time.monotonic(), 0))
        await asyncio.gather(*pending)


async def bare_loop(endpoint: str, requests: int, concurrency: int, wait: bool = False) -> None:
    """`requests` GlobalSignOut calls from `concurrency` tasks; tokens made before the first.

    With `wait`, the first call waits for a line on stdin after "ready" (a start signal)."""
    tokens = [make_token() for _ in range(requests)]
    async with cognito(endpoint, concurrency) as client:
        print("ready", flush=True)
        if wait:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def one_task() -> None:
            while tokens:
                await _quietly(client.global_sign_out(AccessToken=tokens.pop()))

        await asyncio.gather(*(one_task() for _ in range(concurrency)))
    json.dump({"requests": requests}, sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("endpoint")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--wait", action="store_true", help="start calling on a line on stdin")
    args = parser.parse_args()
    asyncio.run(bare_loop(args.endpoint, args.requests, args.concurrency, args.wait))


if __name__ == "__main__":
    main()
