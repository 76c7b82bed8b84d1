"""Reading the files the gateway and its CLI are given: bounded, and never a traceback.

Theory of operation
-------------------
Every file dockwatch reads on an operator's behalf (the config, expected receipts, simulator
scenarios) goes through :func:`read_yaml`, which treats the bytes as hostile and refuses, with one
line naming the file and, where there is one, the key path:

1. **The path.** At most :data:`MAX_PATH_BYTES` bytes, each component at most
   :data:`MAX_NAME_BYTES` (the Linux limits, checked before the kernel's ``ENAMETOOLONG``), no
   NUL character; a regular file (not a directory, FIFO or device, which could block forever).
2. **The size.** ``stat`` first: a file over the limit is refused before a byte is read, so a
   50 MB config costs no time and no memory. Reading stops at the limit too (a file that grows
   meanwhile, or standard input). The limits are per kind of file: :data:`CONFIG_LIMITS`,
   :data:`RECEIPTS_LIMITS`, :data:`SCENARIO_LIMITS`.
3. **The encoding.** Strict UTF-8 (the error names the line and column of the first bad byte);
   no NUL byte (YAML forbids control characters; the error says where).
4. **The shape**, before anything is built: one pass over the YAML *events* (the parser is a
   state machine; building nodes recurses, so it must not see what this pass refuses) limits the
   nesting depth (``max_depth`` containers) and the number of values the document *expands* to
   through aliases (``max_nodes``: ten nested anchors of ten aliases each are ten billion values
   to whoever walks the result). Both errors name the key path where the limit was crossed.
5. **The values.** PyYAML's constructors raise ``ValueError`` for some scalars (an integer of
   more than 4,300 digits); that is a :class:`DocumentError` too.

Then the document is built with libyaml's C loader when it is available (ten times faster on a
30,000-receipt file), or with a given loader class (the config's loader also reports duplicate
keys).

Errors: :class:`DocumentError` (a :class:`~dockwatch_core.errors.ConfigError`), ``str()`` is
``"<file>: <problem>"``; ``problem`` is the part after the file name. File names longer than
:data:`SHOWN_PATH_CHARS` are shortened in messages.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import yaml

from dockwatch_core.errors import ConfigError

__all__ = [
    "CONFIG_LIMITS",
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "RECEIPTS_LIMITS",
    "SCENARIO_LIMITS",
    "SECRET_LIMITS",
    "DocumentError",
    "DocumentLimits",
    "SafeLoader",
    "check_nodes",
    "check_path",
    "check_structure",
    "gc_paused",
    "json_by_lines",
    "parse_yaml",
    "path_problem",
    "read_text",
    "read_yaml",
    "shown",
]

MAX_PATH_BYTES: Final = 4095
"""Longest file path accepted (Linux ``PATH_MAX`` is 4096 bytes with the final NUL)."""
MAX_NAME_BYTES: Final = 255
"""Longest path component accepted (Linux ``NAME_MAX``)."""
SHOWN_PATH_CHARS: Final = 120
"""Longer file names are shortened in messages (a 100 kB path makes a useless error line)."""
_READ_CHUNK = 1 << 20
SafeLoader: Final[type[Any]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it, else the pure-Python one."""


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """What one kind of file may hold: ``max_bytes`` of UTF-8, containers nested at most
    ``max_depth`` deep, at most ``max_nodes`` values once aliases are expanded."""

    what: str
    max_bytes: int
    max_depth: int
    max_nodes: int

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_depth < 1 or self.max_nodes < 1:
            raise ValueError("document limits must be >= 1")

    @property
    def a_what(self) -> str:
        """``what`` with its article: "a config file", "an expected receipts file"."""
        return f"{'an' if self.what[:1] in 'aeiou' else 'a'} {self.what}"


CONFIG_LIMITS: Final = DocumentLimits("config file", 4 << 20, 32, 1_000_000)
"""4 MiB (a catalog of 20,000 items fits in half of it), 32 levels (the deepest key of the
schema is 5 levels down), a million values."""
RECEIPTS_LIMITS: Final = DocumentLimits("expected receipts file", 64 << 20, 16, 10_000_000)
"""64 MiB (about 200,000 receipts of a few lines), 16 levels (the schema needs 5)."""
SECRET_LIMITS: Final = DocumentLimits("secret file", 64 << 10, 1, 1)
"""64 KiB: a token or a password (its depth and values are not YAML's business)."""
SCENARIO_LIMITS: Final = DocumentLimits("scenario file", 16 << 20, 32, 2_000_000)
"""16 MiB, 32 levels, two million values."""


class DocumentError(ConfigError):
    """A file that cannot be taken as it is: ``str()`` is ``"<file>: <problem>"``."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class _GcPause:
    """The process-wide pause of :func:`gc_paused` (the collector is process-wide too)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.was_enabled = True


_GC_PAUSE = _GcPause()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a worker thread builds a big document.

    Building 10,000 receipts allocates half a million short-lived objects; the allocations
    trigger full collections, each of which walks every object of the process while holding
    the GIL: 150-250 ms during which the event loop thread cannot run (measured), even though
    the work itself is in another thread. Paused, the temporary objects are freed by reference
    counting as usual and never scanned; what survives is scanned once afterwards, in the
    young generation. Reference-counted: overlapping users resume collection once the last one
    is done, and collection is only resumed if it was on before.
    """
    pause = _GC_PAUSE
    with pause.lock:
        if pause.users == 0:
            pause.was_enabled = gc.isenabled()
            gc.disable()
        pause.users += 1
    try:
        yield
    finally:
        with pause.lock:
            pause.users -= 1
            if pause.users == 0 and pause.was_enabled:
                gc.enable()


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` for a message: shortened when absurdly long, control characters escaped."""
    text = os.fspath(path)
    if len(text) > SHOWN_PATH_CHARS:
        text = f"{text[: SHOWN_PATH_CHARS - 20]}...{text[-17:]} ({len(text)} characters)"
    if not text.isprintable():
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text


def path_problem(text: str) -> str | None:
    """Why ``text`` cannot be a file path on this system, or None."""
    if "\x00" in text:
        return "a file path cannot contain a NUL character"
    try:
        raw = os.fsencode(text)
    except UnicodeError:
        return "the file path cannot be encoded for this file system"
    if len(raw) > MAX_PATH_BYTES:
        return f"the file path is {len(raw)} bytes long, more than the {MAX_PATH_BYTES} allowed"
    longest = max((len(part) for part in raw.split(b"/")), default=0)
    if longest > MAX_NAME_BYTES:
        return (
            f"a part of the file path is {longest} bytes long, more than the "
            f"{MAX_NAME_BYTES} allowed"
        )
    return None


def check_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`Path`; DocumentError when it cannot be one (see the module doc)."""
    text = os.fspath(path)
    problem = path_problem(text)
    if problem is not None:
        raise DocumentError(shown(text), problem)
    return Path(text)


def _decode(data: bytes, source: str) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        column = nul - (data.rfind(b"\n", 0, nul) + 1) + 1
        raise DocumentError(
            source,
            f"line {line}, column {column}: a NUL byte (this is binary data, not YAML text)",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DocumentError(
            source,
            f"line {line}, column {column}: not UTF-8 text (byte 0x{data[exc.start]:02X}); "
            "save the file as UTF-8",
        ) from exc
    return text.removeprefix("\ufeff")


def _too_big(limits: DocumentLimits, size: int | None) -> str:
    most = limits.max_bytes
    limit = f"{most / (1 << 20):g} MiB" if most >= 1 << 20 else f"{most / 1024:g} KiB"
    size_text = "" if size is None else f" {size / 1e6:.1f} MB,"
    return f"the file is{size_text} larger than the {limit} {limits.a_what} may be"


def _read_limited(stream: IO[bytes], limits: DocumentLimits, source: str) -> bytes:
    buffer = bytearray()
    while chunk := stream.read(min(_READ_CHUNK, limits.max_bytes + 1 - len(buffer))):
        buffer += chunk
        if len(buffer) > limits.max_bytes:
            raise DocumentError(source, _too_big(limits, None))
    return bytes(buffer)


def read_text(path: str | os.PathLike[str], limits: DocumentLimits) -> str:
    """The text of ``path`` (``-``: standard input) within ``limits``; DocumentError otherwise
    (OSError never escapes: an unreadable file is a DocumentError naming the reason)."""
    if os.fspath(path) == "-":
        binary = getattr(sys.stdin, "buffer", None)
        if binary is not None:
            return _decode(_read_limited(binary, limits, "<stdin>"), "<stdin>")
        text = sys.stdin.read(limits.max_bytes + 1)  # a text stream put in its place
        if len(text) > limits.max_bytes:
            raise DocumentError("<stdin>", _too_big(limits, None))
        return _decode(text.encode("utf-8", "surrogateescape"), "<stdin>")
    file = check_path(path)
    source = shown(file)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DocumentError(source, f"cannot read: {exc.strerror or exc}") from exc
    info = os.fstat(fd)
    problem = (
        "not a regular file"
        if not stat.S_ISREG(info.st_mode)
        else _too_big(limits, info.st_size)
        if info.st_size > limits.max_bytes
        else None
    )
    if problem is not None:
        os.close(fd)
        raise DocumentError(source, problem)
    os.set_blocking(fd, True)
    with open(fd, "rb", closefd=True) as stream:
        try:
            data = _read_limited(stream, limits, source)
        except OSError as exc:
            raise DocumentError(source, f"cannot read: {exc.strerror or exc}") from exc
    return _decode(data, source)


# --- the shape of a YAML document ------------------------------------------------------------


def _fmt(path: list[str | int]) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out or "(top level)"


class _Frame:
    __slots__ = ("anchor", "children", "is_map", "key", "nodes")

    def __init__(self, is_map: bool, anchor: str | None) -> None:
        self.is_map = is_map
        self.anchor = anchor
        self.children = 0
        self.key: str | int = "?"
        self.nodes = 1


def check_structure(text: str, limits: DocumentLimits, source: str) -> None:
    """DocumentError when the YAML ``text`` nests deeper than ``limits.max_depth`` or expands
    to more than ``limits.max_nodes`` values; syntax errors are left to the loader."""
    stack: list[_Frame] = []
    sizes: dict[str, int] = {}  # anchor -> values its node expands to
    total = 0
    deeper = f"nested more than {limits.max_depth} levels deep, the most {limits.a_what} may be"
    loader = SafeLoader(text)

    def path() -> list[str | int]:
        return [frame.key for frame in stack]

    def child(event: yaml.NodeEvent) -> str | int:
        """The key path segment of the node ``event`` starts (and count it in its parent)."""
        if not stack:
            return "?"
        parent = stack[-1]
        index = parent.children
        parent.children += 1
        if not parent.is_map:
            parent.key = index
            return index
        if index % 2 == 0:  # a key: remember it for its value
            if isinstance(event, yaml.ScalarEvent):
                value = event.value
                parent.key = value if len(value) <= 40 and value.isprintable() else "<key>"
            else:
                parent.key = "<complex key>"
            return "<key>"
        return parent.key

    def add(nodes: int) -> None:
        nonlocal total
        if stack:
            stack[-1].nodes += nodes
        else:
            total += nodes
        if total + sum(frame.nodes for frame in stack) > limits.max_nodes:
            raise DocumentError(
                source,
                f"{_fmt(path())}: the document expands to more than {limits.max_nodes:,} "
                f"values (through YAML aliases), the most {limits.a_what} may hold",
            )

    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
                child(event)
                if isinstance(event, yaml.AliasEvent):
                    if any(frame.anchor == event.anchor for frame in stack):
                        raise DocumentError(
                            source,
                            f"{_fmt(path())}: alias *{event.anchor} refers to a node that "
                            "contains it (a recursive structure)",
                        )
                    add(sizes.get(event.anchor or "", 1))
                else:
                    add(1)
                    if event.anchor:
                        sizes[event.anchor] = 1
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                child(event)
                if len(stack) >= limits.max_depth:
                    raise DocumentError(source, f"{_fmt(path())}: {deeper}")
                stack.append(_Frame(isinstance(event, yaml.MappingStartEvent), event.anchor))
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                frame = stack.pop()
                if frame.anchor:
                    sizes[frame.anchor] = frame.nodes
                add(frame.nodes)
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):  # libyaml's own limit (1,000 levels), met while
            # its scanner reads ahead of the events: the mark says where, the path cannot.
            raise DocumentError(
                source, f"{_yaml_problem(exc).partition(': ')[0]}: {deeper}"
            ) from exc
        return  # the loader reports syntax errors with their line and column
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = f" ({exc.context})" if exc.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"
    return str(exc)


def _is_libyaml(loader: object) -> bool:
    cyaml = getattr(yaml, "cyaml", None)  # present only when PyYAML was built with libyaml
    cparser = getattr(cyaml, "CParser", None)
    return cparser is not None and isinstance(loader, cparser)


def _children(node: yaml.Node) -> list[tuple[str | int, yaml.Node]]:
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[str | int, yaml.Node]] = []
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "<complex key>"
            if not isinstance(name, str) or len(name) > 40 or not name.isprintable():
                name = "<key>"
            out += [("<key>", key), (name, value)]
        return out
    return []


def check_nodes(root: yaml.Node, limits: DocumentLimits, source: str) -> None:
    """DocumentError when the composed document nests deeper than ``limits.max_depth``, expands
    (through aliases: a node may be shared) to more than ``limits.max_nodes`` values, or holds
    itself (a recursive alias). Iterative: a node graph of any shape is walked without
    recursion, each shared node once."""
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (height, expanded size)
    open_ids: set[int] = set()
    path: list[str | int] = []
    stack: list[tuple[yaml.Node, list[tuple[str | int, yaml.Node]], int]] = []

    def enter(node: yaml.Node) -> None:
        open_ids.add(id(node))
        stack.append((node, _children(node), 0))

    enter(root)
    while stack:
        node, children, index = stack[-1]
        if index < len(children):
            stack[-1] = (node, children, index + 1)
            segment, child = children[index]
            if id(child) in memo:
                continue
            if id(child) in open_ids:
                raise DocumentError(
                    source,
                    f"{_fmt([*path, segment])}: an alias refers to a node that contains it "
                    "(a recursive structure)",
                )
            if isinstance(child, yaml.ScalarNode):
                memo[id(child)] = (0, 1)
                continue
            if len(stack) >= limits.max_depth:
                raise DocumentError(
                    source,
                    f"{_fmt([*path, segment])}: nested more than {limits.max_depth} levels "
                    f"deep, the most {limits.a_what} may be",
                )
            path.append(segment)
            enter(child)
            continue
        stack.pop()
        open_ids.discard(id(node))
        height = size = 0
        for _, child in children:
            child_height, child_size = memo[id(child)]
            height = max(height, child_height)
            size += child_size
        height, size = height + 1, size + 1
        if height > limits.max_depth:  # through an alias of a deep node
            raise DocumentError(
                source,
                f"{_fmt(path)}: nested more than {limits.max_depth} levels deep (through an "
                f"alias), the most {limits.a_what} may be",
            )
        if size > limits.max_nodes:
            raise DocumentError(
                source,
                f"{_fmt(path)}: expands to more than {limits.max_nodes:,} values (through YAML "
                f"aliases), the most {limits.a_what} may hold",
            )
        memo[id(node)] = (height, size)
        if path and stack:
            path.pop()


def _json_depth_ok(data: object, max_depth: int) -> bool:
    """Whether ``data`` (parsed JSON: a tree) nests at most ``max_depth`` containers deep."""
    level: list[object] = [data]
    depth = 0
    while True:
        nxt: list[object] = []
        containers = 0
        for value in level:
            if isinstance(value, dict):
                containers += 1
                nxt.extend(value.values())
            elif isinstance(value, list):
                containers += 1
                nxt.extend(value)
        if not containers:
            return True
        depth += 1
        if depth > max_depth:
            return False
        level = nxt


JSON_CALL_MAX_CHARS: Final = 1 << 20
"""``json.loads`` holds the GIL for its whole call (about 8 ms per MB): a bigger document is
parsed one line at a time when it is laid out one element per line (:func:`json_by_lines`), so
the event loop's thread gets its turn between lines."""


def json_by_lines(text: str) -> object | None:
    """``text`` parsed one element per line, when it is a JSON array, or an object of one key
    whose value is an array, written one element per line (as ``receipts load`` writes the
    expected file); None when it is not laid out that way."""
    lines = text.strip().split("\n")
    if len(lines) < 2:
        return None
    head, tail = lines[0].rstrip(), lines[-1].strip()
    if head == "[" and tail == "]":
        key = None
    elif head.startswith("{") and head.endswith("[") and tail == "]}":
        try:
            key = json.loads(head[1:-1].strip().removesuffix(":").strip())
        except ValueError:
            return None
        if not isinstance(key, str):
            return None
    else:
        return None
    items = []
    for number, line in enumerate(lines[1:-1], 2):
        element = line.strip()
        if number < len(lines) - 1:
            if not element.endswith(","):
                return None
            element = element[:-1]
        try:
            items.append(json.loads(element, parse_constant=_no_constant))
        except ValueError:
            return None
    return items if key is None else {key: items}


def _parse_json(text: str, limits: DocumentLimits, source: str) -> object:
    """A JSON document (JSON is YAML; ``json`` is a hundred times faster than PyYAML)."""
    try:
        by_lines = json_by_lines(text) if len(text) > JSON_CALL_MAX_CHARS else None
        data = by_lines if by_lines is not None else json.loads(text, parse_constant=_no_constant)
    except RecursionError as exc:
        raise DocumentError(
            source,
            f"nested more than {limits.max_depth} levels deep, the most {limits.a_what} may be",
        ) from exc
    except ValueError as exc:  # JSONDecodeError; an int of more than 4,300 digits
        raise DocumentError(source, f"not valid JSON: {exc}") from exc
    if not _json_depth_ok(data, limits.max_depth):
        raise DocumentError(
            source,
            f"nested more than {limits.max_depth} levels deep, the most {limits.a_what} may be",
        )
    return data


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def parse_yaml(
    text: str,
    limits: DocumentLimits,
    source: str,
    *,
    loader_class: type[Any] | None = None,
    inspect: Callable[[Any], None] | None = None,
) -> object:
    """The YAML (or JSON) document ``text`` within ``limits``; DocumentError naming ``source``
    for a problem.

    ``loader_class`` builds it (default :data:`SafeLoader`; a subclass may add checks, and
    ``inspect(loader)`` runs after the document is built, before the loader is disposed). A
    document that starts with ``{`` or ``[`` is tried as JSON first (when no loader is given).

    With libyaml, the document is composed into nodes (libyaml refuses nesting beyond 1,000
    levels, so composing cannot exhaust the stack), the node graph is checked, then built. The
    pure-Python composer recurses, so there the events are checked first."""
    if len(text) > limits.max_bytes:  # text from elsewhere than read_text
        raise DocumentError(source, _too_big(limits, len(text.encode("utf-8", "replace"))))
    if loader_class is None and text.lstrip()[:1] in ("{", "["):
        with contextlib.suppress(DocumentError):
            return _parse_json(text, limits, source)
        # Not JSON after all (YAML flow style): the YAML path below says what is wrong.
    loader_class = SafeLoader if loader_class is None else loader_class
    try:
        loader = loader_class(text)
    except yaml.YAMLError as exc:  # the pure-Python reader checks characters at once
        raise DocumentError(source, f"not valid YAML: {_yaml_problem(exc)}") from exc
    try:
        if not _is_libyaml(loader):
            check_structure(text, limits, source)
        node = loader.get_single_node()
        if node is not None:
            check_nodes(node, limits, source)
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):  # libyaml's own limit (1,000 levels)
            raise DocumentError(
                source,
                f"{_yaml_problem(exc).partition(': ')[0]}: nested more than "
                f"{limits.max_depth} levels deep, the most {limits.a_what} may be",
            ) from exc
        raise DocumentError(source, f"not valid YAML: {_yaml_problem(exc)}") from exc
    except (ValueError, TypeError, RecursionError) as exc:
        # PyYAML's constructors: an int of more than 4,300 digits, an unhashable key...
        raise DocumentError(source, f"not a usable YAML value: {exc}") from exc
    else:
        if inspect is not None:
            inspect(loader)
        return data
    finally:
        loader.dispose()


def read_yaml(
    path: str | os.PathLike[str],
    limits: DocumentLimits,
    *,
    loader_class: type[Any] | None = None,
    inspect: Callable[[Any], None] | None = None,
) -> object:
    """The YAML (or JSON) document in ``path`` (``-``: standard input) within ``limits``
    (:func:`read_text`, then :func:`parse_yaml`)."""
    text = read_text(path, limits)
    source = "<stdin>" if os.fspath(path) == "-" else shown(path)
    return parse_yaml(text, limits, source, loader_class=loader_class, inspect=inspect)
