"""The deployment files agree with the code: sample configs, compose, the image, the systemd
unit, Mosquitto.

No Docker engine runs here, so these check what can be checked without one: Docker Compose
itself validates and resolves the compose file (`docker compose config` needs no engine), systemd
verifies the unit, the files name files that exist, pass settings the gateway accepts, and run
commands the CLI knows.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.adapters.grpc_api import EdgeApiServer
from gateway.adapters.metrics import MetricsServer
from gateway.cli import build_parser, main
from gateway.config import load_config, resolve_secret
from gateway.demo import PORTAL_SCENARIO, SHELF_SCENARIO
from tests.conftest import missing
from tests.support.broker import find_mosquitto
from tests.support.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CONFIGS = [*sorted(p.name for p in DEPLOY.glob("*.example.yaml")), "demo.yaml"]
COMPOSE_PLUGIN = Path("/usr/local/lib/docker/cli-plugins/docker-compose")


# --- sample configs ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS)
def test_every_sample_config_passes_check_config(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--no-env", str(DEPLOY / config)]) == 0, capsys.readouterr().err
    assert f"{DEPLOY / config}: OK" in capsys.readouterr().out


def test_the_dc_sample_has_four_doors_and_sends_to_central() -> None:
    cfg = load_config(DEPLOY / "dc.example.yaml", environ={})
    assert len(cfg.readers) == len(cfg.portals) == 4
    assert {p.reader for p in cfg.portals} == {r.id for r in cfg.readers}
    assert {p.role for p in cfg.portals} == {"inbound", "outbound"}
    assert {"yard", "receiving", "staging", "shipping"} <= {loc.id for loc in cfg.locations}
    assert not cfg.shelves
    assert cfg.sinks.central is not None
    assert cfg.sinks.central.tls is not None  # movements leave the site encrypted
    assert cfg.store.url == "sqlite:////var/lib/dockwatch/edge.db"  # the unit's StateDirectory


def test_the_store_sample_weighs_every_shelf_and_alerts_on_low_stock() -> None:
    cfg = load_config(DEPLOY / "store.example.yaml", environ={})
    assert len(cfg.shelves) >= 4
    assert not cfg.readers
    items = {item.sku: item for item in cfg.catalog.items}
    for shelf in cfg.shelves:
        assert items[shelf.sku].unit_weight_g is not None
    with_reorder = [s for s in cfg.shelves if items[s.sku].reorder_point is not None]
    assert len(with_reorder) >= len(cfg.shelves) - 1
    # Several shelves share one multi-channel transmitter (one address, one unit id each).
    by_endpoint: dict[tuple[str, int], list[int]] = {}
    for shelf in cfg.shelves:
        by_endpoint.setdefault((shelf.modbus.host, shelf.modbus.port), []).append(shelf.modbus.unit)
    assert max(len(units) for units in by_endpoint.values()) > 1
    assert all(len(set(units)) == len(units) for units in by_endpoint.values())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = compose["services"][name]
    assert isinstance(service, dict)
    return service


def _compose_command() -> list[str]:
    """``docker compose`` (v2), as the operator runs it; fails under CI=true when missing."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    if COMPOSE_PLUGIN.is_file():  # the plugin also runs on its own, without the docker CLI
        return [str(COMPOSE_PLUGIN)]
    missing("docker compose v2 (deploy/install-system-deps.sh test installs it)")
    raise AssertionError("unreachable")


def _compose_config(compose_file: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker compose config`` in a clean environment (no operator variables, no ~/.docker)."""
    command = [*_compose_command(), "--project-directory", str(DEPLOY), "-f", str(compose_file)]
    return subprocess.run(
        [*command, *args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
    )


@pytest.mark.parametrize(("profile", "services"), [((), 2), (("--profile", "demo"), 3)])
def test_docker_compose_accepts_and_resolves_the_compose_file(
    profile: tuple[str, ...], services: int, tmp_path: Path
) -> None:
    result = _compose_config(DEPLOY / "compose.yaml", tmp_path, *profile)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["name"] == "dockwatch"
    assert len(resolved["services"]) == services
    gateway = resolved["services"]["gateway"]
    # The anchors and defaults resolve to what docs/deploy.md says.
    assert gateway["image"] == "dockwatch:0.1.0"
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile"
    assert Path(gateway["build"]["context"]) == ROOT
    (config_mount,) = [
        v for v in gateway["volumes"] if v["target"] == "/etc/dockwatch/gateway.yaml"
    ]
    assert config_mount["source"] == str(DEPLOY / "gateway.yaml")
    assert config_mount["read_only"] is True
    assert resolved["secrets"]["api_token"]["file"] == str(DEPLOY / "secrets" / "api-token")


def test_docker_compose_rejects_what_the_spec_does_not_allow(tmp_path: Path) -> None:
    """The check above is a real one: a misspelt key fails it."""
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    assert "    stop_grace_period: 30s\n" in text
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace("    stop_grace_period: 30s\n", "    stop_grace_perod: 30s\n"))
    result = _compose_config(broken, tmp_path)
    assert result.returncode != 0
    assert "stop_grace_perod" in result.stderr


def test_compose_declares_the_broker_the_gateway_and_the_demo_simulators(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"mosquitto", "gateway", "simulators"}
    assert "profiles" not in services["gateway"]
    assert "profiles" not in services["mosquitto"]
    assert services["simulators"]["profiles"] == ["demo"]
    assert services["simulators"]["network_mode"] == "service:gateway"
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


@pytest.mark.parametrize("config", CONFIGS)
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


def test_the_simulators_play_the_scenarios_of_dockwatch_demo_where_demo_yaml_expects_them(
    compose: dict[str, Any],
) -> None:
    """The demo profile is ``dockwatch demo`` in containers: the same scenarios, and every
    reader, shelf transmitter and central address of deploy/demo.yaml served."""
    from simulators.all import plan

    command = _service(compose, "simulators")["command"]
    assert command[:2] == ["simulate", "all"]
    args = build_parser(command[:2]).parse_args(command)
    planned = plan(args)
    specs = {p.spec.name: p.spec for p in planned}
    assert set(specs) == {"llrp", "modbus", "central"}
    scenarios = {Path(a) for spec in specs.values() for a in spec.args if a.endswith(".yaml")}
    assert scenarios == {PORTAL_SCENARIO, SHELF_SCENARIO}  # the ones `dockwatch demo` plays
    served = {endpoint for spec in specs.values() for endpoint in spec.endpoints}
    demo = load_config(DEPLOY / "demo.yaml", environ={})
    expected = {(r.host, r.port) for r in demo.readers}
    expected |= {(s.modbus.host, s.modbus.port) for s in demo.shelves}
    if demo.sinks.central is not None:
        expected.add((demo.sinks.central.host, demo.sinks.central.port))
    assert served == expected
    # Ground truth and the central ledger land in the volume the service mounts.
    assert str(args.truth_dir).startswith("/var/lib/dockwatch/")
    assert "demo-truth:/var/lib/dockwatch" in _service(compose, "simulators")["volumes"]


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


def test_the_image_copies_every_package_the_project_installs() -> None:
    # `pip install .` in the image finds only what was copied: a package left out (say the
    # shared dockwatch_core) builds an image whose gateway fails at its first import.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        source
        for keyword, args in _instructions()
        if keyword == "COPY" and not args.startswith("--from")
        for source in shlex.split(args)[:-1]
    }
    assert packages <= copied, sorted(packages - copied)


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
    # The store lives in the state directory, the only place the service can write.
    assert service["StateDirectory"] == ["dockwatch"]
    assert service["WorkingDirectory"] == ["/var/lib/dockwatch"]
    for key, value in {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "PrivateUsers": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }.items():
        assert service[key] == [value], key
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_itself_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze (deploy/install-system-deps.sh test installs it)")
    assert analyze is not None
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
