"""A transmitter zoo: seeded random stores of weight shelves, each shelf a different transmitter.

The project's own shelf scenarios were written next to the engine and share its assumptions; a
store generated here does not. Every shelf draws, from the seed:

* the item: 5 g to 5 kg (log-uniform), each item within a few per cent of nominal (Gaussian
  sigma 0.5-1.5 %);
* the transmitter: a division of 0.1-10 g (a commissioning rule: the item weighs 20-5,000
  divisions), noise of 0.2-1 division, an internal first-order filter with a time constant of
  0.02-0.2 s (a step becomes a ramp of 0.1-1 s), an update rate of 10-80 Hz independent of
  polling, the stable bit as "moved no more than one division in the last second";
* the encoding the gateway must be told: float32 in g, float32 in kg (scale 1000), int32 with a
  scale of 0.1-10 (never coarser than the division), either word order, holding or input table;
  the status word mapped or not; ``division_g`` and ``capacity_g`` configured or not;
* slow drift on half of the shelves;
* a life: picks of 1-5, restocks of 5-30, double picks (a second pick 1.5 s after the first
  gesture ends), put-backs (items lifted and returned within 2 s), a hand resting 3-10 s, bumps,
  a transmitter that falls silent for 5 s, and garbage in the weight registers (a large
  negative weight, a wrapped int32, 1e30, NaN) for 0.6-2 s.

``zoo_store(seed)`` returns the scenario (for the simulator) and, per shelf, what an installer
would put in the gateway's config. Generated events never overlap a failure, so each pick and
restock has one right answer; ``put-backs``, hands and bumps have the answer "no movement".
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from simulators.shelf_scenario import (
    GESTURE_S,
    Encoding,
    FailureMode,
    Garbage,
    ShelfEvent,
    ShelfEventKind,
    ShelfScenario,
    ShelfTrack,
    StableRule,
    Transmitter,
    WeightType,
    WordOrder,
)

DIVISIONS_G = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
INT_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
DOUBLE_PICK_GAP_S = 1.5
SILENT_S = 5.0


@dataclass(frozen=True, slots=True)
class ZooShelf:
    """One generated shelf: the simulated transmitter and the installer's config for it."""

    track: ShelfTrack
    table: str
    """``holding`` or ``input``: which table the gateway is told to read (the simulator serves
    the same map on both)."""
    status_mapped: bool
    division_g: float | None
    """What the installer configured (None: left to the engine to learn)."""
    capacity_g: float | None
    reorder_point: int


@dataclass(frozen=True, slots=True)
class ZooStore:
    seed: int
    scenario: ShelfScenario
    shelves: tuple[ZooShelf, ...]


def zoo_store(seed: int, *, shelves: int = 6, duration_s: float = 150.0) -> ZooStore:
    """A random store of ``shelves`` shelves (units 1..n) living for ``duration_s``."""
    rng = random.Random(f"zoo:{seed}")
    out = tuple(_shelf(rng, i + 1, duration_s) for i in range(shelves))
    scenario = ShelfScenario(
        name=f"zoo-{seed}", seed=seed, shelves=tuple(s.track for s in out), duration_s=duration_s
    )
    return ZooStore(seed=seed, scenario=scenario, shelves=out)


def zoo_shelf(
    seed: int,
    life: Callable[[ShelfTrack], Sequence[ShelfEvent]],
    *,
    duration_s: float = 60.0,
    status_mapped: bool | None = None,
) -> ZooShelf:
    """One shelf with a transmitter and item drawn from ``seed`` and the events ``life`` gives
    for it (it sees the drawn track, events empty). ``status_mapped`` overrides the draw."""
    rng = random.Random(f"zoo-shelf:{seed}")
    shelf = _shelf(rng, 1, duration_s)
    track = replace(shelf.track, events=())
    track = replace(track, events=tuple(life(track)))
    mapped = shelf.status_mapped if status_mapped is None else status_mapped
    return replace(shelf, track=track, status_mapped=mapped)


def _shelf(rng: random.Random, unit: int, duration_s: float) -> ZooShelf:
    unit_weight = round(math.exp(rng.uniform(math.log(5.0), math.log(5000.0))), 1)
    allowed = [d for d in DIVISIONS_G if 20 * d <= unit_weight <= 5000 * d] or [DIVISIONS_G[0]]
    division = rng.choice(allowed)
    tx = Transmitter(
        division_g=division,
        filter_tau_s=round(rng.uniform(0.02, 0.2), 3),
        update_hz=round(rng.uniform(10.0, 80.0), 1),
        stable_rule=StableRule.DIVISION,
    )
    kind = rng.choice(("float_g", "float_kg", "int"))
    if kind == "float_g":
        encoding = Encoding(WeightType.FLOAT32, rng.choice(list(WordOrder)), 1.0)
    elif kind == "float_kg":
        encoding = Encoding(WeightType.FLOAT32, rng.choice(list(WordOrder)), 1000.0)
    else:
        scale = rng.choice([s for s in INT_SCALES if s <= division])
        encoding = Encoding(WeightType.INT32, rng.choice(list(WordOrder)), scale)
    initial = rng.randint(15, 60)
    max_units = initial + 60
    tare = round(rng.uniform(300.0, 5000.0) / division) * division
    capacity = tare + max_units * unit_weight * 1.3 + 3000.0
    # Set where the shelf will cross it in the first minutes, so low stock is exercised.
    reorder_point = max(1, initial - rng.randint(3, 15))
    events = _life(
        rng,
        unit_weight=unit_weight,
        initial=initial,
        max_units=max_units,
        duration_s=duration_s,
        tx=tx,
    )
    track = ShelfTrack(
        shelf_id=f"zoo-s{unit}",
        unit=unit,
        sku=f"SKU-Z{unit}",
        unit_weight_g=unit_weight,
        initial_units=initial,
        item_sigma_g=round(unit_weight * rng.uniform(0.005, 0.015), 4),
        tare_g=tare,
        capacity_g=capacity,
        noise_g=round(division * rng.uniform(0.2, 1.0), 4),
        drift_g_per_min=round(rng.uniform(-1.0, 1.0) * max(division, 0.5), 3)
        if rng.random() < 0.5
        else 0.0,
        encoding=encoding,
        events=tuple(events),
        transmitter=tx,
    )
    return ZooShelf(
        track=track,
        table=rng.choice(("holding", "input")),
        status_mapped=rng.random() < 0.7,
        division_g=division if rng.random() < 0.5 else None,
        capacity_g=round(capacity - tare, 1) if rng.random() < 0.5 else None,
        reorder_point=reorder_point,
    )


def _life(
    rng: random.Random,
    *,
    unit_weight: float,
    initial: int,
    max_units: int,
    duration_s: float,
    tx: Transmitter,
) -> list[ShelfEvent]:
    """Events one after the other, each with the shelf settled again before the next."""
    settle = 5.0 * tx.filter_tau_s + 1.0  # filter ramp plus the platform's ringing
    events: list[ShelfEvent] = []
    units = initial
    silent_done = garbage_done = False
    t = rng.uniform(4.0, 6.0)
    end = duration_s - 8.0
    kinds = ("pick", "restock", "double", "putback", "hand", "bump", "silent", "garbage")
    weights = (0.42, 0.14, 0.09, 0.09, 0.09, 0.09, 0.04, 0.04)
    while t < end:
        kind = rng.choices(kinds, weights)[0]
        if kind == "pick" and units < 1:
            kind = "restock"
        if kind == "restock" and units + 5 > max_units:
            kind = "pick"
        if kind == "double" and units < 2:
            kind = "restock"
        if kind == "putback" and units < 1:
            kind = "restock"
        if kind == "silent" and silent_done:
            kind = "bump"
        if kind == "garbage" and garbage_done:
            kind = "hand"
        if kind == "pick":
            n = rng.randint(1, min(5, units))
            events.append(
                ShelfEvent(t=round(t, 3), kind=ShelfEventKind.PICK, duration=0.8, units=n)
            )
            units -= n
            t += 0.8 + settle
        elif kind == "restock":
            n = rng.randint(5, min(30, max_units - units))
            events.append(
                ShelfEvent(t=round(t, 3), kind=ShelfEventKind.RESTOCK, duration=1.2, units=n)
            )
            units += n
            t += 1.2 + settle
        elif kind == "double":
            first = rng.randint(1, min(4, units - 1))
            second = rng.randint(1, min(4, units - first))
            events.append(
                ShelfEvent(t=round(t, 3), kind=ShelfEventKind.PICK, duration=0.8, units=first)
            )
            t2 = t + 0.8 + DOUBLE_PICK_GAP_S
            events.append(
                ShelfEvent(t=round(t2, 3), kind=ShelfEventKind.PICK, duration=0.8, units=second)
            )
            units -= first + second
            t = t2 + 0.8 + settle
        elif kind == "putback":
            n = rng.randint(1, min(3, units))
            duration = 2 * GESTURE_S + rng.uniform(0.2, 1.2)
            events.append(
                ShelfEvent(t=round(t, 3), kind=ShelfEventKind.PUTBACK, duration=duration, units=n)
            )
            t += duration + settle
        elif kind == "hand":
            duration = rng.uniform(3.0, 10.0)
            grams = rng.uniform(150.0, 1500.0)
            events.append(
                ShelfEvent(t=round(t, 3), kind=ShelfEventKind.HAND, duration=duration, grams=grams)
            )
            t += duration + settle
        elif kind == "bump":
            grams = min(2000.0, rng.uniform(0.3, 1.5) * unit_weight)
            events.append(
                ShelfEvent(t=round(t, 3), kind=ShelfEventKind.BUMP, duration=0.3, grams=grams)
            )
            t += 0.3 + settle
        elif kind == "silent":
            silent_done = True
            events.append(
                ShelfEvent(
                    t=round(t, 3),
                    kind=ShelfEventKind.FAILURE,
                    duration=SILENT_S,
                    mode=FailureMode.SILENT,
                )
            )
            t += SILENT_S + 1.0
        else:
            garbage_done = True
            duration = rng.uniform(0.6, 2.0)
            events.append(
                ShelfEvent(
                    t=round(t, 3),
                    kind=ShelfEventKind.FAILURE,
                    duration=duration,
                    mode=FailureMode.GARBAGE,
                    garbage=rng.choice(list(Garbage)),
                )
            )
            t += duration + 1.0
        t += rng.uniform(1.5, 4.0)  # idle, then the next thing happens
    return events
