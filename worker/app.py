"""The one place that builds and wires everything: lifecycle, signals, exit code.

Start order: logging, metrics, Cognito client, producer, consumer; shutdown in reverse, each
cleanup logged rather than raised. SIGTERM/SIGINT set the stop event; the consumer loop drains.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from worker import __version__
from worker.budgets import Budgets
from worker.buffer import RecordBuffer
from worker.cognito import CognitoSigner
from worker.committer import Committer
from worker.connection import client_options
from worker.consumer import ConsumerLoop, LoopTimings
from worker.deadletter import KafkaDeadLetters, kafka_producers
from worker.handler import Handler
from worker.health import Health
from worker.http import build_app, start_server
from worker.lag import LagMeter
from worker.metrics import Metrics
from worker.offsets import OffsetTracker
from worker.rebalance import RebalanceListener
from worker.records import Lane
from worker.repeats import collapsed, reporting
from worker.routing import Router
from worker.settings import Settings
from worker.source import KafkaSource, consumer_options
from worker.startup import Deadline, bounded, check_cluster
from worker.window import BudgetOf, Parking, RunRecord, Window

log = logging.getLogger(__name__)

# Fetched records waiting for a slot: enough to keep the window full between fetches, small
# enough that a backlog of any size costs a few megabytes.
BUFFER_RECORDS_PER_SLOT = 8
BUFFER_MAX_BYTES = 8 * 1024 * 1024
# Records waiting for a busy budget, read past so that another budget's records behind them are
# reached (a Region's backlog does not hold back another's): a few megabytes, bounded.
PARKING = Parking(records=4096, bytes=8 * 1024 * 1024)
# A record waiting for its budget keeps its slot this long: shorter waits are a budget's spacing
# at a rate above what the window can use, not a budget holding records back.
PARK_GRACE_SECONDS = 0.01
# Parked tasks per budget beyond which its further records wait as records, not tasks (a task costs
# a few kilobytes, a record its size): 256 keep any budget's limiter fed.
DEFER_AFTER = 256
# The whole group waits for the slowest member's revocation: don't hold it longer than this.
REVOKE_WAIT_SECONDS = 10.0
# Of the shutdown budget, this much is kept for cancelling, the last commit and closing clients.
CLOSE_RESERVE_SECONDS = 5.0
CANCEL_WAIT_SECONDS = 2.0
# With an urgent topic, bulk records never hold the last 1/8 of the window's slots.
URGENT_RESERVE_DIVISOR = 8
# The collector: a record's objects die young, by reference count; a young collection only walks
# the survivors, so running one every 10,000 allocations instead of 700 costs the same memory
# bound and a fraction of the CPU (at full speed the default spent about 8% of it collecting).
YOUNG_COLLECTION_THRESHOLD = 10_000


@dataclass
class RunOptions:
    until_idle_seconds: float | None = None


class Worker:
    """Everything one replica runs; `run()` returns once stopped and drained."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        # The default Region's series exist from the start; others from their first request.
        self.metrics.start_region(settings.cognito.region)
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
            await stack.enter_async_context(reporting())  # counts of collapsed repeats
            await self._serve_http(stack)
            loop = await self._start_checked(stack, options)
            if loop is not None:
                await loop.run(self.stop, options.until_idle_seconds)
            self.health.stopping()

    async def _start_checked(
        self, stack: AsyncExitStack, options: RunOptions
    ) -> ConsumerLoop | None:
        """Cluster check, then the start calls, within one deadline; None if stopped meanwhile.

        Runs after the HTTP server is up, so /readyz answers 503 (not "connection refused")
        while a slow cluster is checked. StartupError (one line, an exit code) ends the run.
        """
        kafka = self.settings.kafka
        deadline = Deadline(self.settings.startup_timeout_seconds)
        with collapsed():
            # The check keeps the deadline itself, to say what it was waiting for.
            await bounded(check_cluster(kafka, kafka.topics(), deadline), self.stop, None)
            if self.stop.is_set():
                return None
            built = self._build(stack, options)
            return await bounded(built, self.stop, deadline, "kafka: starting the clients")

    async def _build(self, stack: AsyncExitStack, options: RunOptions) -> ConsumerLoop:
        settings = self.settings
        router = Router(settings.cognito, settings.rate)
        budgets = Budgets(router.budget_for, self.metrics, burst=settings.rate.burst)
        signer = await stack.enter_async_context(
            CognitoSigner(settings.cognito, self.metrics, settings.max_in_flight)
        )
        sink = await stack.enter_async_context(
            KafkaDeadLetters(
                kafka_producers(settings.kafka),
                settings.kafka,
                redact=settings.dlq.redact_tokens,
                metrics=self.metrics,
                health=self.health,
            )
        )
        buffer_records = settings.max_in_flight * BUFFER_RECORDS_PER_SLOT
        consumer = AIOKafkaConsumer(
            **client_options(settings.kafka), **consumer_options(settings.kafka, buffer_records)
        )
        source = KafkaSource(consumer)
        tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        committer = Committer(
            source,
            tracker,
            min_gap=settings.commit_interval_seconds,
            on_committed=self.metrics.last_commit.set,
        )
        # The handler parks records in the window while they wait for a budget: built after it.
        window = self._window(
            lambda record: handler.handle(record),
            lambda record: handler.budget_of(record),
            tracker,
            committer,
        )
        handler = Handler(
            signer,
            sink,
            budgets,
            self.metrics,
            router=router,
            parking=window,
            urgent_topic=settings.kafka.urgent_topic,
            retry=settings.retry,
            dedup=settings.dedup,
            admin_enabled=settings.cognito.admin_enabled,
            progress=self.health,
        )
        loop = self._loop(source, window, committer, budgets)
        await consumer.start()
        stack.push_async_callback(_quietly, "consumer", consumer.stop)
        return loop

    def _window(
        self,
        run: RunRecord,
        budget_of: BudgetOf,
        tracker: OffsetTracker[TopicPartition],
        committer: Committer,
    ) -> Window:
        settings = self.settings
        urgent = settings.kafka.urgent_topic

        def lane_of(partition: TopicPartition) -> Lane:
            return Lane.URGENT if partition.topic == urgent else Lane.BULK

        def finished(partition: TopicPartition) -> None:
            committer.finished(partition)
            self.health.record_finished()

        buffer: RecordBuffer[TopicPartition] = RecordBuffer(
            settings.max_in_flight * BUFFER_RECORDS_PER_SLOT, BUFFER_MAX_BYTES, lane_of
        )
        reserve = max(settings.max_in_flight // URGENT_RESERVE_DIVISOR, 1) if urgent else 0
        return Window(
            settings.max_in_flight,
            run,
            tracker,
            buffer,
            lane_of=lane_of,
            urgent_reserve=reserve,
            parking=PARKING,
            budget_of=budget_of,
            defer_after=DEFER_AFTER,
            park_grace=PARK_GRACE_SECONDS,
            on_size=self.metrics.inflight.set,
            on_done=finished,
        )

    def _loop(
        self, source: KafkaSource, window: Window, committer: Committer, budgets: Budgets
    ) -> ConsumerLoop:
        settings = self.settings
        lag = LagMeter(source, window.tracker, self.metrics)
        loop = ConsumerLoop(
            source,
            window,
            committer,
            lag,
            self.health,
            self._timings(),
            urgent_topic=settings.kafka.urgent_topic,
            on_commit_stall=self.metrics.commit_stall.set,
        )

        def joined() -> None:
            loop.joined.set()
            self.health.joined(True)

        def assigned(partitions: int, total: int) -> None:
            self.metrics.assigned_partitions.set(partitions)
            budgets.set_share(partitions, total)

        topics = settings.kafka.source_topics()
        listener = RebalanceListener(
            source,
            window,
            committer,
            lag,
            topics=topics,
            revoke_wait=min(settings.shutdown_timeout_seconds, REVOKE_WAIT_SECONDS),
            cancel_wait=CANCEL_WAIT_SECONDS,
            on_assignment=assigned,
            on_joined=joined,
        )
        source.subscribe(topics, listener)
        return loop

    def _timings(self) -> LoopTimings:
        budget = self.settings.shutdown_timeout_seconds
        reserve = min(CLOSE_RESERVE_SECONDS, budget / 5)
        return LoopTimings(
            drain_seconds=budget - reserve, cancel_seconds=min(CANCEL_WAIT_SECONDS, reserve / 2)
        )

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


async def _quietly(name: str, close: Callable[[], Awaitable[None]]) -> None:
    """A failing cleanup is logged, not raised: the rest still gets closed."""
    try:
        await close()
    except Exception as exc:
        log.warning("cleanup failed", extra={"component": name, "error": type(exc).__name__})


def tune_collector() -> None:
    """For the process that runs the worker (not a test's): collect young objects less often, and
    leave everything loaded so far (modules, settings, models) out of every later collection."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
    gc.freeze()


async def run_worker(settings: Settings, options: RunOptions | None = None) -> int:
    worker = Worker(settings)
    worker.install_signal_handlers()
    await worker.run(options)
    return 0
