"""Session fixtures for the real parts: a local Apache Kafka broker and a Cognito emulator (moto).

Both start once per session, on free loopback ports, only when a test asks for them.
`KAFKA_BOOTSTRAP_SERVERS` points the suite at an existing broker instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack import broker as local_broker
from devstack.cognito_stub import StubProcess
from devstack.moto import MotoServer, Pool, seed_pool

# moto needs some credentials for the IAM-authorised admin calls; never real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Started from pytest's main thread, so the broker dies with the test run.
    broker = local_broker.start(tmp_path_factory.mktemp("kafka"), die_with_parent=True)
    try:
        yield str(broker.bootstrap)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


PoolFactory = Callable[[int], Awaitable[Pool]]


@pytest.fixture
def make_pool(moto_server: MotoServer) -> PoolFactory:
    """Create a fresh user pool with n users holding real access tokens."""

    async def make(users: int) -> Pool:
        return await seed_pool(moto_server.endpoint_url, users, prefix=uuid.uuid4().hex[:8])

    return make


TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_topic(kafka_bootstrap: str) -> AsyncIterator[TopicFactory]:
    """Create uniquely named topics (1 partition unless told)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()

    async def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        await admin.create_topics([NewTopic(name, partitions, 1)])
        return name

    try:
        yield make
    finally:
        await admin.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
async def cognito_stub() -> AsyncIterator[StubProcess]:
    """The purpose-built Cognito stub (latency, quota, faults, a record of every call)."""
    async with StubProcess({"seed": 7}) as stub:
        yield stub
