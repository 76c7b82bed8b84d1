"""The gateway's configuration: one YAML file loaded into one frozen, validated tree.

Theory of operation
-------------------
Loading runs in stages and reports *every* problem it finds, each as one line that starts with
the key path (``readers[1].port: must be an integer in 1..65535, got 'abc'``), in one
:class:`~gateway.errors.ConfigError` at the end:

1. **Parse.** YAML through PyYAML's safe loader, with duplicate mapping keys rejected (PyYAML
   silently keeps the last one, which hides typos). Syntax errors name their line and column.
2. **Overrides.** ``DOCKWATCH_*`` environment variables are written into the raw mapping (see
   :data:`NAMED_OVERRIDES` and :data:`GENERIC_OVERRIDE_PREFIX`). Which variable set which key is
   remembered, so a problem with an overridden value names the variable.
3. **Build.** A small generic builder walks the dataclasses below. Every field is a config key
   (its name, or ``metadata["key"]``); its type hint says what the value must be (``str``,
   ``int``, ``float``, ``bool``, ``Literal``, an enum, ``Path``, ``tuple[X, ...]``, a nested
   dataclass, ``X | None``); ``metadata`` adds ranges, patterns and checks. A field without a
   default is required. The ``debounce`` sections are built from the domain's own parameter
   dataclasses the same way, so a field added there is a config key here. A value that failed is
   replaced by a sentinel, so the rest of the tree is still built and cross-checked.
4. **Cross-references.** Ids unique; portals point at known readers, antennas and locations;
   shelves at known locations and SKUs.

Invariant: a :class:`GatewayConfig` that exists passed every check. The tree holds no secret: keys
ending in ``_file``/``_env`` name where a secret lives, and :class:`Secret` reads it on demand.
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal, cast
from urllib.parse import SplitResult, urlsplit

import yaml

from gateway.documents import (
    CONFIG_LIMITS,
    SECRET_LIMITS,
    DocumentError,
    DocumentLimits,
    SafeLoader,
    parse_yaml,
    path_problem,
    read_text,
    read_yaml,
    shown,
)
from gateway.domain.model import MovementKind
from gateway.domain.params import AntennaParams, PortalParams, ShelfParams
from gateway.errors import ConfigError

__all__ = [
    "CONFIG_PATH_ENV",
    "GENERIC_OVERRIDE_PREFIX",
    "IMPLICIT_LOCATIONS",
    "NAMED_OVERRIDES",
    "ApiConfig",
    "ApiTlsConfig",
    "CatalogConfig",
    "CatalogItem",
    "CentralSinkConfig",
    "DebounceConfig",
    "EpcisSinkConfig",
    "GatewayConfig",
    "LocationConfig",
    "LoggingConfig",
    "ModbusConfig",
    "MqttSinkConfig",
    "PortalConfig",
    "PortalKinds",
    "ReaderConfig",
    "ReceivingConfig",
    "ReconnectConfig",
    "Secret",
    "ShelfConfig",
    "SinksConfig",
    "SiteConfig",
    "StatusRegister",
    "StoreConfig",
    "TlsClientConfig",
    "WeightRegister",
    "config_keys",
    "config_path_from_env",
    "gtin_check_digit",
    "load_config",
    "parse_config",
    "resolve_secret",
    "split_host_port",
]

CONFIG_PATH_ENV: Final = "DOCKWATCH_CONFIG"
"""Environment variable naming the config file when none is given on the command line."""

GENERIC_OVERRIDE_PREFIX: Final = "DOCKWATCH__"
"""``DOCKWATCH__SECTION__KEY=value`` sets ``section.key``; the value is read as a YAML scalar."""

NAMED_OVERRIDES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("DOCKWATCH_SITE_ID", ("site", "id")),
    ("DOCKWATCH_STORE_URL", ("store", "url")),
    ("DOCKWATCH_MQTT_URL", ("sinks", "mqtt", "url")),
    ("DOCKWATCH_MQTT_USERNAME", ("sinks", "mqtt", "username")),
    ("DOCKWATCH_CENTRAL_TARGET", ("sinks", "central", "target")),
    ("DOCKWATCH_EPCIS_CAPTURE_URL", ("sinks", "epcis", "capture_url")),
    ("DOCKWATCH_LOG_LEVEL", ("logging", "level")),
)
"""Named overrides: the value is taken verbatim as a string. Setting one key through both a
named and a generic variable is an error; an empty variable counts as unset."""

IMPLICIT_LOCATIONS: Final = ("picked", "backroom")
"""Virtual locations that exist without being listed: the defaults of a shelf's ``pick_to`` and
``restock_from``. They are added to :attr:`GatewayConfig.locations` when a shelf uses them, and
so is ``debounce.shelf.adjust_location`` (default ``adjustment``) when there are shelves."""

KeyPath = tuple[str | int, ...]
_OVERRIDE_LIMITS: Final = DocumentLimits("environment override", 64 << 10, 4, 1000)
_T = typing.TypeVar("_T")

MAX_ID_CHARS: Final = 64
"""Ids and SKUs: the store keeps them in 64-character columns, and they appear in MQTT topics
(at most 65,535 bytes), EPCIS URIs and file names."""
MAX_TEXT_CHARS: Final = 4096
"""Any other string value (URLs, host names, item names)."""
MAX_COUNT: Final = 2**31 - 1
"""Counts of eaches in the config (reorder points): the store keeps movement quantities and
these in 32-bit integer columns."""
MAX_PACK_SIZE: Final = 1_000_000
"""Eaches per tagged pack: a movement of N tags moves N x pack_size eaches, which must still fit
the store's 32-bit quantity (2,147 packs of the largest size)."""
_INT64: Final = 2**63 - 1
"""Every other integer: what the store's and protobuf's 64-bit integers hold."""

# An id appears in MQTT topics and file names: keep it to a safe alphabet.
_ID_RE: Final = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_ID_CHARS}}}")
_ID_WHAT: Final = f"an id of at most {MAX_ID_CHARS} letters, digits, '.', '_' or '-'"
# A SKU is one MQTT topic level: no separator, no wildcard, no blank, no control character.
_SKU_RE: Final = re.compile(rf"[^/+#\s\x00-\x1f\x7f-\x9f]{{1,{MAX_ID_CHARS}}}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


# --------------------------------------------------------------------------------------------
# Secrets


class Secret:
    """Where a secret lives (a file or an environment variable), never the secret itself.

    ``repr``/``str`` are ``***`` so a secret cannot leak through a logged config. ``key`` is
    the config key path (``sinks.mqtt.password``) used in error messages. Not a dataclass on
    purpose: it keeps the environment it was loaded with, and ``dataclasses.asdict(config)``
    must not copy that environment (and the secrets in it) out.
    """

    __slots__ = ("_environ", "env", "file", "key")

    def __init__(
        self,
        key: str,
        file: Path | None = None,
        env: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if (file is None) == (env is None):
            raise ValueError(f"{key}: a secret comes from exactly one of a file or a variable")
        self.key: Final = key
        self.file: Final = file
        self.env: Final = env
        self._environ: Final = environ

    def reveal(self, environ: Mapping[str, str] | None = None) -> str:
        """Read the secret now: the file's content without surrounding blanks, or the variable
        (from ``environ``, else the environment the config was loaded with).

        Raises :class:`ConfigError` naming the key when the file or variable is missing/empty.
        """
        if self.file is not None:
            try:
                value = read_text(self.file, SECRET_LIMITS).strip()
            except DocumentError as exc:
                problem = exc.problem.removeprefix("cannot read: ")
                raise ConfigError(
                    f"{self.key}_file: cannot read '{exc.source}': {problem}"
                ) from exc
            if not value:
                raise ConfigError(f"{self.key}_file: '{self.file}' is empty")
            return value
        assert self.env is not None  # __init__ guarantees one source
        env = environ if environ is not None else self._environ
        value = (os.environ if env is None else env).get(self.env, "")
        if not value:
            raise ConfigError(f"{self.key}_env: environment variable '{self.env}' is not set")
        return value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return (self.key, self.file, self.env) == (other.key, other.file, other.env)

    def __hash__(self) -> int:
        return hash((self.key, self.file, self.env))

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise AttributeError(f"Secret is immutable: cannot set {name}")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return "***"

    def __str__(self) -> str:
        return "***"


def resolve_secret(
    secret: Secret | None, *, environ: Mapping[str, str] | None = None
) -> str | None:
    """The secret's value, or None when the config gives none (``Secret.reveal`` otherwise)."""
    return None if secret is None else secret.reveal(environ)


# --------------------------------------------------------------------------------------------
# Field metadata and value checks


def _m(
    *,
    key: str | None = None,
    lo: float | None = None,
    hi: float | None = None,
    gt: float | None = None,
    pattern: re.Pattern[str] | None = None,
    what: str | None = None,
    check: Callable[[Any], str | None] | None = None,
    normalize: Callable[[Any], Any] | None = None,
    choices: Iterable[object] | None = None,
    nonempty: bool = False,
    unique: bool = False,
    exists: bool = False,
    env_name: bool = False,
    derive: Callable[[_Scope], Any] | None = None,
    secret: tuple[str, str] | None = None,
    internal: bool = False,
    field_meta: Mapping[str, Mapping[str, Any]] | None = None,
    default_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Field metadata read by the builder.

    ``lo``/``hi`` are inclusive bounds and ``gt`` an exclusive lower bound of numbers (of each
    element for lists); ``pattern`` a full-match regex for strings; ``check`` returns a problem
    message or None; ``normalize`` rewrites a value before it is checked; ``choices`` restricts
    an enum; ``nonempty``/``unique`` apply to lists; ``exists`` requires a readable file;
    ``env_name`` requires a set environment variable; ``derive`` computes the default from the
    fields already built; ``secret=(file_field, env_field)`` makes a :class:`Secret` from two
    sibling keys; ``internal`` fields are not config keys; ``field_meta``/``default_meta`` add
    metadata to the fields of a nested dataclass that does not carry its own (the domain params).
    """
    meta: dict[str, Any] = {
        "key": key,
        "lo": lo,
        "hi": hi,
        "gt": gt,
        "pattern": pattern,
        "what": what,
        "check": check,
        "normalize": normalize,
        "choices": None if choices is None else frozenset(choices),
        "nonempty": nonempty,
        "unique": unique,
        "exists": exists,
        "env_name": env_name,
        "derive": derive,
        "secret": secret,
        "internal": internal,
        "field_meta": field_meta,
        "default_meta": default_meta,
    }
    return {k: v for k, v in meta.items() if v is not None and v is not False}


_ID = _m(pattern=_ID_RE, what=_ID_WHAT)
_PORT = _m(lo=1, hi=65535)
_POSITIVE = _m(gt=0)


def gtin_check_digit(body: str) -> int:
    """The GS1 check digit for ``body`` (a GTIN without its last digit, any length)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def _check_gtin(value: str) -> str | None:
    if len(value) != 14 or not value.isascii() or not value.isdigit():
        return f"must be a 14-digit GTIN (pad GTIN-8/12/13 with leading zeros), got {_show(value)}"
    expected = gtin_check_digit(value[:13])
    if int(value[13]) != expected:
        return f"bad GS1 check digit in {value!r}: the last digit should be {expected}"
    return None


def split_host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; ValueError when malformed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"must be 'host:port', got {_show(text)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError with its own message
    elif ":" in host:
        raise ValueError(f"an IPv6 address must be in brackets ('[{host}]:{port_text}')")
    elif not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or address")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port}")
    return host, port


def _check_host_port(value: str) -> str | None:
    try:
        split_host_port(value)
    except ValueError as exc:
        return str(exc) if str(exc).startswith("must") else f"{exc} (in {_show(value)})"
    return None


def _check_ipv4_host(value: str) -> str | None:
    if ":" in value:
        return f"must be an IPv4 address or host name (sllurp is IPv4-only), got {_show(value)}"
    if not _HOSTNAME_RE.fullmatch(value):
        return f"must be a host name or IPv4 address, got {_show(value)}"
    return None


def _check_host(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME_RE.fullmatch(value):
            return f"must be a host name or IP address, got {_show(value)}"
    return None


def _mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, so messages never echo one."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _normalize_store_url(value: Any) -> Any:
    if isinstance(value, str):
        for plain in ("postgresql://", "postgres://"):
            if value.startswith(plain):
                return "postgresql+psycopg://" + value[len(plain) :]
    return value


def _check_store_url(value: str) -> str | None:
    if value == "sqlite://" or value.startswith("sqlite:///"):
        return None
    if value.startswith("postgresql+psycopg://"):
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - property access validates the port number
        except ValueError as exc:
            return f"malformed URL {_mask_url(value)!r}: {exc}"
        if parts.password is not None:
            return (
                "must not hold a password: use store.password_file or store.password_env "
                "(or libpq's PGPASSFILE)"
            )
        if len(parts.path) <= 1 and "dbname=" not in parts.query:
            return f"names no database: {_mask_url(value)!r}"
        return None
    return (
        f"must be a 'sqlite:///path' or 'postgresql+psycopg://' URL, got {_show(_mask_url(value))}"
    )


def _parse_mqtt_url(value: str) -> SplitResult:
    parts = urlsplit(value)
    parts.port  # noqa: B018 - property access validates the port number
    return parts


def _check_mqtt_url(value: str) -> str | None:
    try:
        parts = _parse_mqtt_url(value)
    except ValueError as exc:
        return f"malformed URL {_show(_mask_url(value))}: {exc}"
    if parts.scheme not in ("mqtt", "mqtts"):
        return f"must be an mqtt:// or mqtts:// URL, got {_show(_mask_url(value))}"
    if parts.username is not None or parts.password is not None:
        return "must not hold credentials: use sinks.mqtt.username and password_file/password_env"
    if not parts.hostname:
        return f"names no host: {_show(value)}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"must be scheme://host[:port] only, got {_show(value)}"
    return None


def _check_topic_prefix(value: str) -> str | None:
    if any(c in value for c in "+#\0"):
        return f"must not contain MQTT wildcards '+' or '#', got {_show(value)}"
    if value.startswith(("/", "$")) or value.endswith("/") or "//" in value:
        return f"must be topic levels joined by '/', no empty level and no '$', got {_show(value)}"
    return None


def _check_sgln(value: str) -> str | None:
    from gateway.domain.epcis_hash import to_digital_link

    if value.startswith("urn:epc:id:sgln:") and to_digital_link(value) is not None:
        return None
    return (
        "must be an SGLN URN such as urn:epc:id:sgln:0614141.00777.0 (company prefix and "
        "location reference: 12 digits in all; then the extension, 0 for none)"
    )


def _check_http_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return f"must be an http:// or https:// URL with a host, got {value!r}"
    if parts.username is not None or parts.password is not None:
        return "must not hold credentials (use token_file or token_env)"
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return f"bad port in {value!r}"
    return None


def _check_base_uri(value: str) -> str | None:
    if not value.startswith(("http://", "https://", "urn:")) or any(c.isspace() for c in value):
        return f"must be an http(s):// or urn: URI without blanks, got {value!r}"
    return None


_SGLN = _m(check=_check_sgln, what="an SGLN URN (urn:epc:id:sgln:...)")


def _site_id(scope: _Scope) -> str:
    site = scope.root().values.get("site")
    site_id = getattr(site, "id", None)
    return site_id if isinstance(site_id, str) else "site"


# --------------------------------------------------------------------------------------------
# The config tree


@dataclass(frozen=True, slots=True)
class SiteConfig:
    id: str = field(metadata=_ID)
    """The site's id; it is part of every MQTT topic and movement."""
    sgln: str | None = field(default=None, metadata=_SGLN)
    """The site's SGLN (EPCIS ``bizLocation`` where nothing more precise is known)."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = field(
        default="sqlite:///./var/edge.db",
        metadata=_m(normalize=_normalize_store_url, check=_check_store_url),
    )
    """SQLAlchemy URL; ``postgresql://`` is normalised to ``postgresql+psycopg://``."""
    password_file: Path | None = field(default=None, metadata=_m(exists=True))
    password_env: str | None = field(default=None, metadata=_m(env_name=True))
    password: Secret | None = field(
        default=None, metadata=_m(secret=("password_file", "password_env"), internal=True)
    )
    """The database password (the URL never holds one): add it with ``URL.set(password=)``."""
    journal_dir: Path | None = None
    """Where the read journal lives (tag reports of the last minutes, replayed after a crash);
    default: ``journal/`` next to a SQLite store file; a PostgreSQL store has none unless set."""
    journal_segment_s: float = field(default=60.0, metadata=_POSITIVE)
    """The journal keeps between one and two of these of reads."""

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite:")

    @property
    def journal_path(self) -> Path | None:
        """The read journal's directory, or None when there is none."""
        if self.journal_dir is not None:
            return self.journal_dir
        if self.is_sqlite and self.url.startswith("sqlite:///") and ":memory:" not in self.url:
            return Path(self.url.removeprefix("sqlite:///")).parent / "journal"
        return None


@dataclass(frozen=True, slots=True)
class CatalogItem:
    sku: str = field(
        metadata=_m(
            pattern=_SKU_RE,
            what=f"a SKU of at most {MAX_ID_CHARS} characters without '/', '+', '#' or blanks "
            "(topic level)",
        )
    )
    gtin: str = field(metadata=_m(what="a 14-digit GTIN as a quoted string", check=_check_gtin))
    name: str
    unit_weight_g: float | None = field(default=None, metadata=_POSITIVE)
    """Weight of one pack; required for SKUs on weight shelves."""
    weight_tolerance_g: float | None = field(default=None, metadata=_m(lo=0))
    """How far a weight change may stray from a whole number of packs (default: engine's)."""
    pack_size: int = field(default=1, metadata=_m(lo=1, hi=MAX_PACK_SIZE))
    """Eaches per tag/pack: a case tag of ``pack_size: 12`` moves 12 eaches."""
    reorder_point: int | None = field(default=None, metadata=_m(lo=0, hi=MAX_COUNT))
    """On-hand at or below this raises a low-stock alert; None: no alert."""


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    items: tuple[CatalogItem, ...] = ()


@dataclass(frozen=True, slots=True)
class LocationConfig:
    id: str = field(metadata=_ID)
    kind: Literal["storage", "dock", "virtual"] = "storage"
    sgln: str | None = field(default=None, metadata=_SGLN)
    """The location's SGLN (EPCIS ``bizLocation``); None: a URI under ``sinks.epcis.base_uri``."""


@dataclass(frozen=True, slots=True)
class ReconnectConfig:
    """Exponential backoff between reconnection attempts, from ``initial_s`` up to ``max_s``."""

    initial_s: float = field(default=0.5, metadata=_POSITIVE)
    max_s: float = field(default=30.0, metadata=_POSITIVE)

    def _config_problems(self) -> Iterator[tuple[str, str]]:
        if self.max_s < self.initial_s:
            yield "max_s", f"must be >= initial_s ({_num(self.initial_s)}), got {_num(self.max_s)}"


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    id: str = field(metadata=_ID)
    host: str = field(metadata=_m(check=_check_ipv4_host))
    antennas: tuple[int, ...] = field(metadata=_m(lo=1, hi=65535, nonempty=True, unique=True))
    """Every antenna the ROSpec enables (sllurp enables only antenna 1 unless told)."""
    tls: TlsClientConfig | None = None
    """LLRP over TLS; None: plain TCP. Before ``port``, whose default it sets."""
    port: int = field(
        default=5084, metadata=_m(lo=1, hi=65535, derive=lambda s: _tls_port(s, 5084, 5085))
    )
    """Default 5084 (IANA llrp), or 5085 (encrypted-llrp) with ``tls``."""
    keepalive_s: float = field(default=10.0, metadata=_POSITIVE)
    """The reader sends a KEEPALIVE this often; silence for ~3 periods means the link is dead."""
    connect_timeout_s: float = field(default=10.0, metadata=_POSITIVE)
    report_every_ms: int = field(default=200, metadata=_m(lo=1, hi=60_000))
    """Tag reports are requested this often (ROReportSpec period)."""
    tx_power_dbm: float | None = field(default=None, metadata=_m(lo=0, hi=40))
    """Transmit power; None keeps the reader's own setting."""
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)


_PORTAL_KINDS: Final = (
    MovementKind.RECEIPT,
    MovementKind.SHIPMENT,
    MovementKind.TRANSFER,
    MovementKind.RETURN,
)
# role -> (kind of an inward crossing, kind of an outward crossing)
_ROLE_KINDS: Final[Mapping[str, tuple[MovementKind, MovementKind]]] = types.MappingProxyType(
    {
        "inbound": (MovementKind.RECEIPT, MovementKind.RETURN),
        "outbound": (MovementKind.RETURN, MovementKind.SHIPMENT),
        "internal": (MovementKind.TRANSFER, MovementKind.TRANSFER),
    }
)


def _role_kinds(scope: _Scope) -> tuple[MovementKind, MovementKind]:
    role = scope.values.get("role")
    return (
        _ROLE_KINDS.get(role, _ROLE_KINDS["inbound"])
        if isinstance(role, str)
        else (_ROLE_KINDS["inbound"])
    )


def _parent_role_kinds(scope: _Scope) -> tuple[MovementKind, MovementKind]:
    return _role_kinds(scope.parent) if scope.parent is not None else _ROLE_KINDS["inbound"]


@dataclass(frozen=True, slots=True)
class PortalKinds:
    """Movement kind of a crossing inward (outside -> inside) and outward (inside -> outside)."""

    in_: MovementKind = field(
        default=MovementKind.RECEIPT,
        metadata=_m(key="in", choices=_PORTAL_KINDS, derive=lambda s: _parent_role_kinds(s)[0]),
    )
    out: MovementKind = field(
        default=MovementKind.RETURN,
        metadata=_m(choices=_PORTAL_KINDS, derive=lambda s: _parent_role_kinds(s)[1]),
    )


@dataclass(frozen=True, slots=True)
class LightRuleConfig:
    """One stack-light rule: an outcome of a pass lights GPO ports (docs/portal.md)."""

    on: Literal["deciding", "matched", "mismatch", "decided"]
    gpo: tuple[int, ...] = field(metadata=_m(lo=1, hi=65535, nonempty=True, unique=True))
    for_s: float | None = field(default=3.0, metadata=_POSITIVE)
    """How long the ports stay on; null: until the door's next outcome."""
    blink: bool = False


@dataclass(frozen=True, slots=True)
class LightsConfig:
    """Stack lights and horns on the portal reader's GPO outputs."""

    rules: tuple[LightRuleConfig, ...] = field(metadata=_m(nonempty=True))
    low_confidence: float = field(default=0.8, metadata=_m(lo=0, hi=1))
    """A settled pass below this confidence shows as ``deciding``."""


@dataclass(frozen=True, slots=True)
class PhotoEyesConfig:
    """A light barrier on each side of the door, on the portal reader's GPI inputs."""

    outside_gpi: int = field(metadata=_m(lo=1, hi=65535))
    inside_gpi: int = field(metadata=_m(lo=1, hi=65535))
    broken_high: bool = True
    """The input is high while the beam is broken (false: low while broken)."""

    def _config_problems(self) -> Iterator[tuple[str, str]]:
        if self.inside_gpi == self.outside_gpi:
            yield "inside_gpi", f"must differ from outside_gpi ({self.outside_gpi})"


@dataclass(frozen=True, slots=True)
class PortalConfig:
    id: str = field(metadata=_ID)
    reader: str = field(metadata=_ID)
    outside_antennas: tuple[int, ...] = field(
        metadata=_m(lo=1, hi=65535, nonempty=True, unique=True)
    )
    inside_antennas: tuple[int, ...] = field(
        metadata=_m(lo=1, hi=65535, nonempty=True, unique=True)
    )
    outside_location: str = field(metadata=_ID)
    inside_location: str = field(metadata=_ID)
    role: Literal["inbound", "outbound", "internal"] = "inbound"
    kinds: PortalKinds = field(
        default_factory=PortalKinds,
        metadata=_m(derive=lambda s: PortalKinds(*_role_kinds(s))),
    )
    """Defaults by role: inbound in=receipt/out=return; outbound in=return/out=shipment;
    internal transfer both ways."""
    sgln: str | None = field(default=None, metadata=_SGLN)
    """The door's SGLN (EPCIS ``readPoint``); None: a URI under ``sinks.epcis.base_uri``."""
    lights: LightsConfig | None = None
    photo_eyes: PhotoEyesConfig | None = None

    @property
    def antennas(self) -> tuple[int, ...]:
        return self.outside_antennas + self.inside_antennas

    def _config_problems(self) -> Iterator[tuple[str, str]]:
        for i, antenna in enumerate(self.inside_antennas):
            if antenna in self.outside_antennas:
                yield f"inside_antennas[{i}]", f"antenna {antenna} is also an outside antenna"
        if self.inside_location == self.outside_location:
            yield (
                "inside_location",
                f"must differ from outside_location ({self.outside_location!r})",
            )


def _tls_port(scope: _Scope, plain: int, secure: int) -> int:
    """The default port of a device link: its protocol's TLS port when ``tls`` is given."""
    return plain if scope.values.get("tls") is None else secure


@dataclass(frozen=True, slots=True)
class ModbusConfig:
    host: str = field(metadata=_m(check=_check_host))
    tls: TlsClientConfig | None = None
    """Modbus/TCP Security (TLS); None: plain Modbus TCP. Before ``port``, whose default it sets."""
    port: int = field(
        default=502, metadata=_m(lo=1, hi=65535, derive=lambda s: _tls_port(s, 502, 802))
    )
    """Default 502 (IANA mbap), or 802 (mbap-s) with ``tls``."""
    unit: int = field(default=1, metadata=_m(lo=0, hi=247))
    timeout_s: float = field(default=1.0, metadata=_POSITIVE)


RegisterTable = Literal["holding", "input"]
RegisterType = Literal["uint16", "int16", "uint32", "int32", "float32"]


@dataclass(frozen=True, slots=True)
class WeightRegister:
    """Where the weight is: ``grams = raw * scale`` (``* 1000`` more when ``unit: kg``)."""

    address: int = field(metadata=_m(lo=0, hi=65535))
    type: RegisterType
    table: RegisterTable = "holding"
    word_order: Literal["big", "little"] = "big"
    """Order of the two registers of a 32-bit value (``big``: high word first)."""
    scale: float = 1.0
    unit: Literal["g", "kg"] = "g"

    @property
    def count(self) -> int:
        """Registers the value spans."""
        return 1 if self.type in ("uint16", "int16") else 2

    @property
    def grams_per_count(self) -> float:
        return self.scale * (1000.0 if self.unit == "kg" else 1.0)

    def _config_problems(self) -> Iterator[tuple[str, str]]:
        if self.address + self.count - 1 > 65535:
            yield "address", f"a {self.type} at {self.address} runs past register 65535"
        if self.scale == 0:
            yield "scale", "must not be 0"


@dataclass(frozen=True, slots=True)
class StatusRegister:
    """A status word whose bits flag a stable / overloaded / failed transmitter."""

    address: int = field(metadata=_m(lo=0, hi=65535))
    stable_bit: int = field(metadata=_m(lo=0, hi=15))
    table: RegisterTable = "holding"
    overload_bit: int | None = field(default=None, metadata=_m(lo=0, hi=15))
    error_bit: int | None = field(default=None, metadata=_m(lo=0, hi=15))

    def _config_problems(self) -> Iterator[tuple[str, str]]:
        seen = {self.stable_bit: "stable_bit"}
        for name in ("overload_bit", "error_bit"):
            bit = getattr(self, name)
            if bit is None:
                continue
            if bit in seen:
                yield name, f"bit {bit} is also {seen[bit]}"
            seen[bit] = name


@dataclass(frozen=True, slots=True)
class ShelfConfig:
    id: str = field(metadata=_ID)
    location: str = field(metadata=_ID)
    sku: str = field(
        metadata=_m(pattern=_SKU_RE, what=f"a SKU of at most {MAX_ID_CHARS} characters")
    )
    modbus: ModbusConfig
    weight: WeightRegister
    pick_to: str = field(default="picked", metadata=_ID)
    """Where a pick moves stock to (implicit virtual location ``picked``)."""
    restock_from: str = field(default="backroom", metadata=_ID)
    """Where a restock moves stock from (implicit virtual location ``backroom``)."""
    status: StatusRegister | None = None
    division_g: float | None = field(default=None, metadata=_POSITIVE)
    """The transmitter's display step (optional: the engine learns it)."""
    capacity_g: float | None = field(default=None, metadata=_POSITIVE)
    """The largest plausible net weight (optional: 2,000 kg); readings beyond it are faults."""
    sgln: str | None = field(default=None, metadata=_SGLN)
    """The shelf's SGLN (EPCIS ``readPoint``); None: a URI under ``sinks.epcis.base_uri``."""

    def _config_problems(self) -> Iterator[tuple[str, str]]:
        for name in ("pick_to", "restock_from"):
            if getattr(self, name) == self.location:
                yield name, f"must differ from location ({self.location!r})"
        status = self.status
        if status is not None and status.table == self.weight.table:
            start = self.weight.address
            if start <= status.address < start + self.weight.count:
                yield (
                    "status.address",
                    (
                        f"register {status.address} overlaps the weight register(s) "
                        f"{start}..{start + self.weight.count - 1}"
                    ),
                )


# The domain's parameter classes carry no ranges; these keep obviously broken values out.
_PORTAL_PARAM_META: Final = types.MappingProxyType(
    {
        "idle_close_s": _POSITIVE,
        "min_reads": _m(lo=1),
        "min_confidence": _m(lo=0, hi=1),
        "stray_dwell_s": _POSITIVE,
        "horizon_s": _POSITIVE,
        "max_tags": _m(lo=1),
    }
)
_SHELF_PARAM_META: Final = types.MappingProxyType(
    {
        "poll_interval_s": _POSITIVE,
        "stable_band_g": _POSITIVE,
        "stable_hold_s": _POSITIVE,
        "confirm_s": _POSITIVE,
        "outage_gap_s": _POSITIVE,
        # A location id, like those of the locations section.
        "adjust_location": _ID,
    }
)

_ANTENNA_PARAM_META: Final = types.MappingProxyType(
    {
        "silence_s": _POSITIVE,
        "min_peer_tags": _m(lo=1),
        "forget_s": _POSITIVE,
        "rate_window_s": _POSITIVE,
    }
)


@dataclass(frozen=True, slots=True)
class DebounceConfig:
    """Engine parameters; keys and defaults are the fields of the domain's params classes."""

    portal: PortalParams = field(
        default_factory=PortalParams,
        metadata=_m(field_meta=_PORTAL_PARAM_META, default_meta=_m(lo=0)),
    )
    shelf: ShelfParams = field(
        default_factory=ShelfParams,
        metadata=_m(field_meta=_SHELF_PARAM_META, default_meta=_m(lo=0)),
    )
    antenna: AntennaParams = field(
        default_factory=AntennaParams,
        metadata=_m(field_meta=_ANTENNA_PARAM_META, default_meta=_m(lo=0)),
    )


@dataclass(frozen=True, slots=True)
class TlsClientConfig:
    """TLS towards a server; without ``ca_file`` the system trust store is used."""

    ca_file: Path | None = field(default=None, metadata=_m(exists=True))
    cert_file: Path | None = field(default=None, metadata=_m(exists=True))
    """Client certificate (mutual TLS); needs ``key_file``."""
    key_file: Path | None = field(default=None, metadata=_m(exists=True))
    insecure: bool = False
    """Skip server certificate and host name verification (test benches only)."""

    def _config_problems(self) -> Iterator[tuple[str, str]]:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            yield missing, "cert_file and key_file go together"


DEFAULT_LAG_ALERT_S: Final = 300.0
"""Default ``sinks.*.lag_alert_s``: a sink five minutes behind is worth an alert."""


@dataclass(frozen=True, slots=True)
class MqttSinkConfig:
    url: str = field(metadata=_m(check=_check_mqtt_url))
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``."""
    topic_prefix: str = field(
        default="",
        metadata=_m(check=_check_topic_prefix, derive=lambda s: f"dockwatch/{_site_id(s)}"),
    )
    qos: int = field(default=1, metadata=_m(lo=0, hi=2))
    client_id: str = field(default="", metadata=_m(derive=lambda s: f"dockwatch-{_site_id(s)}"))
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = field(default=30, metadata=_m(lo=1, hi=65535))
    inflight_max: int = field(default=100, metadata=_m(lo=1, hi=65535))
    """Unacknowledged QoS>0 publishes in flight at once."""
    username: str | None = None
    password_file: Path | None = field(default=None, metadata=_m(exists=True))
    password_env: str | None = field(default=None, metadata=_m(env_name=True))
    tls: TlsClientConfig | None = None
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    lag_alert_s: float | None = field(default=DEFAULT_LAG_ALERT_S, metadata=_POSITIVE)
    """A ``sync_behind`` alert is raised when the oldest movement this sink has not acknowledged
    is older than this; ``null``: never."""
    password: Secret | None = field(
        default=None, metadata=_m(secret=("password_file", "password_env"), internal=True)
    )

    @property
    def host(self) -> str:
        return _parse_mqtt_url(self.url).hostname or ""

    @property
    def use_tls(self) -> bool:
        return self.url.startswith("mqtts:")

    @property
    def port(self) -> int:
        return _parse_mqtt_url(self.url).port or (8883 if self.use_tls else 1883)

    def _config_problems(self) -> Iterator[tuple[str, str]]:
        if self.tls is not None and not self.use_tls:
            yield "tls", "given but url is mqtt://; use mqtts:// to enable TLS"
        if self.password is not None and self.username is None:
            yield "username", "is required when a password is given (MQTT sends none without it)"


@dataclass(frozen=True, slots=True)
class CentralSinkConfig:
    target: str = field(metadata=_m(check=_check_host_port))
    """``host:port`` of the central gRPC ingest service."""
    tls: TlsClientConfig | None = None
    token_file: Path | None = field(default=None, metadata=_m(exists=True))
    token_env: str | None = field(default=None, metadata=_m(env_name=True))
    batch_max: int = field(default=500, metadata=_m(lo=1, hi=100_000))
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    lag_alert_s: float | None = field(default=DEFAULT_LAG_ALERT_S, metadata=_POSITIVE)
    """As ``sinks.mqtt.lag_alert_s``, for central."""
    token: Secret | None = field(
        default=None, metadata=_m(secret=("token_file", "token_env"), internal=True)
    )

    @property
    def host(self) -> str:
        return split_host_port(self.target)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.target)[1]


@dataclass(frozen=True, slots=True)
class EpcisSinkConfig:
    capture_url: str = field(metadata=_m(check=_check_http_url))
    """The EPCIS 2.0 capture interface (``http(s)://host[:port]/capture``)."""
    tls: TlsClientConfig | None = None
    """TLS towards an ``https://`` capture URL; without it the system trust store is used."""
    token_file: Path | None = field(default=None, metadata=_m(exists=True))
    token_env: str | None = field(default=None, metadata=_m(env_name=True))
    batch_max: int = field(default=500, metadata=_m(lo=1, hi=100_000))
    """Movements per EPCISDocument (each is one or two events)."""
    request_timeout_s: float = field(default=30.0, metadata=_POSITIVE)
    base_uri: str = field(
        default="https://example.invalid/dockwatch/site", metadata=_m(check=_check_base_uri)
    )
    """Where the fallback URIs of places without an SGLN live: ``{base_uri}/{site}/readpoint/
    {portal or shelf}``, ``.../location/{location}``, and business transactions
    ``.../desadv/{receipt}``, ``.../po/{order}``. Set it to a domain you control."""
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    lag_alert_s: float | None = field(default=DEFAULT_LAG_ALERT_S, metadata=_POSITIVE)
    """As ``sinks.mqtt.lag_alert_s``, for the EPCIS repository."""
    token: Secret | None = field(
        default=None, metadata=_m(secret=("token_file", "token_env"), internal=True)
    )

    @property
    def host(self) -> str:
        return urlsplit(self.capture_url).hostname or ""

    @property
    def use_tls(self) -> bool:
        return self.capture_url.startswith("https:")

    def _config_problems(self) -> Iterator[tuple[str, str]]:
        if self.tls is not None and not self.use_tls:
            yield "tls", "given but capture_url is http://; use https:// to enable TLS"


@dataclass(frozen=True, slots=True)
class SinksConfig:
    mqtt: MqttSinkConfig | None = None
    central: CentralSinkConfig | None = None
    epcis: EpcisSinkConfig | None = None
    """EPCIS 2.0 repository (docs/epcis.md)."""


@dataclass(frozen=True, slots=True)
class ApiTlsConfig:
    cert_file: Path = field(metadata=_m(exists=True))
    key_file: Path = field(metadata=_m(exists=True))
    client_ca_file: Path | None = field(default=None, metadata=_m(exists=True))
    """When set, clients must present a certificate signed by this CA (mutual TLS)."""


@dataclass(frozen=True, slots=True)
class ApiConfig:
    grpc_listen: str = field(default="127.0.0.1:50061", metadata=_m(check=_check_host_port))
    metrics_listen: str | None = field(
        default="127.0.0.1:9108", metadata=_m(check=_check_host_port)
    )
    """Prometheus ``/metrics`` endpoint; ``null`` disables it."""
    tls: ApiTlsConfig | None = None
    token_file: Path | None = field(default=None, metadata=_m(exists=True))
    token_env: str | None = field(default=None, metadata=_m(env_name=True))
    token: Secret | None = field(
        default=None, metadata=_m(secret=("token_file", "token_env"), internal=True)
    )
    """Bearer token the local gRPC API requires; None: no token required."""
    operator_token_file: Path | None = field(default=None, metadata=_m(exists=True))
    operator_token_env: str | None = field(default=None, metadata=_m(env_name=True))
    operator_token: Secret | None = field(
        default=None,
        metadata=_m(secret=("operator_token_file", "operator_token_env"), internal=True),
    )
    """The token the operator console's actions require (upload expected receipts, acknowledge
    an alert, re-count a shelf); None: the console is read-only."""


@dataclass(frozen=True, slots=True)
class ReceivingConfig:
    expected_file: Path | None = field(default=None, metadata=_m(exists=True))
    """Expected receipts (advance ship notices) to verify inbound crossings against."""
    idle_close_s: float = field(default=300.0, metadata=_POSITIVE)
    """An expected receipt that has begun completes once nothing has been received against it
    for this long; its discrepancy (or all-matched) alert is raised then."""


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = field(
        default="INFO", metadata=_m(normalize=lambda v: v.upper() if isinstance(v, str) else v)
    )
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole, validated configuration. Build it with :func:`load_config`."""

    site: SiteConfig
    store: StoreConfig = field(default_factory=StoreConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    locations: tuple[LocationConfig, ...] = ()
    readers: tuple[ReaderConfig, ...] = ()
    portals: tuple[PortalConfig, ...] = ()
    shelves: tuple[ShelfConfig, ...] = ()
    debounce: DebounceConfig = field(default_factory=DebounceConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    receiving: ReceivingConfig = field(default_factory=ReceivingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = field(default="<config>", compare=False, metadata=_m(internal=True))
    """Where the config came from (file path), for log lines."""

    def item(self, sku: str) -> CatalogItem:
        """The catalog item of ``sku``; KeyError when unknown."""
        for item in self.catalog.items:
            if item.sku == sku:
                return item
        raise KeyError(sku)

    def item_for_gtin(self, gtin: str) -> CatalogItem | None:
        return next((i for i in self.catalog.items if i.gtin == gtin), None)

    def location(self, location_id: str) -> LocationConfig:
        for loc in self.locations:
            if loc.id == location_id:
                return loc
        raise KeyError(location_id)

    def reader(self, reader_id: str) -> ReaderConfig:
        for reader in self.readers:
            if reader.id == reader_id:
                return reader
        raise KeyError(reader_id)

    def portals_of(self, reader_id: str) -> tuple[PortalConfig, ...]:
        return tuple(p for p in self.portals if p.reader == reader_id)


# --------------------------------------------------------------------------------------------
# The generic builder


class _Invalid:
    """Stands in for a value that failed validation, so building can go on."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Final = _Invalid()


def _ok(value: object) -> bool:
    return value is not _INVALID


@dataclass(slots=True)
class _Scope:
    """Fields built so far of the dataclass being built, and its enclosing scope."""

    values: dict[str, Any]
    parent: _Scope | None

    def root(self) -> _Scope:
        scope = self
        while scope.parent is not None:
            scope = scope.parent
        return scope


@dataclass(slots=True)
class _Ctx:
    environ: Mapping[str, str]
    problems: list[str] = field(default_factory=list)
    set_by: dict[KeyPath, str] = field(default_factory=dict)
    """Key path -> the environment variable that set it."""
    created_by: dict[KeyPath, str] = field(default_factory=dict)
    """Section path -> the environment variable whose override created it."""
    partial: dict[int, object] = field(default_factory=dict)
    """Built objects holding an invalid part, by id (the value keeps the id alive)."""
    hints: dict[type[Any], tuple[dict[str, Any], list[Field[Any]]]] = field(default_factory=dict)
    """Type hints and init fields per class: resolving them is most of the cost per item."""

    def schema(self, cls: type[Any]) -> tuple[dict[str, Any], list[Field[Any]]]:
        found = self.hints.get(cls)
        if found is None:
            found = self.hints[cls] = (_hints(cls), [f for f in fields(cls) if f.init])
        return found

    def mark_partial(self, obj: _T) -> _T:
        self.partial[id(obj)] = obj
        return obj

    def whole(self, value: object) -> bool:
        """``value`` is valid through and through."""
        return value is not _INVALID and id(value) not in self.partial

    def report(self, path: KeyPath, message: str) -> None:
        var = self.set_by.get(path)
        if var is None:
            for i in range(len(path) - 1, 0, -1):
                var = self.created_by.get(path[:i])
                if var is not None:
                    break
        suffix = f" (set by {var})" if var is not None else ""
        self.problems.append(f"{_fmt_path(path)}: {message}{suffix}")


def _fmt_path(path: KeyPath) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out or "(top level)"


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:57] + "...")
    if isinstance(value, int) and value.bit_length() > 64:
        # str() of an int beyond 4,300 digits raises: the digit count from the bit length.
        return f"an integer of {_digits(value)} digits"
    return repr(value)


def _digits(value: int) -> int:
    digits = int(value.bit_length() * 0.30103) + 1
    return digits - 1 if 10 ** (digits - 1) > abs(value) else digits


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _key_of(f: Field[Any]) -> str:
    key = f.metadata.get("key")
    return key if isinstance(key, str) else f.name


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _describe(tp: Any, meta: Mapping[str, Any]) -> str:
    what = meta.get("what")
    if isinstance(what, str):
        return what
    tp, _ = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0], meta)}"
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        choices = meta.get("choices") or list(tp)
        return "one of " + ", ".join(repr(c.value) for c in tp if c in choices)
    if is_dataclass(tp):
        return "a mapping"
    if tp is bool:
        return "true or false"
    if tp is Path:
        return "a file path"
    if tp is str:
        return "a non-empty string"
    base = "an integer" if tp is int else "a number"
    lo, hi, gt = meta.get("lo"), meta.get("hi"), meta.get("gt")
    if lo is not None and hi is not None:
        return f"{base} in {_num(lo)}..{_num(hi)}"
    if gt is not None:
        return f"{base} > {_num(gt)}"
    if lo is not None:
        return f"{base} >= {_num(lo)}"
    if hi is not None:
        return f"{base} <= {_num(hi)}"
    return base


def _convert(
    tp: Any, raw: object, *, path: KeyPath, ctx: _Ctx, meta: Mapping[str, Any], scope: _Scope
) -> Any:
    """``raw`` checked against type ``tp`` and ``meta``; ``_INVALID`` (and a report) if bad."""
    tp, optional = _unwrap_optional(tp)
    if raw is None and optional:
        return None
    normalize = meta.get("normalize")
    value = normalize(raw) if normalize is not None else raw

    def bad() -> _Invalid:
        hint = ""
        if tp in (str, Path) and isinstance(raw, int | float) and not isinstance(raw, bool):
            hint = " (YAML read a number: quote the value)"
        ctx.report(path, f"must be {_describe(tp, meta)}, got {_show(raw)}{hint}")
        return _INVALID

    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        assert isinstance(tp, type)
        return _build(tp, value, path=path, ctx=ctx, parent=scope, parent_meta=meta)
    if origin is tuple:
        return _convert_list(
            typing.get_args(tp)[0], value, path=path, ctx=ctx, meta=meta, scope=scope, bad=bad
        )
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # protocol: 5 is the string "5"
        return value if value in choices else bad()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = meta.get("choices") or frozenset(tp)
        member = next((m for m in tp if m.value == value and m in allowed), None)
        return member if member is not None else bad()
    if tp is bool:
        return value if isinstance(value, bool) else bad()
    if tp is int or tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return bad()
        if tp is int and not isinstance(value, int):
            return bad()
        if isinstance(value, float) and not math.isfinite(value):
            return bad()
        lo, hi, gt = meta.get("lo"), meta.get("hi"), meta.get("gt")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return bad()
        if gt is not None and value <= gt:
            return bad()
        if isinstance(value, int) and not -_INT64 - 1 <= value <= _INT64:
            ctx.report(
                path, f"must be {_describe(tp, meta)} that fits in 64 bits, got {_show(raw)}"
            )
            return _INVALID
        return float(value) if tp is float else value
    if tp is str or tp is Path:
        if not isinstance(value, str) or not value.strip():
            return bad()
        if tp is Path:
            problem = path_problem(value)
            if problem is not None:
                ctx.report(path, f"{problem}, got {_show(value)}")
                return _INVALID
        elif len(value) > MAX_TEXT_CHARS:
            ctx.report(
                path,
                f"must be at most {MAX_TEXT_CHARS} characters, got {_show(value)} "
                f"({len(value)} characters)",
            )
            return _INVALID
        if _CONTROL_RE.search(value):
            ctx.report(path, f"must not contain control characters, got {_show(value)}")
            return _INVALID
        pattern = meta.get("pattern")
        if pattern is not None and not pattern.fullmatch(value):
            return bad()
        if tp is Path:
            return _check_file(Path(value), path, ctx) if meta.get("exists") else Path(value)
        if meta.get("env_name"):
            return _check_env_name(value, path, ctx)
        check = meta.get("check")
        problem = check(value) if check is not None else None
        if problem is not None:
            ctx.report(path, problem)
            return _INVALID
        return value
    raise TypeError(f"config field type {tp!r} at {_fmt_path(path)} is not supported")


def _convert_list(
    elem_tp: Any,
    value: object,
    *,
    path: KeyPath,
    ctx: _Ctx,
    meta: Mapping[str, Any],
    scope: _Scope,
    bad: Callable[[], _Invalid],
) -> Any:
    if not isinstance(value, list | tuple):
        return bad()
    if meta.get("nonempty") and not value:
        ctx.report(path, "must be a non-empty list")
        return _INVALID
    out: list[Any] = []
    first_at: dict[object, int] = {}
    for i, elem in enumerate(value):
        built = _convert(elem_tp, elem, path=(*path, i), ctx=ctx, meta=meta, scope=scope)
        if meta.get("unique") and _ok(built):
            if built in first_at:
                where = _fmt_path((*path, first_at[built]))
                ctx.report((*path, i), f"duplicate value {_show(built)} (first at {where})")
            first_at.setdefault(built, i)
        out.append(built)
    built_list = tuple(out)
    return built_list if all(ctx.whole(v) for v in out) else ctx.mark_partial(built_list)


def _check_file(file: Path, path: KeyPath, ctx: _Ctx) -> Path | _Invalid:
    try:
        is_file = file.is_file()
    except OSError as exc:  # ENAMETOOLONG, EACCES on a parent...: not a file we can use
        ctx.report(path, f"cannot use '{shown(file)}': {exc.strerror or exc}")
        return _INVALID
    if not is_file:
        ctx.report(path, f"file not found: '{file}'")
        return _INVALID
    if not os.access(file, os.R_OK):
        ctx.report(path, f"file not readable: '{file}'")
        return _INVALID
    return file


def _check_env_name(name: str, path: KeyPath, ctx: _Ctx) -> str | _Invalid:
    if not _ENV_NAME_RE.fullmatch(name):
        ctx.report(path, f"must be an environment variable name, got {_show(name)}")
        return _INVALID
    if not ctx.environ.get(name):
        ctx.report(path, f"environment variable '{name}' is not set")
        return _INVALID
    return name


def _build(
    cls: type[Any],
    raw: object,
    *,
    path: KeyPath,
    ctx: _Ctx,
    parent: _Scope | None,
    parent_meta: Mapping[str, Any] | None = None,
) -> Any:
    """Build dataclass ``cls`` from mapping ``raw``, reporting every problem under ``path``."""
    if not isinstance(raw, Mapping):
        ctx.report(path, f"must be a mapping, got {_show(raw)}")
        return _INVALID
    hints, all_fields = ctx.schema(cls)
    extra_meta: Mapping[str, Mapping[str, Any]] = (parent_meta or {}).get("field_meta") or {}
    default_meta: Mapping[str, Any] = (parent_meta or {}).get("default_meta") or {}
    keyed = {_key_of(f): f for f in all_fields if not f.metadata.get("internal")}
    secret_names = {f.name for f in all_fields if f.metadata.get("secret")}
    for key in raw:
        if key in keyed or (not path and isinstance(key, str) and key.startswith("x-")):
            # Top-level ``x-`` keys hold YAML anchors for reuse (the compose-file convention).
            continue
        ctx.report((*path, str(key)), _unknown_key_message(str(key), keyed, secret_names))

    scope = _Scope({}, parent)
    valid = True
    for f in all_fields:
        meta: Mapping[str, Any] = f.metadata
        if meta.get("internal"):
            continue
        if f.name in extra_meta:
            meta = {**extra_meta[f.name], **meta}
        elif default_meta and not meta:
            meta = default_meta
        key = _key_of(f)
        if key in raw:
            value = _convert(
                hints[f.name], raw[key], path=(*path, key), ctx=ctx, meta=meta, scope=scope
            )
        elif "derive" in meta:
            value = meta["derive"](scope)
        elif f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            ctx.report((*path, key), "missing required key")
            value = _INVALID
        valid = valid and ctx.whole(value)
        scope.values[f.name] = value

    for f in all_fields:
        pair = f.metadata.get("secret")
        if pair is None:
            continue
        file_name, env_name = pair
        file, env = scope.values[file_name], scope.values[env_name]
        if file is not None and env is not None:
            ctx.report((*path, env_name), f"give only one of {file_name} and {env_name}")
            valid = False
        elif _ok(file) and _ok(env) and (file is not None or env is not None):
            secret_key = _fmt_path((*path, f.name))
            scope.values[f.name] = Secret(secret_key, file, env, ctx.environ)

    try:
        obj = cls(**scope.values)
    except (ValueError, TypeError) as exc:
        # A class validating itself in __post_init__ (the domain params do): its message
        # usually starts with the field name, which then gives the key path.
        if valid:
            message = str(exc)
            first = message.split(" ", 1)[0]
            name = first.rsplit(".", 1)[-1]  # "min_reads" or "debounce.portal.min_reads"
            names = {f.name: _key_of(f) for f in all_fields}
            if name in names:
                ctx.report((*path, names[name]), message.removeprefix(first).strip())
            else:
                ctx.report(path, message)
        return _INVALID
    if not valid:
        # Still returned, so cross-reference checks can look at the parts that are valid.
        return ctx.mark_partial(obj)
    check = getattr(obj, "_config_problems", None)
    if callable(check):
        for rel, message in check():
            ctx.report((*path, *_split_rel(rel)), message)
    return obj


def _split_rel(rel: str) -> KeyPath:
    out: list[str | int] = []
    for part in rel.split("."):
        name, _, rest = part.partition("[")
        if name:
            out.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            out.append(int(index))
            rest = rest.removeprefix("[")
    return tuple(out)


def _unknown_key_message(key: str, keyed: Mapping[str, Any], secrets: set[str]) -> str:
    if key in secrets:
        return f"secrets are never written in the config: use {key}_file or {key}_env"
    allowed = ", ".join(keyed)
    close = difflib.get_close_matches(key, list(keyed), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key (allowed: {allowed}){hint}"


# --------------------------------------------------------------------------------------------
# Environment overrides


def _override_target(segments: list[str]) -> tuple[tuple[str, ...], bool] | str:
    """The key path ``segments`` name in the schema and whether it is a string-valued key, or
    why they name no scalar key."""
    cls: Any = GatewayConfig
    path: list[str] = []
    tp: Any = None
    for i, seg in enumerate(segments):
        keyed = {_key_of(f): f for f in fields(cls) if f.init and not f.metadata.get("internal")}
        where = ".".join(path) or "the top level"
        if seg not in keyed:
            return f"no key '{seg}' in {where} (allowed: {', '.join(keyed)})"
        tp, _ = _unwrap_optional(_hints(cls)[keyed[seg].name])
        path.append(seg)
        last = i == len(segments) - 1
        if typing.get_origin(tp) is tuple:
            return f"{'.'.join(path)} is a list; only scalar keys of sections can be overridden"
        if is_dataclass(tp):
            if last:
                return f"{'.'.join(path)} is a section, not a scalar key"
            cls = tp
        elif not last:
            return f"{'.'.join(path)} is a scalar key, not a section"
    literal_str = typing.get_origin(tp) is Literal and all(
        isinstance(c, str) for c in typing.get_args(tp)
    )
    return tuple(path), tp in (str, Path) or literal_str


def _apply_overrides(data: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    """``data`` with the ``DOCKWATCH_*`` overrides of ``ctx.environ`` written in (copy on write)."""
    wanted: list[tuple[str, tuple[str, ...], object]] = []
    for name in sorted(ctx.environ):
        text = ctx.environ[name]
        if not name.startswith(GENERIC_OVERRIDE_PREFIX) or not text:
            continue
        segments = name[len(GENERIC_OVERRIDE_PREFIX) :].lower().split("__")
        found = _override_target(segments)
        if isinstance(found, str):
            ctx.problems.append(f"{name}: {found}")
            continue
        target, is_string = found
        value: object = text
        if is_string:
            # CLIENT_ID=0042 is the string '0042', not the number 42; only null stays null.
            if text in ("null", "Null", "NULL", "~"):
                value = None
        else:
            try:
                value = parse_yaml(text, _OVERRIDE_LIMITS, name)
            except DocumentError as exc:
                ctx.problems.append(f"{name}: not a YAML scalar: {exc.problem}")
                continue
            if isinstance(value, Mapping | list):
                ctx.problems.append(f"{name}: must be a single value, got {_show(value)}")
                continue
        wanted.append((name, target, value))
    for name, target in NAMED_OVERRIDES:
        text = ctx.environ.get(name, "")
        if text:
            wanted.append((name, target, text))

    out = dict(data)
    for name, target, value in wanted:
        if target in ctx.set_by:
            ctx.problems.append(
                f"{name}: {_fmt_path(target)} is already set by {ctx.set_by[target]}"
            )
            continue
        node = out
        for i, seg in enumerate(target[:-1]):
            child = node.get(seg)
            if child is None:
                child = {}
                ctx.created_by.setdefault(target[: i + 1], name)
            elif not isinstance(child, Mapping):
                # The section itself is broken; building reports it.
                break
            node[seg] = node = dict(child)
        else:
            node[target[-1]] = value
            ctx.set_by[target] = name
    return out


# --------------------------------------------------------------------------------------------
# Cross-references


def _seq(value: object) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else ()


def _known(names: Iterable[str]) -> str:
    names = list(names)
    if not names:
        return "none defined"
    shown = ", ".join(names[:10])
    return shown if len(names) <= 10 else f"{shown} and {len(names) - 10} more"


def _unique_ids(
    ctx: _Ctx, entries: Iterable[tuple[KeyPath, object]], what: str = "id"
) -> dict[str, KeyPath]:
    first: dict[str, KeyPath] = {}
    for path, value in entries:
        if not isinstance(value, str):
            continue
        if value in first:
            where = _fmt_path(first[value][:-1])
            ctx.report(path, f"duplicate {what} '{value}' (first at {where})")
        else:
            first[value] = path
    return first


def _check_ref(
    ctx: _Ctx, path: KeyPath, value: object, known: Mapping[str, Any], what: str
) -> bool:
    if not isinstance(value, str):
        return False
    if value not in known:
        ctx.report(path, f"unknown {what} '{value}' (known: {_known(known)})")
        return False
    return True


def _cross_check(cfg: GatewayConfig, ctx: _Ctx) -> None:
    items = [(i, x) for i, x in enumerate(_seq(getattr(cfg.catalog, "items", ()))) if _ok(x)]
    skus = _unique_ids(ctx, ((("catalog", "items", i, "sku"), x.sku) for i, x in items))
    _unique_ids(ctx, ((("catalog", "items", i, "gtin"), x.gtin) for i, x in items), "GTIN")
    item_of = {x.sku: x for _, x in reversed(items) if isinstance(x.sku, str)}

    locations = [(i, x) for i, x in enumerate(_seq(cfg.locations)) if _ok(x)]
    known_locations = _unique_ids(ctx, ((("locations", i, "id"), x.id) for i, x in locations))
    shelf_targets = {**dict.fromkeys(IMPLICIT_LOCATIONS, ()), **known_locations}

    readers = [(i, x) for i, x in enumerate(_seq(cfg.readers)) if _ok(x)]
    reader_ids = _unique_ids(ctx, ((("readers", i, "id"), x.id) for i, x in readers))
    reader_of = {x.id: x for _, x in reversed(readers) if isinstance(x.id, str)}

    portals = [(i, x) for i, x in enumerate(_seq(cfg.portals)) if _ok(x)]
    _unique_ids(ctx, ((("portals", i, "id"), x.id) for i, x in portals))
    antenna_owner: dict[tuple[str, int], int] = {}
    io_owner: dict[tuple[str, str, object], int] = {}
    for i, portal in portals:
        path: KeyPath = ("portals", i)
        if _check_ref(ctx, (*path, "reader"), portal.reader, reader_ids, "reader"):
            reader = reader_of[portal.reader]
            for side in ("outside_antennas", "inside_antennas"):
                for j, antenna in enumerate(_seq(getattr(portal, side))):
                    if _ok(reader.antennas) and antenna not in reader.antennas:
                        listed = ", ".join(str(a) for a in reader.antennas)
                        ctx.report(
                            (*path, side, j),
                            f"antenna {antenna} is not one of reader '{reader.id}' "
                            f"antennas ({listed})",
                        )
                    owner = antenna_owner.setdefault((portal.reader, antenna), i)
                    if owner != i:
                        ctx.report(
                            (*path, side, j),
                            f"antenna {antenna} of reader '{portal.reader}' is already used by "
                            f"portals[{owner}]",
                        )
        for side in ("outside_location", "inside_location"):
            _check_ref(ctx, (*path, side), getattr(portal, side), known_locations, "location")
        # A reader's GPO outputs (lights) and GPI inputs (photo eyes) belong to one portal each.
        io: list[tuple[KeyPath, str, object]] = []
        if portal.lights is not None and _ok(portal.lights):
            for j, rule in enumerate(_seq(portal.lights.rules)):
                if _ok(rule):
                    io += [(("lights", "rules", j, "gpo"), "GPO", p) for p in _seq(rule.gpo)]
        if portal.photo_eyes is not None and _ok(portal.photo_eyes):
            for key in ("outside_gpi", "inside_gpi"):
                io.append((("photo_eyes", key), "GPI", getattr(portal.photo_eyes, key)))
        for where, kind, port in io:
            owner = io_owner.setdefault((portal.reader, kind, port), i)
            if owner != i:
                ctx.report(
                    (*path, *where),
                    f"{kind} {port} of reader '{portal.reader}' is already used by "
                    f"portals[{owner}]",
                )

    shelves = [(i, x) for i, x in enumerate(_seq(cfg.shelves)) if _ok(x)]
    shelf_ids = _unique_ids(ctx, ((("shelves", i, "id"), x.id) for i, x in shelves))
    # Readers and shelves share the {prefix}/devices/{device_id}/status topic space.
    for shelf_id, path in shelf_ids.items():
        if shelf_id in reader_ids:
            ctx.report(
                path,
                f"'{shelf_id}' is also the id of {_fmt_path(reader_ids[shelf_id][:-1])} "
                "(device ids share MQTT status topics)",
            )
    registers: dict[tuple[str, int, int, str], list[tuple[int, int, int]]] = {}
    # One connection per host:port carries all its shelves, so one TLS setting must serve them.
    connections: dict[tuple[str, int], tuple[int, TlsClientConfig | None]] = {}
    for i, shelf in shelves:
        path = ("shelves", i)
        _check_ref(ctx, (*path, "location"), shelf.location, known_locations, "location")
        for name in ("pick_to", "restock_from"):
            _check_ref(ctx, (*path, name), getattr(shelf, name), shelf_targets, "location")
        if _check_ref(ctx, (*path, "sku"), shelf.sku, skus, "sku"):
            item = item_of[shelf.sku]
            if _ok(item.unit_weight_g) and item.unit_weight_g is None:
                ctx.report(
                    (*path, "sku"),
                    f"item '{shelf.sku}' ({_fmt_path(skus[shelf.sku][:-1])}) has no unit_weight_g, "
                    "which a weight shelf needs to count packs",
                )
        modbus, weight = shelf.modbus, shelf.weight
        if (
            _ok(modbus)
            and _ok(weight)
            and all(
                _ok(v) for v in (modbus.host, modbus.port, modbus.unit, weight.address, weight.type)
            )
        ):
            device = (modbus.host, modbus.port, modbus.unit, weight.table)
            start, end = weight.address, weight.address + weight.count - 1
            for other_start, other_end, j in registers.get(device, []):
                if start <= other_end and other_start <= end:
                    ctx.report(
                        (*path, "weight", "address"),
                        f"registers {start}..{end} overlap those of shelves[{j}] on the same "
                        f"Modbus unit {modbus.host}:{modbus.port}/{modbus.unit}",
                    )
            registers.setdefault(device, []).append((start, end, i))
        if (
            _ok(modbus)
            and all(_ok(v) for v in (modbus.host, modbus.port))
            and ctx.whole(modbus.tls)
        ):
            first, tls = connections.setdefault((modbus.host, modbus.port), (i, modbus.tls))
            if tls != modbus.tls:
                ctx.report(
                    (*path, "modbus", "tls"),
                    f"differs from shelves[{first}].modbus.tls, which reaches the same Modbus "
                    f"connection {modbus.host}:{modbus.port}: its shelves share one connection, "
                    "so give them the same tls (or none)",
                )


def _with_implicit_locations(cfg: GatewayConfig) -> GatewayConfig:
    listed = {loc.id for loc in cfg.locations}
    used = {s.pick_to for s in cfg.shelves} | {s.restock_from for s in cfg.shelves}
    implicit = list(IMPLICIT_LOCATIONS)
    if cfg.shelves:
        # Shelf reconciliation moves stock from/to this virtual location.
        used.add(cfg.debounce.shelf.adjust_location)
        implicit.append(cfg.debounce.shelf.adjust_location)
    extra = tuple(
        LocationConfig(id=name, kind="virtual")
        for name in dict.fromkeys(implicit)
        if name in used and name not in listed
    )
    return replace(cfg, locations=cfg.locations + extra) if extra else cfg


# --------------------------------------------------------------------------------------------
# Entry points


def parse_config(
    data: object, *, environ: Mapping[str, str] | None = None, source: str = "<config>"
) -> GatewayConfig:
    """Validate already-parsed config ``data`` (as from YAML) into a :class:`GatewayConfig`.

    ``environ`` supplies the ``DOCKWATCH_*`` overrides and ``*_env`` secrets (default
    ``os.environ``; pass ``{}`` to ignore the environment). Raises :class:`ConfigError` with
    every problem found.
    """
    ctx = _Ctx(environ=os.environ if environ is None else environ)
    if data is None:
        raise ConfigError("the config is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(f"(top level): must be a mapping of sections, got {_show(data)}")
    data = _apply_overrides(data, ctx)
    cfg = _build(GatewayConfig, data, path=(), ctx=ctx, parent=None)
    if isinstance(cfg, GatewayConfig):
        _cross_check(cfg, ctx)
    if ctx.problems or not isinstance(cfg, GatewayConfig):
        raise ConfigError(ctx.problems)
    return replace(_with_implicit_locations(cfg), source=source)


class _Loader(SafeLoader):  # type: ignore[misc]
    """The safe loader that records duplicate mapping keys instead of dropping them."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, int, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, yaml.Mark] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node)
            mark = key_node.start_mark
            try:
                first = seen.setdefault(key, mark)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if first is not mark:
                where = f"line {mark.line + 1}, column {mark.column + 1}"
                message = f"{where}: duplicate key {_show(key)} (first at line {first.line + 1})"
                self.duplicates.append((mark.line, mark.column, message))
        return cast(dict[Any, Any], super().construct_mapping(node, deep=deep))


def _no_duplicates(loader: _Loader) -> None:
    if loader.duplicates:
        raise ConfigError([message for _, _, message in sorted(loader.duplicates)])


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, override and validate the YAML config at ``path`` (see :func:`parse_config`).

    The file is read within :data:`gateway.documents.CONFIG_LIMITS` (size, nesting, encoding:
    see :mod:`gateway.documents`); every problem is a :class:`ConfigError`, never an OSError.
    """
    try:
        data = read_yaml(path, CONFIG_LIMITS, loader_class=_Loader, inspect=_no_duplicates)
    except DocumentError as exc:
        raise ConfigError(_document_problem(exc)) from exc
    if data is None:
        raise ConfigError("the file is empty (no YAML document)")
    return parse_config(data, environ=environ, source=shown(path))


def _document_problem(exc: DocumentError) -> str:
    """The problem as config messages have always read (the CLI adds the file name)."""
    problem = exc.problem
    if problem.startswith("not valid YAML: "):
        return "YAML syntax: " + problem.removeprefix("not valid YAML: ")
    if problem.startswith("cannot read: "):
        return "cannot read the config file: " + problem.removeprefix("cannot read: ")
    return problem


def config_path_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """The config file named by ``DOCKWATCH_CONFIG``; ConfigError when it is not set."""
    value = (os.environ if environ is None else environ).get(CONFIG_PATH_ENV, "")
    if not value:
        raise ConfigError(f"no config file given and {CONFIG_PATH_ENV} is not set")
    return Path(value)


def config_keys() -> list[str]:
    """Every config key as a dotted path (``readers[].port``), in declaration order."""
    out: list[str] = []

    def walk(cls: type[Any], prefix: str) -> None:
        hints = _hints(cls)
        for f in fields(cls):
            if not f.init or f.metadata.get("internal"):
                continue
            tp, _ = _unwrap_optional(hints[f.name])
            name = f"{prefix}{_key_of(f)}"
            if typing.get_origin(tp) is tuple:
                elem = typing.get_args(tp)[0]
                if is_dataclass(elem):
                    assert isinstance(elem, type)
                    walk(elem, f"{name}[].")
                    continue
            elif is_dataclass(tp):
                assert isinstance(tp, type)
                walk(tp, f"{name}.")
                continue
            out.append(name)

    walk(GatewayConfig, "")
    return out
