"""Fast door decisions: pass events, stack lights (GPO) and photo eyes (GPI).

The engine's pass events and the lights' rules are tested pure; the lights and the photo eyes
end to end against the LLRP simulator (real TCP, real sllurp, the gateway's adapter and
``DoorPipeline``) on ``clean.yaml``, checked against its ground truth; pass events over a real
Mosquitto broker; the config keys through the config loader.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import uvloop

from gateway.adapters.mqtt import MqttSink
from gateway.config import parse_config
from gateway.domain.lights import LightRule, Outcome, PortalLights, StackLights, outcome_of
from gateway.domain.model import Alert, DeviceId, Movement, Sku
from gateway.domain.params import PortalParams
from gateway.domain.portal import DecidedBy, Direction, PassPhase, PortalEngine, us_to_datetime
from gateway.domain.receiving import ExpectedLine, ExpectedReceipt, ReceivingTracker
from gateway.runtime.doors import DoorPipeline, DoorPorts, lights_of, photo_eyes_of
from simulators.llrp.accuracy import PortalAccuracyReport, run_portal_accuracy, sku_for
from simulators.scenario import load_scenario
from tests.support.broker import MosquittoBroker
from tests.support.mqtt_tools import MosquittoSub, await_for, open_store, wait_for
from tests.test_config import NO_ENV, base, problems_of
from tests.test_portal_engine import (
    DOOR1,
    T0,
    case_epc,
    crossing,
    make_catalog,
    make_engine,
    pallet,
    reports,
    run,
)

REPO = Path(__file__).resolve().parents[1]
READER = DeviceId("door-1-reader")

# --- pass events ----------------------------------------------------------------------------


def test_a_pallet_gives_started_then_decided_with_its_cases_before_it_settles() -> None:
    engine = make_engine()
    epcs = [case_epc(n) for n in range(1, 7)]
    crossings = run(engine, pallet(range(1, 7)))
    events = engine.take_pass_events()

    assert next(e.phase for e in events) is PassPhase.STARTED
    assert [e.phase for e in events][-1] is PassPhase.DECIDED
    assert {e.phase for e in events[1:-1]} <= {PassPhase.UPDATED}
    assert len({e.pass_key for e in events}) == 1
    decided = events[-1]
    assert decided.direction is Direction.IN
    assert set(epcs) < set(decided.epcs)  # and the pallet's SSCC
    assert sorted(decided.epcs) == sorted(c.epc for c in crossings)
    assert decided.pass_id == crossings[0].pass_id
    assert all(c.pass_id == decided.pass_id for c in crossings)
    # Cases so far only grow, and the pass starts well before it settles.
    assert [len(e.epcs) for e in events] == sorted(len(e.epcs) for e in events)
    assert events[0].at_us < decided.at_us
    assert engine.take_pass_events() == []  # taken once


def test_settling_follows_the_last_decision_by_settle_s() -> None:
    params = PortalParams()
    engine = make_engine(params=params)
    run(engine, crossing(case_epc(1)))
    started, decided = engine.take_pass_events()
    assert decided.at_us - started.at_us == round(params.settle_s * 1e6)


# --- photo eyes in the engine ---------------------------------------------------------------


def eyed_engine(min_confidence: float = PortalParams().min_confidence) -> PortalEngine:
    return PortalEngine(
        portals=[replace(DOOR1.spec(), photo_eyes=True)],
        catalog=make_catalog(),
        params=PortalParams(min_confidence=min_confidence),
    )


def test_beam_order_agreeing_with_the_reads_raises_confidence() -> None:
    plain = make_engine()
    (without,) = run(plain, crossing(case_epc(1)))
    engine = eyed_engine()
    moment = without.moment_us
    engine.beam("door-1", "outside", True, moment - 400_000)
    engine.beam("door-1", "inside", True, moment - 100_000)
    engine.beam("door-1", "outside", False, moment + 200_000)
    engine.beam("door-1", "inside", False, moment + 500_000)
    (with_eyes,) = run(engine, crossing(case_epc(1)))
    assert with_eyes.evidence.beams == "agree"
    assert with_eyes.confidence > without.confidence
    assert with_eyes.direction is Direction.IN


def test_reads_without_a_beam_break_weigh_half_and_a_contrary_order_too() -> None:
    engine = eyed_engine(min_confidence=0.0)
    (lonely,) = run(engine, crossing(case_epc(1)))
    assert lonely.evidence.beams == "none"
    (plain,) = run(make_engine(params=PortalParams(min_confidence=0.0)), crossing(case_epc(1)))
    assert lonely.confidence == pytest.approx(plain.confidence * 0.5, abs=1e-3)

    engine = eyed_engine(min_confidence=0.0)
    moment = plain.moment_us
    engine.beam("door-1", "inside", True, moment - 400_000)  # inside first: outward
    engine.beam("door-1", "outside", True, moment - 100_000)
    (contrary,) = run(engine, crossing(case_epc(1)))
    assert contrary.evidence.beams == "disagree"
    assert contrary.confidence == pytest.approx(plain.confidence * 0.5, abs=1e-3)
    # At the default min_confidence a stray read far from any beam break moves nothing.
    engine = eyed_engine()
    assert run(engine, crossing(case_epc(1), peak_dbm=-60.0, drop=0.6)) == []


def test_beam_of_an_unknown_portal_or_side_is_refused() -> None:
    engine = eyed_engine()
    with pytest.raises(ValueError, match="door-9"):
        engine.beam("door-9", "outside", True, T0)
    with pytest.raises(ValueError, match="up"):
        engine.beam("door-1", "up", True, T0)


# --- stack lights (pure) --------------------------------------------------------------------

RULES = (
    LightRule(Outcome.DECIDING, (3,), for_s=None),
    LightRule(Outcome.MATCHED, (1,), for_s=3.0),
    LightRule(Outcome.MISMATCH, (2,), for_s=5.0),
    LightRule(Outcome.MISMATCH, (4,), for_s=3.0),  # the horn, shorter than the red light
)


def test_outcomes_switch_the_lights_and_expire() -> None:
    lights = StackLights([PortalLights("door-1", READER, RULES)])
    assert lights.show("door-1", Outcome.DECIDING, 0.0) == {READER: {3: True}}
    assert lights.show("door-1", Outcome.DECIDING, 0.5) == {}  # still amber: no write
    assert lights.show("door-1", Outcome.MATCHED, 1.0) == {READER: {1: True, 3: False}}
    assert lights.advance(3.9) == {}
    assert lights.advance(4.0) == {READER: {1: False}}
    assert lights.show("door-1", Outcome.MISMATCH, 10.0) == {READER: {2: True, 4: True}}
    assert lights.advance(13.0) == {READER: {4: False}}  # horn for 3 s
    assert lights.advance(15.0) == {READER: {2: False}}
    assert lights.levels(READER) == {1: False, 2: False, 3: False, 4: False}
    assert lights.show("door-2", Outcome.MATCHED, 20.0) == {}  # a door without lights


def test_blinking_rule_toggles_every_half_period() -> None:
    lights = StackLights(
        [PortalLights("door-1", READER, (LightRule(Outcome.DECIDING, (3,), 2.0, blink=True),))],
        blink_s=1.0,
    )
    assert lights.show("door-1", Outcome.DECIDING, 0.0) == {READER: {3: True}}
    assert lights.advance(0.5) == {READER: {3: False}}
    assert lights.advance(1.0) == {READER: {3: True}}
    assert lights.advance(2.0) == {READER: {3: False}}  # expired
    assert lights.advance(2.5) == {}


def test_outcome_of_a_pass() -> None:
    assert outcome_of(settled=False, confidence=1, low_confidence=0.8, matched=None) is (
        Outcome.DECIDING
    )
    assert outcome_of(settled=False, confidence=1, low_confidence=0.8, matched=False) is (
        Outcome.MISMATCH
    )
    assert outcome_of(settled=True, confidence=0.7, low_confidence=0.8, matched=True) is (
        Outcome.DECIDING
    )
    assert outcome_of(settled=True, confidence=0.9, low_confidence=0.8, matched=True) is (
        Outcome.MATCHED
    )
    assert outcome_of(settled=True, confidence=0.9, low_confidence=0.8, matched=None) is (
        Outcome.DECIDED
    )


# --- config ---------------------------------------------------------------------------------


def test_lights_and_photo_eyes_config_keys() -> None:
    data = base()
    data["portals"][0]["lights"] = {
        "rules": [
            {"on": "matched", "gpo": [1]},
            {"on": "mismatch", "gpo": [2, 4], "for_s": 3.0},
            {"on": "deciding", "gpo": [3], "for_s": None, "blink": True},
        ],
        "low_confidence": 0.9,
    }
    data["portals"][0]["photo_eyes"] = {"outside_gpi": 1, "inside_gpi": 2, "broken_high": False}
    config = parse_config(data, environ=NO_ENV)
    portal = config.portals[0]
    assert portal.lights is not None
    assert [r.on for r in portal.lights.rules] == ["matched", "mismatch", "deciding"]
    assert portal.lights.rules[0].for_s == 3.0  # the default
    assert portal.lights.rules[2].for_s is None
    assert config.portals[1].lights is None
    lights = lights_of(config)
    assert lights is not None
    assert lights.portals["door-1"].low_confidence == 0.9
    assert lights.show("door-1", Outcome.MISMATCH, 0.0) == {READER: {2: True, 4: True}}
    eyes = photo_eyes_of(config)
    assert {k: (e.portal_id, e.side, e.broken_high) for k, e in eyes.items()} == {
        (READER, 1): ("door-1", "outside", False),
        (READER, 2): ("door-1", "inside", False),
    }

    data["portals"][0]["lights"]["rules"][0]["on"] = "green"
    data["portals"][0]["lights"]["rules"][1]["gpo"] = []
    data["portals"][0]["photo_eyes"]["inside_gpi"] = 1
    problems = problems_of(data)
    assert any(p.startswith("portals[0].lights.rules[0].on:") for p in problems)
    assert any(p.startswith("portals[0].lights.rules[1].gpo:") for p in problems)
    assert "portals[0].photo_eyes.inside_gpi: must differ from outside_gpi (1)" in problems


def test_two_portals_of_one_reader_cannot_share_a_gpo_or_gpi_port() -> None:
    data = base()
    data["readers"][0]["antennas"] = [1, 2, 3, 4, 5, 6, 7, 8]
    data["portals"][1].update(
        reader="door-1-reader", outside_antennas=[5, 6], inside_antennas=[7, 8]
    )
    for portal in data["portals"]:
        portal["lights"] = {"rules": [{"on": "matched", "gpo": [1]}]}
        portal["photo_eyes"] = {"outside_gpi": 1, "inside_gpi": 2}
    problems = problems_of(data)
    assert (
        "portals[1].lights.rules[0].gpo: GPO 1 of reader 'door-1-reader' is already used by "
        "portals[0]" in problems
    )
    assert any(p.startswith("portals[1].photo_eyes.outside_gpi: GPI 1") for p in problems)
    data["portals"][1]["lights"]["rules"][0]["gpo"] = [5]
    data["portals"][1]["photo_eyes"] = {"outside_gpi": 3, "inside_gpi": 4}
    parse_config(data, environ=NO_ENV)  # separate ports: fine


# --- end to end against the LLRP simulator --------------------------------------------------

GREEN, RED, AMBER, HORN = 1, 2, 3, 4
E2E_RULES = (
    LightRule(Outcome.DECIDING, (AMBER,), for_s=None),
    LightRule(Outcome.MATCHED, (GREEN,), for_s=3.0),
    LightRule(Outcome.DECIDED, (GREEN,), for_s=3.0),
    LightRule(Outcome.MISMATCH, (RED,), for_s=3.0),
    LightRule(Outcome.MISMATCH, (HORN,), for_s=3.0),
)


def test_lights_and_photo_eyes_follow_the_scenario_ground_truth(tmp_path: Path) -> None:
    """clean.yaml: inbound-1 at 10 s is expected (an ASN for its 8 cases), inbound-2 at 30 s is
    not (its SKUs are not on the ASN), outbound-1 at 50 s ships. The reader simulator records
    every GPO write; the photo eyes are simulated from the pallets' tracks."""
    scenario = load_scenario(REPO / "simulators" / "scenarios" / "clean.yaml")
    asn = ExpectedReceipt(
        receipt_id="ASN-1",
        door="door-1",
        lines=(ExpectedLine(sku=Sku(sku_for("00614141123452")), quantity=8),),
    )
    report: PortalAccuracyReport = uvloop.run(
        run_portal_accuracy(
            scenario,
            store_url=f"sqlite:///{tmp_path / 'edge.db'}",
            truth_path=tmp_path / "truth.jsonl",
            speed=10.0,
            photo_eyes=True,
            lights=[PortalLights("door-1", READER, E2E_RULES)],
            expected=[asn],
        )
    )
    assert not [t for t in threading.enumerate() if "sllurp" in t.name.lower()]
    assert report.movements.precision == report.movements.recall == 1.0
    # Every crossing had both beams broken in its direction's order.
    assert dict(report.beams) == {"agree": report.crossings.predicted}
    writes = [(w.at_s - report.start, w.port, w.high) for w in report.gpo["door-1"]]

    def on(port: int, after: float, before: float) -> list[float]:
        return [t for t, p, level in writes if p == port and level and after <= t < before]

    settled = [
        (e.moment_us / 1e6 - report.start, at - report.start)
        for at, e in report.pass_events
        if e.phase is PassPhase.DECIDED
    ]
    # One settled pass per pallet, its earliest case crossing the door plane with the pallet
    # (1.2 m long, at 1 m/s).
    assert len(settled) == 3
    assert all(abs(plane - t) < 1.0 for (plane, _), t in zip(settled, (10, 30, 50), strict=True))
    decided = {t: at for (_, at), t in zip(settled, (10, 30, 50), strict=True)}
    # inbound-1, expected: green within 3 s of the door plane and 0.5 s of its decision, and
    # no red or horn.
    (green,) = on(GREEN, 10, 20)
    assert 10 < green < 13
    assert green - decided[10] <= 0.5
    assert not on(RED, 0, 30)
    assert not on(HORN, 0, 30)
    # inbound-2, not expected: red and horn, for 3 s, and no green.
    (red,) = on(RED, 30, 40)
    (horn,) = on(HORN, 30, 40)
    assert 30 < red < 33
    assert red == pytest.approx(horn, abs=0.01)  # one SET_READER_CONFIG
    assert not on(GREEN, 30, 50)
    off = [t for t, p, level in writes if p == HORN and not level and t > horn]
    assert off
    assert 2.7 <= off[0] - horn <= 3.5
    # outbound-1: a shipment, no receipt to compare: decided, green.
    (shipped,) = on(GREEN, 50, 60)
    assert 50 < shipped < 53
    # Amber shows while a pass is deciding, before its outcome.
    assert on(AMBER, 9, 12)
    assert min(on(AMBER, 9, 12)) < green
    # The pass events are much faster than the movements.
    assert report.pass_latency.max < report.movement_latency.median


# --- MQTT -------------------------------------------------------------------------------------


def test_pass_events_reach_a_subscriber(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    prefix = "dockwatch/passes-test"
    store = open_store(f"sqlite:///{tmp_path / 'edge.db'}")
    payload = {"portal": "door-1", "phase": "started", "cases": 3}
    try:
        with MosquittoSub(
            mosquitto, [f"{prefix}/doors/+/passes"], tmp_path / "passes.txt", client_id="passes"
        ) as sub:

            async def publish() -> None:
                sink = MqttSink(
                    store=store, site="dc", url=mosquitto.url, topic_prefix=prefix, client_id="gw"
                )
                task = asyncio.create_task(sink.run())
                try:
                    await await_for(lambda: sink.connected, within=10, what="connected")
                    sink.publish_pass("door-1", json.dumps(payload).encode())
                    await await_for(lambda: bool(sub.messages()), within=10, what="delivery")
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

            asyncio.run(publish())
            wait_for(lambda: bool(sub.messages()), timeout=10, what="delivery")
            (message,) = sub.messages()
            assert message.topic == f"{prefix}/doors/door-1/passes"
            assert not message.retained
            assert json.loads(message.payload) == payload
    finally:
        store.close()


def test_quiet_side_decision_is_early() -> None:
    """The speed rule itself: a tag carried in is decided quiet_close_s after the outside
    stopped hearing it, not after the pass went silent."""
    engine = make_engine()
    reads = crossing(case_epc(1), path_m=6.0)
    (crossed,) = run(engine, reads)
    assert crossed.evidence.decided_by is DecidedBy.QUIET_SIDE
    last_outside = max(r.last_seen_us for r in reads if r.antenna in DOOR1.outside)
    started, _ = engine.take_pass_events()
    assert started.at_us - last_outside <= round(engine.params.quiet_close_s * 1e6) * 2


# --- the door pipeline with live receiving ----------------------------------------------------


def test_pipeline_publishes_live_receiving_progress_and_lights_before_recording() -> None:
    """Two pallets at door-1 against an ASN for 2 cases of SKU-A (24 eaches): the first pallet
    (2 cases) matches it; the second (2 more) is an over-receipt, shown as soon as its first
    case is decided, before its movements are recorded."""
    engine = make_engine()
    tracker = ReceivingTracker(
        catalog=make_catalog(),
        expected=[
            ExpectedReceipt(
                receipt_id="ASN-7",
                door="door-1",
                lines=(ExpectedLine(sku=Sku("SKU-A"), quantity=24),),
            )
        ],
    )
    published: list[dict[str, object]] = []
    recorded: list[Movement] = []
    order: list[str] = []
    gpo: list[tuple[str, dict[int, bool]]] = []
    clock = {"now_us": T0}

    async def record(movements: Sequence[Movement]) -> None:
        order.append("record")
        recorded.extend(movements)
        tracker.observe(movements, us_to_datetime(clock["now_us"]))

    def publish(portal: str, payload: bytes) -> None:
        order.append("pass")
        message = json.loads(payload)
        assert message["portal"] == portal
        published.append(message)

    lights = StackLights([PortalLights("door-1", DeviceId("reader-1"), RULES)])
    doors = DoorPipeline(
        engine=engine,
        ports=DoorPorts(
            record=record,
            raise_alert=_no_alert,
            publish_pass=publish,
            write_gpo=lambda reader, levels: gpo.append((reader, dict(levels))),
            receipt_progress=tracker.progress,
        ),
        site="dc",
        now_us=lambda: clock["now_us"],
        lights=lights,
        monotonic=lambda: clock["now_us"] / 1e6,
    )

    async def drive() -> None:
        reads = pallet([1, 2], sscc_ref=None) + pallet(
            [3, 4], start_us=T0 + 30_000_000, sscc_ref=None
        )
        for now, batch in reports(reads):
            clock["now_us"] = now
            await doors.feed(batch)
        for _ in range(200):
            clock["now_us"] += 100_000
            await doors.tick()

    asyncio.run(drive())
    first = [m for m in published if m["pass_key"] == published[0]["pass_key"]]
    second = [m for m in published if m["pass_key"] != published[0]["pass_key"]]
    assert first[0]["phase"] == "started"
    assert first[-1]["phase"] == "decided"
    assert first[-1]["receipt"] == {
        "receipt_id": "ASN-7",
        "matches": True,
        "expected": {"SKU-A": 24},
        "seen": {"SKU-A": 24},
        "over": {},
        "unexpected": {},
        "unexpected_epcs": 0,
    }
    assert first[-1]["outcome"] == "matched"
    assert first[-1]["cases"] == 2
    assert first[-1]["skus"] == {"SKU-A": 24}
    # The second pallet is over the ASN from its first decided case on.
    assert second[0]["phase"] == "started"
    assert second[0]["outcome"] == "mismatch"
    assert second[0]["receipt"]["over"] == {"SKU-A": 12}  # type: ignore[index]
    assert second[-1]["receipt"]["over"] == {"SKU-A": 24}  # type: ignore[index]
    # Pass news first, then the movements; one movement per pallet.
    assert order.index("pass") < order.index("record")
    assert [m.quantity for m in recorded] == [24, 24]
    # The lights: amber, then green for the first pallet; red and horn for the second.
    ons = [port for _, levels in gpo for port, high in levels.items() if high]
    assert ons == [3, 1, 2, 4]


async def _no_alert(_alert: Alert) -> None:
    raise AssertionError("no alert expected")
