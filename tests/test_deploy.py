"""The deployment files agree with the code: compose, the image, the systemd unit, Mosquitto.

Docker cannot run here, so these check what can be checked without it: the files parse, name
files that exist, pass settings the gateway accepts, and run commands the CLI knows.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.adapters.grpc_api import EdgeApiServer
from gateway.adapters.metrics import MetricsServer
from gateway.cli import build_parser
from gateway.config import load_config, resolve_secret
from gateway.demo import PORTAL_SCENARIO, SHELF_SCENARIO
from tests.conftest import missing
from tests.support.broker import find_mosquitto
from tests.support.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
IMAGE_SCENARIOS = "/opt/dockwatch/scenarios/"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = compose["services"][name]
    assert isinstance(service, dict)
    return service


def test_compose_declares_the_broker_the_gateway_and_the_demo_simulators(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"mosquitto", "gateway", "llrp-sim", "modbus-sim"}
    assert "profiles" not in services["gateway"]
    assert "profiles" not in services["mosquitto"]
    for sim in ("llrp-sim", "modbus-sim"):
        assert services[sim]["profiles"] == ["demo"]
        assert services[sim]["network_mode"] == "service:gateway"
    mosquitto = _service(compose, "mosquitto")
    assert mosquitto["image"].startswith("eclipse-mosquitto:")
    assert "./mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in mosquitto["volumes"]
    gateway = _service(compose, "gateway")
    assert gateway["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert gateway["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    # Nothing is published beyond the host's loopback unless the operator says so.
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
    # Files compose reads from this directory exist (the operator's gateway.yaml and token are
    # created at install time, see docs/deploy.md).
    assert (DEPLOY / "mosquitto.conf").is_file()
    assert (DEPLOY / "demo.yaml").is_file()
    assert (ROOT / gateway["build"]["dockerfile"]).is_file()


def _gateway_environ(compose: dict[str, Any], token_file: Path) -> dict[str, str]:
    environ = {k: str(v) for k, v in _service(compose, "gateway")["environment"].items()}
    assert environ["DOCKWATCH__API__TOKEN_FILE"] == "/run/secrets/api_token"
    assert compose["secrets"]["api_token"]["file"].endswith("./secrets/api-token}")
    environ["DOCKWATCH__API__TOKEN_FILE"] = str(token_file)  # the secret, as mounted
    return environ


@pytest.mark.parametrize("config", ["demo.yaml", "gateway.example.yaml"])
def test_the_gateway_accepts_the_settings_compose_gives_it(
    compose: dict[str, Any], tmp_path: Path, config: str
) -> None:
    token_file = tmp_path / "api-token"
    token_file.write_text("0123456789abcdef\n")
    cfg = load_config(DEPLOY / config, environ=_gateway_environ(compose, token_file))
    assert cfg.store.url == "sqlite:////var/lib/dockwatch/edge.db"
    assert cfg.sinks.mqtt is not None
    assert cfg.sinks.mqtt.url == "mqtt://mosquitto:1883"
    api = cfg.api
    token = resolve_secret(api.token)
    assert token == "0123456789abcdef"
    # Listening on every interface is accepted because the token is set ...
    EdgeApiServer.from_config(api, _NoStore(), site=cfg.site.id, token=token)
    assert api.metrics_listen is not None
    MetricsServer(api.metrics_listen, lambda: {}, token)
    # ... and the image's health check finds /healthz on the published metrics port.
    assert api.metrics_listen.endswith(":9108")
    assert "http://127.0.0.1:9108/healthz" in (DEPLOY / "Dockerfile").read_text()


class _NoStore:
    """Constructing the server reads nothing; any call would fail loudly."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was used: {name}")


def test_the_simulators_play_the_scenarios_of_dockwatch_demo(compose: dict[str, Any]) -> None:
    """The demo profile is ``dockwatch demo`` in containers: same commands, same scenarios."""
    scenarios = {"llrp": PORTAL_SCENARIO.name, "modbus": SHELF_SCENARIO.name}
    for sim, kind in (("llrp-sim", "llrp"), ("modbus-sim", "modbus")):
        command = _service(compose, sim)["command"]
        assert command[:2] == ["simulate", kind]
        args = build_parser(command[:2]).parse_args(command)
        # The image copies simulators/scenarios (where gateway.demo finds them) here.
        assert str(args.scenario) == IMAGE_SCENARIOS + scenarios[kind]
        assert PORTAL_SCENARIO.parent == ROOT / "simulators" / "scenarios"


# --- the image -------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
            pending = ""
    return out


def test_the_image_runs_the_gateway_as_a_non_root_user_with_a_health_check() -> None:
    steps = _instructions()
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert froms[-1] == "python:3.11-slim"
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    (entrypoint,) = [json.loads(a) for k, a in final if k == "ENTRYPOINT"]
    (cmd,) = [json.loads(a) for k, a in final if k == "CMD"]
    assert entrypoint + cmd == ["dockwatch", "run", "--config", "/etc/dockwatch/gateway.yaml"]
    (healthcheck,) = [a for k, a in final if k == "HEALTHCHECK"]
    assert "/healthz" in healthcheck


def test_everything_the_image_copies_exists_and_reaches_the_builder() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # an allow-list: local state (.venv, var/, *.db) never leaves
    for keyword, args in _instructions():
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _ = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert any(source == a or source.startswith(a + "/") for a in allowed), source


# --- systemd -------------------------------------------------------------------------------


def _unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (DEPLOY / "dockwatch.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, equals, value = line.partition("=")
        assert equals, f"not a key=value line: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def test_the_systemd_unit_runs_dockwatch_hardened_and_restarts_on_failure() -> None:
    unit = _unit()
    service = unit["Service"]
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "dockwatch"
    assert argv[1:] == ["run", "--config", "/etc/dockwatch/gateway.yaml"]
    assert service["Restart"] == ["on-failure"]
    assert service["User"][0] not in {"root", "0"}
    assert service["EnvironmentFile"][0].lstrip("-").startswith("/etc/dockwatch/")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == [value], key
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_itself_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        # An extra, independent check (the unit's content is asserted above); a container
        # without systemd cannot run it, and installing systemd just for it is not worth it.
        pytest.skip("systemd-analyze not installed")
    # verify also checks that ExecStart exists: point it at a binary this machine has.
    text = (DEPLOY / "dockwatch.service").read_text()
    unit = tmp_path / "dockwatch.service"
    unit.write_text(text.replace("/opt/dockwatch/bin/dockwatch", "/bin/true"))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "dockwatch.service" not in result.stderr, result.stderr


# --- Mosquitto -----------------------------------------------------------------------------


@pytest.fixture
def world_writable_dir() -> Iterator[Path]:
    """Mosquitto started as root drops to its own user, which cannot enter pytest's tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="dockwatch-mosquitto-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_mosquitto_starts_with_the_compose_config(world_writable_dir: Path) -> None:
    binary = find_mosquitto()
    if binary is None:
        missing("the mosquitto binary")
    assert binary is not None
    text = (DEPLOY / "mosquitto.conf").read_text()
    assert "listener 1883\n" in text
    assert "persistence_location /mosquitto/data/\n" in text
    port = free_port()
    conf = world_writable_dir / "mosquitto.conf"
    conf.write_text(
        text.replace("listener 1883\n", f"listener {port} 127.0.0.1\n").replace(
            "/mosquitto/data/", f"{world_writable_dir}/"
        )
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=10)
        assert proc.poll() is None
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert b"Error" not in output, output.decode(errors="replace")
    # Persistence is on, and written where the config says (the compose volume).
    assert (world_writable_dir / "mosquitto.db").is_file(), output.decode(errors="replace")
