"""Validating YAML documents with pydantic v2, with the messages dockwatch users know.

Theory of operation
-------------------
Every document the gateway and its simulators read (the config, scenarios, shelf scenarios,
expected receipts) is a tree of frozen pydantic dataclasses validated in one pass. What pydantic
does not give by itself, and users rely on, is added here:

- **Every problem at once, one line each, starting with the key path** (``shelves[2].weight``,
  ``(top level)``): :func:`problems_of` turns a :class:`pydantic.ValidationError` into those
  lines, in document order.
- **Messages that say what is wanted and what was found**: each value type carries a check in its
  ``Annotated`` metadata (:class:`Num`, :class:`Text`, :class:`OneOf`...) that runs *before*
  pydantic's own validation, rejects what pydantic would coerce ('5' for 5, 1 for true) and
  raises :func:`problem`. Pydantic's own errors (missing key, unknown key, not a mapping, not a
  list) are rewritten; an unknown key lists the allowed keys and suggests the nearest one.
- **The environment variable behind a value**: ``set_by``/``created_by`` map key paths to the
  variable that set them, and the line says ``(set by NAME)``.
- A check that finds a problem *below* its value (a duplicate list element) or a section rule
  that finds several names a relative path per problem (:func:`problem`'s ``more``), and
  ``{here}`` in a message is replaced by the key path of the value itself.

The metadata classes also give the JSON Schema its ranges, patterns and choices, so
``dockwatch config schema`` describes what is checked. This module is an adapter around
pydantic: the pure domain (``gateway/domain``) never imports it.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import functools
import inspect
import itertools
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from gateway.documents import path_problem, shown

__all__ = [
    "HIDDEN_KEYS_ATTR",
    "ID",
    "ID_PATTERN",
    "ID_WHAT",
    "MAX_ID_CHARS",
    "MAX_TEXT_CHARS",
    "MODEL_CONFIG",
    "EnvName",
    "FilePath",
    "Flag",
    "Items",
    "KeyPath",
    "Num",
    "OneOf",
    "Section",
    "Text",
    "Via",
    "field_docs",
    "fmt_path",
    "keys_of",
    "lines",
    "params_model",
    "problem",
    "problems_of",
    "show",
    "unknown_key_message",
    "unwrap",
]

KeyPath = tuple[str | int, ...]

MODEL_CONFIG: Final = ConfigDict(
    # Unknown keys are found by Section (with the allowed keys and a suggestion), not pydantic,
    # so that they do not hide the other problems of their section.
    extra="ignore",
    validate_by_name=True,
    validate_by_alias=True,
    arbitrary_types_allowed=True,
    # Our checks run first and reject what pydantic would coerce; what reaches pydantic is
    # already of the right type, so its lax mode never silently converts anything.
    revalidate_instances="never",
    # The JSON Schema: unknown keys are errors there too. The docstring under a field becomes
    # its description in `field_docs`, only when a schema is made (pydantic's
    # use_attribute_docstrings would parse every class's source at import: a third of it).
    json_schema_extra={"additionalProperties": False},
)
"""The configuration of every document dataclass: unknown keys are errors."""

HIDDEN_KEYS_ATTR: Final = "__secret_keys__"
"""Class attribute: field names that hold secrets (never written in a document)."""

MAX_ID_CHARS: Final = 64
"""Ids and SKUs: the store keeps them in 64-character columns, and they appear in MQTT topics
(at most 65,535 bytes), EPCIS URIs and file names."""
MAX_TEXT_CHARS: Final = 4096
"""Any other string value (URLs, host names, item names)."""
_INT64: Final = 2**63 - 1
"""Every integer: what the store's and protobuf's 64-bit integers hold."""

# An id appears in MQTT topics and file names: keep it to a safe alphabet.
ID_PATTERN: Final = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_ID_CHARS}}}")
ID_WHAT: Final = f"an id of at most {MAX_ID_CHARS} letters, digits, '.', '_' or '-'"
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ERROR_TYPE: Final = "dockwatch"


# --------------------------------------------------------------------------------------------
# Showing values and paths


def fmt_path(path: Iterable[str | int]) -> str:
    """``("readers", 1, "port")`` -> ``readers[1].port``; the empty path is ``(top level)``."""
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out or "(top level)"


def _split_rel(rel: str) -> KeyPath:
    """``"status.address"``, ``"[2]"``, ``"inside_antennas[0]"`` -> a relative key path."""
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


def show(value: object) -> str:
    """``value`` as a message shows it: YAML spellings, long strings cut, no 4,300-digit ints."""
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


def problem(message: str, *more: tuple[str, str]) -> PydanticCustomError:
    """The error a check raises: ``message`` about the value itself, and ``more`` problems as
    ``(relative key path, message)``. ``{here}`` in a message becomes the value's key path."""
    problems = ((("", message),) if message else ()) + more
    return PydanticCustomError(
        _ERROR_TYPE, "{message}", {"message": message or more[0][1], "problems": problems}
    )


# --------------------------------------------------------------------------------------------
# Checks carried in Annotated metadata


class _Check:
    """``Annotated`` metadata: ``check`` runs before pydantic's validation of the type and
    returns the value to validate (or raises :func:`problem`); ``json`` extends the schema."""

    text = False
    """The value is a string: a number found instead gets a hint to quote it."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.json: dict[str, Any] = {}

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        raise NotImplementedError

    def prepare(self, source: Any) -> None:
        """Learn what the annotated type allows (choices of a Literal or an enum)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        self.prepare(source)
        return core_schema.with_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        if self.json:
            out = handler.resolve_ref_schema(out)
            out.update(self.json)
        return out

    def bad(self, value: object) -> PydanticCustomError:
        hint = ""
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if self.text and number:
            hint = " (YAML read a number: quote the value)"
        return problem(f"must be {self.what}, got {show(value)}{hint}")


def _range_text(base: str, lo: float | None, hi: float | None, gt: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{base} in {_num(lo)}..{_num(hi)}"
    if gt is not None:
        return f"{base} > {_num(gt)}"
    if lo is not None:
        return f"{base} >= {_num(lo)}"
    if hi is not None:
        return f"{base} <= {_num(hi)}"
    return base


class Num(_Check):
    """An ``int`` or ``float`` within inclusive ``lo``/``hi`` or above ``gt``; no bool, no
    string, no NaN; a float key takes an integer, an int key does not take a float."""

    def __init__(
        self,
        kind: type[int] | type[float],
        *,
        lo: float | None = None,
        hi: float | None = None,
        gt: float | None = None,
    ) -> None:
        super().__init__(_range_text("an integer" if kind is int else "a number", lo, hi, gt))
        self.kind, self.lo, self.hi, self.gt = kind, lo, hi, gt
        if lo is not None:
            self.json["minimum"] = lo
        if hi is not None:
            self.json["maximum"] = hi
        if gt is not None:
            self.json["exclusiveMinimum"] = gt

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (self.kind is int and not isinstance(value, int))
            or (isinstance(value, float) and not math.isfinite(value))
            or (self.lo is not None and value < self.lo)
            or (self.hi is not None and value > self.hi)
            or (self.gt is not None and value <= self.gt)
        ):
            raise self.bad(value)
        if isinstance(value, int) and not -_INT64 - 1 <= value <= _INT64:
            raise problem(f"must be {self.what} that fits in 64 bits, got {show(value)}")
        return float(value) if self.kind is float else value


class Text(_Check):
    """A non-blank string of at most ``max_chars`` (:data:`MAX_TEXT_CHARS`), no control characters;
    ``pattern`` must match all of it, ``check`` returns a problem or None, ``normalize``
    rewrites the raw value first."""

    text = True

    def __init__(
        self,
        *,
        pattern: re.Pattern[str] | None = None,
        what: str | None = None,
        check: Callable[[str], str | None] | None = None,
        normalize: Callable[[str], str] | None = None,
        max_chars: int = MAX_TEXT_CHARS,
    ) -> None:
        super().__init__(what or "a non-empty string")
        self.pattern, self.test, self.normalize = pattern, check, normalize
        self.max_chars = max_chars
        self.json["maxLength"] = max_chars
        if pattern is not None:
            self.json["pattern"] = f"^{pattern.pattern}$"

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise self.bad(value)
        if self.normalize is not None:
            value = self.normalize(value)
        if len(value) > self.max_chars:
            raise problem(
                f"must be at most {self.max_chars} characters, got {show(value)} "
                f"({len(value)} characters)"
            )
        if _CONTROL_RE.search(value):
            raise problem(f"must not contain control characters, got {show(value)}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise self.bad(value)
        if self.test is not None:
            found = self.test(value)
            if found is not None:
                raise problem(found)
        return value


ID: Final = Text(pattern=ID_PATTERN, what=ID_WHAT)
"""An id (site, location, reader, portal, shelf): the metadata of ``Annotated[str, ID]``."""


class FilePath(_Check):
    """A file path; with ``exists`` a readable regular file (checked at load time)."""

    text = True

    def __init__(self, *, exists: bool = False) -> None:
        super().__init__("a file path")
        self.exists = exists

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if isinstance(value, Path):
            value = os.fspath(value)
        if not isinstance(value, str) or not value.strip():
            raise self.bad(value)
        found = path_problem(value)
        if found is not None:
            raise problem(f"{found}, got {show(value)}")
        if _CONTROL_RE.search(value):
            raise problem(f"must not contain control characters, got {show(value)}")
        path = Path(value)
        if self.exists:
            try:
                is_file = path.is_file()
            except OSError as exc:  # ENAMETOOLONG, EACCES on a parent...: not a file we can use
                raise problem(f"cannot use '{shown(path)}': {exc.strerror or exc}") from exc
            if not is_file:
                raise problem(f"file not found: '{path}'")
            if not os.access(path, os.R_OK):
                raise problem(f"file not readable: '{path}'")
        return path


class EnvName(_Check):
    """The name of an environment variable that is set (in the validation context's
    ``environ``; not checked without a context, as when code builds a value itself)."""

    def __init__(self) -> None:
        super().__init__("an environment variable name")
        self.json["pattern"] = f"^{_ENV_NAME_RE.pattern}$"

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if not isinstance(value, str) or not _ENV_NAME_RE.fullmatch(value):
            raise self.bad(value)
        environ = (info.context or {}).get("environ")
        if environ is not None and not environ.get(value):
            raise problem(f"environment variable '{value}' is not set")
        return value


class Flag(_Check):
    """``true`` or ``false`` and nothing else (pydantic would take 1, 'yes', 'on')."""

    def __init__(self) -> None:
        super().__init__("true or false")

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if not isinstance(value, bool):
            raise self.bad(value)
        return value


class OneOf(_Check):
    """One of a ``Literal``'s values or an enum's (``choices`` narrows an enum). A number is
    taken for the string it spells (``protocol: 5``); ``normalize`` rewrites strings first."""

    def __init__(
        self,
        *,
        choices: Iterable[object] | None = None,
        normalize: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__("")
        self.choices: tuple[object, ...] = () if choices is None else tuple(choices)
        self.normalize = normalize
        self.members: dict[object, object] = {}

    def prepare(self, source: Any) -> None:
        if typing.get_origin(source) is Literal:
            values = self.choices or typing.get_args(source)
            self.members = {v: v for v in values}
        elif isinstance(source, type) and issubclass(source, enum.Enum):
            members = self.choices or tuple(source)
            self.members = {m.value: m for m in members if isinstance(m, enum.Enum)}
            self.json["enum"] = list(self.members)
        self.what = "one of " + ", ".join(repr(v) for v in self.members)

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if isinstance(value, enum.Enum) and value in self.members.values():
            return value
        key = value
        if isinstance(key, int | float) and not isinstance(key, bool):
            key = str(key)  # protocol: 5 is the string "5"
        if isinstance(key, str) and self.normalize is not None:
            key = self.normalize(key)
        try:
            return self.members[key]
        except (KeyError, TypeError):
            raise self.bad(value) from None


class Items(_Check):
    """A YAML list (kept as a tuple) of ``what``; ``nonempty``, ``unique`` elements."""

    def __init__(self, what: str, *, nonempty: bool = False, unique: bool = False) -> None:
        super().__init__(f"a list of {what}")
        self.nonempty, self.unique = nonempty, unique
        if nonempty:
            self.json["minItems"] = 1
        if unique:
            self.json["uniqueItems"] = True

    def check(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if not isinstance(value, list | tuple):
            raise self.bad(value)
        if self.nonempty and not value:
            raise problem("must be a non-empty list")
        if self.unique:
            first_at: dict[object, int] = {}
            dups: list[tuple[str, str]] = []
            for i, elem in enumerate(value):
                try:
                    first = first_at.setdefault(elem, i)
                except TypeError:  # unhashable: the element's own check reports it
                    continue
                if first != i and not isinstance(elem, bool):
                    dups.append(
                        (f"[{i}]", f"duplicate value {show(elem)} (first at {{here}}[{first}])")
                    )
            if dups:
                raise problem("", *dups)
        return tuple(value)


class Via:
    """``Annotated[Domain, Via(Model, convert)]``: validate with the pydantic dataclass
    ``Model`` (its keys, checks and schema), then hand ``convert(model)`` on: the value stays
    the pure domain's own type. A ValueError of ``convert`` (a domain rule across fields)
    is reported at the field its message starts with. An instance of the domain type passes."""

    def __init__(self, model: type[Any], domain: type[Any], convert: Callable[[Any], Any]) -> None:
        self.model, self.domain, self.convert = model, domain, convert

    def _to_domain(self, value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, self.domain):
            return value
        built = handler(value)
        try:
            return self.convert(built)
        except ValueError as exc:
            message = str(exc)
            first = message.split(" ", 1)[0]
            name = first.rsplit(".", 1)[-1]  # "min_reads" or "debounce.portal.min_reads"
            if name in {f.name for f in dataclasses.fields(self.model)}:
                raise problem("", (name, message.removeprefix(first).strip())) from exc
            raise problem(message) from exc

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(
            self._to_domain, handler.generate_schema(self.model)
        )


def field_docs(cls: type[Any]) -> dict[str, str]:
    """The docstrings written under the fields of class ``cls`` (its source), by field name."""
    node = _class_nodes(cls.__module__).get(cls.__qualname__)
    docs: dict[str, str] = {}
    for field, after in itertools.pairwise(node.body if node is not None else []):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = inspect.cleandoc(after.value.value)
    return docs


@functools.cache
def _class_nodes(module: str) -> dict[str, ast.ClassDef]:
    """The top-level classes of ``module``'s source by name (parsed once per module)."""
    try:
        source = inspect.getsource(sys.modules[module])
    except (KeyError, OSError, TypeError):  # no source: no docs
        return {}
    return {n.name: n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}


def params_model(
    params: type[Any], meta: Mapping[str, _Check], default: Callable[[type[Any]], _Check]
) -> type[Any]:
    """A pydantic dataclass with the fields (names, types, defaults) of the stdlib dataclass
    ``params``, each checked by ``meta[name]`` or ``default(type)``: the keys of a domain
    parameter class, validated without the domain knowing pydantic."""
    hints = typing.get_type_hints(params)
    specs: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(params):
        base, optional = _optional(hints[f.name])
        check = meta.get(f.name) or default(base)
        tp: Any = typing.Annotated[base, check]
        if optional:
            tp = tp | None
        specs.append((f.name, tp, f.default))
    namespace: dict[str, Any] = {
        "__annotations__": {name: tp for name, tp, _ in specs},
        "__doc__": params.__doc__,
        "__module__": params.__module__,
        "__qualname__": params.__qualname__,
        **{name: default for name, _, default in specs},
    }
    cls = type(params.__name__, (Section,), namespace)
    return pydantic_dataclass(cls, config=MODEL_CONFIG, frozen=True, slots=True)


# --------------------------------------------------------------------------------------------
# Schema walking (for messages and key listings)


def _optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def unwrap(tp: Any) -> tuple[Any, tuple[Any, ...], bool]:
    """``tp`` without ``| None`` and ``Annotated``: (the base type, its metadata, optional).
    A ``Via`` base is its model."""
    tp, optional = _optional(tp)
    meta: tuple[Any, ...] = ()
    if typing.get_origin(tp) is typing.Annotated:
        meta = tp.__metadata__
        tp = typing.get_args(tp)[0]
        inner, more = _optional(tp)
        tp, optional = inner, optional or more
    for m in meta:
        if isinstance(m, Via):
            tp = m.model
    return tp, meta, optional


def keys_of(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """The document keys of dataclass ``cls`` (aliases where set), secret fields left out."""
    found = _KEYS.get(cls)
    if found is None:
        found = _KEYS[cls] = _keys_of(cls)
    return found


_KEYS: Final[dict[type[Any], dict[str, dataclasses.Field[Any]]]] = {}
"""Keys per class, computed once: a cache of what the class definitions say (immutable)."""


def _keys_of(cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    hidden = getattr(cls, HIDDEN_KEYS_ATTR, ())
    infos = getattr(cls, "__pydantic_fields__", {})
    out: dict[str, dataclasses.Field[Any]] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name in hidden or f.name in _NOT_KEYS:
            continue
        # The field's FieldInfo is its default until pydantic has built the class.
        alias = getattr(infos.get(f.name, f.default), "alias", None)
        out[alias if isinstance(alias, str) else f.name] = f
    return out


_NOT_KEYS: Final = frozenset({"source"})
"""Fields that are filled in by the loader, never read from a document."""


# --------------------------------------------------------------------------------------------
# Sections


def _rebuilt(error: Any) -> InitErrorDetails:
    """A reported error as pydantic takes it back (to be raised again with more errors)."""
    ctx = error.get("ctx")
    kind = error["type"]
    if kind in {_ERROR_TYPE, "value_error"}:
        message = str((ctx or {}).get("message") or error["msg"])
        problems = (ctx or {}).get("problems") or (("", message),)
        kind = PydanticCustomError(
            _ERROR_TYPE, "{message}", {"message": message, "problems": problems}
        )
        return InitErrorDetails(type=kind, loc=error["loc"], input=error["input"])
    if ctx:
        return InitErrorDetails(type=kind, loc=error["loc"], input=error["input"], ctx=ctx)
    return InitErrorDetails(type=kind, loc=error["loc"], input=error["input"])


def _raise_all(
    cls: type[Any],
    unknown: list[tuple[str, object]],
    found: Iterable[tuple[str, str]],
    errors: list[Any],
) -> typing.NoReturn:
    details: list[InitErrorDetails] = [
        InitErrorDetails(type=problem(unknown_key_message(key, cls)), loc=(key,), input=value)
        for key, value in unknown
    ]
    details.extend(_rebuilt(e) for e in errors)
    details.extend(
        InitErrorDetails(type=problem(message), loc=_split_rel(rel), input=None)
        for rel, message in found
    )
    raise ValidationError.from_exception_data(cls.__name__, details)


@pydantic_dataclass(frozen=True, slots=True, config=MODEL_CONFIG)
class Section:
    """Base of every document section: one validator that reports unknown keys (with the
    allowed ones and a suggestion) *next to* the problems of the known keys, then the rules
    across fields (:meth:`_finish`), which only run when every field is valid.

    Subclasses fill in defaults that depend on other keys in :meth:`_prepare` and state rules
    across fields in :meth:`_config_problems` as ``(relative key path, message)``.
    """

    @classmethod
    def _prepare(cls, data: Mapping[str, Any], info: ValidationInfo) -> Mapping[str, Any]:
        """The raw mapping with defaults that depend on other keys filled in."""
        return data

    def _config_problems(self) -> Iterable[tuple[str, str]]:
        return ()

    def _finish(self, info: ValidationInfo) -> Iterable[tuple[str, str]]:
        """Problems across fields, once every field is valid; may set derived fields. Return
        a collection (empty when all is well), not a generator: an empty one is falsy."""
        return tuple(self._config_problems())

    @model_validator(mode="wrap")
    @classmethod
    def _validate_section(
        cls, data: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
    ) -> Any:
        unknown: list[tuple[str, object]] = []
        if isinstance(data, Mapping):
            if cls._prepare.__func__ is not _PLAIN_PREPARE:  # type: ignore[attr-defined]
                data = cls._prepare(data, info)
            keys = _KEYS.get(cls) or keys_of(cls)
            if not keys.keys() >= data.keys():
                unknown = [
                    (str(k), v) for k, v in data.items() if k not in keys and k not in _NOT_KEYS
                ]
                if unknown:
                    data = {k: v for k, v in data.items() if k in keys or k in _NOT_KEYS}
        try:
            obj = handler(data)
        except ValidationError as exc:
            if not unknown:
                raise
            _raise_all(cls, unknown, (), exc.errors(include_url=False))
        found = obj._finish(info)
        if unknown or found:
            found = list(found)
            if unknown or found:
                _raise_all(cls, unknown, found, [])
        return obj


_PLAIN_PREPARE: Final = Section._prepare.__func__  # type: ignore[attr-defined]
"""Sections that fill in no derived default skip the call (it is per section, per document)."""


# --------------------------------------------------------------------------------------------
# Turning a ValidationError into lines


_MAPPING_ERRORS: Final = frozenset(
    {"dataclass_type", "model_type", "dict_type", "dataclass_exact_type", "model_attributes_type"}
)
_LIST_ERRORS: Final = frozenset({"tuple_type", "list_type", "iterable_type"})


def unknown_key_message(key: str, cls: type[Any]) -> str:
    if key in getattr(cls, HIDDEN_KEYS_ATTR, ()):
        return f"secrets are never written in the config: use {key}_file or {key}_env"
    keyed = list(keys_of(cls))
    close = difflib.get_close_matches(key, keyed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key (allowed: {', '.join(keyed)}){hint}"


def problems_of(
    exc: ValidationError,
    *,
    set_by: Mapping[KeyPath, str] | None = None,
    created_by: Mapping[KeyPath, str] | None = None,
    prefix: KeyPath = (),
) -> list[tuple[KeyPath, str]]:
    """Every problem of ``exc`` as ``(key path, message)``; the message already carries
    ``(set by NAME)`` when an environment variable set the value (``set_by``) or created the
    section holding it (``created_by``)."""
    out: list[tuple[KeyPath, str]] = []
    for error in exc.errors(include_url=False):
        loc: KeyPath = tuple(error["loc"])
        kind = error["type"]
        value = error.get("input")
        ctx = error.get("ctx") or {}
        if kind == _ERROR_TYPE:
            for rel, message in ctx["problems"]:
                path = loc + _split_rel(rel)
                out.append((path, message.replace("{here}", fmt_path(prefix + loc))))
            continue
        if kind == "missing":
            message = "missing required key"
        elif kind in _MAPPING_ERRORS:
            message = f"must be a mapping, got {show(value)}"
        elif kind in _LIST_ERRORS:
            message = f"must be a list, got {show(value)}"
        elif kind == "value_error":
            message = str(ctx.get("error", error["msg"]))
        else:
            message = f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {show(value)}"
        out.append((loc, message))
    result: list[tuple[KeyPath, str]] = []
    for path, message in out:
        var = _variable(path, set_by or {}, created_by or {})
        suffix = f" (set by {var})" if var is not None else ""
        result.append((prefix + path, f"{message}{suffix}"))
    return result


def _variable(
    path: KeyPath, set_by: Mapping[KeyPath, str], created_by: Mapping[KeyPath, str]
) -> str | None:
    var = set_by.get(path)
    if var is None:
        for i in range(len(path) - 1, 0, -1):
            var = created_by.get(path[:i])
            if var is not None:
                break
    return var


def lines(problems: Iterable[tuple[KeyPath, str]]) -> list[str]:
    """``(path, message)`` problems as the lines a ConfigError holds."""
    return [f"{fmt_path(path)}: {message}" for path, message in problems]
