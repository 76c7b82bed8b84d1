"""Weight-shelf scenarios: what happens on each simulated shelf, and when.

A scenario file is YAML. Its ``shelves:`` section lists one entry per weighing transmitter (one
Modbus unit id each); a combined portal + shelf scenario passes that section through unchanged
(``Scenario.shelves``) and :func:`parse_shelves` reads it. A shelf-only file is loaded on its own
with :func:`load_shelf_scenario`::

    name: shelf-demo
    seed: 42                   # all randomness (noise, item weights, generated events) is seeded
    duration_s: 120            # optional: how long the scenario runs
    shelves:
      - id: shelf-a1
        unit: 1                # Modbus unit id (1..247)
        sku: SKU-1001
        unit_weight_g: 250.0
        item_sigma_g: 2.0      # item-to-item weight spread (Gaussian sigma)
        initial_units: 40
        tare_g: 850.0          # empty tray, tared by the transmitter (net = gross - tare)
        capacity_g: 30000.0    # overload above this gross weight
        noise_g: 1.0           # Gaussian sigma of the transmitter's reading
        drift_g_per_min: 0.5   # slow zero drift
        encoding: {type: float32, word_order: big, scale: 1.0}   # or int32; grams = raw * scale
        events:
          - {t: 3.0, pick: 2}                  # 2 units taken (duration default 0.8 s)
          - {t: 8.0, restock: 6}
          - {t: 12.0, bump: 300}               # a knock: transient peak grams, 0.3 s
          - {t: 15.0, hand: 600, duration: 4}  # a hand resting on the shelf
          - {t: 30.0, failure: frozen, duration: 10}   # adc_error | frozen | exception | silent
        random:                # seeded generated events, appended after the listed ones
          start: 40.0
          count: 30
          gap_s: [2.0, 3.0]    # idle seconds from one event's end to the next one's start
          units: [1, 4]        # units per pick/restock (uniform, inclusive)
          mix: {pick: 0.6, restock: 0.25, bump: 0.1, hand: 0.05}

Times are scenario seconds from the simulator's start. Physical events (pick, restock, bump,
hand) on one shelf must not overlap; a failure may overlap them (the goods still move while the
sensor is broken). Invalid input raises :class:`dockwatch_core.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError, core_schema

from dockwatch_core.errors import ConfigError
from gateway.documents import SCENARIO_LIMITS, read_yaml
from gateway.validation import (
    MODEL_CONFIG,
    Items,
    Num,
    OneOf,
    Section,
    Text,
    lines,
    problem,
    problems_of,
    show,
)


class ShelfEventKind(enum.StrEnum):
    PICK = "pick"
    RESTOCK = "restock"
    BUMP = "bump"
    HAND = "hand"
    PUTBACK = "putback"
    """Items lifted and put back: a pick gesture, a pause, a return gesture (no movement)."""
    FAILURE = "failure"


class FailureMode(enum.StrEnum):
    ADC_ERROR = "adc_error"
    """The transmitter answers; its status word has the ADC error bit set and weight reads 0."""
    FROZEN = "frozen"
    """The transmitter answers with the last value before the failure; the heartbeat stops."""
    EXCEPTION = "exception"
    """Every read of the unit gets a Modbus exception response (``exception_code``, default 4)."""
    SILENT = "silent"
    """The unit does not answer at all (the client times out)."""
    GARBAGE = "garbage"
    """The unit answers with nonsense in its weight registers (``garbage``: negative, wrapped,
    huge or nan) and a healthy-looking status word."""


class Garbage(enum.StrEnum):
    NEGATIVE = "negative"
    """A large negative weight (a sign bit gone wrong)."""
    WRAPPED = "wrapped"
    """An int32 that wrapped around (or its float equivalent, ~4.29e9)."""
    HUGE = "huge"
    """1e30 in a float register (the int32 maximum in an int32 one)."""
    NAN = "nan"
    """A float NaN (the int32 minimum in an int32 one)."""


class WeightType(enum.StrEnum):
    FLOAT32 = "float32"
    INT32 = "int32"


class WordOrder(enum.StrEnum):
    BIG = "big"
    """High word first (``mbpoll -B``)."""
    LITTLE = "little"
    """Low word first (``mbpoll`` without ``-B``)."""


DEFAULT_DURATIONS_S: Mapping[ShelfEventKind, float] = {
    ShelfEventKind.PICK: 0.8,
    ShelfEventKind.RESTOCK: 1.2,
    ShelfEventKind.BUMP: 0.3,
    ShelfEventKind.HAND: 3.0,
    ShelfEventKind.PUTBACK: 2.6,
    ShelfEventKind.FAILURE: 10.0,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Encoding:
    """How weights are put into registers: ``raw = grams / scale`` as float32 or int32."""

    type: WeightType = WeightType.FLOAT32
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")


class StableRule(enum.StrEnum):
    MOTION = "motion"
    """The load moved less than 2 g over the last 0.4 s (the original simulator's detector)."""
    DIVISION = "division"
    """The displayed weight moved no more than one division in the last second (common
    transmitters' motion detection)."""


GESTURE_S = 0.8
"""How long one hand gesture of a put-back takes (lift, or return)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Transmitter:
    """How the weighing transmitter turns the load into numbers.

    The defaults are the original simulator's: no quantisation, no filter, 50 conversions a second.
    """

    division_g: float = 0.0
    """The display step: readings are whole multiples of it (0: not quantised)."""
    filter_tau_s: float = 0.0
    """Time constant of the internal first-order filter (0: none). A step reaches 99 % of its
    height after 4.6 tau."""
    update_hz: float = 50.0
    """How often the transmitter updates its registers, independent of how often it is polled."""
    stable_rule: StableRule = StableRule.MOTION

    def __post_init__(self) -> None:
        if self.division_g < 0 or self.filter_tau_s < 0:
            raise ValueError("division_g and filter_tau_s must be >= 0")
        if not 1.0 <= self.update_hz <= 1000.0:
            raise ValueError(f"update_hz must be within 1..1000, got {self.update_hz}")


@dataclasses.dataclass(frozen=True, slots=True)
class ShelfEvent:
    """One thing that happens to a shelf at scenario time ``t`` for ``duration`` seconds."""

    t: float
    kind: ShelfEventKind
    duration: float
    units: int = 0
    grams: float = 0.0
    mode: FailureMode | None = None
    exception_code: int = 4
    garbage: Garbage = Garbage.HUGE

    @property
    def end(self) -> float:
        return self.t + self.duration

    @property
    def physical(self) -> bool:
        return self.kind is not ShelfEventKind.FAILURE


@dataclasses.dataclass(frozen=True, slots=True)
class ShelfTrack:
    """One simulated shelf: its transmitter, its goods and its timeline of events."""

    shelf_id: str
    unit: int
    sku: str = "SKU-1001"
    unit_weight_g: float = 250.0
    initial_units: int = 40
    item_sigma_g: float = 2.0
    tare_g: float = 850.0
    capacity_g: float = 30_000.0
    noise_g: float = 0.5
    drift_g_per_min: float = 0.0
    encoding: Encoding = dataclasses.field(default_factory=Encoding)
    events: tuple[ShelfEvent, ...] = ()
    transmitter: Transmitter = dataclasses.field(default_factory=Transmitter)

    def __post_init__(self) -> None:
        if not 1 <= self.unit <= 247:
            raise ValueError(f"unit must be within 1..247, got {self.unit}")
        if not self.unit_weight_g > 0:
            raise ValueError(f"unit_weight_g must be > 0, got {self.unit_weight_g}")
        if self.initial_units < 0:
            raise ValueError(f"initial_units must be >= 0, got {self.initial_units}")
        for name in ("item_sigma_g", "tare_g", "noise_g"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.capacity_g > 0:
            raise ValueError(f"capacity_g must be > 0, got {self.capacity_g}")
        ordered = tuple(sorted(self.events, key=lambda e: e.t))
        object.__setattr__(self, "events", ordered)
        _check_timeline(self)


@dataclasses.dataclass(frozen=True, slots=True)
class ShelfScenario:
    name: str
    seed: int
    shelves: tuple[ShelfTrack, ...]
    duration_s: float | None = None

    def __post_init__(self) -> None:
        units = [s.unit for s in self.shelves]
        if len(set(units)) != len(units):
            raise ValueError(f"two shelves share a unit id: {sorted(units)}")
        ids = [s.shelf_id for s in self.shelves]
        if len(set(ids)) != len(ids):
            raise ValueError(f"two shelves share an id: {sorted(ids)}")

    @property
    def end_s(self) -> float:
        """``duration_s`` or, when absent, two seconds after the last event ends."""
        if self.duration_s is not None:
            return self.duration_s
        ends = [e.end for s in self.shelves for e in s.events]
        return max(ends, default=0.0) + 2.0


def _check_timeline(track: ShelfTrack) -> None:
    units = track.initial_units
    last_physical: ShelfEvent | None = None
    last_failure: ShelfEvent | None = None
    for event in track.events:
        if event.t < 0 or event.duration <= 0:
            raise ValueError(f"event at t={event.t} needs t >= 0 and duration > 0")
        previous = last_physical if event.physical else last_failure
        if previous is not None and event.t < previous.end:
            raise ValueError(
                f"{event.kind} at t={event.t} overlaps the {previous.kind} at t={previous.t}"
            )
        if event.physical:
            last_physical = event
        else:
            last_failure = event
        if event.kind is ShelfEventKind.PICK:
            units -= event.units
            if units < 0:
                raise ValueError(f"pick of {event.units} at t={event.t} leaves {units} units")
        elif event.kind is ShelfEventKind.RESTOCK:
            units += event.units
            load = track.tare_g + units * track.unit_weight_g
            if load > track.capacity_g:
                raise ValueError(f"restock at t={event.t} overloads the shelf ({load:.0f} g)")
        elif event.kind is ShelfEventKind.PUTBACK:
            if event.units > units:
                raise ValueError(f"put-back of {event.units} at t={event.t} exceeds {units} units")
            if event.duration <= 2 * GESTURE_S:
                raise ValueError(f"put-back at t={event.t} needs a duration > {2 * GESTURE_S} s")


# -- parsing ---------------------------------------------------------------------------------------
#
# The file's keys are checked by pydantic dataclasses (gateway.validation, as for the gateway's
# config): every problem of the ``shelves:`` section at once, by key path. Then each valid track
# is built (its timeline checked) and the scenario (unique units and ids); their problems are
# collected too.

_DEFAULTS: Final = ShelfTrack(shelf_id="defaults", unit=1)
_MIX_KINDS: Final = (
    ShelfEventKind.PICK,
    ShelfEventKind.RESTOCK,
    ShelfEventKind.BUMP,
    ShelfEventKind.HAND,
    ShelfEventKind.PUTBACK,
)


class _Pair(Num):
    """``[low, high]`` with ``lo <= low <= high``."""

    def __init__(self, kind: type[int] | type[float], lo: float) -> None:
        super().__init__(kind, lo=lo)
        self.pair_what = f"[low, high] with {lo:g} <= low <= high"

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise problem(f"must be {self.pair_what}, got {show(value)}")
        low, high = (super(_Pair, self).check(v, info) for v in value)
        if low > high:
            raise problem(f"must be {self.pair_what}, got [{low}, {high}]")
        return (low, high)


class _Mix(Num):
    """Event kind -> weight, in the file's order (the seeded generator draws in that order)."""

    def __init__(self) -> None:
        super().__init__(float, lo=0)

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if not isinstance(value, Mapping) or not value:
            raise problem(f"must be a mapping of event kind to weight, got {show(value)}")
        found: list[tuple[str, str]] = []
        out: dict[str, float] = {}
        for kind, weight in value.items():
            if kind == ShelfEventKind.FAILURE:
                found.append((str(kind), "failures are listed explicitly, not generated"))
            elif kind not in _MIX_KINDS:
                kinds = ", ".join(k.value for k in _MIX_KINDS)
                found.append((str(kind), f"not an event kind ({kinds})"))
            else:
                try:
                    out[kind] = super().check(weight, info)
                except PydanticCustomError as exc:
                    found.append((str(kind), str(exc)))
        if found:
            raise problem("", *found)
        return out


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _EncodingKeys(Section):
    type: Annotated[WeightType, OneOf()] = WeightType.FLOAT32
    word_order: Annotated[WordOrder, OneOf()] = WordOrder.BIG
    scale: Annotated[float, Num(float, gt=0)] = 1.0


_COUNT: Final = Num(int, lo=1)
_GRAMS: Final = Num(float)


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _EventKeys(Section):
    t: Annotated[float, Num(float, lo=0)]
    duration: Annotated[float, Num(float, gt=0)] | None = None
    pick: Annotated[int, _COUNT] | None = None
    restock: Annotated[int, _COUNT] | None = None
    putback: Annotated[int, _COUNT] | None = None
    bump: Annotated[float, _GRAMS] | None = None
    hand: Annotated[float, _GRAMS] | None = None
    failure: Annotated[FailureMode, OneOf()] | None = None
    exception_code: Annotated[int, Num(int, lo=0, hi=255)] = 4
    garbage: Annotated[Garbage, OneOf()] = Garbage.HUGE

    def kinds(self) -> list[ShelfEventKind]:
        return [k for k in ShelfEventKind if getattr(self, k.value) is not None]

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        if len(self.kinds()) != 1:
            yield "", f"exactly one of {[k.value for k in ShelfEventKind]} is required"

    def event(self) -> ShelfEvent:
        kind = self.kinds()[0]
        value = getattr(self, kind.value)
        duration = DEFAULT_DURATIONS_S[kind] if self.duration is None else self.duration
        if kind in (ShelfEventKind.PICK, ShelfEventKind.RESTOCK, ShelfEventKind.PUTBACK):
            return ShelfEvent(t=self.t, kind=kind, duration=duration, units=value)
        if kind in (ShelfEventKind.BUMP, ShelfEventKind.HAND):
            return ShelfEvent(t=self.t, kind=kind, duration=duration, grams=value)
        return ShelfEvent(
            t=self.t,
            kind=kind,
            duration=duration,
            mode=value,
            exception_code=self.exception_code,
            garbage=self.garbage,
        )


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _RandomKeys(Section):
    start: Annotated[float, Num(float, lo=0)] = 0.0
    count: Annotated[int, Num(int, lo=0)] = 0
    gap_s: Annotated[tuple[float, float], _Pair(float, lo=0)] = (2.0, 3.0)
    """Idle seconds from one event's end to the next one's start (uniform)."""
    units: Annotated[tuple[int, int], _Pair(int, lo=1)] = (1, 3)
    """Units per pick/restock (uniform, inclusive)."""
    mix: Annotated[Mapping[str, float], _Mix()] = Field(
        default_factory=lambda: {"pick": 0.6, "restock": 0.3, "bump": 0.1}
    )


_NON_NEGATIVE: Final = Num(float, lo=0)


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _TrackKeys(Section):
    id: Annotated[str, Text()]
    unit: Annotated[int, Num(int, lo=1, hi=247)]
    sku: Annotated[str, Text()] = _DEFAULTS.sku
    unit_weight_g: Annotated[float, Num(float, gt=0)] = _DEFAULTS.unit_weight_g
    initial_units: Annotated[int, Num(int, lo=0)] = _DEFAULTS.initial_units
    item_sigma_g: Annotated[float, _NON_NEGATIVE] = _DEFAULTS.item_sigma_g
    tare_g: Annotated[float, _NON_NEGATIVE] = _DEFAULTS.tare_g
    capacity_g: Annotated[float, Num(float, gt=0)] = _DEFAULTS.capacity_g
    noise_g: Annotated[float, _NON_NEGATIVE] = _DEFAULTS.noise_g
    drift_g_per_min: Annotated[float, Num(float)] = _DEFAULTS.drift_g_per_min
    encoding: _EncodingKeys = Field(default_factory=_EncodingKeys)
    events: Annotated[tuple[_EventKeys, ...], Items("events")] | None = ()
    random: _RandomKeys | None = None

    def track(self, seed: int) -> ShelfTrack:
        """The track (ValueError when its timeline does not add up)."""
        events = [e.event() for e in self.events or ()]
        if self.random is not None:
            events.extend(
                _generate(
                    self.random,
                    rng=random.Random(f"{seed}:{self.id}:random"),
                    units_before=self.initial_units + _net_units(events),
                    unit_weight_g=self.unit_weight_g,
                    max_units=int((self.capacity_g - self.tare_g) // self.unit_weight_g),
                )
            )
        encoding = self.encoding
        return ShelfTrack(
            shelf_id=self.id,
            unit=self.unit,
            sku=self.sku,
            unit_weight_g=self.unit_weight_g,
            initial_units=self.initial_units,
            item_sigma_g=self.item_sigma_g,
            tare_g=self.tare_g,
            capacity_g=self.capacity_g,
            noise_g=self.noise_g,
            drift_g_per_min=self.drift_g_per_min,
            encoding=Encoding(encoding.type, encoding.word_order, encoding.scale),
            events=tuple(events),
        )


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _ShelvesKeys(Section):
    shelves: Annotated[tuple[_TrackKeys, ...], Items("shelves")] | None = ()
    seed: Annotated[int, Num(int)] = 0
    duration_s: Annotated[float, Num(float, gt=0)] | None = None


_ADAPTER: Final = TypeAdapter(_ShelvesKeys)


def load_shelf_scenario(path: Path | str) -> ShelfScenario:
    """Load a shelf-only (or combined) scenario file; only its shelf part is read."""
    path = Path(path)
    # Size, nesting and encoding limits: a DocumentError is a ConfigError naming the file.
    raw = read_yaml(path, SCENARIO_LIMITS)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: a scenario is a mapping at the top level")
    return shelf_scenario_from_mapping(raw, default_name=path.stem)


def _validated(raw: Mapping[str, Any]) -> _ShelvesKeys:
    """The shelf part of a scenario, checked; ConfigError with every problem."""
    part = {k: raw[k] for k in ("shelves", "seed", "duration_s") if k in raw}
    try:
        keys = _ADAPTER.validate_python(part)
    except ValidationError as exc:
        raise ConfigError(lines(problems_of(exc))) from exc
    return keys


def _tracks(keys: _ShelvesKeys, seed: int) -> tuple[ShelfTrack, ...]:
    tracks: list[ShelfTrack] = []
    problems: list[str] = []
    for i, track_keys in enumerate(keys.shelves or ()):
        try:
            tracks.append(track_keys.track(seed))
        except ValueError as exc:
            problems.append(f"shelves[{i}]: {exc}")
    if problems:
        raise ConfigError(problems)
    return tuple(tracks)


def shelf_scenario_from_mapping(
    raw: Mapping[str, Any], default_name: str = "shelves"
) -> ShelfScenario:
    keys = _validated(raw)
    try:
        return ShelfScenario(
            name=str(raw.get("name", default_name)),
            seed=keys.seed,
            shelves=_tracks(keys, keys.seed),
            duration_s=keys.duration_s,
        )
    except ValueError as exc:
        raise ConfigError(f"shelves: {exc}") from exc


def parse_shelves(raw: object, *, seed: int = 0) -> tuple[ShelfTrack, ...]:
    """Parse a scenario's raw ``shelves:`` section (as the portal scenario loader passes it)."""
    keys = _validated({"shelves": raw})
    return _tracks(keys, seed)


def _net_units(events: Sequence[ShelfEvent]) -> int:
    total = 0
    for e in events:
        if e.kind is ShelfEventKind.PICK:
            total -= e.units
        elif e.kind is ShelfEventKind.RESTOCK:
            total += e.units
    return total


def _generate(
    keys: _RandomKeys,
    *,
    rng: random.Random,
    units_before: int,
    unit_weight_g: float,
    max_units: int,
) -> list[ShelfEvent]:
    """Seeded random picks, restocks, bumps and hands, one after the other from ``start``."""
    gap, unit_range = keys.gap_s, keys.units
    mix = {ShelfEventKind(k): v for k, v in keys.mix.items()}
    kinds, weights = list(mix), list(mix.values())
    events: list[ShelfEvent] = []
    units = units_before
    t = keys.start
    for _ in range(keys.count):
        kind = rng.choices(kinds, weights)[0]
        n = rng.randint(unit_range[0], unit_range[1])
        if kind is ShelfEventKind.PICK and units - n < 0:
            kind = ShelfEventKind.RESTOCK
        if kind is ShelfEventKind.RESTOCK and units + n > max_units:
            kind = ShelfEventKind.PICK
        duration = DEFAULT_DURATIONS_S[kind]
        if kind is ShelfEventKind.PICK:
            events.append(ShelfEvent(t=round(t, 3), kind=kind, duration=duration, units=n))
            units -= n
        elif kind is ShelfEventKind.RESTOCK:
            events.append(ShelfEvent(t=round(t, 3), kind=kind, duration=duration, units=n))
            units += n
        elif kind is ShelfEventKind.BUMP:
            grams = rng.uniform(0.3, 1.5) * unit_weight_g
            events.append(ShelfEvent(t=round(t, 3), kind=kind, duration=duration, grams=grams))
        else:
            grams = rng.uniform(150.0, 1500.0)
            duration = rng.uniform(1.0, 3.0)
            events.append(ShelfEvent(t=round(t, 3), kind=kind, duration=duration, grams=grams))
        t += duration + rng.uniform(gap[0], gap[1])
    return events
