"""Property: whatever batches arrive, with ids repeated within and across them, the store ends up
equal to a plain Python model of "record each new id once, in order, and move its stock"."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_store import MovementRecord
from gateway.domain.model import Movement
from tests.test_store_support import LOCATION_IDS, SKUS, as_record, at, movement, open_store

ROUTES = tuple(itertools.permutations(LOCATION_IDS, 2))
POOL = 16
"""Distinct movement ids an example draws from: small, so repeats are frequent."""


def spec(prefix: str, n: int) -> Movement:
    """Movement ``n`` of an example: its content is a function of its id, as in production."""
    src, dst = ROUTES[(n * 5) % len(ROUTES)]
    return movement(f"{prefix}-{n}", sku=SKUS[n % len(SKUS)], quantity=n % 7 + 1, src=src, dst=dst)


@settings(
    max_examples=25,
    deadline=None,
    # The database fixture is shared by the examples on purpose: each example uses fresh ids and
    # compares against the state it started from, so earlier examples cannot mask a failure.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(st.lists(st.integers(0, POOL - 1), max_size=12), min_size=1, max_size=6))
def test_store_equals_model(database_url: str, batches: list[list[int]]) -> None:
    prefix = uuid.uuid4().hex[:8]
    with open_store(database_url) as store:
        first_seq = store.last_seq()
        stock = Counter({(lv.location, lv.sku): lv.on_hand for lv in store.stock()})
        recorded: list[str] = []
        for t, batch in enumerate(batches):
            moves = [spec(prefix, n) for n in batch]
            result = store.record(moves, now=at(t))

            fresh, duplicates, touched = [], [], set()
            for m in moves:
                if m.movement_id in recorded or m.movement_id in fresh:
                    duplicates.append(m.movement_id)
                    continue
                fresh.append(m.movement_id)
                stock[(m.from_location, m.sku)] -= m.quantity
                stock[(m.to_location, m.sku)] += m.quantity
                touched |= {(m.from_location, m.sku), (m.to_location, m.sku)}
            start = first_seq + len(recorded) + 1
            recorded += fresh

            assert [r.movement.movement_id for r in result.recorded] == fresh
            assert [r.seq for r in result.recorded] == list(range(start, start + len(fresh)))
            assert list(result.duplicates) == duplicates
            assert {(lv.location, lv.sku): lv.on_hand for lv in result.stock} == {
                key: stock[key] for key in touched
            }

        assert store.last_seq() == first_seq + len(recorded)
        assert [r.movement.movement_id for r in store.movements_since(first_seq)] == recorded
        assert [r.movement for r in store.movements_since(first_seq)] == [
            as_record(spec(prefix, int(mid.rsplit("-", 1)[1])), MovementRecord) for mid in recorded
        ]
        # Every level the store has is the baseline plus the model's arithmetic, and vice versa.
        assert {(lv.location, lv.sku): lv.on_hand for lv in store.stock()} == dict(stock)
