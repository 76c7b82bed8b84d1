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

import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockwatch_core.errors import ConfigError
from gateway.documents import SCENARIO_LIMITS, read_yaml


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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
    encoding: Encoding = field(default_factory=Encoding)
    events: tuple[ShelfEvent, ...] = ()
    transmitter: Transmitter = field(default_factory=Transmitter)

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


@dataclass(frozen=True, slots=True)
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


def load_shelf_scenario(path: Path | str) -> ShelfScenario:
    """Load a shelf-only (or combined) scenario file; only its shelf part is read."""
    path = Path(path)
    # Size, nesting and encoding limits: a DocumentError is a ConfigError naming the file.
    raw = read_yaml(path, SCENARIO_LIMITS)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: a scenario is a mapping at the top level")
    return shelf_scenario_from_mapping(raw, default_name=path.stem)


def shelf_scenario_from_mapping(
    raw: Mapping[str, Any], default_name: str = "shelves"
) -> ShelfScenario:
    seed = _int(raw.get("seed", 0), "seed")
    duration = raw.get("duration_s")
    name = str(raw.get("name", default_name))
    shelves = parse_shelves(raw.get("shelves", []), seed=seed)
    try:
        return ShelfScenario(
            name=name,
            seed=seed,
            shelves=shelves,
            duration_s=None if duration is None else _float(duration, "duration_s"),
        )
    except ValueError as exc:
        raise ConfigError(f"shelves: {exc}") from exc


def parse_shelves(raw: object, *, seed: int = 0) -> tuple[ShelfTrack, ...]:
    """Parse a scenario's raw ``shelves:`` section (as the portal scenario loader passes it)."""
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise ConfigError("shelves: must be a list")
    tracks = []
    for index, entry in enumerate(raw):
        key = f"shelves[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{key}: must be a mapping")
        tracks.append(_parse_track(entry, key, seed))
    return tuple(tracks)


_TRACK_KEYS = frozenset(
    {
        "id", "unit", "sku", "unit_weight_g", "initial_units", "item_sigma_g", "tare_g",
        "capacity_g", "noise_g", "drift_g_per_min", "encoding", "events", "random",
    }
)  # fmt: skip


def _parse_track(raw: Mapping[str, Any], key: str, seed: int) -> ShelfTrack:
    unknown = sorted(set(raw) - _TRACK_KEYS)
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown}")
    if "id" not in raw or "unit" not in raw:
        raise ConfigError(f"{key}: 'id' and 'unit' are required")
    defaults = ShelfTrack(shelf_id="defaults", unit=1)
    shelf_id = str(raw["id"])
    unit_weight = _float(raw.get("unit_weight_g", defaults.unit_weight_g), f"{key}.unit_weight_g")
    initial = _int(raw.get("initial_units", defaults.initial_units), f"{key}.initial_units")
    tare = _float(raw.get("tare_g", defaults.tare_g), f"{key}.tare_g")
    capacity = _float(raw.get("capacity_g", defaults.capacity_g), f"{key}.capacity_g")
    events = [
        _parse_event(e, f"{key}.events[{i}]") for i, e in enumerate(_list(raw, "events", key))
    ]
    if "random" in raw:
        events.extend(
            _generate(
                raw["random"],
                f"{key}.random",
                rng=random.Random(f"{seed}:{shelf_id}:random"),
                units_before=initial + _net_units(events),
                unit_weight_g=unit_weight,
                max_units=int((capacity - tare) // unit_weight),
            )
        )
    try:
        return ShelfTrack(
            shelf_id=shelf_id,
            unit=_int(raw["unit"], f"{key}.unit"),
            sku=str(raw.get("sku", defaults.sku)),
            unit_weight_g=unit_weight,
            initial_units=initial,
            item_sigma_g=_float(
                raw.get("item_sigma_g", defaults.item_sigma_g), f"{key}.item_sigma_g"
            ),
            tare_g=tare,
            capacity_g=capacity,
            noise_g=_float(raw.get("noise_g", defaults.noise_g), f"{key}.noise_g"),
            drift_g_per_min=_float(
                raw.get("drift_g_per_min", defaults.drift_g_per_min), f"{key}.drift_g_per_min"
            ),
            encoding=_parse_encoding(raw.get("encoding", {}), f"{key}.encoding"),
            events=tuple(events),
        )
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def _parse_encoding(raw: object, key: str) -> Encoding:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: must be a mapping")
    unknown = sorted(set(raw) - {"type", "word_order", "scale"})
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown}")
    try:
        return Encoding(
            type=WeightType(raw.get("type", "float32")),
            word_order=WordOrder(raw.get("word_order", "big")),
            scale=_float(raw.get("scale", 1.0), f"{key}.scale"),
        )
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def _parse_event(raw: object, key: str) -> ShelfEvent:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: must be a mapping")
    kinds = [k for k in ShelfEventKind if k.value in raw]
    if len(kinds) != 1:
        raise ConfigError(f"{key}: exactly one of {[k.value for k in ShelfEventKind]} is required")
    kind = kinds[0]
    unknown = sorted(set(raw) - {"t", "duration", "exception_code", "garbage", kind.value})
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown}")
    if "t" not in raw:
        raise ConfigError(f"{key}.t: required")
    t = _float(raw["t"], f"{key}.t")
    duration = _float(raw.get("duration", DEFAULT_DURATIONS_S[kind]), f"{key}.duration")
    value = raw[kind.value]
    if kind in (ShelfEventKind.PICK, ShelfEventKind.RESTOCK, ShelfEventKind.PUTBACK):
        units = _int(value, f"{key}.{kind}")
        if units < 1:
            raise ConfigError(f"{key}.{kind}: must be >= 1")
        return ShelfEvent(t=t, kind=kind, duration=duration, units=units)
    if kind in (ShelfEventKind.BUMP, ShelfEventKind.HAND):
        return ShelfEvent(t=t, kind=kind, duration=duration, grams=_float(value, f"{key}.{kind}"))
    try:
        mode = FailureMode(value)
    except ValueError as exc:
        raise ConfigError(f"{key}.failure: one of {[m.value for m in FailureMode]}") from exc
    code = _int(raw.get("exception_code", 4), f"{key}.exception_code")
    try:
        garbage = Garbage(raw.get("garbage", "huge"))
    except ValueError as exc:
        raise ConfigError(f"{key}.garbage: one of {[g.value for g in Garbage]}") from exc
    return ShelfEvent(
        t=t, kind=kind, duration=duration, mode=mode, exception_code=code, garbage=garbage
    )


def _net_units(events: Sequence[ShelfEvent]) -> int:
    total = 0
    for e in events:
        if e.kind is ShelfEventKind.PICK:
            total -= e.units
        elif e.kind is ShelfEventKind.RESTOCK:
            total += e.units
    return total


def _generate(
    raw: object,
    key: str,
    *,
    rng: random.Random,
    units_before: int,
    unit_weight_g: float,
    max_units: int,
) -> list[ShelfEvent]:
    """Seeded random picks, restocks, bumps and hands, one after the other from ``start``."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: must be a mapping")
    unknown = sorted(set(raw) - {"start", "count", "gap_s", "units", "mix"})
    if unknown:
        raise ConfigError(f"{key}: unknown keys {unknown}")
    start = _float(raw.get("start", 0.0), f"{key}.start")
    count = _int(raw.get("count", 0), f"{key}.count")
    gap = _pair(raw.get("gap_s", [2.0, 3.0]), f"{key}.gap_s")
    unit_range = _int_pair(raw.get("units", [1, 3]), f"{key}.units")
    mix_raw = raw.get("mix", {"pick": 0.6, "restock": 0.3, "bump": 0.1})
    if not isinstance(mix_raw, Mapping) or not mix_raw:
        raise ConfigError(f"{key}.mix: a mapping of event kind to weight")
    try:
        mix = {ShelfEventKind(k): _float(v, f"{key}.mix.{k}") for k, v in mix_raw.items()}
    except ValueError as exc:
        raise ConfigError(f"{key}.mix: kinds are pick, restock, bump, hand") from exc
    if ShelfEventKind.FAILURE in mix:
        raise ConfigError(f"{key}.mix: failures are listed explicitly, not generated")
    kinds, weights = list(mix), list(mix.values())
    events: list[ShelfEvent] = []
    units = units_before
    t = start
    for _ in range(count):
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


def _list(raw: Mapping[str, Any], name: str, key: str) -> list[Any]:
    value = raw.get(name, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{key}.{name}: must be a list")
    return value


def _pair(raw: object, key: str) -> tuple[float, float]:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise ConfigError(f"{key}: must be [low, high]")
    low, high = _float(raw[0], key), _float(raw[1], key)
    if low > high or low < 0:
        raise ConfigError(f"{key}: must be [low, high] with 0 <= low <= high")
    return low, high


def _int_pair(raw: object, key: str) -> tuple[int, int]:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise ConfigError(f"{key}: must be [low, high]")
    low, high = _int(raw[0], key), _int(raw[1], key)
    if low > high or low < 1:
        raise ConfigError(f"{key}: must be [low, high] with 1 <= low <= high")
    return low, high


def _float(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    return float(value)


def _int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: must be an integer, got {value!r}")
    return value
