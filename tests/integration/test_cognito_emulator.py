"""The Cognito emulator behaves like Cognito for the two sign-out calls, through aiobotocore."""

from __future__ import annotations

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from devstack.moto import client_kwargs
from tests.conftest import PoolFactory


async def test_global_sign_out_succeeds_once_then_the_token_is_refused(
    make_pool: PoolFactory,
) -> None:
    pool = await make_pool(1)
    token = pool.users[0].access_token
    async with get_session().create_client(
        "cognito-idp", **client_kwargs(pool.endpoint_url)
    ) as idp:
        await idp.global_sign_out(AccessToken=token)
        with pytest.raises(ClientError) as refused:
            await idp.global_sign_out(AccessToken=token)
    assert refused.value.response["Error"]["Code"] == "NotAuthorizedException"


async def test_admin_sign_out_of_an_unknown_user_is_user_not_found(make_pool: PoolFactory) -> None:
    pool = await make_pool(1)
    async with get_session().create_client(
        "cognito-idp", **client_kwargs(pool.endpoint_url)
    ) as idp:
        await idp.admin_user_global_sign_out(
            UserPoolId=pool.pool_id, Username=pool.users[0].username
        )
        with pytest.raises(ClientError) as missing:
            await idp.admin_user_global_sign_out(UserPoolId=pool.pool_id, Username="nobody")
    assert missing.value.response["Error"]["Code"] == "UserNotFoundException"
