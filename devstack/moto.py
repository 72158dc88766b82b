"""Moto's Cognito emulator in server mode, and user pools seeded with real access tokens.

The emulator runs in its own process on a free loopback port, answering as one Region: an unsigned
GlobalSignOut carries no Region and moto looks it up in its default Region, so several Regions
need one process each (as a regional Cognito endpoint knows its Region from its host). A pool is
seeded with confirmed users and real access tokens through the same aiobotocore client as the
worker. Everything started here is stopped by `stop()`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

from devstack.ports import free_port

REGION = "us-east-1"  # moto's own default Region for unsigned calls
PASSWORD = "Demo-Passw0rd!"  # noqa: S105 - throwaway users in a local emulator
# moto.server with its default Region (for unsigned calls) set to argv[1].
_LAUNCH = (
    "import sys; from moto.core.responses import BaseResponse;"
    "BaseResponse.default_region = sys.argv[1];"
    "from moto.server import main; main(sys.argv[2:])"
)


class MotoServer:
    """moto's Cognito emulator in server mode, answering as `region`, in its own process."""

    def __init__(self, log_path: Path | None = None, region: str = REGION) -> None:
        self.region = region
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        args = [region, "-H", "127.0.0.1", "-p", str(self.port)]
        command = [sys.executable, "-c", _LAUNCH, *args]
        with open(log_path or os.devnull, "ab") as out:
            self._proc = subprocess.Popen(command, stdout=out, stderr=out, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1):  # noqa: S310
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server not ready within {timeout:.0f}s")

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


@dataclass
class User:
    username: str
    access_token: str = field(repr=False)


@dataclass
class Pool:
    endpoint_url: str
    pool_id: str
    client_id: str
    users: list[User]
    region: str = REGION


def client_kwargs(endpoint_url: str, region: str = REGION) -> dict[str, Any]:
    return {
        "region_name": region,
        "endpoint_url": endpoint_url,
        "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
    }


async def seed_pool(
    endpoint_url: str, users: int, prefix: str = "user", region: str = REGION
) -> Pool:
    """Create a pool in `region` and `users` confirmed users, each with a real access token."""
    kwargs = client_kwargs(endpoint_url, region)
    async with get_session().create_client("cognito-idp", **kwargs) as idp:
        pool_id = (await idp.create_user_pool(PoolName=f"{prefix}-pool"))["UserPool"]["Id"]
        client = await idp.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName=f"{prefix}-client",
            ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )
        client_id = client["UserPoolClient"]["ClientId"]
        names = [f"{prefix}-{i:04d}" for i in range(users)]
        created = await asyncio.gather(*(_user(idp, pool_id, client_id, n) for n in names))
        return Pool(endpoint_url, pool_id, client_id, list(created), region)


async def add_users(pool: Pool, names: list[str]) -> None:
    """Users without a password or token: enough for admin sign-outs, and quick to create."""
    kwargs = client_kwargs(pool.endpoint_url, pool.region)
    async with get_session().create_client("cognito-idp", **kwargs) as idp:
        for name in names:
            await idp.admin_create_user(
                UserPoolId=pool.pool_id, Username=name, MessageAction="SUPPRESS"
            )


async def _user(idp: Any, pool_id: str, client_id: str, username: str) -> User:
    await idp.admin_create_user(UserPoolId=pool_id, Username=username, MessageAction="SUPPRESS")
    await idp.admin_set_user_password(
        UserPoolId=pool_id, Username=username, Password=PASSWORD, Permanent=True
    )
    return await login(idp, pool_id, client_id, username)


async def login(idp: Any, pool_id: str, client_id: str, username: str) -> User:
    auth = await idp.admin_initiate_auth(
        UserPoolId=pool_id,
        ClientId=client_id,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": PASSWORD},
    )
    return User(username, auth["AuthenticationResult"]["AccessToken"])
