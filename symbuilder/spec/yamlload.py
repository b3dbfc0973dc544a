"""Safe, located YAML: plain Python data plus the line and column of every key and item.

PyYAML's SafeLoader is the base (no `!!python/...` tags), hardened where PyYAML is lax:
duplicate keys are an error, YAML 1.2 floats like `1e-3` are floats (PyYAML's YAML 1.1
reads them as strings), and size and alias expansion are capped ("billion laughs").
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple, Union

import yaml

from ..errors import SpecError

Path = Tuple[Union[str, int], ...]

MAX_BYTES = 1 << 20  # a hand-written spec is a few KB; a megabyte is already suspicious
MAX_ALIASES = 100
MAX_NODES = 100_000  # nodes after alias expansion
MAX_DEPTH = 64  # a spec nests about six deep; the composer and every walk recurse per level

# YAML 1.2 core-schema floats, which YAML 1.1 (PyYAML) misses: 1e-3, 1E5, .5e-2, -2e+4.
_DIRECTIVE = "a line starting with '%' is a YAML directive; quote a value that starts with '%'"

_FLOAT_1_2 = re.compile(
    r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$""", re.X
)


def format_path(path: Path) -> str:
    """('layers', 2, 'num_hidden') -> 'layers[2].num_hidden'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Locations:
    """Where each key path sits in the source: 1-based (line, column) of the key or item."""

    def __init__(self, source: str, marks: Dict[Path, Tuple[int, int]]) -> None:
        self.source = source
        self._marks = marks
        # Key paths whose value came from the command line (--set), with the option's text:
        # an error there points at the option, not at the file's old value.
        self.overridden: Dict[Path, str] = {}

    def of(self, path: Path) -> Tuple[Optional[int], Optional[int]]:
        """The location of `path`, or of its nearest located ancestor (a missing key is
        reported at the mapping that lacks it)."""
        path = tuple(path)
        while path:
            if path in self._marks:
                return self._marks[path]
            path = path[:-1]
        return self._marks.get((), (None, None))

    def error(self, path: Path, message: str, cls: type = SpecError) -> SpecError:
        prefix = tuple(path)
        while prefix:
            if prefix in self.overridden:
                return cls(message, file=f"--set {self.overridden[prefix]}",
                           path=format_path(path) or None)
            prefix = prefix[:-1]
        line, column = self.of(path)
        return cls(message, file=self.source, line=line, column=column,
                   path=format_path(path) or None)

    @classmethod
    def empty(cls, source: str = "<spec>") -> "Locations":
        return cls(source, {})


class _Loader(yaml.SafeLoader):
    """SafeLoader with duplicate-key detection, YAML 1.2 floats and an alias budget."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_count = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _LocatedYAMLError(f"more than {MAX_ALIASES} aliases", mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _LocatedYAMLError(f"nested more than {MAX_DEPTH} levels deep",
                                        self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        self.flatten_mapping(node)
        seen: Dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise _LocatedYAMLError("a mapping key must be a plain value", key_node.start_mark)
            if key in seen:
                first = seen[key]
                raise _LocatedYAMLError(
                    f"duplicate key '{key}' (first at line {first.line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


class _LocatedYAMLError(Exception):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def _count_nodes(node: Any, budget: list) -> None:
    """Walk the composed graph with alias expansion, failing once past MAX_NODES."""
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        budget[0] += 1
        if budget[0] > MAX_NODES:
            raise _LocatedYAMLError(
                f"the document expands to more than {MAX_NODES} nodes (alias bomb?)",
                current.start_mark)
        if depth > MAX_DEPTH:  # aliases nested in aliases: deeper than the text shows
            raise _LocatedYAMLError(f"nested more than {MAX_DEPTH} levels deep (through "
                                    "aliases)", current.start_mark)
        if isinstance(current, yaml.MappingNode):
            for k, v in current.value:
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((v, depth + 1) for v in current.value)


def _collect_marks(node: Any, data: Any, path: Path, marks: Dict[Path, Tuple[int, int]]) -> None:
    marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode) and isinstance(data, dict):
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            # The constructed key may be an int or bool; find it by its text first.
            match = next((k for k in data if str(k) == key), key)
            sub = path + (match,)
            marks.setdefault(sub, (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
            if match in data:
                _collect_marks(value_node, data[match], sub, marks)
                marks[sub] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode) and isinstance(data, list):
        for i, (item_node, item) in enumerate(zip(node.value, data)):
            _collect_marks(item_node, item, path + (i,), marks)


# PyYAML's problem (and context) strings -> a plain hint and where it points. One row per
# mistake; the first row that matches wins; PyYAML's own words are shown only when none
# does. `look`: the cause may sit in the text around the mark (a `key:value` without a space,
# an unclosed bracket), which _look_at_text checks before the row's hint is used.
_HINTS: Tuple[Tuple[str, Optional[str], str, str, bool], ...] = (
    # (problem regex, context regex or None, mark: problem/context, hint, look)
    (r"tab character|found character '\\t'", None, "problem", "a tab: YAML indents with spaces",
     False),
    (r"found character '(.+)' that cannot start any token", None, "problem",
     "'{0}' cannot start a value; put the value in quotes", False),
    (r"expected <block end>, but found '([\]}])'", None, "problem",
     "this '{0}' closes a bracket that was never opened", True),
    (r"expected <block end>, but found|did not find expected (key|'-' indicator)", None,
     "problem", "the indentation of this line does not match the lines above it", True),
    (r"expected ',' or '[\]}]', but got", r"flow (sequence|mapping)", "context",
     "this bracket is never closed", True),
    (r"found unexpected end of stream", r"quoted scalar", "context",
     "this {quote} is never closed", False),
    (r"could not find expected ':'", r"simple key", "context",
     "a key without ':' (write key: value)", False),
    (r"mapping values are not allowed here", None, "problem",
     "the indentation of this line does not match the lines above it", True),
    (r"found unexpected ':'", None, "problem",
     "put a space after the ':' (key: value), or quote a value that holds a ':'", False),
    (r"found unknown escape character '(.+)'", None, "problem",
     "unknown escape '\\{0}' in a double-quoted string; use single quotes, or '\\\\' for a "
     "backslash", False),
    (r"but found another document", None, "problem",
     "a second document ('---'); a spec is one document", False),
    (r"found undefined alias '(.+)'", None, "problem",
     "'*{0}' refers to an anchor '&{0}' that is not defined before it", False),
    (r"expected alphabetic or numeric character", r"alias|anchor", "context",
     "'*' and '&' start an alias or an anchor; quote a value that starts with them", False),
    (r"directive", None, "problem", _DIRECTIVE, False),
    (r"", r"directive", "context", _DIRECTIVE, False),
    (r"expected '<document start>'", None, "problem",
     "the document ended above (a '...' line, or a line starting with '%', which YAML reads "
     "as a directive); a spec is one document", False),
    (r"found incompatible YAML document", None, "problem",
     "only YAML 1.x is read; remove the '%YAML' line", False),
    (r"expected chomping or indentation indicators", None, "problem",
     "after '|' or '>' only a digit, '+' or '-' may follow; the text goes on the next lines, "
     "indented", False),
    (r"expected the node content, but found '(.+)'", None, "problem",
     "'{0}' cannot start a value; put the value in quotes", False),
)


def _yaml_hint(e: yaml.MarkedYAMLError, text: str) -> Tuple[str, Any]:
    """A plain sentence for PyYAML's error `e` and the mark it belongs at."""
    problem, context = e.problem or "", e.context or ""
    for pattern, ctx, at, hint, look in _HINTS:
        found = re.search(pattern, problem)
        if not found or (ctx and not re.search(ctx, context)):
            continue
        mark = (e.context_mark if at == "context" else e.problem_mark) or e.problem_mark
        seen = _look_at_text(e, text) if look else None
        if seen:
            return seen
        quote = {"'": "' quote", '"': '" quote'}.get(_char_at(text, mark), "quote")
        return hint.format(*found.groups(), quote=quote), mark
    words = (problem or context or "invalid YAML").strip()
    return f"not valid YAML here ({words})", e.problem_mark or e.context_mark


def _look_at_text(e: yaml.MarkedYAMLError, text: str) -> Optional[Tuple[str, Any]]:
    """The causes that sit in the text around the mark rather than in PyYAML's words; None
    when none is seen."""
    lines = text.splitlines()
    if "flow" in (e.context or "") and e.context_mark is not None:  # an open bracket
        opener = _char_at(text, e.context_mark)
        closer = {"[": "]", "{": "}"}.get(opener, "]")
        got = re.search(r"but got '(.*)'", e.problem or "")
        if e.problem_mark.line != e.context_mark.line or (got and got.group(1) == "<stream end>"):
            return f"this '{opener}' is never closed", e.context_mark
        return (f"expected ',' or '{closer}' here (the '{opener}' at column "
                f"{e.context_mark.column + 1} is still open)"), e.problem_mark
    # A `key:value` without a space, on this line or on the line above that runs on into
    # it, makes the rest of the text a value: PyYAML trips over a later ':' or bracket.
    row = e.problem_mark.line
    for i in range(min(row, len(lines) - 1), max(-1, row - 2), -1):
        glued = re.match(r"^(\s*(?:- )?[^\s:#'\"\[{][^:#]*?):(?=[^\s:/])", lines[i])
        if glued:
            mark = yaml.Mark("", 0, i, len(glued.group(1)), None, None)
            return "put a space after this ':' (key: value)", mark
    line = lines[row] if row < len(lines) else ""
    before = line[:e.problem_mark.column]
    if "mapping values" in (e.problem or "") and re.search(r":\s", before):
        return "a value holding ': ' must be quoted", e.problem_mark
    block_end = "<block end>" in (e.problem or "")
    if block_end and before.strip():
        if re.search(r"found '[\]}]'", e.problem or ""):
            return None  # the row's own hint: a bracket never opened
        # Not at the start of its line: more text after a complete value ('b'c, [b]c).
        return "text after a complete value; put the whole value in quotes", e.problem_mark
    # A line that continues the one above (or starts a block wrongly): it is indented
    # wrongly; point at its first character.
    start = len(line) - len(line.lstrip())
    return ("the indentation of this line does not match the lines above it",
            yaml.Mark("", 0, row, start, None, None))


def _char_at(text: str, mark: Any) -> str:
    lines = text.splitlines()
    if mark is None or mark.line >= len(lines) or mark.column >= len(lines[mark.line]):
        return ""
    return lines[mark.line][mark.column]


def _line_col(text: str, position: int) -> Tuple[int, int]:
    """1-based line and column of a character offset."""
    return text.count("\n", 0, position) + 1, position - (text.rfind("\n", 0, position) + 1) + 1


def load_yaml(text: Union[str, bytes], *, source: str, mapping: bool = True
              ) -> Tuple[Any, Locations]:
    """Parse one YAML document safely; return its data and the locations of its keys.
    `mapping`: the document must be a mapping (a spec; --set values need not be).

    Every failure is a SpecError located in `source`.
    """
    text = _checked_text(text, source)
    node, data = _parse(text, source)
    if mapping and not isinstance(data, dict):
        what = {list: "a list", type(None): "empty"}.get(type(data), f"a single value "
                                                                     f"({data!r:.40})")
        raise SpecError(f"a spec is a mapping of keys (name: ..., input: ..., layers: ...), "
                        f"but this document is {what}", file=source,
                        line=node.start_mark.line + 1, column=node.start_mark.column + 1)
    marks: Dict[Path, Tuple[int, int]] = {}
    _collect_marks(node, data, (), marks)
    return data, Locations(source, marks)


def _checked_text(text: Union[str, bytes], source: str) -> str:
    """The spec as text, refused before parsing when too large, binary or not UTF-8."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise SpecError(f"spec is {len(text)} bytes; the limit is {MAX_BYTES}", file=source)
        _refuse_binary(text.decode("latin-1"), source)
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            line = text.count(b"\n", 0, e.start) + 1
            column = e.start - (text.rfind(b"\n", 0, e.start) + 1) + 1
            raise SpecError(f"not UTF-8 text (byte {e.start}: {text[e.start]:#04x}); save the "
                            "file as UTF-8", file=source, line=line, column=column) from None
    if len(text) > MAX_BYTES:
        raise SpecError(f"spec is {len(text)} characters; the limit is {MAX_BYTES}", file=source)
    _refuse_binary(text, source)
    return text


def _parse(text: str, source: str) -> Tuple[Any, Any]:
    """(root node, data) of the one document; every PyYAML failure a located SpecError."""
    try:
        loader = _Loader(text)  # PyYAML's Reader refuses control characters right here
    except yaml.reader.ReaderError as e:
        line, column = _line_col(text, e.position)
        raise SpecError(f"character U+{e.character:04X} is not allowed in YAML text",
                        file=source, line=line, column=column) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError("the spec is empty; it needs at least name:, input:, layers: and "
                            "output:", file=source, line=1, column=1)
        _count_nodes(node, [0])
        return node, loader.construct_document(node)
    except _LocatedYAMLError as e:
        raise SpecError(e.message, file=source, line=e.mark.line + 1,
                        column=e.mark.column + 1) from None
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark or e.context_mark
        message = (e.problem or e.context or "invalid YAML").strip()
        message = message.replace("could not determine a constructor for the tag",
                                  "tag not allowed in a spec:")
        raise SpecError(message, file=source, line=mark.line + 1 if mark else None,
                        column=mark.column + 1 if mark else None) from None
    except yaml.MarkedYAMLError as e:
        message, mark = _yaml_hint(e, text)
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise SpecError(message, file=source, line=line, column=column) from None
    except yaml.YAMLError as e:
        raise SpecError(f"invalid YAML: {e}".splitlines()[0], file=source) from None
    except RecursionError:
        raise SpecError("the document nests too deeply", file=source) from None
    finally:
        loader.dispose()


def _refuse_binary(text: str, source: str) -> None:
    """A NUL means a binary file (an image, an archive, a pickle), not a mistyped spec."""
    at = text.find("\x00", 0, 8192)
    if at >= 0:
        line, column = _line_col(text, at)
        raise SpecError("not a YAML text file: it holds binary data (a NUL byte)",
                        file=source, line=line, column=column)
