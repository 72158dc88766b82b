"""Multi-Region sign-out through moto: one emulator per Region, tokens routed by their `iss`.

An unsigned GlobalSignOut carries no Region, and moto looks such calls up in its default Region,
so each Region gets its own moto process whose default Region is that Region, as a regional
Cognito endpoint knows its Region from its host. The recorder of each process keeps every request
(headers included), which shows where each call went and with which access key it was signed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from pydantic import SecretStr

from devstack.moto import PASSWORD, login
from devstack.ports import free_port
from tests.unit.fakes import make_jwt
from worker.cognito import CognitoSigner
from worker.errors import PermanentError, Reason
from worker.events import AdminTarget, TokenTarget
from worker.metrics import Metrics
from worker.roles import RolePolicy, utc_now
from worker.routing import Router
from worker.settings import CognitoSettings

pytestmark = pytest.mark.integration

REGIONS = ("us-east-1", "eu-west-1")
OTHER_ACCOUNT = "111111111111"
ROLE_ARN = f"arn:aws:iam::{OTHER_ACCOUNT}:role/signout-admin"
_LAUNCH = (
    "import sys; from moto.core.responses import BaseResponse;"
    "BaseResponse.default_region = sys.argv[1];"
    "from moto.server import main; main(sys.argv[2:])"
)


class RegionalMoto:
    """moto in its own process, answering unsigned calls as `region`, recording every request."""

    def __init__(self, region: str, state: Path) -> None:
        self.region = region
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.recording = state / f"moto-{region}.jsonl"
        env = {
            **os.environ,
            "MOTO_ENABLE_RECORDING": "1",
            "MOTO_RECORDER_FILEPATH": str(self.recording),
        }
        args = [region, "-H", "127.0.0.1", "-p", str(self.port)]
        with (state / f"moto-{region}.log").open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCH, *args],
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1):  # noqa: S310
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto for {self.region} not ready")

    def requests(self, operation: str) -> list[dict[str, Any]]:
        """Recorded requests of one Cognito/STS operation (by X-Amz-Target or Action)."""
        if not self.recording.exists():
            return []
        rows = [json.loads(line) for line in self.recording.read_text().splitlines()]
        return [r for r in rows if _operation(r) == operation]

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)


def body_of(row: dict[str, Any]) -> str:
    body = str(row.get("body") or "")
    return base64.b64decode(body).decode() if row.get("body_encoded") else body


def _operation(row: dict[str, Any]) -> str:
    target = row["headers"].get("X-Amz-Target", "")
    if target:
        return str(target).rsplit(".", 1)[-1]
    return "AssumeRole" if "Action=AssumeRole" in body_of(row) else ""


def access_key_of(row: dict[str, Any]) -> str | None:
    auth = str(row["headers"].get("Authorization", ""))
    return auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else None


@pytest.fixture(scope="module")
def motos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RegionalMoto]]:
    state = tmp_path_factory.mktemp("regions")
    started: dict[str, RegionalMoto] = {}
    try:
        for region in REGIONS:
            started[region] = RegionalMoto(region, state)
        yield started
    finally:
        for server in started.values():
            server.stop()


@dataclass
class Seeded:
    pool_id: str
    users: list[tuple[str, str]]  # (username, access token)


async def seed(endpoint_url: str, region: str, users: int, **credentials: str) -> Seeded:
    """A pool in `region` with confirmed users holding real access tokens."""
    keys = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    async with get_session().create_client(
        "cognito-idp", region_name=region, endpoint_url=endpoint_url, **keys
    ) as idp:
        pool_id = (await idp.create_user_pool(PoolName=f"pool-{region}"))["UserPool"]["Id"]
        client = await idp.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName="c",
            ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )
        client_id = client["UserPoolClient"]["ClientId"]
        seeded = Seeded(pool_id, [])
        for i in range(users):
            name = f"{region}-user-{i}"
            await idp.admin_create_user(UserPoolId=pool_id, Username=name, MessageAction="SUPPRESS")
            await idp.admin_set_user_password(
                UserPoolId=pool_id, Username=name, Password=PASSWORD, Permanent=True
            )
            user = await login(idp, pool_id, client_id, name)
            seeded.users.append((name, user.access_token))
        return seeded


def settings_for(motos: dict[str, RegionalMoto], **extra: Any) -> CognitoSettings:
    endpoints = {region: server.endpoint_url for region, server in motos.items()}
    return CognitoSettings.model_validate({"endpoint_url": endpoints, **extra})


@pytest.fixture
async def signer_of() -> AsyncIterator[Any]:
    stack: list[CognitoSigner] = []

    async def make(settings: CognitoSettings, **kwargs: Any) -> CognitoSigner:
        signer = CognitoSigner(settings, Metrics(), 16, **kwargs)
        stack.append(await signer.__aenter__())
        return signer

    yield make
    for signer in stack:
        await signer.__aexit__(None, None, None)


async def still_valid(endpoint_url: str, region: str, token: str) -> bool:
    async with get_session().create_client(
        "cognito-idp", region_name=region, endpoint_url=endpoint_url
    ) as idp:
        try:
            await idp.get_user(AccessToken=token)
        except idp.exceptions.NotAuthorizedException:
            return False
    return True


async def test_every_token_of_both_regions_is_signed_out_in_its_own_region(
    motos: dict[str, RegionalMoto], signer_of: Any
) -> None:
    pools = {r: await seed(motos[r].endpoint_url, r, 3) for r in REGIONS}
    settings = settings_for(motos)
    router, signer = Router(settings), await signer_of(settings)
    before = {r: len(motos[r].requests("GlobalSignOut")) for r in REGIONS}
    targets = [TokenTarget(SecretStr(t)) for p in pools.values() for _, t in p.users]
    await asyncio.gather(*(signer.sign_out(t, router.route(t)) for t in targets))
    for region, pool in pools.items():
        assert pool.pool_id.startswith(region + "_")
        calls = len(motos[region].requests("GlobalSignOut")) - before[region]
        assert calls == len(pool.users)  # each token went to its own Region's endpoint
        for _, token in pool.users:
            assert not await still_valid(motos[region].endpoint_url, region, token)
    assert signer.clients == {(r, None) for r in REGIONS}


async def test_admin_requests_for_users_of_both_regions(
    motos: dict[str, RegionalMoto], signer_of: Any
) -> None:
    pools = {r: await seed(motos[r].endpoint_url, r, 2) for r in REGIONS}
    settings = settings_for(motos)
    signer = await signer_of(settings)
    for pool in pools.values():
        for name, _ in pool.users:
            await signer.sign_out(AdminTarget(pool.pool_id, name))  # routed by the signer
    for region, pool in pools.items():
        for _, token in pool.users:
            assert not await still_valid(motos[region].endpoint_url, region, token)
    # A user of the eu-west-1 pool is unknown to us-east-1: the pool id chose the Region.
    name = pools["eu-west-1"].users[0][0]
    with pytest.raises(PermanentError) as wrong:
        await signer.sign_out(
            AdminTarget(pools["eu-west-1"].pool_id, name),
            Router(settings).route(AdminTarget(pools["us-east-1"].pool_id, name)),
        )
    assert wrong.value.reason in (Reason.USER_NOT_FOUND, Reason.RESOURCE_NOT_FOUND)


async def test_a_newer_form_issuer_is_sent_to_its_region(
    motos: dict[str, RegionalMoto], signer_of: Any
) -> None:
    """moto only knows tokens it issued (all in the older form): this one is refused there, by
    Cognito's code, which shows the call reached the eu-west-1 endpoint and nothing else."""
    pool = "eu-west-1_NewerForm1"
    token = make_jwt(
        exp=4_000_000_000, iss=f"https://issuer-cognito-idp.eu-west-1.amazonaws.com/{pool}"
    )
    signer = await signer_of(settings_for(motos))
    before = len(motos["eu-west-1"].requests("GlobalSignOut"))
    with pytest.raises(PermanentError) as refused:
        await signer.sign_out(TokenTarget(SecretStr(token)))
    assert refused.value.code == "NotAuthorizedException"
    assert len(motos["eu-west-1"].requests("GlobalSignOut")) == before + 1
    assert signer.clients == {("eu-west-1", None)}


class CountingListener:
    """A TCP listener standing in for a foreign host: counts connections."""

    def __init__(self) -> None:
        self.connections = 0

    async def __aenter__(self) -> CountingListener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, _r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


async def test_an_unknown_region_or_foreign_host_is_token_invalid_without_a_connection(
    motos: dict[str, RegionalMoto], signer_of: Any
) -> None:
    async with CountingListener() as foreign:
        issuers = [
            "https://cognito-idp.xx-fake-9.amazonaws.com/xx-fake-9_abc",
            f"http://127.0.0.1:{foreign.port}/us-east-1_abc",
            f"https://127.0.0.1:{foreign.port}/us-east-1_abc",
            f"https://cognito-idp.us-east-1.amazonaws.com@127.0.0.1:{foreign.port}/us-east-1_abc",
            "https://cognito-idp.us-east-1.amazonaws.com.evil.com/us-east-1_abc",
        ]
        settings = settings_for(motos, endpoint_url=f"http://127.0.0.1:{foreign.port}/{{region}}")
        signer = await signer_of(settings)
        for issuer in issuers:
            token = TokenTarget(SecretStr(make_jwt(exp=4_000_000_000, iss=issuer)))
            with pytest.raises(PermanentError) as refused:
                await signer.sign_out(token)
            assert (refused.value.reason, refused.value.code) == (Reason.TOKEN_INVALID, "Local")
        await asyncio.sleep(0.2)  # any connection attempt would have been accepted by now
        assert foreign.connections == 0
        assert signer.clients == frozenset()


class FakeClock:
    def __init__(self) -> None:
        self.ahead = timedelta()

    def __call__(self) -> datetime:
        return utc_now() + self.ahead


async def test_cross_account_admin_uses_the_assumed_roles_credentials_and_refreshes_them(
    motos: dict[str, RegionalMoto], signer_of: Any
) -> None:
    moto = motos["eu-west-1"]
    async with get_session().create_client(
        "sts", region_name="eu-west-1", endpoint_url=moto.endpoint_url
    ) as sts:
        seeder = (await sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="seed"))["Credentials"]
    pool = await seed(
        moto.endpoint_url,
        "eu-west-1",
        3,
        aws_access_key_id=seeder["AccessKeyId"],
        aws_secret_access_key=seeder["SecretAccessKey"],
        aws_session_token=seeder["SessionToken"],
    )
    # Without the role, the worker's own account has no such pool.
    own = await signer_of(settings_for(motos))
    with pytest.raises(PermanentError) as missing:
        await own.sign_out(AdminTarget(pool.pool_id, pool.users[0][0]))
    assert missing.value.reason is Reason.RESOURCE_NOT_FOUND

    clock = FakeClock()
    policy = RolePolicy(duration_seconds=900, refresh_at=0.8, clock=clock)
    settings = settings_for(
        motos, accounts={pool.pool_id: "other"}, admin_roles={"other": ROLE_ARN}
    )
    signer = await signer_of(settings, role_policy=policy)
    before = len(moto.requests("AdminUserGlobalSignOut"))
    await signer.sign_out(AdminTarget(pool.pool_id, pool.users[0][0]))
    await signer.sign_out(AdminTarget(pool.pool_id, pool.users[1][0]))
    clock.ahead = timedelta(seconds=900 * 0.8 + 5)  # past the refresh point, before expiry
    await signer.sign_out(AdminTarget(pool.pool_id, pool.users[2][0]))

    for _, token in pool.users:
        assert not await still_valid(moto.endpoint_url, "eu-west-1", token)
    keys = [access_key_of(r) for r in moto.requests("AdminUserGlobalSignOut")[before:]]
    assert len(keys) == 3
    assert "testing" not in keys  # never the worker's own credentials
    assert keys[0] == keys[1]  # cached while fresh
    assert keys[2] != keys[1]  # renewed after the refresh point
    assume = [r for r in moto.requests("AssumeRole") if "signout-worker" in body_of(r)]
    assert len(assume) == 2
    assert signer.clients == {("eu-west-1", ROLE_ARN)}
