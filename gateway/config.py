"""The gateway's configuration: one YAML file loaded into one frozen, validated tree.

Theory of operation
-------------------
The tree is a set of frozen pydantic v2 dataclasses; pydantic does the walking, the type checks,
the defaults and the JSON Schema (``dockwatch config schema``). Loading runs in stages and
reports *every* problem it finds, each as one line that starts with the key path
(``readers[1].port: must be an integer in 1..65535, got 'abc'``), in one
:class:`~dockwatch_core.errors.ConfigError` at the end:

1. **Parse.** YAML through PyYAML's safe loader, with duplicate mapping keys rejected (PyYAML
   silently keeps the last one, which hides typos). Syntax errors name their line and column.
2. **Overrides.** ``DOCKWATCH_*`` environment variables are written into the raw mapping (see
   :data:`NAMED_OVERRIDES` and :data:`GENERIC_OVERRIDE_PREFIX`). Which variable set which key is
   remembered, so a problem with an overridden value names the variable.
3. **Validate.** One pydantic validation of the whole tree. Every value type carries a check
   (``Annotated[int, Num(int, lo=1, hi=65535)]``) that runs *before* pydantic's own and raises
   our message, so pydantic's lax coercions ('5' -> 5, 1 -> True) never apply and messages read
   as users know them. Pydantic's own errors (missing key, unknown key, not a mapping) are
   rewritten by :func:`gateway.validation.problems_of`, which adds "did you mean" and the
   variable. Derived defaults (a port that depends on ``tls``, kinds that depend on ``role``,
   MQTT names that depend on the site) are filled in by ``mode="before"`` validators; rules
   across the fields of one section are ``mode="after"`` validators.
4. **Cross-references.** Ids unique; portals point at known readers, antennas and locations;
   shelves at known locations and SKUs. They are checked even when other parts failed (pydantic
   gives no partial tree, so the failed case reads the raw mapping through :class:`_Partial`).

Invariant: a :class:`GatewayConfig` that exists passed every check. The tree holds no secret: keys
ending in ``_file``/``_env`` name where a secret lives, and :class:`Secret` reads it on demand.
The catalog items are the core's own :class:`gateway.domain.model.CatalogItem` (one shape,
one GTIN rule: :func:`gateway.domain.gs1.normalise_gtin`), and the ``debounce`` sections the
domain's parameter dataclasses: a field added there is a config key here.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, cast
from urllib.parse import SplitResult, urlsplit

import yaml
from pydantic import Field, TypeAdapter, ValidationError, ValidationInfo
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticUndefined

from dockwatch_core.errors import ConfigError
from gateway.documents import (
    CONFIG_LIMITS,
    SECRET_LIMITS,
    DocumentError,
    DocumentLimits,
    SafeLoader,
    parse_yaml,
    read_text,
    read_yaml,
    shown,
)
from gateway.domain.gs1 import gs1_check_digit
from gateway.domain.model import CatalogItem, MovementKind, Sku
from gateway.domain.params import AntennaParams, PortalParams, ShelfParams
from gateway.validation import (
    HIDDEN_KEYS_ATTR,
    ID,
    MAX_ID_CHARS,
    MODEL_CONFIG,
    EnvName,
    FilePath,
    Flag,
    Items,
    KeyPath,
    Num,
    OneOf,
    Section,
    Text,
    Via,
    field_docs,
    fmt_path,
    keys_of,
    lines,
    params_model,
    problems_of,
    show,
    unwrap,
)

__all__ = [
    "CONFIG_PATH_ENV",
    "GENERIC_OVERRIDE_PREFIX",
    "IMPLICIT_LOCATIONS",
    "NAMED_OVERRIDES",
    "ApiConfig",
    "ApiTlsConfig",
    "CatalogConfig",
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
    "config_schema",
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

_OVERRIDE_LIMITS: Final = DocumentLimits("environment override", 64 << 10, 4, 1000)

MAX_COUNT: Final = 2**31 - 1
"""Counts of eaches in the config (reorder points): the store keeps movement quantities and
these in 32-bit integer columns."""
MAX_PACK_SIZE: Final = 1_000_000
"""Eaches per tagged pack: a movement of N tags moves N x pack_size eaches, which must still fit
the store's 32-bit quantity (2,147 packs of the largest size)."""
# A SKU is one MQTT topic level: no separator, no wildcard, no blank, no control character.
_SKU_RE: Final = re.compile(rf"[^/+#\s\x00-\x1f\x7f-\x9f]{{1,{MAX_ID_CHARS}}}")
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


def split_host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; ValueError when malformed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"must be 'host:port', got {show(text)}")
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
        return str(exc) if str(exc).startswith("must") else f"{exc} (in {show(value)})"
    return None


def _check_ipv4_host(value: str) -> str | None:
    if ":" in value:
        return f"must be an IPv4 address or host name (sllurp is IPv4-only), got {show(value)}"
    if not _HOSTNAME_RE.fullmatch(value):
        return f"must be a host name or IPv4 address, got {show(value)}"
    return None


def _check_host(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME_RE.fullmatch(value):
            return f"must be a host name or IP address, got {show(value)}"
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
        f"must be a 'sqlite:///path' or 'postgresql+psycopg://' URL, got {show(_mask_url(value))}"
    )


def _parse_mqtt_url(value: str) -> SplitResult:
    parts = urlsplit(value)
    parts.port  # noqa: B018 - property access validates the port number
    return parts


def _check_mqtt_url(value: str) -> str | None:
    try:
        parts = _parse_mqtt_url(value)
    except ValueError as exc:
        return f"malformed URL {show(_mask_url(value))}: {exc}"
    if parts.scheme not in ("mqtt", "mqtts"):
        return f"must be an mqtt:// or mqtts:// URL, got {show(_mask_url(value))}"
    if parts.username is not None or parts.password is not None:
        return "must not hold credentials: use sinks.mqtt.username and password_file/password_env"
    if not parts.hostname:
        return f"names no host: {show(value)}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"must be scheme://host[:port] only, got {show(value)}"
    return None


def _check_topic_prefix(value: str) -> str | None:
    if any(c in value for c in "+#\0"):
        return f"must not contain MQTT wildcards '+' or '#', got {show(value)}"
    if value.startswith(("/", "$")) or value.endswith("/") or "//" in value:
        return f"must be topic levels joined by '/', no empty level and no '$', got {show(value)}"
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


# --------------------------------------------------------------------------------------------
# Checks of single values


_SKU_WHAT: Final = (
    f"a SKU of at most {MAX_ID_CHARS} characters without '/', '+', '#' or blanks (topic level)"
)
SKU: Final = Text(pattern=_SKU_RE, what=_SKU_WHAT)
SGLN: Final = Text(check=_check_sgln, what="an SGLN URN (urn:epc:id:sgln:...)")
PORT: Final = Num(int, lo=1, hi=65535)
POSITIVE: Final = Num(float, gt=0)
EXISTING: Final = FilePath(exists=True)
ENV: Final = EnvName()


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_gtin(value: str) -> str | None:
    """The catalog's one GTIN rule, the core's (``normalise_gtin``), with a message that
    names the digit to fix."""
    if len(value) not in (8, 12, 13, 14) or not value.isascii() or not value.isdigit():
        return f"must be a GTIN-8, -12, -13 or -14 as a quoted string of digits, got {show(value)}"
    expected = gs1_check_digit(value[:-1])
    if int(value[-1]) != expected:
        return f"bad GS1 check digit in {value!r}: the last digit should be {expected}"
    return None


GTIN: Final = Text(check=_check_gtin, what="a GTIN (8, 12, 13 or 14 digits) as a quoted string")


def _normalize_store_url(value: str) -> str:
    for plain in ("postgresql://", "postgres://"):
        if value.startswith(plain):
            return "postgresql+psycopg://" + value[len(plain) :]
    return value


def _with_default(data: Mapping[str, Any], key: str, value: object) -> Mapping[str, Any]:
    """``data`` with ``key`` set to ``value`` when it is a mapping without that key: a default
    that depends on another key (a ``mode="before"`` validator's job)."""
    return data if key in data else {**data, key: value}


def _attach_secrets(obj: Any, where: str, info: ValidationInfo) -> list[tuple[str, str]]:
    """Set the :class:`Secret` fields of ``obj`` from their ``_file``/``_env`` siblings; the
    problems found.

    Runs once the section validated; a frozen dataclass is still being built here, so
    ``object.__setattr__`` is how a derived field is filled in (as ``__post_init__`` would).
    """
    environ = (info.context or {}).get("environ")
    problems: list[tuple[str, str]] = []
    for name in getattr(obj, HIDDEN_KEYS_ATTR, ()):
        file, env = getattr(obj, f"{name}_file"), getattr(obj, f"{name}_env")
        if file is not None and env is not None:
            problems.append((f"{name}_env", f"give only one of {name}_file and {name}_env"))
        elif isinstance(getattr(obj, name), Secret):
            continue  # rebuilt by dataclasses.replace: keep the environment it was loaded with
        elif file is not None or env is not None:
            object.__setattr__(obj, name, Secret(f"{where}.{name}", file, env, environ))
    return problems


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class _WithSecrets(Section):
    """A section with secrets: ``__secret_keys__`` names them, ``__section_path__`` is its path."""

    __section_path__: typing.ClassVar = ""

    def _finish(self, info: ValidationInfo) -> Iterable[tuple[str, str]]:
        return [*_attach_secrets(self, self.__section_path__, info), *self._config_problems()]


_SecretField = SkipJsonSchema[Secret | None]


# --------------------------------------------------------------------------------------------
# The config tree


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class SiteConfig(Section):
    id: Annotated[str, ID]
    """The site's id; it is part of every MQTT topic and movement."""
    sgln: Annotated[str, SGLN] | None = None
    """The site's SGLN (EPCIS ``bizLocation`` where nothing more precise is known)."""


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class StoreConfig(_WithSecrets):
    __section_path__: typing.ClassVar = "store"
    __secret_keys__: typing.ClassVar = ("password",)

    url: Annotated[str, Text(normalize=_normalize_store_url, check=_check_store_url)] = (
        "sqlite:///./var/edge.db"
    )
    """SQLAlchemy URL; ``postgresql://`` is normalised to ``postgresql+psycopg://``."""
    password_file: Annotated[Path, EXISTING] | None = None
    password_env: Annotated[str, ENV] | None = None
    password: _SecretField = None
    """The database password (the URL never holds one): add it with ``URL.set(password=)``."""
    journal_dir: Annotated[Path, FilePath()] | None = None
    """Where the read journal lives (tag reports of the last minutes, replayed after a crash);
    default: ``journal/`` next to a SQLite store file; a PostgreSQL store has none unless set."""
    journal_segment_s: Annotated[float, POSITIVE] = 60.0
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


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class CatalogItemKeys(Section):
    """``catalog.items[]``: the keys of the core's :class:`CatalogItem`."""

    sku: Annotated[str, SKU]
    name: Annotated[str, Text()]
    gtin: Annotated[str, GTIN] | None = None
    """GTIN-8/12/13/14, kept as the 14-digit GTIN (left-padded with zeros). None: the item is
    known by its SKU only (a weight-shelf item): no tag is ever one of its cases."""
    unit_weight_g: Annotated[float, POSITIVE] | None = None
    """Weight of one pack; required for SKUs on weight shelves."""
    weight_tolerance_g: Annotated[float, Num(float, lo=0)] | None = None
    """How far a weight change may stray from a whole number of packs (default: engine's)."""
    pack_size: Annotated[int, Num(int, lo=1, hi=MAX_PACK_SIZE)] = 1
    """Eaches per tag/pack: a case tag of ``pack_size: 12`` moves 12 eaches."""
    reorder_point: Annotated[int, Num(int, lo=0, hi=MAX_COUNT)] | None = None
    """On-hand at or below this raises a low-stock alert; None: no alert."""


def _catalog_item(keys: CatalogItemKeys) -> CatalogItem:
    return CatalogItem(
        sku=Sku(keys.sku),
        gtin=keys.gtin,
        name=keys.name,
        pack_size=keys.pack_size,
        unit_weight_g=keys.unit_weight_g,
        weight_tolerance_g=keys.weight_tolerance_g,
        reorder_point=keys.reorder_point,
    )


_Item = Annotated[CatalogItem, Via(CatalogItemKeys, CatalogItem, _catalog_item)]


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class CatalogConfig(Section):
    items: Annotated[tuple[_Item, ...], Items("a mapping")] = ()


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class LocationConfig(Section):
    id: Annotated[str, ID]
    kind: Annotated[Literal["storage", "dock", "virtual"], OneOf()] = "storage"
    sgln: Annotated[str, SGLN] | None = None
    """The location's SGLN (EPCIS ``bizLocation``); None: a URI under ``sinks.epcis.base_uri``."""


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class ReconnectConfig(Section):
    """Exponential backoff between reconnection attempts, from ``initial_s`` up to ``max_s``."""

    initial_s: Annotated[float, POSITIVE] = 0.5
    max_s: Annotated[float, POSITIVE] = 30.0

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        if self.max_s < self.initial_s:
            yield "max_s", f"must be >= initial_s ({_num(self.initial_s)}), got {_num(self.max_s)}"


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class TlsClientConfig(Section):
    """TLS towards a server; without ``ca_file`` the system trust store is used."""

    ca_file: Annotated[Path, EXISTING] | None = None
    cert_file: Annotated[Path, EXISTING] | None = None
    """Client certificate (mutual TLS); needs ``key_file``."""
    key_file: Annotated[Path, EXISTING] | None = None
    insecure: Annotated[bool, Flag()] = False
    """Skip server certificate and host name verification (test benches only)."""

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            yield missing, "cert_file and key_file go together"


def _tls_port(data: Mapping[str, Any], plain: int, secure: int) -> Mapping[str, Any]:
    """The default port of a device link: its protocol's TLS port when ``tls`` is given."""
    return _with_default(data, "port", plain if data.get("tls") is None else secure)


_Antennas = Annotated[
    tuple[Annotated[int, Num(int, lo=1, hi=65535)], ...],
    Items("an integer in 1..65535", nonempty=True, unique=True),
]


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class ReaderConfig(Section):
    id: Annotated[str, ID]
    host: Annotated[str, Text(check=_check_ipv4_host)]
    antennas: _Antennas
    """Every antenna the ROSpec enables (sllurp enables only antenna 1 unless told)."""
    tls: TlsClientConfig | None = None
    """LLRP over TLS; None: plain TCP."""
    port: Annotated[int, PORT] = 5084
    """Default 5084 (IANA llrp), or 5085 (encrypted-llrp) with ``tls``."""
    keepalive_s: Annotated[float, POSITIVE] = 10.0
    """The reader sends a KEEPALIVE this often; silence for ~3 periods means the link is dead."""
    connect_timeout_s: Annotated[float, POSITIVE] = 10.0
    report_every_ms: Annotated[int, Num(int, lo=1, hi=60_000)] = 200
    """Tag reports are requested this often (ROReportSpec period)."""
    tx_power_dbm: Annotated[float, Num(float, lo=0, hi=40)] | None = None
    """Transmit power; None keeps the reader's own setting."""
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)

    @classmethod
    def _prepare(cls, data: Mapping[str, Any], info: ValidationInfo) -> Mapping[str, Any]:
        return _tls_port(data, 5084, 5085)


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


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class PortalKinds(Section):
    """Movement kind of a crossing inward (outside -> inside) and outward (inside -> outside)."""

    in_: Annotated[MovementKind, OneOf(choices=_PORTAL_KINDS)] = Field(
        default=MovementKind.RECEIPT, alias="in"
    )
    out: Annotated[MovementKind, OneOf(choices=_PORTAL_KINDS)] = MovementKind.RETURN


_Ports = _Antennas
"""GPO or GPI port numbers: a reader numbers its ports from 1, as its antennas."""


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class LightRuleConfig(Section):
    """One stack-light rule: an outcome of a pass lights GPO ports (docs/portal.md)."""

    on: Annotated[Literal["deciding", "matched", "mismatch", "decided"], OneOf()]
    gpo: _Ports
    for_s: Annotated[float, POSITIVE] | None = 3.0
    """How long the ports stay on; null: until the door's next outcome."""
    blink: Annotated[bool, Flag()] = False


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class LightsConfig(Section):
    """Stack lights and horns on the portal reader's GPO outputs."""

    rules: Annotated[tuple[LightRuleConfig, ...], Items("a mapping", nonempty=True)]
    low_confidence: Annotated[float, Num(float, lo=0, hi=1)] = 0.8
    """A settled pass below this confidence shows as ``deciding``."""


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class PhotoEyesConfig(Section):
    """A light barrier on each side of the door, on the portal reader's GPI inputs."""

    outside_gpi: Annotated[int, Num(int, lo=1, hi=65535)]
    inside_gpi: Annotated[int, Num(int, lo=1, hi=65535)]
    broken_high: Annotated[bool, Flag()] = True
    """The input is high while the beam is broken (false: low while broken)."""

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        if self.inside_gpi == self.outside_gpi:
            yield "inside_gpi", f"must differ from outside_gpi ({self.outside_gpi})"


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class PortalConfig(Section):
    """A door: a reader's antennas on either side of it, optionally its stack lights and photo
    eyes. A new key is a field here with a check in ``Annotated`` and, if it relates fields, a
    line in :meth:`_config_problems`."""

    id: Annotated[str, ID]
    reader: Annotated[str, ID]
    outside_antennas: _Antennas
    inside_antennas: _Antennas
    outside_location: Annotated[str, ID]
    inside_location: Annotated[str, ID]
    role: Annotated[Literal["inbound", "outbound", "internal"], OneOf()] = "inbound"
    kinds: PortalKinds = Field(default_factory=PortalKinds)
    """Defaults by role: inbound in=receipt/out=return; outbound in=return/out=shipment;
    internal transfer both ways."""
    sgln: Annotated[str, SGLN] | None = None
    """The door's SGLN (EPCIS ``readPoint``); None: a URI under ``sinks.epcis.base_uri``."""
    lights: LightsConfig | None = None
    photo_eyes: PhotoEyesConfig | None = None

    @classmethod
    def _prepare(cls, data: Mapping[str, Any], info: ValidationInfo) -> Mapping[str, Any]:
        role = data.get("role", "inbound")
        kind_in, kind_out = (
            _ROLE_KINDS.get(role, _ROLE_KINDS["inbound"])
            if isinstance(role, str)
            else _ROLE_KINDS["inbound"]
        )
        kinds = data.get("kinds", {})
        if not isinstance(kinds, Mapping):
            return data  # reported as not a mapping
        filled = {"in": kind_in.value, "out": kind_out.value, **kinds}
        return {**data, "kinds": filled}

    @property
    def antennas(self) -> tuple[int, ...]:
        return self.outside_antennas + self.inside_antennas

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        for i, antenna in enumerate(self.inside_antennas):
            if antenna in self.outside_antennas:
                yield f"inside_antennas[{i}]", f"antenna {antenna} is also an outside antenna"
        if self.inside_location == self.outside_location:
            yield (
                "inside_location",
                f"must differ from outside_location ({self.outside_location!r})",
            )


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class ModbusConfig(Section):
    host: Annotated[str, Text(check=_check_host)]
    tls: TlsClientConfig | None = None
    """Modbus/TCP Security (TLS); None: plain Modbus TCP."""
    port: Annotated[int, PORT] = 502
    """Default 502 (IANA mbap), or 802 (mbap-s) with ``tls``."""
    unit: Annotated[int, Num(int, lo=0, hi=247)] = 1
    timeout_s: Annotated[float, POSITIVE] = 1.0

    @classmethod
    def _prepare(cls, data: Mapping[str, Any], info: ValidationInfo) -> Mapping[str, Any]:
        return _tls_port(data, 502, 802)


RegisterTable = Literal["holding", "input"]
RegisterType = Literal["uint16", "int16", "uint32", "int32", "float32"]
_REGISTER: Final = Num(int, lo=0, hi=65535)
_BIT: Final = Num(int, lo=0, hi=15)


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class WeightRegister(Section):
    """Where the weight is: ``grams = raw * scale`` (``* 1000`` more when ``unit: kg``)."""

    address: Annotated[int, _REGISTER]
    type: Annotated[RegisterType, OneOf()]
    table: Annotated[RegisterTable, OneOf()] = "holding"
    word_order: Annotated[Literal["big", "little"], OneOf()] = "big"
    """Order of the two registers of a 32-bit value (``big``: high word first)."""
    scale: Annotated[float, Num(float)] = 1.0
    unit: Annotated[Literal["g", "kg"], OneOf()] = "g"

    @property
    def count(self) -> int:
        """Registers the value spans."""
        return 1 if self.type in ("uint16", "int16") else 2

    @property
    def grams_per_count(self) -> float:
        return self.scale * (1000.0 if self.unit == "kg" else 1.0)

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        if self.address + self.count - 1 > 65535:
            yield "address", f"a {self.type} at {self.address} runs past register 65535"
        if self.scale == 0:
            yield "scale", "must not be 0"


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class StatusRegister(Section):
    """A status word whose bits flag a stable / overloaded / failed transmitter."""

    address: Annotated[int, _REGISTER]
    stable_bit: Annotated[int, _BIT]
    table: Annotated[RegisterTable, OneOf()] = "holding"
    overload_bit: Annotated[int, _BIT] | None = None
    error_bit: Annotated[int, _BIT] | None = None

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        seen = {self.stable_bit: "stable_bit"}
        for name in ("overload_bit", "error_bit"):
            bit = getattr(self, name)
            if bit is None:
                continue
            if bit in seen:
                yield name, f"bit {bit} is also {seen[bit]}"
            seen[bit] = name


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class ShelfConfig(Section):
    id: Annotated[str, ID]
    location: Annotated[str, ID]
    sku: Annotated[Sku, Text(pattern=_SKU_RE, what=f"a SKU of at most {MAX_ID_CHARS} characters")]
    modbus: ModbusConfig
    weight: WeightRegister
    pick_to: Annotated[str, ID] = "picked"
    """Where a pick moves stock to (implicit virtual location ``picked``)."""
    restock_from: Annotated[str, ID] = "backroom"
    """Where a restock moves stock from (implicit virtual location ``backroom``)."""
    status: StatusRegister | None = None
    division_g: Annotated[float, POSITIVE] | None = None
    """The transmitter's display step (optional: the engine learns it)."""
    capacity_g: Annotated[float, POSITIVE] | None = None
    """The largest plausible net weight (optional: 2,000 kg); readings beyond it are faults."""
    sgln: Annotated[str, SGLN] | None = None
    """The shelf's SGLN (EPCIS ``readPoint``); None: a URI under ``sinks.epcis.base_uri``."""

    def _config_problems(self) -> Iterable[tuple[str, str]]:
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


def _param_check(tp: Any) -> Any:
    """The domain's parameter classes carry no ranges: numbers are at least >= 0."""
    if tp is bool:
        return Flag()
    if tp is int or tp is float:
        return Num(tp, lo=0)
    return Text()


_PORTAL_PARAMS: Final = params_model(
    PortalParams,
    {
        "idle_close_s": POSITIVE,
        "min_reads": Num(int, lo=1),
        "min_confidence": Num(float, lo=0, hi=1),
        "stray_dwell_s": POSITIVE,
        "horizon_s": POSITIVE,
        "max_tags": Num(int, lo=1),
    },
    _param_check,
)
_SHELF_PARAMS: Final = params_model(
    ShelfParams,
    {
        "poll_interval_s": POSITIVE,
        "stable_band_g": POSITIVE,
        "stable_hold_s": POSITIVE,
        "confirm_s": POSITIVE,
        "outage_gap_s": POSITIVE,
        # A location id, like those of the locations section.
        "adjust_location": ID,
    },
    _param_check,
)
_ANTENNA_PARAMS: Final = params_model(
    AntennaParams,
    {
        "silence_s": POSITIVE,
        "min_peer_tags": Num(int, lo=1),
        "forget_s": POSITIVE,
        "rate_window_s": POSITIVE,
    },
    _param_check,
)


def _params(params: type[Any]) -> Any:
    def convert(model: Any) -> Any:
        return params(**{f.name: getattr(model, f.name) for f in dataclasses.fields(params)})

    return convert


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class DebounceConfig(Section):
    """Engine parameters; keys and defaults are the fields of the domain's params classes."""

    portal: Annotated[PortalParams, Via(_PORTAL_PARAMS, PortalParams, _params(PortalParams))] = (
        Field(default_factory=PortalParams)
    )
    shelf: Annotated[ShelfParams, Via(_SHELF_PARAMS, ShelfParams, _params(ShelfParams))] = Field(
        default_factory=ShelfParams
    )
    antenna: Annotated[
        AntennaParams, Via(_ANTENNA_PARAMS, AntennaParams, _params(AntennaParams))
    ] = Field(default_factory=AntennaParams)


DEFAULT_LAG_ALERT_S: Final = 300.0
"""Default ``sinks.*.lag_alert_s``: a sink five minutes behind is worth an alert."""
_BATCH: Final = Num(int, lo=1, hi=100_000)


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class MqttSinkConfig(_WithSecrets):
    __section_path__: typing.ClassVar = "sinks.mqtt"
    __secret_keys__: typing.ClassVar = ("password",)

    url: Annotated[str, Text(check=_check_mqtt_url)]
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``."""
    topic_prefix: Annotated[str, Text(check=_check_topic_prefix)] = "dockwatch/site"
    """Default ``dockwatch/{site.id}``."""
    qos: Annotated[int, Num(int, lo=0, hi=2)] = 1
    client_id: Annotated[str, Text()] = "dockwatch-site"
    """Default ``dockwatch-{site.id}``."""
    protocol: Annotated[Literal["5", "3.1.1"], OneOf()] = "5"
    keepalive_s: Annotated[int, Num(int, lo=1, hi=65535)] = 30
    inflight_max: Annotated[int, Num(int, lo=1, hi=65535)] = 100
    """Unacknowledged QoS>0 publishes in flight at once."""
    username: Annotated[str, Text()] | None = None
    password_file: Annotated[Path, EXISTING] | None = None
    password_env: Annotated[str, ENV] | None = None
    tls: TlsClientConfig | None = None
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    lag_alert_s: Annotated[float, POSITIVE] | None = DEFAULT_LAG_ALERT_S
    """A ``sync_behind`` alert is raised when the oldest movement this sink has not acknowledged
    is older than this; ``null``: never."""
    password: _SecretField = None

    @property
    def host(self) -> str:
        return _parse_mqtt_url(self.url).hostname or ""

    @property
    def use_tls(self) -> bool:
        return self.url.startswith("mqtts:")

    @property
    def port(self) -> int:
        return _parse_mqtt_url(self.url).port or (8883 if self.use_tls else 1883)

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        if self.tls is not None and not self.use_tls:
            yield "tls", "given but url is mqtt://; use mqtts:// to enable TLS"
        if self.password is not None and self.username is None:
            yield "username", "is required when a password is given (MQTT sends none without it)"


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class CentralSinkConfig(_WithSecrets):
    __section_path__: typing.ClassVar = "sinks.central"
    __secret_keys__: typing.ClassVar = ("token",)

    target: Annotated[str, Text(check=_check_host_port)]
    """``host:port`` of the central gRPC ingest service."""
    tls: TlsClientConfig | None = None
    token_file: Annotated[Path, EXISTING] | None = None
    token_env: Annotated[str, ENV] | None = None
    batch_max: Annotated[int, _BATCH] = 500
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    lag_alert_s: Annotated[float, POSITIVE] | None = DEFAULT_LAG_ALERT_S
    """As ``sinks.mqtt.lag_alert_s``, for central."""
    token: _SecretField = None

    @property
    def host(self) -> str:
        return split_host_port(self.target)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.target)[1]


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class EpcisSinkConfig(_WithSecrets):
    __section_path__: typing.ClassVar = "sinks.epcis"
    __secret_keys__: typing.ClassVar = ("token",)

    capture_url: Annotated[str, Text(check=_check_http_url)]
    """The EPCIS 2.0 capture interface (``http(s)://host[:port]/capture``)."""
    tls: TlsClientConfig | None = None
    """TLS towards an ``https://`` capture URL; without it the system trust store is used."""
    token_file: Annotated[Path, EXISTING] | None = None
    token_env: Annotated[str, ENV] | None = None
    batch_max: Annotated[int, _BATCH] = 500
    """Movements per EPCISDocument (each is one or two events)."""
    request_timeout_s: Annotated[float, POSITIVE] = 30.0
    base_uri: Annotated[str, Text(check=_check_base_uri)] = "https://example.invalid/dockwatch/site"
    """Where the fallback URIs of places without an SGLN live: ``{base_uri}/{site}/readpoint/
    {portal or shelf}``, ``.../location/{location}``, and business transactions
    ``.../desadv/{receipt}``, ``.../po/{order}``. Set it to a domain you control."""
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    lag_alert_s: Annotated[float, POSITIVE] | None = DEFAULT_LAG_ALERT_S
    """As ``sinks.mqtt.lag_alert_s``, for the EPCIS repository."""
    token: _SecretField = None

    @property
    def host(self) -> str:
        return urlsplit(self.capture_url).hostname or ""

    @property
    def use_tls(self) -> bool:
        return self.capture_url.startswith("https:")

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        if self.tls is not None and not self.use_tls:
            yield "tls", "given but capture_url is http://; use https:// to enable TLS"


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class SinksConfig(Section):
    mqtt: MqttSinkConfig | None = None
    central: CentralSinkConfig | None = None
    epcis: EpcisSinkConfig | None = None
    """EPCIS 2.0 repository (docs/epcis.md)."""


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class ApiTlsConfig(Section):
    cert_file: Annotated[Path, EXISTING]
    key_file: Annotated[Path, EXISTING]
    client_ca_file: Annotated[Path, EXISTING] | None = None
    """When set, clients must present a certificate signed by this CA (mutual TLS)."""


_LISTEN: Final = Text(check=_check_host_port)


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class ApiConfig(_WithSecrets):
    __section_path__: typing.ClassVar = "api"
    __secret_keys__: typing.ClassVar = ("token", "operator_token")

    grpc_listen: Annotated[str, _LISTEN] = "127.0.0.1:50061"
    metrics_listen: Annotated[str, _LISTEN] | None = "127.0.0.1:9108"
    """Prometheus ``/metrics`` endpoint; ``null`` disables it."""
    tls: ApiTlsConfig | None = None
    token_file: Annotated[Path, EXISTING] | None = None
    token_env: Annotated[str, ENV] | None = None
    token: _SecretField = None
    """Bearer token the local gRPC API requires; None: no token required."""
    operator_token_file: Annotated[Path, EXISTING] | None = None
    operator_token_env: Annotated[str, ENV] | None = None
    operator_token: _SecretField = None
    """The token the operator console's actions require (upload expected receipts, acknowledge
    an alert, re-count a shelf); None: the console is read-only."""


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class ReceivingConfig(Section):
    expected_file: Annotated[Path, EXISTING] | None = None
    """Expected receipts (advance ship notices) to verify inbound crossings against."""
    idle_close_s: Annotated[float, POSITIVE] = 300.0
    """An expected receipt that has begun completes once nothing has been received against it
    for this long; its discrepancy (or all-matched) alert is raised then."""


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class LoggingConfig(Section):
    level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], OneOf(normalize=str.upper)] = (
        "INFO"
    )
    format: Annotated[Literal["text", "json"], OneOf()] = "text"


def _site_id(data: Mapping[str, Any]) -> str:
    site = data.get("site")
    site_id = site.get("id") if isinstance(site, Mapping) else None
    return site_id if isinstance(site_id, str) else "site"


@dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class GatewayConfig(Section):
    """The whole, validated configuration. Build it with :func:`load_config`."""

    site: SiteConfig
    store: StoreConfig = Field(default_factory=StoreConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    locations: Annotated[tuple[LocationConfig, ...], Items("a mapping")] = ()
    readers: Annotated[tuple[ReaderConfig, ...], Items("a mapping")] = ()
    portals: Annotated[tuple[PortalConfig, ...], Items("a mapping")] = ()
    shelves: Annotated[tuple[ShelfConfig, ...], Items("a mapping")] = ()
    debounce: DebounceConfig = Field(default_factory=DebounceConfig)
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    receiving: ReceivingConfig = Field(default_factory=ReceivingConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    source: SkipJsonSchema[str] = dataclasses.field(default="<config>", compare=False)
    """Where the config came from (file path), for log lines; not a config key."""

    @classmethod
    def _prepare(cls, data: Mapping[str, Any], info: ValidationInfo) -> Mapping[str, Any]:
        out = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
        # Top-level ``x-`` keys hold YAML anchors for reuse (the compose-file convention).
        out["source"] = (info.context or {}).get("source", "<config>")
        sinks = out.get("sinks")
        mqtt = sinks.get("mqtt") if isinstance(sinks, Mapping) else None
        if isinstance(sinks, Mapping) and isinstance(mqtt, Mapping):
            site = _site_id(out)
            mqtt = _with_default(mqtt, "topic_prefix", f"dockwatch/{site}")
            mqtt = _with_default(mqtt, "client_id", f"dockwatch-{site}")
            out["sinks"] = {**sinks, "mqtt": mqtt}
        return out

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


def _implicit_locations(cfg: GatewayConfig) -> tuple[LocationConfig, ...]:
    listed = {loc.id for loc in cfg.locations}
    used = {s.pick_to for s in cfg.shelves} | {s.restock_from for s in cfg.shelves}
    implicit = list(IMPLICIT_LOCATIONS)
    if cfg.shelves:
        # Shelf reconciliation moves stock from/to this virtual location.
        used.add(cfg.debounce.shelf.adjust_location)
        implicit.append(cfg.debounce.shelf.adjust_location)
    return tuple(
        LocationConfig(id=name, kind="virtual")
        for name in dict.fromkeys(implicit)
        if name in used and name not in listed
    )


# --------------------------------------------------------------------------------------------
# Environment overrides


@dataclasses.dataclass(slots=True)
class _Ctx:
    environ: Mapping[str, str]
    problems: list[tuple[KeyPath, str]] = dataclasses.field(default_factory=list)
    """Problems found outside pydantic (overrides, cross-references), with their key paths."""
    set_by: dict[KeyPath, str] = dataclasses.field(default_factory=dict)
    """Key path -> the environment variable that set it."""
    created_by: dict[KeyPath, str] = dataclasses.field(default_factory=dict)
    """Section path -> the environment variable whose override created it."""

    def report(self, path: KeyPath, message: str) -> None:
        var = self.set_by.get(path)
        if var is None:
            for i in range(len(path) - 1, 0, -1):
                var = self.created_by.get(path[:i])
                if var is not None:
                    break
        suffix = f" (set by {var})" if var is not None else ""
        self.problems.append((path, f"{message}{suffix}"))


def _override_target(segments: list[str]) -> tuple[tuple[str, ...], bool] | str:
    """The key path ``segments`` name in the schema and whether it is a string-valued key, or
    why they name no scalar key."""
    cls: Any = GatewayConfig
    path: list[str] = []
    for i, seg in enumerate(segments):
        keyed = keys_of(cls)
        where = ".".join(path) or "the top level"
        if seg not in keyed:
            return f"no key '{seg}' in {where} (allowed: {', '.join(keyed)})"
        tp, _, _ = unwrap(_hints(cls)[keyed[seg].name])
        path.append(seg)
        last = i == len(segments) - 1
        if typing.get_origin(tp) is tuple:
            return f"{'.'.join(path)} is a list; only scalar keys of sections can be overridden"
        if dataclasses.is_dataclass(tp):
            if last:
                return f"{'.'.join(path)} is a section, not a scalar key"
            cls = tp
        elif not last:
            return f"{'.'.join(path)} is a scalar key, not a section"
    literal_str = typing.get_origin(tp) is Literal and all(
        isinstance(c, str) for c in typing.get_args(tp)
    )
    return tuple(path), tp in (str, Path) or literal_str


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


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
            ctx.problems.append(((), f"{name}: {found}"))
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
                ctx.problems.append(((), f"{name}: not a YAML scalar: {exc.problem}"))
                continue
            if isinstance(value, Mapping | list):
                ctx.problems.append(((), f"{name}: must be a single value, got {show(value)}"))
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
                ((), f"{name}: {fmt_path(target)} is already set by {ctx.set_by[target]}")
            )
            continue
        node = out
        for i, seg in enumerate(target[:-1]):
            child = node.get(seg)
            if child is None:
                child = {}
                ctx.created_by.setdefault(target[: i + 1], name)
            elif not isinstance(child, Mapping):
                # The section itself is broken; validation reports it.
                break
            node[seg] = node = dict(child)
        else:
            node[target[-1]] = value
            ctx.set_by[target] = name
    return out


# --------------------------------------------------------------------------------------------
# Cross-references


class _Bad:
    """A value that failed validation: cross-references skip it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<invalid>"


_BAD: Final = _Bad()


class _Partial:
    """A section of a config that failed validation, read for cross-references: a key holds
    the raw value (or the default) unless a problem was found at or below it, then
    :data:`_BAD`; a nested section is validated on its own when nothing below it failed."""

    def __init__(
        self,
        raw: Mapping[str, Any],
        cls: type[Any],
        path: KeyPath,
        failed: set[KeyPath],
        environ: Mapping[str, str],
    ) -> None:
        self._raw, self._cls, self._path = raw, cls, path
        self._failed, self._environ = failed, environ

    def __getattr__(self, name: str) -> Any:
        path = (*self._path, name)
        if any(f[: len(path)] == path for f in self._failed):
            return _BAD
        field = keys_of(self._cls).get(name)
        if field is None:
            raise AttributeError(name)
        tp, _, _ = unwrap(_hints(self._cls)[field.name])
        if name not in self._raw:
            default = field.default
            if isinstance(default, FieldInfo):  # Field(default_factory=...) or an alias
                default = default.get_default(call_default_factory=True)
            return _BAD if default in (dataclasses.MISSING, PydanticUndefined) else default
        value = self._raw[name]
        if value is not None and isinstance(tp, type) and dataclasses.is_dataclass(tp):
            try:
                return _adapter(tp).validate_python(value, context={"environ": self._environ})
            except ValidationError:
                return _BAD
        return tuple(value) if isinstance(value, list) else value


def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def _ok(value: object) -> bool:
    return value is not _BAD


def _entries(
    *,
    cfg: GatewayConfig | None,
    raw: Mapping[str, Any],
    section: str,
    cls: type[Any],
    failed: set[KeyPath],
    environ: Mapping[str, str],
) -> list[tuple[int, Any]]:
    """The entries of a list section: the validated ones, or each raw mapping read partially."""
    if cfg is not None:
        return list(enumerate(getattr(cfg, section)))
    if (section,) in failed:
        return []
    values = raw.get(section, ())
    if not isinstance(values, list | tuple):
        return []
    return [
        (i, _Partial(v, cls, (section, i), failed, environ))
        for i, v in enumerate(values)
        if isinstance(v, Mapping) and (section, i) not in failed
    ]


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
            where = fmt_path(first[value][:-1])
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


def _seq(value: object) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else ()


def _cross_check(
    cfg: GatewayConfig | None, raw: Mapping[str, Any], failed: set[KeyPath], ctx: _Ctx
) -> None:
    """Ids unique, references known; on the valid tree, or on what is valid of a failed one."""

    def entries(section: str, cls: type[Any]) -> list[tuple[int, Any]]:
        return _entries(
            cfg=cfg, raw=raw, section=section, cls=cls, failed=failed, environ=ctx.environ
        )

    if cfg is not None:
        item_entries: list[tuple[int, Any]] = list(enumerate(cfg.catalog.items))
    else:
        catalog = raw.get("catalog")
        item_entries = _entries(
            cfg=None,
            raw=catalog if isinstance(catalog, Mapping) else {},
            section="items",
            cls=CatalogItemKeys,
            failed={f[1:] for f in failed if f[:1] == ("catalog",)},
            environ=ctx.environ,
        )
    items = [(i, x) for i, x in item_entries if _ok(x)]
    skus = _unique_ids(ctx, ((("catalog", "items", i, "sku"), x.sku) for i, x in items))
    _unique_ids(ctx, ((("catalog", "items", i, "gtin"), x.gtin) for i, x in items), "GTIN")
    item_of = {x.sku: x for _, x in reversed(items) if isinstance(x.sku, str)}

    locations = entries("locations", LocationConfig)
    known_locations = _unique_ids(ctx, ((("locations", i, "id"), x.id) for i, x in locations))
    shelf_targets = {**dict.fromkeys(IMPLICIT_LOCATIONS, ()), **known_locations}

    readers = entries("readers", ReaderConfig)
    reader_ids = _unique_ids(ctx, ((("readers", i, "id"), x.id) for i, x in readers))
    reader_of = {x.id: x for _, x in reversed(readers) if isinstance(x.id, str)}

    portals = entries("portals", PortalConfig)
    _unique_ids(ctx, ((("portals", i, "id"), x.id) for i, x in portals))
    antenna_owner: dict[tuple[str, int], int] = {}
    io_owner: dict[tuple[str, str, object], int] = {}
    for i, portal in portals:
        path: KeyPath = ("portals", i)
        if _check_ref(ctx, (*path, "reader"), portal.reader, reader_ids, "reader"):
            reader = reader_of[portal.reader]
            for side in ("outside_antennas", "inside_antennas"):
                for j, antenna in enumerate(_seq(getattr(portal, side))):
                    if _ok(reader.antennas) and antenna not in _seq(reader.antennas):
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

    shelves = entries("shelves", ShelfConfig)
    shelf_ids = _unique_ids(ctx, ((("shelves", i, "id"), x.id) for i, x in shelves))
    # Readers and shelves share the {prefix}/devices/{device_id}/status topic space.
    for shelf_id, path in shelf_ids.items():
        if shelf_id in reader_ids:
            ctx.report(
                path,
                f"'{shelf_id}' is also the id of {fmt_path(reader_ids[shelf_id][:-1])} "
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
                    f"item '{shelf.sku}' ({fmt_path(skus[shelf.sku][:-1])}) has no unit_weight_g, "
                    "which a weight shelf needs to count packs",
                )
        modbus, weight = shelf.modbus, shelf.weight
        if isinstance(modbus, ModbusConfig) and isinstance(weight, WeightRegister):
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
        if isinstance(modbus, ModbusConfig):
            first, tls = connections.setdefault((modbus.host, modbus.port), (i, modbus.tls))
            if tls != modbus.tls:
                ctx.report(
                    (*path, "modbus", "tls"),
                    f"differs from shelves[{first}].modbus.tls, which reaches the same Modbus "
                    f"connection {modbus.host}:{modbus.port}: its shelves share one connection, "
                    "so give them the same tls (or none)",
                )


# --------------------------------------------------------------------------------------------
# Entry points


@functools.cache
def _config_adapter() -> TypeAdapter[GatewayConfig]:
    return TypeAdapter(GatewayConfig)


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
        raise ConfigError(f"(top level): must be a mapping of sections, got {show(data)}")
    data = _apply_overrides(data, ctx)
    cfg: GatewayConfig | None = None
    found: list[tuple[KeyPath, str]] = []
    try:
        cfg = _config_adapter().validate_python(
            data, context={"environ": ctx.environ, "source": source}
        )
    except ValidationError as exc:
        found = problems_of(exc, set_by=ctx.set_by, created_by=ctx.created_by)
    _cross_check(cfg, data, {path for path, _ in found}, ctx)
    if found or ctx.problems:
        override_lines = [m for p, m in ctx.problems if not p]
        raise ConfigError(
            override_lines + lines(found) + lines((p, m) for p, m in ctx.problems if p)
        )
    assert cfg is not None
    implicit = _implicit_locations(cfg)
    return dataclasses.replace(cfg, locations=cfg.locations + implicit) if implicit else cfg


def _describe_fields(
    cls: type[Any], node: dict[str, Any], root: dict[str, Any], done: set[str] | None = None
) -> None:
    """Give the properties of ``cls``'s schema ``node`` the docstrings under its fields (what an
    editor shows on hover), and so on down the tree (each definition once: ``done``)."""
    done = set() if done is None else done
    docs = field_docs(cls)
    properties = node.get("properties", {})
    hints = _hints(cls)
    for key, f in keys_of(cls).items():
        prop = properties.get(key)
        if prop is None:
            continue
        if f.name in docs:
            prop.setdefault("description", docs[f.name])
        tp, _, _ = unwrap(hints[f.name])
        if typing.get_origin(tp) is tuple:
            tp, _, _ = unwrap(typing.get_args(tp)[0])
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            target = root.get("$defs", {}).get(tp.__name__)
            if target is not None and tp.__name__ not in done:
                done.add(tp.__name__)
                _describe_fields(tp, target, root, done)


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the config file, for editors and CI checks.

    It describes keys, types, ranges, patterns and choices; what needs the whole file or the
    machine (references between sections, files that exist, variables that are set) is
    checked only by loading the config (``dockwatch check-config``).
    """
    schema = _config_adapter().json_schema(mode="validation")
    _describe_fields(GatewayConfig, schema, schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dockwatch gateway config"
    # Top-level x- keys hold YAML anchors (see parse_config).
    schema["patternProperties"] = {"^x-": {}}
    return schema


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
                message = f"{where}: duplicate key {show(key)} (first at line {first.line + 1})"
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
        for key, f in keys_of(cls).items():
            tp, _, _ = unwrap(hints[f.name])
            name = f"{prefix}{key}"
            if typing.get_origin(tp) is tuple:
                elem, _, _ = unwrap(typing.get_args(tp)[0])
                if dataclasses.is_dataclass(elem):
                    assert isinstance(elem, type)
                    walk(elem, f"{name}[].")
                    continue
            elif dataclasses.is_dataclass(tp):
                assert isinstance(tp, type)
                walk(tp, f"{name}.")
                continue
            out.append(name)

    walk(GatewayConfig, "")
    return out
