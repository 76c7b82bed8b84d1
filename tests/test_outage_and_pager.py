"""The shared outage policy (gateway/adapters/outage.py) and the one outbox pager
(gateway/adapters/sink.py) every sink reads with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from gateway.adapters.backoff import Backoff, BackoffPolicy
from gateway.adapters.outage import Outage, OutageWords
from gateway.adapters.sink import OutboxPager

LOGGER = "tests.outage"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_an_outage_is_one_error_then_one_recovery_line_whatever_the_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = Clock()
    outage = Outage(
        "broker b:1883",
        log=logging.getLogger(LOGGER),
        clock=clock,
        words=OutageWords(still="{link} still down: {reason}"),
    )
    assert outage.failed("refused") is True
    for _ in range(5):
        clock.now += 1.0
        assert outage.failed("refused") is False
    clock.now += 1.0
    assert outage.failed("timed out") is False  # a new reason: a warning, not an error
    assert (outage.down, outage.attempts) == (True, 7)
    clock.now += 0.5
    assert outage.recovered() == pytest.approx(6.5)
    assert not outage.down
    assert outage.recovered() is None  # no outage, no line
    assert lines(caplog, logging.ERROR) == [
        "broker b:1883 unavailable: refused; retrying with backoff"
    ]
    assert lines(caplog, logging.WARNING) == ["broker b:1883 still down: timed out"]
    assert lines(caplog, logging.INFO) == ["broker b:1883 reachable again after 6.5 s"]
    # The next outage is news again.
    assert outage.failed("refused") is True
    assert len(lines(caplog, logging.ERROR)) == 2


def test_the_pause_follows_the_backoff_and_a_recovery_resets_it_once_healthy_long_enough() -> None:
    clock = Clock()
    policy = BackoffPolicy(initial_s=0.01, max_s=0.04, reset_after_s=10.0)
    backoff = Backoff(policy, rng=lambda: 1.0)  # every delay at its ceiling
    outage = Outage("link", log=logging.getLogger(LOGGER), backoff=backoff, clock=clock)

    async def waits(n: int) -> list[float]:
        loop = asyncio.get_running_loop()
        out = []
        for _ in range(n):
            outage.failed("down")
            started = loop.time()
            await outage.pause()
            out.append(loop.time() - started)
        return out

    delays = asyncio.run(waits(4))
    # 0.01, 0.02, 0.04, 0.04: each pause lasts at least its ceiling (timers never fire early).
    for waited, ceiling in zip(delays, [0.01, 0.02, 0.04, 0.04], strict=True):
        assert waited >= ceiling * 0.9
    assert backoff.attempt == 4
    outage.recovered()
    clock.now += 11.0  # healthy for longer than reset_after_s
    outage.failed("down again")
    assert backoff.next_delay(clock.now) == pytest.approx(0.01)


def test_the_pager_hands_every_page_in_order_and_never_loses_a_notify() -> None:
    outbox: list[int] = []
    reads: list[int] = []

    async def go() -> list[list[int]]:
        delivered: list[list[int]] = []
        got_two = asyncio.Event()

        async def read(after: int) -> Sequence[int]:
            reads.append(after)
            page = [seq for seq in outbox if seq > after][:2]
            if not page and after == 3:
                # A commit lands DURING the read that finds the outbox empty: its notify must
                # still wake the pager (the poll interval is far longer than the test).
                outbox.append(4)
                pager.notify()
            return page

        async def deliver(page: Sequence[int]) -> None:
            delivered.append(list(page))
            if sum(map(len, delivered)) >= 4:
                got_two.set()

        pager: OutboxPager[Sequence[int]] = OutboxPager(
            read, lambda page: page[-1] if page else None, poll_interval_s=60.0
        )
        outbox.extend([1, 2, 3])
        task = asyncio.create_task(pager.run(0, deliver))
        async with asyncio.timeout(5):
            await got_two.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return delivered

    assert asyncio.run(go()) == [[1, 2], [3], [4]]
    assert reads[:4] == [0, 2, 3, 3]


def test_a_drained_outbox_lets_when_idle_add_its_page_then_waits_for_a_notify() -> None:
    async def go() -> list[str]:
        delivered: list[str] = []
        idle_calls: list[int] = []
        pending = ["closure"]
        done = asyncio.Event()

        async def read(after: int) -> list[str]:
            return ["m1"] if after == 0 else []

        async def when_idle(after: int) -> list[str] | None:
            idle_calls.append(after)
            return [pending.pop()] if pending else None

        async def deliver(page: list[str]) -> None:
            delivered.extend(page)
            if "closure" in page:
                done.set()

        pager: OutboxPager[list[str]] = OutboxPager(
            read,
            lambda page: 1 if page == ["m1"] else None,
            poll_interval_s=60.0,
            when_idle=when_idle,
        )
        task = asyncio.create_task(pager.run(0, deliver))
        async with asyncio.timeout(5):
            await done.wait()
        await asyncio.sleep(0.05)  # the pager now sleeps until notified
        calls = len(idle_calls)
        await asyncio.sleep(0.05)
        assert len(idle_calls) == calls  # no busy loop on an empty outbox
        pager.notify()
        await asyncio.sleep(0.05)
        assert len(idle_calls) == calls + 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return delivered

    assert asyncio.run(go()) == ["m1", "closure"]


def test_the_pager_refuses_a_poll_interval_that_would_spin() -> None:
    async def read(after: int) -> list[int]:
        return []

    with pytest.raises(ValueError, match="poll_interval_s"):
        OutboxPager(read, lambda page: None, poll_interval_s=0.0)
