"""The declarative machinery behind the spec: typed fields with docs, parsed with locations.

A spec section is a dataclass whose fields carry metadata made by `field()`. One generic
parser reads every section, and the same metadata generates the JSON Schema and the
README's key reference, so the three cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .catalog_suggest import suggest_text
from .yamlload import Locations, Path

REQUIRED = dataclasses.MISSING
# MXNet 1.9.1's pip wheels index tensors with 32-bit integers (USE_INT64_TENSOR_SIZE=0): the
# one home of that limit (sample shapes here, every tensor of the graph in builder.check_graph).
MAX_TENSOR_ELEMENTS = 2 ** 31
# numpy 1.23's NPY_MAXDIMS is 32 (a 33-D batch fails while the data is read, measured); the
# batch axis takes one.
MAX_SAMPLE_DIMS = 31

# Names that become file names or graph names: no separators, no '..', no control chars.
# Matched with fullmatch: `$` alone would let a trailing newline through.
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def field(kind: Any, doc: str, default: Any = REQUIRED, *, choices: Sequence[Any] = (),
          minimum: Optional[float] = None, maximum: Optional[float] = None,
          exclusive_minimum: bool = False, exclusive_maximum: bool = False,
          default_factory: Optional[Callable[[], Any]] = None, example: Any = None) -> Any:
    """A spec field. `kind` is one of the KINDS below or a section dataclass."""
    meta = dict(kind=kind, doc=doc, choices=tuple(choices), minimum=minimum, maximum=maximum,
                exclusive_minimum=exclusive_minimum, exclusive_maximum=exclusive_maximum,
                example=example)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def describe(value: Any) -> str:
    """How a received value is shown in an error: repr plus its YAML-ish type."""
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


class Reader:
    """Reads typed values out of located YAML data, raising located SpecErrors."""

    def __init__(self, locations: Locations) -> None:
        self.locations = locations

    def fail(self, path: Path, message: str) -> Exception:
        return self.locations.error(path, message)

    # -- scalar kinds -------------------------------------------------------------------
    def read(self, kind: Any, value: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        if dataclasses.is_dataclass(kind):
            return self.section(kind, value, path)
        if isinstance(kind, tuple) and kind[0] == "list":
            return self.list_of(kind[1], value, path, meta)
        reader = getattr(self, f"_read_{kind}")
        result = reader(value, path, meta)
        choices = meta.get("choices") or ()
        if choices and not isinstance(result, list) and result not in choices:
            raise self.fail(path, f"expected one of {', '.join(map(str, choices))}, received "
                                  f"{describe(value)}{suggest_text(str(value), choices)}")
        return result

    def _read_str(self, value: Any, path: Path, meta: Mapping[str, Any]) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, received {describe(value)}")
        return value

    def _read_name(self, value: Any, path: Path, meta: Mapping[str, Any]) -> str:
        if not isinstance(value, str) or not NAME_RE.fullmatch(value) or ".." in value:
            raise self.fail(path, "expected a name of letters, digits, '_', '-' or '.' starting "
                                  f"with a letter or '_' (it names files), received {describe(value)}")
        return value

    def _read_bool(self, value: Any, path: Path, meta: Mapping[str, Any]) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, received {describe(value)}")
        return value

    def _read_int(self, value: Any, path: Path, meta: Mapping[str, Any]) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, received {describe(value)}")
        self._check_range(value, path, meta, "an integer")
        return value

    def _read_float(self, value: Any, path: Path, meta: Mapping[str, Any]) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(path, f"expected a number, received {describe(value)}")
        if not math.isfinite(value):
            raise self.fail(path, f"expected a finite number, received {describe(value)}")
        self._check_range(value, path, meta, "a number")
        return float(value)

    def _check_range(self, value: float, path: Path, meta: Mapping[str, Any], what: str) -> None:
        lo, hi = meta.get("minimum"), meta.get("maximum")
        if lo is not None:
            bad = value <= lo if meta.get("exclusive_minimum") else value < lo
            if bad:
                op = ">" if meta.get("exclusive_minimum") else ">="
                raise self.fail(path, f"expected {what} {op} {lo}, received {describe(value)}")
        if hi is not None:
            bad = value >= hi if meta.get("exclusive_maximum") else value > hi
            if bad:
                op = "<" if meta.get("exclusive_maximum") else "<="
                raise self.fail(path, f"expected {what} {op} {hi}, received {describe(value)}")

    def _read_shape(self, value: Any, path: Path, meta: Mapping[str, Any]) -> Tuple[int, ...]:
        if (not isinstance(value, list) or not value
                or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value)):
            raise self.fail(path, "expected a list of positive integers (one sample, no batch "
                                  f"axis), received {describe(value)}")
        if len(value) > MAX_SAMPLE_DIMS:
            raise self.fail(path, f"a sample of {len(value)} dimensions is one too many: numpy "
                                  f"arrays have at most 32 with the batch axis, so a sample at "
                                  f"most {MAX_SAMPLE_DIMS}")
        size = 1
        for v in value:
            size *= v
        if size >= MAX_TENSOR_ELEMENTS:
            raise self.fail(path, f"a sample of shape {list(value)} has {size} elements; MXNet's "
                                  "pip builds allow fewer than 2^31 per tensor")
        return tuple(value)

    def _read_str_list(self, value: Any, path: Path, meta: Mapping[str, Any]) -> List[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise self.fail(path, f"expected a string or a list of strings, received {describe(value)}")
        out = []
        for i, item in enumerate(items):
            p = path + (i,) if isinstance(value, list) else path
            out.append(self.read("str", item, p, {"choices": meta.get("choices")}))
        return out

    def _read_metric_list(self, value: Any, path: Path, meta: Mapping[str, Any]) -> List[Any]:
        """Metrics: a name, a mapping {name: ..., **constructor keywords}, or a list of them.
        What the names and keywords mean is spec.metrics' to check (it needs MXNet)."""
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(path, "expected a metric name, a mapping {name: ..., ...} or a "
                                  f"list of them, received {describe(value)}")
        out: List[Any] = []
        for i, item in enumerate(items):
            p = path + (i,) if isinstance(value, list) else path
            if isinstance(item, dict):
                entry = self._read_mapping(item, p, {})
                if "name" not in entry:
                    raise self.fail(p, "missing required key 'name' (the metric: acc, "
                                       "top_k_accuracy, f1_macro, ...)")
                self._read_str(entry["name"], p + ("name",), {})
                out.append(entry)
            elif isinstance(item, str) and item:
                out.append(item)
            else:
                raise self.fail(p, "expected a metric name or a mapping {name: ..., ...}, "
                                   f"received {describe(item)}")
        return out

    def _read_int_list(self, value: Any, path: Path, meta: Mapping[str, Any]) -> List[int]:
        if (not isinstance(value, list) or not value
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
            raise self.fail(path, f"expected a list of positive integers, received {describe(value)}")
        return list(value)

    def _read_name_list(self, value: Any, path: Path, meta: Mapping[str, Any]) -> List[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise self.fail(path, f"expected a name or a list of names, received {describe(value)}")
        return [self._read_name(v, path + (i,) if isinstance(value, list) else path, {})
                for i, v in enumerate(items)]

    def _read_mapping(self, value: Any, path: Path, meta: Mapping[str, Any]) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict) or any(not isinstance(k, str) for k in value):
            raise self.fail(path, f"expected a mapping with string keys, received {describe(value)}")
        return dict(value)

    # -- structure ----------------------------------------------------------------------
    def list_of(self, item_kind: Any, value: Any, path: Path, meta: Mapping[str, Any]) -> list:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, received {describe(value)}")
        return [self.read(item_kind, item, path + (i,), {}) for i, item in enumerate(value)]

    def section(self, cls: type, value: Any, path: Path) -> Any:
        """Parse a mapping into the dataclass `cls`; unknown keys get a did-you-mean."""
        if hasattr(cls, "parse"):
            return cls.parse(self, value, path)
        return self.fields_of(cls, value, path, extra_ok=False)[0]

    def fields_of(self, cls: type, value: Any, path: Path, *, extra_ok: bool) -> Tuple[Any, Dict[str, Any]]:
        """Parse the declared fields of `cls` out of `value`; return (instance, the rest)."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, received {describe(value)}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata}
        kwargs: Dict[str, Any] = {}
        rest: Dict[str, Any] = {}
        for key, item in value.items():
            if key not in fields:
                if extra_ok:
                    rest[key] = item
                    continue
                raise self.fail(path + (key,), f"unknown key '{key}'{suggest_text(str(key), fields)}; "
                                               f"known keys: {', '.join(fields)}")
            f = fields[key]
            kwargs[key] = self.read(f.metadata["kind"], item, path + (key,), f.metadata)
        for name, f in fields.items():
            if name not in kwargs and f.default is REQUIRED and f.default_factory is REQUIRED:
                raise self.fail(path, f"missing required key '{name}' ({f.metadata['doc']})")
        return cls(**kwargs), rest


def dump_section(obj: Any) -> Any:
    """A section as plain YAML-able data (all fields, defaults included)."""
    if hasattr(obj, "dump"):
        return obj.dump()
    if dataclasses.is_dataclass(obj):
        return {f.name: dump_section(getattr(obj, f.name))
                for f in dataclasses.fields(obj) if f.metadata and getattr(obj, f.name) is not None}
    if isinstance(obj, (list, tuple)):
        return [dump_section(v) for v in obj]
    if isinstance(obj, dict):
        return {k: dump_section(v) for k, v in obj.items()}
    return obj
