"""The MXNet operator catalogue: which ops a spec may name and which attributes each takes.

Everything here is read from MXNet's own operator registry (the C API behind ``mx.sym``), so a
spec is checked against exactly what the installed MXNet accepts, before anything is built.

Scope of ``list_ops()``: every registered operator that ``mx.sym`` exposes at top level under
a public name, i.e. every name ``getattr(mx.sym, op)`` resolves to a generated operator
function. Aliases are included (``relu`` is its own op; ``flatten``/``Flatten``,
``concat``/``Concat``, ``reshape``/``Reshape``, ``Softmax``/``SoftmaxOutput`` are aliases of
one op) because users copy them from MXNet code and ``mx.sym`` accepts both. Excluded:
``_``-prefixed internals and backward ops, numpy-frontend ops (``_np_*``/``_npi_*``), the
optimizer kernels and gradient bookkeeping ops (see ``_not_a_layer``), and ops
that live only in sub-namespaces (``mx.sym.contrib.*``, ``mx.sym.linalg.*``, ...), since the
builder calls ``getattr(mx.sym, op)``.

Attribute kinds (``ArgInfo.type``), a closed set derived from MXNet's type strings:

    int            "int", "long", with or without "(non-negative)" (the qualifier stays in raw_type)
    int-or-none    "int or None"
    float          "float", "double"
    float-or-none  "float or None", "double or None"
    bool           "boolean"
    bool-or-none   "boolean or None"
    shape          "Shape(tuple)"
    shape-or-none  "Shape or None" (axis arguments: a bare int is accepted, MXNet's own usage)
    float-tuple    "tuple of <float>"
    enum           "{'a', 'b'}" (dtype and layout arguments too; ``choices`` holds the values, and
                   holds 'None' when MXNet accepts None)
    string         "string"
    unknown        a type string this module does not recognise (none in MXNet 1.9.1); values
                   are passed as str() and left to MXNet's parser

``check_attrs`` is only ever given an op's MXNet attributes: symbuilder's own layer keys
(``op``, ``name``, ``inputs``, ``params``) are the caller's to strip first.

Messages follow the house style "expected X, received Y": the Python type is shown in
parentheses when the value's type is wrong ("received 'abc' (str)"), and left out when only the
value is wrong ("received 'maxx'", "received -3").
"""
from __future__ import annotations

import ctypes
import difflib
import functools
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from symbuilder.errors import SpecError

__all__ = [
    "KINDS",
    "ArgInfo",
    "OpInfo",
    "AttrError",
    "list_ops",
    "op_info",
    "check_attrs",
    "suggest",
]

KINDS: Tuple[str, ...] = (
    "int",
    "int-or-none",
    "float",
    "float-or-none",
    "bool",
    "bool-or-none",
    "shape",
    "shape-or-none",
    "float-tuple",
    "enum",
    "string",
    "unknown",
)

# Ops whose extra keyword arguments are legitimately free-form: Custom forwards them, as
# strings, to the user's registered CustomOpProp, so they cannot be listed.
_OPEN_ATTRS = frozenset({"Custom"})

# Ops that are not layers: MXNet's optimizer kernels (`*_update*`, they write into their
# inputs) and its gradient and mixed-precision bookkeeping. Their input count follows a count
# attribute (num_weights, num_arrays, num_outputs) that MXNet never checks against the inputs
# given: a spec composing one with a count that does not match kills the process
# (segmentation fault, found by fuzzing). A spec cannot use them meaningfully, so they are
# refused by name, with the reason.
_OPTIMIZER_KERNEL = re.compile(r"_update(_phase\d)?$")
_NOT_LAYERS = frozenset({"all_finite", "multi_all_finite", "multi_sum_sq", "multi_lars",
                         "reset_arrays", "amp_cast", "amp_multicast"})


def _not_a_layer(name: str) -> Optional[str]:
    """Why `name` is not a layer op, or None."""
    if _OPTIMIZER_KERNEL.search(name):
        return "an optimizer kernel (it updates its inputs in place), not a layer"
    if name in _NOT_LAYERS:
        return "MXNet's gradient or mixed-precision bookkeeping, not a layer"
    return None


# Ops whose MXNet attribute parser has side conditions on the Python side: Custom looks up
# op_type among registered custom ops, which a spec may register later than it is validated.
_NO_PROBE = frozenset({"Custom"})


@dataclass(frozen=True)
class ArgInfo:
    """One attribute of an operator, as MXNet's registry describes it.

    ``default`` is None only when the attribute is required (or when MXNet states no default,
    see ``raw_type``); otherwise it is the string check_attrs would produce for that value
    ("0.001", "True", "()", "max", and "None" for an unset optional).
    """

    name: str
    type: str
    required: bool
    default: Optional[str]
    choices: Optional[Tuple[str, ...]]
    raw_type: str
    description: str


@dataclass(frozen=True)
class OpInfo:
    """An operator as a spec may use it: ``name`` is the public name asked for (an alias stays
    an alias); ``attributes`` are its parameters in MXNet's order, never its tensor inputs."""

    name: str
    description: str
    attributes: Dict[str, ArgInfo]
    inputs: Tuple[str, ...]
    variadic: Optional[str]


class AttrError(SpecError):
    """An op name or attribute MXNet would reject. ``key`` is the attribute at fault, None when
    the op name itself is wrong. A SpecError, so the loader can add file/line/path and the CLI
    exits 2."""

    def __init__(self, key: Optional[str], message: str) -> None:
        super().__init__(message)
        self.key = key


# ---------------------------------------------------------------------------------------------
# Reading MXNet's registry


def _mx():  # type: ignore[no-untyped-def]
    # Imported on first use: importing mxnet costs well over a second, and loading a spec
    # (or printing --help) should not pay for it until an op is actually looked up.
    import mxnet

    return mxnet


def _float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _float_default(text: str, single: bool) -> str:
    """MXNet prints float defaults at float32 precision (momentum 0.9 -> '0.899999976') and some
    double defaults are float32 literals widened (BatchNorm eps -> '0.0010000000474974513').
    Give the short decimal a user would write when the value is really a float32 one."""
    value = float(text)
    if not math.isfinite(value):
        return repr(value)
    try:
        target = _float32(value)
    except OverflowError:
        return repr(value)
    if single or target == value:
        for digits in range(1, 10):
            short = float(f"{target:.{digits}g}")
            if _float32(short) == target:
                return repr(short)
    return repr(value)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _parse_type(raw: str) -> Tuple[str, bool, Optional[str], Optional[Tuple[str, ...]]]:
    """(kind, required, default, choices) from a type string such as
    "int (non-negative), required" or "{'avg', 'max', 'sum'},optional, default='max'"."""
    choices: Optional[Tuple[str, ...]] = None
    if raw.startswith("{"):
        close = raw.index("}")
        choices = tuple(_unquote(c) for c in raw[1:close].split(",") if c.strip())
        base, rest = "enum", raw[close + 1 :]
    else:
        base, _, rest = raw.partition(",")
        base = base.strip()
    flags = [part.strip() for part in rest.split(",") if part.strip()]
    required = "required" in flags
    default_text: Optional[str] = None
    match = re.search(r"default=(.*)$", rest)
    if match:
        default_text = _unquote(match.group(1))

    base = base.replace("(non-negative)", "").strip()
    kind = {
        "enum": "enum",
        "int": "int",
        "long": "int",
        "int or None": "int-or-none",
        "long or None": "int-or-none",
        "float": "float",
        "double": "float",
        "float or None": "float-or-none",
        "double or None": "float-or-none",
        "boolean": "bool",
        "boolean or None": "bool-or-none",
        "Shape(tuple)": "shape",
        "Shape or None": "shape-or-none",
        "tuple of <float>": "float-tuple",
        "string": "string",
    }.get(base, "unknown")

    default: Optional[str] = None
    if default_text is not None:
        if default_text == "None":
            default = "None"
        elif kind in ("float", "float-or-none"):
            default = _float_default(default_text, single=base.startswith("float"))
        elif kind in ("bool", "bool-or-none"):
            default = {"0": "False", "1": "True"}.get(default_text, default_text)
        elif kind in ("shape", "shape-or-none", "float-tuple"):
            inner = default_text.strip("[]()")
            items = [i.strip() for i in inner.split(",") if i.strip()]
            default = "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        else:
            default = default_text
    return kind, required, default, choices


def _is_input(raw_type: str) -> bool:
    # The same rule mx.sym's generated functions use to tell tensor inputs from keywords.
    return raw_type.startswith("NDArray") or raw_type.startswith("Symbol")


def _read_op(handle: Any, public_name: str) -> OpInfo:
    description, args, variadic = _atomic_symbol_info(handle)
    inputs: List[str] = []
    attributes: Dict[str, ArgInfo] = {}
    for name, raw, arg_description in args:
        if _is_input(raw):
            inputs.append(name)
            continue
        kind, required, default, choices = _parse_type(raw)
        attributes[name] = ArgInfo(
            name=name,
            type=kind,
            required=required,
            default=None if required else default,
            choices=choices,
            raw_type=raw,
            description=arg_description,
        )
    if variadic and variadic not in attributes:
        # add_n, ElementWiseSum and khatri_rao name a count argument they never list; MXNet
        # parses it all the same, so a spec may give it like Concat's.
        attributes[variadic] = ArgInfo(
            name=variadic,
            type="int",
            required=True,
            default=None,
            choices=None,
            raw_type="int, required",
            description="Number of inputs (not listed by MXNet for this op; mx.sym sets it from the inputs).",
        )
    return OpInfo(
        name=public_name,
        description=description,
        attributes=attributes,
        inputs=tuple(inputs),
        variadic=variadic,
    )


def _atomic_symbol_info(handle: Any) -> Tuple[str, List[Tuple[str, str, str]], Optional[str]]:
    """MXNet's own record of an op: its description, (name, type string, description) of
    every argument, and the name of its input-count argument (None if it has none)."""
    from mxnet.base import _LIB, check_call, mx_uint, py_str

    real_name = ctypes.c_char_p()
    desc = ctypes.c_char_p()
    num_args = mx_uint()
    arg_names = ctypes.POINTER(ctypes.c_char_p)()
    arg_types = ctypes.POINTER(ctypes.c_char_p)()
    arg_descs = ctypes.POINTER(ctypes.c_char_p)()
    key_var_num_args = ctypes.c_char_p()
    ret_type = ctypes.c_char_p()
    check_call(
        _LIB.MXSymbolGetAtomicSymbolInfo(
            handle,
            ctypes.byref(real_name),
            ctypes.byref(desc),
            ctypes.byref(num_args),
            ctypes.byref(arg_names),
            ctypes.byref(arg_types),
            ctypes.byref(arg_descs),
            ctypes.byref(key_var_num_args),
            ctypes.byref(ret_type),
        )
    )
    args = [(py_str(arg_names[i]), py_str(arg_types[i]), py_str(arg_descs[i]))
            for i in range(int(num_args.value))]
    variadic = py_str(key_var_num_args.value) if key_var_num_args.value else None
    return py_str(desc.value) if desc.value else "", args, variadic or None


@functools.lru_cache(maxsize=None)
def _catalogue() -> Dict[str, Any]:
    """Public op name -> MXNet op handle, read once from the registry."""
    mx = _mx()
    from mxnet.base import _LIB, OpHandle, c_str, check_call, mx_uint, py_str

    plist = ctypes.POINTER(ctypes.c_char_p)()
    size = mx_uint()
    check_call(_LIB.MXListAllOpNames(ctypes.byref(size), ctypes.byref(plist)))
    handles: Dict[str, Any] = {}
    for i in range(size.value):
        name = py_str(plist[i])
        if name.startswith("_"):
            continue
        # Only what the builder can reach: the generated op function at mx.sym top level,
        # not a Python helper that merely shares the name.
        function = getattr(mx.sym, name, None)
        if function is None or function is not getattr(mx.sym.op, name, None):
            continue
        if _not_a_layer(name):
            continue
        handle = OpHandle()
        check_call(_LIB.NNGetOpHandle(c_str(name), ctypes.byref(handle)))
        handles[name] = handle
    return dict(sorted(handles.items()))


@functools.lru_cache(maxsize=None)
def _op_info(name: str) -> OpInfo:
    return _read_op(_catalogue()[name], name)


# ---------------------------------------------------------------------------------------------
# Public API


def suggest(word: str, candidates: Iterable[str]) -> Optional[str]:
    """The closest candidate to a mistyped word, or None. Case is ignored, so 'fullyconnected'
    finds 'FullyConnected'."""
    by_lower: Dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    lowered = str(word).lower()
    if lowered in by_lower:
        return by_lower[lowered]
    close = difflib.get_close_matches(lowered, list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def list_ops() -> List[str]:
    """Every op name a spec may use, sorted (see the module docstring for what is in scope)."""
    return list(_catalogue())


def op_info(name: str) -> OpInfo:
    """The catalogue entry for a public mx.sym op; AttrError(None, ...) for an unknown name."""
    if not isinstance(name, str):
        raise AttrError(None, f"expected an MXNet operator name, received {_received(name)}")
    ops = _catalogue()
    reason = _not_a_layer(name)
    if reason:
        raise AttrError(None, f"'{name}' is {reason}; a spec's layers are network operators")
    if name not in ops:
        guess = suggest(name, ops)
        hint = f"; did you mean '{guess}'?" if guess else f" (not one of the {len(ops)} public mx.sym operators)"
        raise AttrError(None, f"unknown MXNet operator {_quoted(name)}{hint}")
    return _op_info(name)


def check_attrs(op: str, attrs: Mapping[str, Any]) -> Dict[str, str]:
    """Validate YAML-parsed MXNet attributes of one layer; return them as the strings MXNet
    accepts, ready for ``getattr(mx.sym, op)(*inputs, name=..., **converted)``.

    Keys come back unchanged, except ``dtype: null``, which is left out (see _convert's caller).
    The variadic count (``num_args`` of Concat and friends) is never required: mx.sym sets it
    from the number of inputs. After symbuilder's own checks the converted attributes are
    parsed by MXNet itself, so bounds the type strings do not state (Dropout p in [0, 1],
    num_hidden >= 1) are caught here too.
    """
    info = op_info(op)
    if not isinstance(attrs, Mapping):
        raise AttrError(None, f"expected a mapping of attributes for {op}, received {_received(attrs)}")
    converted: Dict[str, str] = {}
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise AttrError(str(key), f"expected an attribute name, received {_received(key)}")
        arg = info.attributes.get(key)
        if arg is None:
            if op in _OPEN_ATTRS:
                converted[key] = _plain_str(value)
                continue
            raise AttrError(key, _unknown_attr_message(info, key))
        text = _convert(arg, value)
        if key == "dtype" and text == "None":
            # mx.sym passes `dtype` through numpy: "None" is a TypeError there and None
            # silently becomes float64. Leaving it out is how MXNet's unset default is kept.
            continue
        converted[key] = text
    for arg in info.attributes.values():
        if arg.required and arg.name not in converted and arg.name != info.variadic:
            raise AttrError(arg.name, f"missing required attribute '{arg.name}' ({_describe(arg)})")
    if op not in _NO_PROBE:
        _probe(op, info, attrs, converted)
    return converted


# ---------------------------------------------------------------------------------------------
# Conversion


def _quoted(name: str) -> str:
    # Names come from the user's YAML: keep control characters and long keys off the line.
    text = f"'{name}'" if name.isprintable() else repr(name)
    return text if len(text) <= 60 else text[:56] + "...'"


def _received(value: Any, with_type: bool = True) -> str:
    text = repr(value)
    if len(text) > 60:  # keep the message one short line whatever the YAML holds
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})" if with_type else text


def _describe(arg: ArgInfo) -> str:
    if arg.type == "enum" and arg.choices:
        return "one of " + ", ".join(f"'{c}'" for c in arg.choices)
    if arg.type == "shape":
        return "shape, a list of ints"
    if arg.type == "shape-or-none":
        return "shape, a list of ints, or null"
    if arg.type == "float-tuple":
        return "a list of floats"
    if arg.type == "int" and "non-negative" in arg.raw_type:
        return "non-negative int"
    if arg.type.endswith("-or-none"):
        return arg.type[: -len("-or-none")] + " or null"
    return arg.type


def _unknown_attr_message(info: OpInfo, key: str) -> str:
    if key in info.inputs:
        return f"'{key}' is an input of {info.name}, not an attribute; connect it through inputs"
    guess = suggest(key, info.attributes)
    if guess:
        return f"unknown attribute {_quoted(key)} for {info.name}; did you mean '{guess}'?"
    if not info.attributes:
        return f"unknown attribute {_quoted(key)} for {info.name}, which takes no attributes"
    return f"unknown attribute {_quoted(key)} for {info.name}; valid attributes: " + ", ".join(info.attributes)


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python; `no_bias: true` given for an int is a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _int_range(raw_type: str) -> Tuple[int, int]:
    # dmlc names int32 "int", int64 "long", and their unsigned forms "(non-negative)".
    bits = 64 if raw_type.startswith("long") else 32
    if "non-negative" in raw_type:
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _as_int(value: Any) -> Optional[int]:
    if _is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


# YAML 1.1 (PyYAML) reads `1e-3` as a string; a float attribute written that way still means 0.001.
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _as_float(value: Any) -> Optional[float]:
    try:
        if isinstance(value, float):
            return value
        if _is_int(value):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
    except OverflowError:
        return None
    return None


def _plain_str(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_plain_str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def _convert(arg: ArgInfo, value: Any) -> str:
    if value is None:
        return _convert_null(arg)
    kind = arg.type[: -len("-or-none")] if arg.type.endswith("-or-none") else arg.type
    converter = _CONVERTERS.get(kind)
    return converter(arg, value) if converter else _plain_str(value)


def _convert_null(arg: ArgInfo) -> str:
    kind = arg.type
    if kind == "bool-or-none" and arg.default not in (None, "None"):
        # These optional bools default to a value and MXNet reads them unchecked: softmax
        # with use_length=None aborts the whole process ("bad optional access").
        raise AttrError(arg.name, "expected bool (true or false), received null")
    if kind.endswith("-or-none") or (kind == "enum" and arg.choices and "None" in arg.choices):
        return "None"
    raise AttrError(arg.name, f"expected {_describe(arg)}, received null")


def _convert_int(arg: ArgInfo, value: Any) -> str:
    number = _as_int(value)
    if number is None:
        raise AttrError(arg.name, f"expected int, received {_received(value)}")
    if number < 0 and "non-negative" in arg.raw_type:
        # MXNet stores these as unsigned: -2 would silently become 4294967294.
        raise AttrError(arg.name, f"expected non-negative int, received {number}")
    low, high = _int_range(arg.raw_type)
    if number < low:
        raise AttrError(arg.name, f"expected int >= {low}, received {number}")
    if number > high:
        raise AttrError(arg.name, f"expected int <= {high}, received {number}")
    return str(number)


def _convert_float(arg: ArgInfo, value: Any) -> str:
    number = _as_float(value)
    if number is None:
        raise AttrError(arg.name, f"expected float, received {_received(value)}")
    return repr(number)


def _convert_bool(arg: ArgInfo, value: Any) -> str:
    if not isinstance(value, bool):
        raise AttrError(arg.name, f"expected bool (true or false), received {_received(value)}")
    return str(value)


def _convert_shape(arg: ArgInfo, value: Any) -> str:
    if arg.type == "shape-or-none" and _is_int(value):
        return f"({value},)"
    # None entries are MXNet's "unset" in slice begin/end; MXNet rejects them elsewhere.
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) or v is None for v in value):
        raise AttrError(arg.name, f"expected {_describe(arg)}, received {_received(value)}")
    return _plain_str(list(value))


def _convert_float_tuple(arg: ArgInfo, value: Any) -> str:
    numbers = [_as_float(v) for v in value] if isinstance(value, (list, tuple)) else [None]
    if any(n is None for n in numbers):
        raise AttrError(arg.name, f"expected a list of floats, received {_received(value)}")
    return _plain_str([repr(n) for n in numbers])


def _convert_enum(arg: ArgInfo, value: Any) -> str:
    choices = arg.choices or ()
    if not isinstance(value, str):
        raise AttrError(arg.name, f"expected {_describe(arg)}, received {_received(value)}")
    if value not in choices:
        raise AttrError(arg.name, f"expected {_describe(arg)}, received {_received(value, False)}")
    return value


def _convert_string(arg: ArgInfo, value: Any) -> str:
    if not isinstance(value, str):
        raise AttrError(arg.name, f"expected string, received {_received(value)}")
    return value


# The attribute kinds _parse_type knows ("-or-none" stripped), each to MXNet's text for it;
# "unknown" kinds pass as plain text and MXNet's own parser judges them (_probe).
_CONVERTERS: Dict[str, Callable[[ArgInfo, Any], str]] = {
    "int": _convert_int, "float": _convert_float, "bool": _convert_bool, "shape": _convert_shape,
    "float-tuple": _convert_float_tuple, "enum": _convert_enum, "string": _convert_string,
}


# ---------------------------------------------------------------------------------------------
# MXNet's own parser as the last word


def _probe(op: str, info: OpInfo, attrs: Mapping[str, Any], converted: Mapping[str, str]) -> None:
    """Create (and free) the bare op node with the converted attributes, which runs MXNet's
    attribute parser; turn its complaint into a one-line AttrError."""
    from mxnet.base import _LIB, MXNetError, SymbolHandle, c_str_array, check_call, mx_uint

    values = dict(converted)
    if info.variadic and info.variadic not in values:
        values[info.variadic] = "1"  # mx.sym fills it in from the inputs; any valid count will do
    handle = _catalogue()[op]
    keys = list(values)
    out = SymbolHandle()
    try:
        check_call(
            _LIB.MXSymbolCreateAtomicSymbol(
                handle,
                mx_uint(len(keys)),
                c_str_array(keys),
                c_str_array([values[k] for k in keys]),
                ctypes.byref(out),
            )
        )
    except MXNetError as e:
        key, message = _explain(str(e), info, attrs, values)
        raise AttrError(key, message) from e
    except UnicodeEncodeError as e:
        raise AttrError(None, f"attribute values must be plain text, received {e.object!r}") from e
    check_call(_LIB.NNSymbolFree(out))


_PARSER_ERRORS = (
    (r"value (\S+) for Parameter (\w+) exceed bound \[([^\]]*)\]", "expected a value in [{2}], received {0}"),
    (r"value (\S+) for Parameter (\w+) should be greater equal to (\S+)", "expected a value >= {2}, received {0}"),
    (r"value (\S+) for Parameter (\w+) should be less equal to (\S+)", "expected a value <= {2}, received {0}"),
)


def _explain(
    text: str, info: OpInfo, attrs: Mapping[str, Any], values: Mapping[str, str]
) -> Tuple[Optional[str], str]:
    """(key, one-line message) from a dmlc parameter error, which spans lines and quotes the
    whole operator call."""
    for pattern, template in _PARSER_ERRORS:
        match = re.search(pattern, text)
        if match:
            value, key = match.group(1), match.group(2)
            return key, template.format(value, key, match.group(3))
    match = re.search(r"Out of range value for (\w+)", text)
    if match:
        key = match.group(1)
        return key, f"value out of range for MXNet, received {_received(attrs.get(key, values.get(key)), False)}"
    match = re.search(r"Invalid Parameter format for (\w+) expect (.+?) but value=", text)
    if match:
        key = match.group(1)
        arg = info.attributes.get(key)
        # Our own checks already passed the Python type, so only the value is wrong (kernel [None, 3]).
        expected = _describe(arg) if arg else match.group(2)
        return key, f"expected {expected}, received {_received(attrs.get(key, values.get(key)), False)}"
    lines = [line for line in text.splitlines() if "MXNetError" in line] or text.splitlines() or [text]
    line = lines[0].split("MXNetError:", 1)[-1]
    line = re.sub(r", in operator .*$", "", line).strip()
    line = re.sub(r"^Check failed: [^:]*: ", "", line)
    key = next((k for k in values if re.search(rf"\b{re.escape(k)}\b", line)), None)
    return key, f"MXNet rejected the attributes: {line}"
