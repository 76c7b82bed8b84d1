"""Scenario model: dock doors, antennas, pallets crossing, strays, and what each reader hears.

A scenario is a YAML file (``simulators/scenarios/*.yaml``, format in ``docs/simulators.md``)
loaded by :func:`load_scenario`. It is shared with the Modbus shelf simulator: the top-level key
``shelves`` is not interpreted here and is passed untouched to :attr:`Scenario.shelves` for
``simulators/shelf_scenario.py``.

Theory of operation
-------------------
Geometry. Metres, one coordinate system for the whole dock: the dock wall is the plane ``x = 0``,
``x < 0`` is outside (yard), ``x > 0`` inside; ``y`` runs along the wall; ``z`` is height. Door
``d`` is an opening ``width_m`` wide and ``height_m`` high centred at ``y = d.y_m`` (the
neighbouring door's offset is the difference of their ``y_m``). Antenna positions are given
relative to their door's centre at floor level; each antenna faces ``outside`` (boresight -x) or
``inside`` (+x), or looks at an explicit ``aim`` point.

Motion. A pallet crosses its door along a straight path perpendicular to the wall, at
``lateral_m`` from the door centre, at ``speed_mps``; its centre is on the door plane at ``at_s``
and it is in the scene while within ``travel_m`` of the plane. Its SSCC label sits on one side
face; its cases are spread through a 1.2 x 1.0 x 1.5 m load. A stray is a pallet parked at
``position`` (door-relative) from ``from_s`` to ``to_s``.

Radio (per reader antenna dwell). The reader visits its antennas in turn, ``dwell_s`` each. For
every tag in the scene at that instant the forward link is

    P_tag = P_tx + G_ant(theta) - PL(d) - X - L_wall - L_pol + G_tag - L_tag

with log-distance path loss ``PL(d) = PL0 + 10 n log10(d / d0)`` (PL0 = free space at ``d0`` at
``frequency_mhz`` unless given), antenna gain ``G_ant(theta) = G0 - min(12 (theta/HPBW)^2, FBR)``
(theta the angle off boresight; the back of the antenna is ``front_to_back_db`` down),
Gaussian shadowing ``X`` (a static part per tag and antenna, ``shadowing_sigma_db``, plus a
per-dwell part, ``fading_sigma_db``), ``wall_loss_db`` when the straight path crosses the wall
outside every door opening, and ``L_tag`` the tag's own loss (0 for a pallet label, up to
``case_depth_loss_db`` for a case buried in the load). The read probability is a logistic of the
link margin over the tag's sensitivity,

    p = (1 - miss_rate) / (1 + exp(-(P_tag - tag_sensitivity_dbm) / logistic_scale_db))

and zero when the backscatter the reader receives, ``RSSI = P_tag + G_tag - modulation_loss_db -
PL - X - L_wall - L_pol + G_ant - L_tag``, is below ``reader_sensitivity_dbm``. ``miss_rate`` is
the extra per-dwell miss (collisions, detuning). A read reports that RSSI.

Every reader evaluates every tag of the scenario, so a reader also hears (less often, more
weakly) pallets crossing the neighbouring door and strays parked near it: cross-reads come from
the same physics.

Randomness. Layout (case positions, label side, static shadowing keys) comes from
``random.Random(seed)``. Per-dwell draws use a counter-based hash of (seed, tag, antenna, dwell
index), so a run's reads do not depend on how the simulator slices time into polling windows:
same seed, same reads.

Ground truth (:meth:`Scenario.truth_events`): one ``crossing`` event per EPC per door crossing
``{epc, door, direction, from, to, t}`` and one ``parked`` event per stray EPC
``{epc, door, t, until, x, y, z}`` (``t`` in scenario seconds).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import core_schema

from dockwatch_core.errors import ConfigError
from gateway.documents import SCENARIO_LIMITS, read_yaml, shown
from gateway.validation import (
    MODEL_CONFIG,
    Items,
    Num,
    OneOf,
    Section,
    Text,
    Via,
    lines,
    params_model,
    problem,
    problems_of,
    show,
)
from simulators import epc_encode
from simulators.llrp.source import SimRead
from simulators.truth import GroundTruthWriter

Vec = tuple[float, float, float]
Facing = Literal["outside", "inside"]
Direction = Literal["in", "out"]

PALLET_LENGTH_M = 1.2  # along the travel direction (x)
PALLET_WIDTH_M = 1.0  # along the wall (y)
LOAD_BOTTOM_M = 0.15
LOAD_TOP_M = 1.65
LABEL_HEIGHT_M = 0.9
PHOTO_EYE_OFFSET_M = 0.5  # light barriers this far outside and inside the door plane
_SPEED_OF_LIGHT = 299_792_458.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RadioModel:
    """Link-budget parameters (see the module docstring). Defaults: a 30 dBm UHF portal reader
    with 6 dBi circular antennas and ordinary inlay tags."""

    tx_power_dbm: float = 30.0
    antenna_gain_dbi: float = 6.0
    beamwidth_deg: float = 70.0
    front_to_back_db: float = 20.0
    frequency_mhz: float = 915.0
    d0_m: float = 1.0
    pl0_db: float | None = None
    path_loss_exponent: float = 2.2
    shadowing_sigma_db: float = 2.0
    fading_sigma_db: float = 1.5
    polarization_loss_db: float = 3.0
    tag_gain_dbi: float = 2.0
    tag_sensitivity_dbm: float = -18.0
    modulation_loss_db: float = 6.0
    reader_sensitivity_dbm: float = -82.0
    logistic_scale_db: float = 1.0
    miss_rate: float = 0.02
    wall_loss_db: float = 15.0
    case_depth_loss_db: float = 8.0
    dwell_s: float = 0.05

    @property
    def path_loss_at_d0(self) -> float:
        if self.pl0_db is not None:
            return self.pl0_db
        wavelength = _SPEED_OF_LIGHT / (self.frequency_mhz * 1e6)
        return 20 * math.log10(4 * math.pi * self.d0_m / wavelength)

    def path_loss(self, d: float) -> float:
        return self.path_loss_at_d0 + 10 * self.path_loss_exponent * math.log10(
            max(d, 0.05) / self.d0_m
        )

    def antenna_gain(self, off_axis_rad: float) -> float:
        ratio = math.degrees(off_axis_rad) / self.beamwidth_deg
        return self.antenna_gain_dbi - min(12.0 * ratio * ratio, self.front_to_back_db)

    def read_probability(self, forward_dbm: float) -> float:
        margin = (forward_dbm - self.tag_sensitivity_dbm) / self.logistic_scale_db
        if margin < -40:
            return 0.0
        return (1.0 - self.miss_rate) / (1.0 + math.exp(-margin))

    def max_range_m(self) -> float:
        """Beyond this distance no tag is ever read (best gain, +4 sigma shadowing, 1 % odds)."""
        sigma = math.hypot(self.shadowing_sigma_db, self.fading_sigma_db)
        budget = (
            self.tx_power_dbm
            + self.antenna_gain_dbi
            - self.polarization_loss_db
            + self.tag_gain_dbi
            + 4 * sigma
            - self.tag_sensitivity_dbm
            + 5 * self.logistic_scale_db
        )
        return self.d0_m * 10 ** ((budget - self.path_loss_at_d0) / (10 * self.path_loss_exponent))


@dataclass(frozen=True, slots=True)
class AntennaSpec:
    id: int
    position: Vec
    """Door-relative: x across the wall, y along it from the door centre, z above the floor."""
    facing: Facing
    aim: Vec | None = None
    """Door-relative point the boresight goes through; None = straight out/in (-x / +x)."""

    def boresight(self) -> Vec:
        if self.aim is None:
            return (-1.0, 0.0, 0.0) if self.facing == "outside" else (1.0, 0.0, 0.0)
        v = tuple(a - p for a, p in zip(self.aim, self.position, strict=True))
        n = math.sqrt(sum(x * x for x in v))
        return (v[0] / n, v[1] / n, v[2] / n)


def default_antennas() -> tuple[AntennaSpec, ...]:
    """A four-antenna portal: 1 and 2 outside, 3 and 4 inside, on both door posts at 1.2 m,
    each looking at a point 2 m from the door on its side."""
    return (
        AntennaSpec(1, (-0.3, -1.7, 1.2), "outside", (-2.0, 0.0, 1.0)),
        AntennaSpec(2, (-0.3, 1.7, 1.2), "outside", (-2.0, 0.0, 1.0)),
        AntennaSpec(3, (0.3, -1.7, 1.2), "inside", (2.0, 0.0, 1.0)),
        AntennaSpec(4, (0.3, 1.7, 1.2), "inside", (2.0, 0.0, 1.0)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DoorSpec:
    id: str
    reader: str
    port: int | None = None
    y_m: float = 0.0
    width_m: float = 3.0
    height_m: float = 3.5
    outside_location: str = "yard"
    inside_location: str = "receiving"
    antennas: tuple[AntennaSpec, ...] = field(default_factory=default_antennas)

    @property
    def antenna_ids(self) -> tuple[int, ...]:
        return tuple(a.id for a in self.antennas)

    @property
    def outside_antennas(self) -> tuple[int, ...]:
        return tuple(a.id for a in self.antennas if a.facing == "outside")

    @property
    def inside_antennas(self) -> tuple[int, ...]:
        return tuple(a.id for a in self.antennas if a.facing == "inside")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    """A tagged load: the pallet's SSCC-96 label and its cases' SGTIN-96 tags (EPCs as hex)."""

    id: str
    pallet_epc: str | None
    case_epcs: tuple[str, ...] = ()

    @property
    def epcs(self) -> tuple[str, ...]:
        label = () if self.pallet_epc is None else (self.pallet_epc,)
        return label + self.case_epcs


@dataclass(frozen=True, slots=True, kw_only=True)
class PalletSpec:
    load: LoadSpec
    door: str
    direction: Direction
    at_s: float
    speed_mps: float = 1.2
    lateral_m: float = 0.0
    travel_m: float = 8.0

    @property
    def enters_s(self) -> float:
        return self.at_s - self.travel_m / self.speed_mps

    @property
    def leaves_s(self) -> float:
        return self.at_s + self.travel_m / self.speed_mps


@dataclass(frozen=True, slots=True, kw_only=True)
class StraySpec:
    load: LoadSpec
    door: str
    position: Vec
    """Door-relative position of the pallet's base centre."""
    from_s: float
    to_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    seed: int
    duration_s: float
    radio: RadioModel
    doors: tuple[DoorSpec, ...]
    pallets: tuple[PalletSpec, ...] = ()
    strays: tuple[StraySpec, ...] = ()
    shelves: Any = None
    """The raw ``shelves:`` section, for ``simulators/shelf_scenario.py``."""
    name: str = ""

    def with_seed(self, seed: int) -> Scenario:
        return replace(self, seed=seed)

    def door(self, door_or_reader: str) -> DoorSpec:
        for d in self.doors:
            if door_or_reader in (d.id, d.reader):
                return d
        known = ", ".join(f"{d.id} ({d.reader})" for d in self.doors)
        raise KeyError(f"no door or reader {door_or_reader!r}; doors: {known}")

    def truth_events(self) -> list[dict[str, Any]]:
        """Every ground-truth event, ordered by time then EPC."""
        events: list[dict[str, Any]] = []
        for p in self.pallets:
            door = self.door(p.door)
            outside, inside = door.outside_location, door.inside_location
            src, dst = (outside, inside) if p.direction == "in" else (inside, outside)
            events.extend(
                {
                    "event": "crossing",
                    "t": p.at_s,
                    "epc": epc,
                    "door": door.id,
                    "direction": p.direction,
                    "from": src,
                    "to": dst,
                    "load": p.load.id,
                }
                for epc in p.load.epcs
            )
        for s in self.strays:
            x, y, z = s.position
            events.extend(
                {
                    "event": "parked",
                    "t": s.from_s,
                    "until": s.to_s,
                    "epc": epc,
                    "door": s.door,
                    "x": x,
                    "y": y,
                    "z": z,
                    "load": s.load.id,
                }
                for epc in s.load.epcs
            )
        events.sort(key=lambda e: (e["t"], e["epc"]))
        return events

    def photo_eye_edges(
        self, door_id: str, *, offset_m: float = PHOTO_EYE_OFFSET_M
    ) -> list[tuple[float, str, bool]]:
        """When the light barriers of a door change: ``(t, side, broken)`` in time order.

        A barrier crosses the pallets' lane ``offset_m`` outside (``side`` "outside") or inside
        the door plane, above the pallet's deck; a pallet breaks it while its load, 1.2 m long
        along its travel, spans the barrier's line. Parked pallets (strays) stand beside the
        lane and never break it. Overlapping breaks by two pallets are one."""
        door = self.door(door_id)
        spans: dict[str, list[tuple[float, float]]] = {"outside": [], "inside": []}
        half = PALLET_LENGTH_M / 2
        for p in self.pallets:
            if p.door != door.id:
                continue
            for side, x in (("outside", -offset_m), ("inside", offset_m)):
                # centre x(s) = +-(s - at_s) x speed: broken while |x(s) - x_b| <= half
                reach = x if p.direction == "in" else -x
                spans[side].append(
                    (p.at_s + (reach - half) / p.speed_mps, p.at_s + (reach + half) / p.speed_mps)
                )
        edges: list[tuple[float, str, bool]] = []
        for side, intervals in spans.items():
            intervals.sort()
            merged: list[list[float]] = []
            for a, b in intervals:
                if merged and a <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            for a, b in merged:
                edges += [(a, side, True), (b, side, False)]
        edges.sort()
        return edges

    def write_truth(self, path: Path | str) -> Path:
        """Write :meth:`truth_events` as JSON Lines via :class:`GroundTruthWriter`."""
        with GroundTruthWriter(path) as writer:
            for event in self.truth_events():
                fields = {k: v for k, v in event.items() if k not in ("event", "t")}
                writer.write(event["event"], event["t"], **fields)
            return writer.path

    def read_source(
        self, door_or_reader: str, t0_wall: float, *, speed: float = 1.0
    ) -> ScenarioReadSource:
        """What the reader of ``door_or_reader`` hears, scenario time 0 being wall time
        ``t0_wall`` and ``speed`` scenario seconds passing per wall second.

        ``speed`` compresses the scenario into the simulator's clock (reads are stamped on that
        clock): a gateway sees pallets go ``speed`` times faster, with fewer reads. To run
        faster than real time as the gateway would see it in real time, scale the simulator's
        clock instead and keep ``speed=1.0`` on it (both would compress by ``speed`` squared);
        see ``simulators.llrp.accuracy``."""
        return ScenarioReadSource(self, self.door(door_or_reader), t0_wall, speed=speed)


# --------------------------------------------------------------------------------------------
# The world: tags placed in space, evaluated per dwell
# --------------------------------------------------------------------------------------------

_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _uniform(key: int, *parts: int) -> float:
    h = key
    for p in parts:
        h = _mix(h ^ (p & _M64))
    return ((h >> 11) + 0.5) * (1.0 / (1 << 53))


def _gauss(key: int, *parts: int) -> float:
    u1 = _uniform(key, *parts, 1)
    u2 = _uniform(key, *parts, 2)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@dataclass(frozen=True, slots=True)
class _Tag:
    index: int
    epc: bytes
    offset: Vec
    loss_db: float


@dataclass(frozen=True, slots=True)
class _Group:
    """A pallet (moving or parked) with its tags; ``position(s)`` is its base centre or None."""

    pallet: PalletSpec | None
    stray: StraySpec | None
    origin_y: float
    tags: tuple[_Tag, ...]

    def position(self, s: float) -> Vec | None:
        if self.pallet is not None:
            p = self.pallet
            if not p.enters_s <= s <= p.leaves_s:
                return None
            travelled = (s - p.at_s) * p.speed_mps
            x = travelled if p.direction == "in" else -travelled
            return (x, self.origin_y + p.lateral_m, 0.0)
        assert self.stray is not None
        st = self.stray
        if not st.from_s <= s <= st.to_s:
            return None
        return (st.position[0], self.origin_y + st.position[1], st.position[2])


def _layout(load: LoadSpec, rng: random.Random, radio: RadioModel, first_index: int) -> list[_Tag]:
    tags: list[_Tag] = []
    index = first_index
    if load.pallet_epc is not None:
        side = rng.choice((-1.0, 1.0)) * PALLET_WIDTH_M / 2
        tags.append(_Tag(index, bytes.fromhex(load.pallet_epc), (0.0, side, LABEL_HEIGHT_M), 0.0))
        index += 1
    half_l, half_w = PALLET_LENGTH_M / 2, PALLET_WIDTH_M / 2
    for epc in load.case_epcs:
        dx = rng.uniform(-half_l + 0.1, half_l - 0.1)
        dy = rng.uniform(-half_w + 0.1, half_w - 0.1)
        z = rng.uniform(LOAD_BOTTOM_M + 0.1, LOAD_TOP_M - 0.1)
        # how deep in the load the case sits: distance to the nearest side or top face
        depth = min(half_l - abs(dx), half_w - abs(dy), LOAD_TOP_M - z)
        loss = radio.case_depth_loss_db * min(1.0, depth / 0.4)
        tags.append(_Tag(index, bytes.fromhex(epc), (dx, dy, z), loss))
        index += 1
    return tags


class _World:
    """Every tag of a scenario placed in space (built deterministically from the seed)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.radio = scenario.radio
        rng = random.Random(scenario.seed)
        self.key = rng.getrandbits(64)
        groups: list[_Group] = []
        index = 0
        for p in scenario.pallets:
            tags = _layout(p.load, rng, self.radio, index)
            index += len(tags)
            groups.append(_Group(p, None, scenario.door(p.door).y_m, tuple(tags)))
        for st in scenario.strays:
            tags = _layout(st.load, rng, self.radio, index)
            index += len(tags)
            groups.append(_Group(None, st, scenario.door(st.door).y_m, tuple(tags)))
        self.groups = tuple(groups)
        self.max_range = self.radio.max_range_m()
        self._openings = tuple(
            (d.y_m - d.width_m / 2, d.y_m + d.width_m / 2, d.height_m) for d in scenario.doors
        )

    def through_wall(self, a: Vec, t: Vec) -> bool:
        if a[0] * t[0] >= 0:
            return False  # same side (or on the plane): no wall in between
        u = a[0] / (a[0] - t[0])
        y = a[1] + u * (t[1] - a[1])
        z = a[2] + u * (t[2] - a[2])
        return not any(lo <= y <= hi and 0.0 <= z <= top for lo, hi, top in self._openings)


@dataclass(frozen=True, slots=True)
class _Antenna:
    id: int
    position: Vec
    boresight: Vec
    key: int


class ScenarioReadSource:
    """The :class:`~simulators.llrp.source.ReadSource` of one door's reader."""

    def __init__(
        self, scenario: Scenario, door: DoorSpec, t0_wall: float, *, speed: float = 1.0
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.scenario = scenario
        self.door = door
        self.t0_wall = t0_wall
        self.speed = speed
        self.world = _World(scenario)
        reader_key = _mix(self.world.key ^ _mix(hash_text(door.reader)))
        self.antennas = tuple(
            _Antenna(
                a.id,
                (a.position[0], door.y_m + a.position[1], a.position[2]),
                a.boresight(),
                _mix(reader_key ^ a.id),
            )
            for a in door.antennas
        )
        self._static: dict[tuple[int, int], float] = {}

    def scenario_time(self, wall: float) -> float:
        return (wall - self.t0_wall) * self.speed

    def wall_time(self, s: float) -> float:
        return self.t0_wall + s / self.speed

    def dwells(self, t0: float, t1: float) -> range:
        """Dwell indices whose start lies in the wall-time window ``(t0, t1]``."""
        dwell = self.scenario.radio.dwell_s
        k0 = math.floor(self.scenario_time(t0) / dwell) + 1
        k1 = math.floor(self.scenario_time(t1) / dwell)
        return range(max(k0, 0), k1 + 1)

    def reads(self, t0: float, t1: float) -> Sequence[SimRead]:
        merged: dict[tuple[bytes, int], list[float]] = {}
        for k, antenna, tag, rssi in self._observations(self.dwells(t0, t1)):
            stamp = round(self.wall_time(k * self.scenario.radio.dwell_s) * 1_000_000)
            entry = merged.get((tag.epc, antenna.id))
            if entry is None:
                merged[(tag.epc, antenna.id)] = [stamp, stamp, 1, rssi]
            else:
                entry[1] = stamp
                entry[2] += 1
                entry[3] = max(entry[3], rssi)
        return [
            SimRead(antenna, epc, e[3], int(e[0]), int(e[1]), int(e[2]))
            for (epc, antenna), e in merged.items()
        ]

    def _observations(self, dwells: range) -> Iterator[tuple[int, _Antenna, _Tag, float]]:
        radio = self.scenario.radio
        world = self.world
        n = len(self.antennas)
        reach = world.max_range + 1.5  # a load's tags are within 1.5 m of its base centre
        for k in dwells:
            s = k * radio.dwell_s
            antenna = self.antennas[k % n]
            for group in world.groups:
                base = group.position(s)
                if base is None:
                    continue
                if math.dist(base, antenna.position) > reach:
                    continue
                for tag in group.tags:
                    pos = (base[0] + tag.offset[0], base[1] + tag.offset[1], tag.offset[2])
                    rssi = self._link(k, antenna, tag, pos)
                    if rssi is not None:
                        yield k, antenna, tag, rssi

    def _link(self, k: int, antenna: _Antenna, tag: _Tag, pos: Vec) -> float | None:
        """One dwell's read attempt: the RSSI if the tag is read, else None."""
        radio = self.scenario.radio
        ax, ay, az = antenna.position
        vx, vy, vz = pos[0] - ax, pos[1] - ay, pos[2] - az
        d = math.sqrt(vx * vx + vy * vy + vz * vz)
        if d > self.world.max_range:
            return None
        bx, by, bz = antenna.boresight
        cos_off = (vx * bx + vy * by + vz * bz) / max(d, 1e-9)
        gain = radio.antenna_gain(math.acos(max(-1.0, min(1.0, cos_off))))
        static_key = (tag.index, antenna.id)
        static = self._static.get(static_key)
        if static is None:
            static = radio.shadowing_sigma_db * _gauss(antenna.key, tag.index)
            self._static[static_key] = static
        shadow = static + radio.fading_sigma_db * _gauss(antenna.key, tag.index, k)
        loss = radio.path_loss(d) + shadow + radio.polarization_loss_db + tag.loss_db
        if self.world.through_wall(antenna.position, pos):
            loss += radio.wall_loss_db
        forward = radio.tx_power_dbm + gain - loss + radio.tag_gain_dbi
        rssi = forward + radio.tag_gain_dbi - radio.modulation_loss_db - loss + gain
        if rssi < radio.reader_sensitivity_dbm:
            return None
        if _uniform(antenna.key, tag.index, k, 3) >= radio.read_probability(forward):
            return None
        return rssi


def hash_text(text: str) -> int:
    """A stable 64-bit hash of a string (Python's ``hash`` is salted per process)."""
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & _M64
    return h


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------
#
# The file's keys are pydantic dataclasses checked by gateway.validation, as the gateway's
# config is: every problem at once, one line each, by key path, with did-you-mean. What needs
# more than one key (EPCs encoded from a GTIN, door references, an EPC carried twice) is checked
# once the keys are valid, and its problems are collected too.


class _Name(Text):
    """A non-empty name; a YAML number is taken for the text it spells (``id: 7``)."""

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return super().check(value, info)


class _Vec(Num):
    """``[x, y, z]`` in metres."""

    def __init__(self) -> None:
        super().__init__(float)

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if (
            isinstance(value, list | tuple)
            and len(value) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            return tuple(float(v) for v in value)
        raise problem(f"must be [x, y, z] in metres, got {show(value)}")


class _HexEpc(Text):
    """An EPC in hex, whole 16-bit words (upper-cased)."""

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        text = str(value).upper()
        if not text or len(text) % 4 or any(ch not in "0123456789ABCDEF" for ch in text):
            raise problem(f"must be hex, whole 16-bit words, got {show(value)}")
        return text


class _MissRate(Num):
    def __init__(self) -> None:
        super().__init__(float, lo=0)
        self.what = "a number in [0, 1)"
        self.json["exclusiveMaximum"] = 1

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        checked = super().check(value, info)
        if checked >= 1:
            raise problem(f"must be in [0, 1), got {value}")
        return checked


_NAME: Final = _Name()
_NUMBER: Final = Num(float)
_POSITIVE: Final = Num(float, gt=0)
_INT: Final = Num(int)
_RADIO_POSITIVE: Final = frozenset(
    {"dwell_s", "logistic_scale_db", "beamwidth_deg", "frequency_mhz", "d0_m"}
)
_RADIO_KEYS: Final = params_model(
    RadioModel,
    {
        **{name: Num(float, gt=0) for name in _RADIO_POSITIVE},
        "miss_rate": _MissRate(),
    },
    lambda _tp: Num(float),
)


def _radio(keys: Any) -> RadioModel:
    return RadioModel(**{f.name: getattr(keys, f.name) for f in fields(RadioModel)})


@pydantic_dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _AntennaKeys(Section):
    id: Annotated[int, Num(int, lo=1, hi=0xFFFF)]
    position: Annotated[Vec, _Vec()]
    facing: Annotated[Facing, OneOf()]
    aim: Annotated[Vec, _Vec()] | None = None

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        if self.aim is not None and math.dist(self.aim, self.position) == 0:
            yield "aim", "must differ from the antenna position"


@pydantic_dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _DoorKeys(Section):
    id: Annotated[str, _NAME]
    reader: Annotated[str, _NAME] | None = None
    """Default ``{id}-reader``."""
    port: Annotated[int, Num(int, lo=1, hi=65535)] | None = None
    y_m: Annotated[float, _NUMBER] = 0.0
    width_m: Annotated[float, _POSITIVE] = 3.0
    height_m: Annotated[float, _POSITIVE] = 3.5
    outside_location: Annotated[str, _NAME] = "yard"
    inside_location: Annotated[str, _NAME] = "receiving"
    antennas: Annotated[tuple[_AntennaKeys, ...], Items("antennas", nonempty=True)] | None = None
    """Default: :func:`default_antennas`."""

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        seen: set[int] = set()
        for i, antenna in enumerate(self.antennas or ()):
            if antenna.id in seen:
                yield f"antennas[{i}].id", f"duplicate antenna {antenna.id}"
            seen.add(antenna.id)

    def door(self) -> DoorSpec:
        return DoorSpec(
            id=self.id,
            reader=self.reader or f"{self.id}-reader",
            port=self.port,
            y_m=self.y_m,
            width_m=self.width_m,
            height_m=self.height_m,
            outside_location=self.outside_location,
            inside_location=self.inside_location,
            antennas=tuple(
                AntennaSpec(a.id, a.position, a.facing, a.aim) for a in self.antennas or ()
            )
            or default_antennas(),
        )


@pydantic_dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _SsccKeys(Section):
    company_prefix: Annotated[str, _NAME]
    serial: Annotated[int, _INT]
    extension: Annotated[int, _INT] = 0
    filter: Annotated[int, _INT] = 2


@pydantic_dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _CaseKeys(Section):
    gtin: Annotated[str, _NAME]
    company_prefix: Annotated[str, _NAME]
    count: Annotated[int, Num(int, lo=0, hi=10_000)] = 1
    first_serial: Annotated[int, _INT] = 1
    filter: Annotated[int, _INT] = 2


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=MODEL_CONFIG)
class _LoadKeys(Section):
    """What a pallet or a stray carries: an SSCC label, cases, raw EPCs."""

    id: Annotated[str, _NAME] | None = None
    """Default: the key path (``pallets[3]``)."""
    door: Annotated[str, _NAME]
    sscc: _SsccKeys | None = None
    cases: Annotated[tuple[_CaseKeys, ...], Items("cases")] | None = None
    epcs: Annotated[tuple[Annotated[str, _HexEpc()], ...], Items("hex EPCs")] | None = None

    def load(self, path: str, problems: list[tuple[str, str]]) -> LoadSpec:
        pallet_epc: str | None = None
        if self.sscc is not None:
            s = self.sscc
            try:
                pallet_epc = epc_encode.sscc96(
                    s.company_prefix, s.serial, extension=s.extension, filter_value=s.filter
                )
            except ValueError as exc:
                problems.append((f"{path}.sscc", str(exc)))
        cases: list[str] = []
        for i, c in enumerate(self.cases or ()):
            try:
                cases.extend(
                    epc_encode.sgtin96(
                        c.gtin, c.company_prefix, c.first_serial + n, filter_value=c.filter
                    )
                    for n in range(c.count)
                )
            except ValueError as exc:
                problems.append((f"{path}.cases[{i}]", str(exc)))
        cases.extend(self.epcs or ())
        if pallet_epc is None and not cases:
            problems.append((path, "carries no tags: give sscc, cases or epcs"))
        return LoadSpec(id=self.id or path, pallet_epc=pallet_epc, case_epcs=tuple(cases))


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=MODEL_CONFIG)
class _PalletKeys(_LoadKeys):
    direction: Annotated[Direction, OneOf()]
    at_s: Annotated[float, Num(float, lo=0)]
    speed_mps: Annotated[float, _POSITIVE] = 1.2
    lateral_m: Annotated[float, _NUMBER] = 0.0
    travel_m: Annotated[float, _POSITIVE] = 8.0


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=MODEL_CONFIG)
class _StrayKeys(_LoadKeys):
    position: Annotated[Vec, _Vec()]
    from_s: Annotated[float, Num(float, lo=0)] = 0.0
    to_s: Annotated[float, _NUMBER]

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        if self.to_s <= self.from_s:
            yield "to_s", f"must be after from_s ({self.from_s}), got {self.to_s}"


@pydantic_dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _ScenarioKeys(Section):
    name: Annotated[str, _NAME] | None = None
    seed: Annotated[int, _INT] = 0
    duration_s: Annotated[float, _POSITIVE] | None = None
    """Default: five seconds after the last pallet leaves or stray goes."""
    radio: Annotated[RadioModel, Via(_RADIO_KEYS, RadioModel, _radio)] | None = None
    doors: Annotated[tuple[_DoorKeys, ...], Items("doors")] | None = None
    pallets: Annotated[tuple[_PalletKeys, ...], Items("pallets")] | None = None
    strays: Annotated[tuple[_StrayKeys, ...], Items("strays")] | None = None
    shelves: SkipJsonSchema[Any] = None
    """The shelf part, passed through to ``simulators/shelf_scenario.py``."""

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        doors = self.doors or ()
        if not doors:
            yield "doors", "at least one door is required"
        seen: dict[str, set[object]] = {"id": set(), "reader": set(), "port": set()}
        for i, d in enumerate(doors):
            for what, value in (("id", d.id), ("reader", d.reader or f"{d.id}-reader")):
                if value in seen[what]:
                    yield f"doors[{i}].{what}", f"duplicate {what} {value!r}"
                seen[what].add(value)
            if d.port is not None:
                if d.port in seen["port"]:
                    yield f"doors[{i}].port", f"duplicate port {d.port}"
                seen["port"].add(d.port)
        door_ids = sorted({d.id for d in doors})
        for section, loads in (("pallets", self.pallets or ()), ("strays", self.strays or ())):
            for i, load in enumerate(loads):
                if load.door not in door_ids:
                    yield (
                        f"{section}[{i}].door",
                        f"no door {load.door!r} (doors: {', '.join(door_ids)})",
                    )


_SCENARIO_ADAPTER: Final = TypeAdapter(_ScenarioKeys)


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario file; :class:`ConfigError` lists every problem by key."""
    p = Path(path)
    # Size, nesting and encoding limits (gateway.documents.SCENARIO_LIMITS): a DocumentError
    # is a ConfigError naming the file.
    data = read_yaml(p, SCENARIO_LIMITS)
    return parse_scenario(data, source=shown(p))


def parse_scenario(data: Any, *, source: str = "<scenario>") -> Scenario:
    """Build a :class:`Scenario` from already-parsed YAML data."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: (top level): must be a mapping, got {show(data)}")
    try:
        keys = _SCENARIO_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ConfigError([f"{source}: {line}" for line in lines(problems_of(exc))]) from exc
    problems: list[tuple[str, str]] = []
    pallets = [
        PalletSpec(
            load=p.load(f"pallets[{i}]", problems),
            door=p.door,
            direction=p.direction,
            at_s=p.at_s,
            speed_mps=p.speed_mps,
            lateral_m=p.lateral_m,
            travel_m=p.travel_m,
        )
        for i, p in enumerate(keys.pallets or ())
    ]
    strays = [
        StraySpec(
            load=s.load(f"strays[{i}]", problems),
            door=s.door,
            position=s.position,
            from_s=s.from_s,
            to_s=s.to_s,
        )
        for i, s in enumerate(keys.strays or ())
    ]
    problems.extend(_unique_epcs(pallets, strays))
    if problems:
        raise ConfigError([f"{source}: {path}: {message}" for path, message in problems])
    ends = [p.leaves_s for p in pallets] + [s.to_s for s in strays]
    duration = keys.duration_s
    return Scenario(
        seed=keys.seed,
        duration_s=(max(ends) if ends else 0.0) + 5.0 if duration is None else duration,
        radio=keys.radio or RadioModel(),
        doors=tuple(d.door() for d in keys.doors or ()),
        pallets=tuple(sorted(pallets, key=lambda p: p.at_s)),
        strays=tuple(strays),
        shelves=keys.shelves,
        name=keys.name or "",
    )


def _unique_epcs(
    pallets: Sequence[PalletSpec], strays: Sequence[StraySpec]
) -> Iterator[tuple[str, str]]:
    owner: dict[str, str] = {}
    loads = [p.load for p in pallets] + [s.load for s in strays]
    for load in loads:
        for epc in load.epcs:
            if epc in owner and owner[epc] != load.id:
                yield load.id, f"EPC {epc} is also carried by {owner[epc]}"
            owner.setdefault(epc, load.id)
