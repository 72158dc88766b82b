"""ratelimit.py: a token bucket on a fake clock whose sleep only moves the clock."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.fakes import FakeClock, FakeSleep
from worker.ratelimit import MIN_RATE, RateLimiter


def _limiter(
    rate: float,
    *,
    burst: float = 1.0,
    decrease_factor: float = 0.75,
    decrease_interval: float = 1.0,
    increase_fraction: float = 0.05,
) -> tuple[RateLimiter, FakeClock, FakeSleep]:
    clock = FakeClock(1_000.0)
    sleep = FakeSleep(clock)
    limiter = RateLimiter(
        rate,
        burst=burst,
        decrease_factor=decrease_factor,
        decrease_interval=decrease_interval,
        increase_fraction=increase_fraction,
        clock=clock,
        sleep=sleep,
    )
    return limiter, clock, sleep


async def _take(limiter: RateLimiter, n: int) -> float:
    waited = 0.0
    for _ in range(n):
        waited += await limiter.acquire()
    return waited


@pytest.mark.parametrize(("rate", "n"), [(4.0, 9), (20.0, 41), (3.0, 7), (0.5, 3)])
async def test_n_acquisitions_take_n_minus_one_over_rate(rate: float, n: int) -> None:
    limiter, clock, _ = _limiter(rate)
    waited = await _take(limiter, n)
    assert clock.now - 1_000.0 == pytest.approx((n - 1) / rate)
    assert waited == pytest.approx((n - 1) / rate)


async def test_the_first_acquisition_does_not_wait() -> None:
    limiter, clock, sleep = _limiter(5.0)
    assert await limiter.acquire() == 0.0
    assert sleep.delays == []
    assert clock.now == 1_000.0


async def test_idle_time_refills_at_most_the_burst() -> None:
    limiter, clock, _ = _limiter(2.0, burst=3.0)
    await _take(limiter, 3)  # the initial burst
    clock.advance(100.0)  # a long idle refills only up to the burst
    start = clock.now
    await _take(limiter, 5)
    assert clock.now - start == pytest.approx(2 / 2.0)


async def test_set_ceiling_changes_the_rate() -> None:
    limiter, clock, _ = _limiter(10.0)
    limiter.set_ceiling(2.0)
    assert limiter.ceiling == 2.0
    assert limiter.rate == 2.0
    start = clock.now
    await _take(limiter, 5)
    assert clock.now - start == pytest.approx(4 / 2.0)
    limiter.set_ceiling(8.0)  # at full rate: the rate follows up
    assert limiter.rate == 8.0
    start = clock.now
    await _take(limiter, 5)
    assert clock.now - start == pytest.approx(5 / 8.0)  # the first one waited too: bucket empty


async def test_set_ceiling_never_goes_below_the_minimum_rate() -> None:
    limiter, _, _ = _limiter(10.0)
    limiter.set_ceiling(0.0)
    assert limiter.ceiling == MIN_RATE
    assert limiter.rate == MIN_RATE


async def test_raising_the_ceiling_while_throttled_keeps_the_lower_rate() -> None:
    limiter, _, _ = _limiter(8.0, decrease_factor=0.5)
    limiter.on_throttled()
    assert limiter.rate == 4.0
    limiter.set_ceiling(16.0)
    assert limiter.rate == 4.0
    limiter.set_ceiling(2.0)  # a lower ceiling caps it
    assert limiter.rate == 2.0


async def test_on_throttled_halves_down_to_the_minimum() -> None:
    limiter, _, _ = _limiter(8.0, decrease_factor=0.5, decrease_interval=0.0)
    rates = []
    for _ in range(12):
        limiter.on_throttled()
        rates.append(limiter.rate)
    assert rates[:4] == [4.0, 2.0, 1.0, 0.5]
    assert rates[-1] == MIN_RATE
    assert min(rates) == MIN_RATE
    assert limiter.ceiling == 8.0


async def test_the_default_decrease_lowers_the_rate_but_never_below_the_minimum() -> None:
    limiter, clock, _ = _limiter(8.0)
    limiter.on_throttled()
    assert MIN_RATE <= limiter.rate < 8.0
    for _ in range(200):
        clock.advance(10.0)
        limiter.on_throttled()
    assert limiter.rate == MIN_RATE


async def test_a_burst_of_throttles_within_the_interval_decreases_once() -> None:
    limiter, clock, _ = _limiter(8.0, decrease_factor=0.5, decrease_interval=1.0)
    for _ in range(5):
        limiter.on_throttled()  # the in-flight calls of one burst all come back throttled
    assert limiter.rate == 4.0
    clock.advance(0.5)
    limiter.on_throttled()
    assert limiter.rate == 4.0
    clock.advance(0.5)
    limiter.on_throttled()
    assert limiter.rate == 2.0


async def test_on_throttled_empties_the_bucket() -> None:
    limiter, clock, _ = _limiter(8.0, decrease_factor=0.5)
    limiter.on_throttled()
    start = clock.now
    await limiter.acquire()
    assert clock.now - start == pytest.approx(1 / 4.0)


async def test_on_success_climbs_back_additively_to_the_ceiling_and_never_above() -> None:
    limiter, _, _ = _limiter(
        16.0, decrease_factor=0.5, decrease_interval=0.0, increase_fraction=0.25
    )
    limiter.on_throttled()
    limiter.on_throttled()
    assert limiter.rate == 4.0
    limiter.on_success()
    # A quarter of the ceiling (4/s) per second of successes: at 4/s, one success adds 4/4.
    assert limiter.rate == pytest.approx(5.0)
    previous = limiter.rate
    for _ in range(500):
        limiter.on_success()
        assert previous <= limiter.rate <= 16.0
        previous = limiter.rate
    assert limiter.rate == 16.0


async def test_one_second_of_successes_adds_about_the_increase_fraction_of_the_ceiling() -> None:
    limiter, _, _ = _limiter(
        100.0, decrease_factor=0.2, decrease_interval=0.0, increase_fraction=0.05
    )
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(20.0)
    for _ in range(20):  # one second's worth at 20/s
        limiter.on_success()
    assert 24.0 < limiter.rate <= 25.0  # +5/s, a little less as the rate itself climbs


async def test_on_success_below_one_per_second_adds_at_least_half_a_token() -> None:
    limiter, _, _ = _limiter(1.0, decrease_factor=0.5, decrease_interval=0.0)
    for _ in range(10):
        limiter.on_throttled()
    assert limiter.rate == MIN_RATE
    limiter.on_success()
    assert limiter.rate == pytest.approx(MIN_RATE + 0.5)
    limiter.on_success()
    assert limiter.rate == 1.0  # capped at the ceiling


async def test_on_success_at_the_ceiling_changes_nothing() -> None:
    limiter, _, _ = _limiter(5.0)
    limiter.on_success()
    assert limiter.rate == 5.0


async def test_concurrent_acquirers_are_served_first_come_first_served() -> None:
    limiter, clock, _ = _limiter(2.0)
    served: list[tuple[int, float]] = []

    async def acquirer(i: int) -> None:
        await limiter.acquire()
        served.append((i, clock.now - 1_000.0))

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(acquirer(i)))
        await asyncio.sleep(0)  # each one is queued before the next arrives
    await asyncio.gather(*tasks)
    assert [i for i, _ in served] == list(range(6))
    assert [t for _, t in served] == pytest.approx([i / 2.0 for i in range(6)])


async def test_the_default_clock_is_the_running_loop() -> None:
    limiter = RateLimiter(1_000_000.0)
    assert await limiter.acquire() == pytest.approx(0.0, abs=0.05)
