"""Capped exponential backoff with full jitter: bounds, growth, cap, reset after health."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.backoff import Backoff, BackoffPolicy


def test_ceilings_double_up_to_the_cap() -> None:
    backoff = Backoff(BackoffPolicy(initial_s=0.5, max_s=4.0), rng=lambda: 1.0)
    delays = [backoff.next_delay(now=float(i)) for i in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert backoff.attempt == 7


def test_full_jitter_scales_the_ceiling_by_the_draw() -> None:
    draws = iter([0.0, 0.25, 0.5])
    backoff = Backoff(BackoffPolicy(initial_s=1.0, max_s=10.0), rng=lambda: next(draws))
    assert [backoff.next_delay(0.0) for _ in range(3)] == [0.0, 0.5, 2.0]


def test_a_healthy_period_resets_the_count() -> None:
    policy = BackoffPolicy(initial_s=1.0, max_s=60.0, reset_after_s=30.0)
    backoff = Backoff(policy, rng=lambda: 1.0)
    for _ in range(4):
        backoff.next_delay(0.0)
    backoff.succeeded(now=100.0)
    # Failing after 30 s of health starts over at the initial delay.
    assert backoff.next_delay(now=130.0) == 1.0
    assert backoff.next_delay(now=131.0) == 2.0


def test_a_flapping_link_keeps_growing() -> None:
    policy = BackoffPolicy(initial_s=1.0, max_s=60.0, reset_after_s=30.0)
    backoff = Backoff(policy, rng=lambda: 1.0)
    delays = []
    for i in range(4):
        backoff.succeeded(now=10.0 * i)
        delays.append(backoff.next_delay(now=10.0 * i + 1.0))  # healthy for 1 s only
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_reset_forgets_failures() -> None:
    backoff = Backoff(BackoffPolicy(initial_s=1.0, max_s=8.0), rng=lambda: 1.0)
    backoff.next_delay(0.0)
    backoff.next_delay(0.0)
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay(0.0) == 1.0


def test_an_rng_outside_unit_interval_is_rejected() -> None:
    backoff = Backoff(rng=lambda: 1.5)
    with pytest.raises(ValueError, match="rng"):
        backoff.next_delay(0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0},
        {"initial_s": 2.0, "max_s": 1.0},
        {"multiplier": 0.5},
        {"reset_after_s": -1.0},
    ],
)
def test_invalid_policies_fail_at_construction(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        BackoffPolicy(**kwargs)


def test_a_device_dead_for_days_does_not_overflow() -> None:
    backoff = Backoff(BackoffPolicy(initial_s=0.5, max_s=30.0), rng=lambda: 1.0)
    for _ in range(5000):
        delay = backoff.next_delay(0.0)
    assert delay == 30.0


@given(
    initial=st.floats(0.001, 10.0),
    cap_factor=st.floats(1.0, 1000.0),
    multiplier=st.floats(1.0, 5.0),
    seed=st.integers(0, 2**32 - 1),
    failures=st.integers(1, 80),
)
def test_delays_stay_within_zero_and_the_growing_ceiling(
    initial: float, cap_factor: float, multiplier: float, seed: int, failures: int
) -> None:
    policy = BackoffPolicy(initial_s=initial, max_s=initial * cap_factor, multiplier=multiplier)
    backoff = Backoff(policy, rng=random.Random(seed).random)
    previous_ceiling = 0.0
    for attempt in range(failures):
        ceiling = policy.ceiling(attempt)
        assert previous_ceiling <= ceiling <= policy.max_s
        delay = backoff.next_delay(0.0)
        assert 0.0 <= delay <= ceiling
        previous_ceiling = ceiling


def test_same_seed_same_delays() -> None:
    a = Backoff(rng=random.Random(7).random)
    b = Backoff(rng=random.Random(7).random)
    assert [a.next_delay(0.0) for _ in range(10)] == [b.next_delay(0.0) for _ in range(10)]
