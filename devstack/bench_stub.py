"""Throughput of the Cognito stub against one aiobotocore client.

    .venv/bin/python -m devstack.bench_stub --concurrency 64 --seconds 5 [--admin]
        [--config-json '{"latency": 20}']

Prints requests/s seen by the client and the stub process's CPU time per request (Linux /proc),
which bounds what one core can serve.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from devstack.cognito_stub import StubProcess, make_token


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _worker(client: Any, admin: bool, deadline: float, results: Counter[str]) -> None:
    number = 0
    while time.perf_counter() < deadline:
        number += 1
        try:
            if admin:
                await client.admin_user_global_sign_out(
                    UserPoolId="us-east-1_Bench", Username=f"user-{id(results)}-{number}"
                )
            else:
                await client.global_sign_out(AccessToken=make_token())
            results["ok"] += 1
        except ClientError as exc:
            results[str(exc.response.get("Error", {}).get("Code"))] += 1
        except BotoCoreError as exc:
            results[type(exc).__name__] += 1


async def bench(concurrency: int, seconds: float, admin: bool, config: dict[str, Any]) -> None:
    async with StubProcess(config) as stub:
        client_config = AioConfig(
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=concurrency,
        )
        async with get_session().create_client(
            "cognito-idp",
            region_name="us-east-1",
            endpoint_url=stub.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=client_config,
        ) as client:
            await client.global_sign_out(AccessToken=make_token())  # warm up
            await stub.reset(keep_config=True)
            results: Counter[str] = Counter()
            cpu_before = _cpu_seconds(stub.pid)
            started = time.perf_counter()
            deadline = started + seconds
            await asyncio.gather(
                *(_worker(client, admin, deadline, results) for _ in range(concurrency))
            )
            elapsed = time.perf_counter() - started
            stub_cpu = _cpu_seconds(stub.pid) - cpu_before
        stats = await stub.stats()
    total = sum(results.values())
    print(
        json.dumps(
            {
                "operation": "AdminUserGlobalSignOut" if admin else "GlobalSignOut",
                "concurrency": concurrency,
                "seconds": round(elapsed, 2),
                "requests": total,
                "requests_per_second": round(total / elapsed, 1),
                "results": dict(results),
                "stub_cpu_ms_per_request": round(1000 * stub_cpu / max(total, 1), 3),
                "stub_cpu_share": round(stub_cpu / elapsed, 2),
                "stub_max_in_flight": stats.max_in_flight,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--admin", action="store_true", help="AdminUserGlobalSignOut (signed)")
    parser.add_argument("--config-json", default="{}")
    args = parser.parse_args()
    asyncio.run(bench(args.concurrency, args.seconds, args.admin, json.loads(args.config_json)))


if __name__ == "__main__":
    main()
