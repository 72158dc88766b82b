"""The one place that builds and wires everything: lifecycle, signals, exit code.

Start order: logging, metrics, Cognito client, producer, consumer; shutdown in reverse, each
cleanup logged rather than raised. SIGTERM/SIGINT set the stop event; the consumer loop drains.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer

from worker import __version__
from worker.cognito import CognitoSigner
from worker.connection import client_options
from worker.consumer import ConsumerLoop, consumer_options
from worker.deadletter import KafkaDeadLetters, kafka_producers
from worker.handler import Handler
from worker.health import Health
from worker.http import build_app, start_server
from worker.metrics import Metrics
from worker.ratelimit import RateLimiter, partition_share
from worker.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    until_idle_seconds: float | None = None


class Worker:
    """Everything one replica runs; `run()` returns once stopped and drained."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.stop = asyncio.Event()
        self.health = Health(
            time.monotonic,
            settings.http.poll_stall_seconds,
            settings.http.progress_stall_seconds,
        )
        self.http_port: int | None = None

    async def run(self, options: RunOptions | None = None) -> None:
        options = options or RunOptions()
        started = time.monotonic()
        _warn_about_stall_settings(self.settings)
        log.info("starting", extra={"version": __version__, "topic": self.settings.kafka.topic})
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._log_stopped, started)
            await self._serve_http(stack)
            loop = await self._build(stack, options)
            await loop.run(self.stop, options.until_idle_seconds)
            self.health.stopping()

    async def _build(self, stack: AsyncExitStack, options: RunOptions) -> ConsumerLoop:
        settings = self.settings
        limiter = RateLimiter(
            settings.rate.per_second,
            burst=settings.rate.burst,
            on_change=self.metrics.rate_limit.set,
        )
        signer = await stack.enter_async_context(
            CognitoSigner(settings.cognito, self.metrics, settings.max_in_flight)
        )
        sink = await stack.enter_async_context(
            KafkaDeadLetters(
                kafka_producers(settings.kafka),
                settings.kafka,
                redact=settings.dlq.redact_tokens,
                metrics=self.metrics,
                health=_DeadLetterLog(),
            )
        )
        handler = Handler(
            signer,
            sink,
            limiter,
            self.metrics,
            retry=settings.retry,
            dedup=settings.dedup,
            admin_enabled=settings.cognito.admin_enabled,
            progress=self.health,
        )
        consumer = AIOKafkaConsumer(**client_options(settings.kafka), **consumer_options(settings))
        loop = ConsumerLoop(
            settings, consumer, handler, self.metrics, self.health, self._share(limiter)
        )
        loop.subscribe()
        await consumer.start()
        stack.push_async_callback(_quietly, "consumer", consumer.stop)
        return loop

    def _share(self, limiter: RateLimiter) -> Callable[[int, int], None]:
        def on_assignment(assigned: int, total: int) -> None:
            share = partition_share(self.settings.rate.per_second, assigned, total)
            limiter.set_ceiling(share)
            log.info("rate share", extra={"per_second": round(share, 3), "partitions": assigned})

        return on_assignment

    async def _serve_http(self, stack: AsyncExitStack) -> None:
        app = build_app(self.metrics.registry, self.health)
        runner, self.http_port = await start_server(self.settings.http, app)
        stack.push_async_callback(_quietly, "http", runner.cleanup)
        log.info("serving /metrics /healthz /readyz", extra={"port": self.http_port})

    async def _log_stopped(self, started: float) -> None:
        log.info("stopped", extra={"uptime_seconds": round(time.monotonic() - started, 3)})

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal received; draining", extra={"signal": sig.name})
        self.health.stopping()
        self.stop.set()


def _warn_about_stall_settings(settings: Settings) -> None:
    """A stall shorter than one hung call plus its backoff would restart pods during an outage."""
    slowest = settings.cognito.timeout_seconds + 1 + settings.retry.max_delay_seconds
    if settings.http.progress_stall_seconds <= slowest:
        log.warning(
            "SIGNOUT_HTTP__PROGRESS_STALL_SECONDS is not above the Cognito timeout plus the "
            "longest backoff: /healthz may fail during a Cognito outage",
            extra={"progress_stall_seconds": settings.http.progress_stall_seconds},
        )


class _DeadLetterLog:
    """DLQ health as log lines on each change (readiness does not follow it yet)."""

    def __init__(self) -> None:
        self._failing = False

    def dead_letters_failing(self, failing: bool) -> None:
        if failing != self._failing:
            self._failing = failing
            log.log(
                logging.ERROR if failing else logging.INFO,
                "dead-letter writes failing: %s",
                failing,
            )


async def _quietly(name: str, close: Callable[[], Awaitable[None]]) -> None:
    """A failing cleanup is logged, not raised: the rest still gets closed."""
    try:
        await close()
    except Exception as exc:
        log.warning("cleanup failed", extra={"component": name, "error": type(exc).__name__})


async def run_worker(settings: Settings, options: RunOptions | None = None) -> int:
    worker = Worker(settings)
    worker.install_signal_handlers()
    await worker.run(options)
    return 0
