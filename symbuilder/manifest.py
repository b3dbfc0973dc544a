"""What an export's manifest.json must hold, and whether the files agree with it.

`verify` and `predict` trust nothing in a manifest they have not checked: the schema below is
every field they read (written once, as `exporting.write_manifest` and
`pipeline.export_model` write them), and `cross_check` holds the manifest against the files:
the ONNX graph's inputs and output width, the class count, the checkpoint's epoch. A manifest
edited within the schema (classes swapped, atol from 1e-5 to 1e-3) still looks valid: pin
the manifest's sha256 (`verify --manifest-sha256`) for that.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .errors import ExportError

# Parity tolerance bounds (the spec's export.verify.atol has the same). Above 1e-2 a check on
# probabilities in [0, 1] passes a different model (docs/mxnet-traps.md: real MXNet-vs-ORT
# disagreements are <= ~2e-4 of the output range, so 1e-2 leaves 50x headroom). 0 (bit-exact)
# is the strictest check there is, never a loosening, so it stays allowed.
ATOL_MAX = 1e-2
RTOL_MAX = 1e-2

Check = Callable[[Any, str], None]


class ManifestFieldError(Exception):
    """One field of the manifest is wrong: `field` is its path (`inputs[0].shape`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return (text if len(text) <= 60 else text[:57] + "...") + f" ({_kind(value)})"


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _fail(where: str, expected: str, value: Any) -> None:
    raise ManifestFieldError(where, f"expected {expected}, received {_show(value)}")


# --- the building blocks --------------------------------------------------------------------

def text(pattern: Optional[str] = None, what: str = "a non-empty string") -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, str) or not value or \
                (pattern and not re.fullmatch(pattern, value)):
            _fail(where, what, value)
    return check


def integer(minimum: int = 0) -> Check:
    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            _fail(where, f"an integer >= {minimum}", value)
    return check


def number(low: float, high: float, *, low_included: bool = False) -> Check:
    """A finite number in (low, high], or [low, high]."""
    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or not (low <= value if low_included else low < value) \
                or not value <= high:
            _fail(where, f"a number in {'[' if low_included else '('}{low:g}, {high:g}]", value)
    return check


def boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        _fail(where, "true or false", value)


def scalar(value: Any, where: str) -> None:
    """A class value: what a label column holds (string, integer, finite number, boolean)."""
    if not isinstance(value, (str, int, float)) or \
            (isinstance(value, float) and not math.isfinite(value)):
        _fail(where, "a string or a number", value)


def finite(value: Any, where: str) -> None:
    number(-math.inf, math.inf)(value, where)


def nested_numbers(value: Any, where: str) -> None:
    """A list of finite numbers, or of such lists (one sample's values, per feature)."""
    if not isinstance(value, list):
        _fail(where, "a list of numbers", value)
    for i, v in enumerate(value):
        (nested_numbers if isinstance(v, list) else finite)(v, f"{where}[{i}]")


def _flat(value: Any) -> List[float]:
    return [x for v in value for x in (_flat(v) if isinstance(v, list) else [v])]


def nullable(check: Check) -> Check:
    def inner(value: Any, where: str) -> None:
        if value is not None:
            check(value, where)
    return inner


def items(check: Check, *, min_len: int = 0, unique: bool = False) -> Check:
    def inner(value: Any, where: str) -> None:
        if not isinstance(value, list) or len(value) < min_len:
            _fail(where, f"a list of at least {min_len} item(s)" if min_len else "a list", value)
        for i, item in enumerate(value):
            check(item, f"{where}[{i}]")
        if unique:
            seen = [json.dumps(v, sort_keys=True) for v in value]
            dup = next((v for i, v in enumerate(seen) if v in seen[:i]), None)
            if dup is not None:
                raise ManifestFieldError(where, f"{dup} appears twice")
    return inner


def table(check: Check, key: Check = text()) -> Check:
    """A JSON object whose every value passes `check` (keys pass `key`)."""
    def inner(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            _fail(where, "an object", value)
        for k, v in value.items():
            key(k, f"{where} key")
            check(v, f"{where}.{k}")
    return inner


def record(required: Mapping[str, Check], optional: Mapping[str, Check] = {}) -> Check:
    """A JSON object with these keys (others are kept, and ignored)."""
    def inner(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            _fail(where or "manifest", "an object", value)
        prefix = f"{where}." if where else ""
        for key, check in required.items():
            if key not in value:
                raise ManifestFieldError(f"{prefix}{key}", "missing")
            check(value[key], f"{prefix}{key}")
        for key, check in optional.items():
            if key in value:
                check(value[key], f"{prefix}{key}")
    return inner


def shape(value: Any, where: str) -> None:
    """["batch", d1, ...] or [n, d1, ...]: a symbolic or fixed batch axis, then sizes >= 1."""
    ok = isinstance(value, list) and len(value) >= 1 and \
        (value[0] == "batch" or (type(value[0]) is int and value[0] >= 1)) and \
        all(type(d) is int and d >= 1 for d in value[1:])
    if not ok:
        _fail(where, 'a shape ["batch", d1, ...] with sizes >= 1', value)


# A plain file name inside the export folder: no separator, no "..", no hidden file.
PLAIN_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*"
# A path inside the export: plain names joined by "/" (triton/<name>/1/model.onnx).
RELATIVE_PATH = rf"{PLAIN_NAME}(/{PLAIN_NAME})*"


def _no_dots(check: Check) -> Check:
    def inner(value: Any, where: str) -> None:
        check(value, where)
        if any(part in (".", "..") or part.strip(".") == "" for part in value.split("/")):
            _fail(where, "a path inside the export folder", value)
    return inner


plain_name = _no_dots(text(PLAIN_NAME, "a plain file name inside the export folder"))
relative_path = _no_dots(text(RELATIVE_PATH, "a relative path inside the export folder"))

# --- the manifest ---------------------------------------------------------------------------

SCHEMA = record({
    "name": text(),
    "epoch": integer(0),
    "inputs": items(record({"name": text(), "shape": shape,
                            "dtype": text("float32|uint8", '"float32" or "uint8"'),
                            "columns": items(text())}), min_len=1),
    "outputs": items(record({"name": text(), "shape": shape, "dtype": text()},
                            {"meaning": text()}), min_len=1),
    "label": nullable(text()),
    "classes": nullable(items(scalar, min_len=1, unique=True)),
    "feature_names": items(text(), unique=True),
    "files": table(record({"sha256": text("[0-9a-f]{64}", "64 hex digits"),
                           "bytes": integer(0)}), key=relative_path),
}, {
    "checkpoint": record({"symbol": text(PLAIN_NAME + "-symbol\\.json",
                                         "a plain file name <prefix>-symbol.json"),
                          "params": plain_name}),
    "onnx": record({"file": plain_name}, {"opset": integer(1), "dynamic_batch": boolean}),
    "parity": record({"atol": number(0.0, ATOL_MAX, low_included=True),
                      "inputs": table(record({"samples": integer(1)}, {"seed": integer(0)}))},
                     {"rtol": nullable(number(0.0, RTOL_MAX, low_included=True)),
                      "random_range": nullable(table(record({"low": nested_numbers,
                                                             "high": nested_numbers})))}),
    "triton": record({"files": items(relative_path)}),
    "image_decoding": record({"shape": items(integer(1), min_len=3),
                              "resize": nullable(integer(1)), "inter_method": integer(0)},
                             {"label_width": integer(1), "convert_channels": boolean}),
    "spec": record({}),
})


def check_schema(manifest: Any) -> None:
    """Raise ManifestFieldError for the first field that is missing or of the wrong type."""
    SCHEMA(manifest, "")


def check_consistent(manifest: Mapping[str, Any]) -> None:
    """What the fields say about each other (no file read): unique input names, each input's
    columns fill its shape and are feature names, the class count fits the output width, the
    params file is the manifest's epoch, every model file is hashed in `files`, parity is
    recorded when there is an ONNX model."""
    names = [i["name"] for i in manifest["inputs"]]
    if len(set(names)) != len(names):
        raise ManifestFieldError("inputs", f"input names {names} repeat")
    features = set(manifest["feature_names"])
    for k, item in enumerate(manifest["inputs"]):
        per_sample = math.prod(item["shape"][1:])
        if item["columns"] and len(item["columns"]) != per_sample:
            raise ManifestFieldError(f"inputs[{k}].columns", f"{len(item['columns'])} columns "
                                     f"for samples of shape {item['shape'][1:]}")
        stray = [c for c in item["columns"] if c not in features]
        if stray:
            raise ManifestFieldError(f"inputs[{k}].columns", f"{stray[0]!r} is not in "
                                     "feature_names")
    width = math.prod(manifest["outputs"][0]["shape"][1:])
    classes = manifest["classes"]
    if manifest["outputs"][0].get("meaning") == "class probabilities" and classes is None:
        raise ManifestFieldError("classes", "a classifier's export needs its class list")
    if classes is not None and len(classes) > width:
        raise ManifestFieldError("classes", f"{len(classes)} classes, but the model outputs "
                                 f"{width} values per sample")
    _check_model_entries(manifest)
    _check_random_range(manifest)


def _check_random_range(manifest: Mapping[str, Any]) -> None:
    """The recorded range decides which random samples verify draws: one low <= high pair
    per feature of every input."""
    ranges = (manifest.get("parity") or {}).get("random_range")
    for item in manifest["inputs"] if ranges else []:
        where = f"parity.random_range.{item['name']}"
        if item["name"] not in ranges:
            raise ManifestFieldError(where, "missing")
        low, high = _flat(ranges[item["name"]]["low"]), _flat(ranges[item["name"]]["high"])
        n = math.prod(item["shape"][1:])
        if len(low) != n or len(high) != n or any(lo > hi for lo, hi in zip(low, high)):
            raise ManifestFieldError(where, f"expected {n} low <= high values (one per "
                                     f"feature of input '{item['name']}')")


def _check_model_entries(manifest: Mapping[str, Any]) -> None:
    files = manifest["files"]
    ckpt = manifest.get("checkpoint")
    if ckpt:
        prefix = ckpt["symbol"][: -len("-symbol.json")]
        want = f"{prefix}-{manifest['epoch']:04d}.params"
        if ckpt["params"] != want:
            raise ManifestFieldError("checkpoint.params", f"expected {want!r} (epoch "
                                     f"{manifest['epoch']}), received {ckpt['params']!r}")
    models = [("checkpoint.symbol", (ckpt or {}).get("symbol")),
              ("checkpoint.params", (ckpt or {}).get("params")),
              ("onnx.file", (manifest.get("onnx") or {}).get("file"))]
    for field, name in models:
        if name and name not in files:
            raise ManifestFieldError(field, f"{name!r} is not listed (with its sha256) in files")
    if (manifest.get("onnx") or manifest.get("triton")) and "parity" not in manifest:
        raise ManifestFieldError("parity", "missing (an export with an ONNX model records its "
                                 "parity check and its atol)")


def check_onnx_graph(manifest: Mapping[str, Any], graph_inputs: Sequence[Any],
                     graph_outputs: Sequence[Any], model_file: str) -> None:
    """The ONNX model's inputs (names, order, sample shapes) and its first output's width are
    what the manifest says. `graph_*` are onnx ValueInfoProtos."""
    declared = [(i["name"], i["shape"][1:]) for i in manifest["inputs"]]
    found = [(v.name, _dims(v)[1:]) for v in graph_inputs]
    if found != declared:
        raise ManifestFieldError("inputs", f"{model_file} takes "
                                 f"{_pairs(found)}, the manifest says {_pairs(declared)}")
    if not graph_outputs:
        raise ManifestFieldError("outputs", f"{model_file} has no output")
    width = manifest["outputs"][0]["shape"][1:]
    got = _dims(graph_outputs[0])[1:]
    if got != width:
        raise ManifestFieldError("outputs[0].shape", f"{model_file} outputs samples of shape "
                                 f"{got}, the manifest says {width}")


def _dims(value_info: Any) -> List[Any]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in value_info.type.tensor_type.shape.dim]


def _pairs(pairs: Sequence[Any]) -> str:
    return ", ".join(f"{n} {list(s)}" for n, s in pairs) or "nothing"


def located(path: str, error: ManifestFieldError) -> ExportError:
    """The ExportError (exit 1: the export failed its check) naming the manifest and field."""
    return ExportError(f"{path}: {error}")


def declared_links(manifest: Mapping[str, Any]) -> Dict[str, str]:
    """The one symlink an export may hold, link name -> target name: the deploy symbol's
    `<name>-deploy-NNNN.params`, pointing at the checkpoint's params file beside it, so that
    `mx.model.load_checkpoint("<name>-deploy", N)` works without storing the bytes twice.
    Both must be plain file names (no folder part), so the link cannot lead out of the folder."""
    deploy = manifest.get("deploy")
    if not isinstance(deploy, Mapping):
        return {}
    link, target = deploy.get("params_link"), deploy.get("params")
    if not (isinstance(link, str) and isinstance(target, str)) or link == target:
        return {}
    if any("/" in n or os.sep in n or n in ("", ".", "..") for n in (link, target)):
        return {}
    return {link: target}


def inside(folder: str, name: str, links: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why `name` (relative) is not a regular file inside `folder`, or None when it is: a
    symlink (an export holds regular files only, so nothing is read from outside it), except
    a link in `links` (see declared_links) whose text is exactly its declared target."""
    path = os.path.join(folder, name)
    root = os.path.realpath(folder)
    target = (links or {}).get(name)
    if target is not None and os.path.islink(path):
        if os.readlink(path) != target or os.path.islink(os.path.join(folder, target)):
            return f"is a symlink that does not point at {target} beside it"
        path = os.path.join(folder, target)
        name = target
    if os.path.realpath(path) != os.path.join(root, *name.split("/")) or os.path.islink(path):
        return "is a symlink (an export holds regular files only)"
    if not os.path.isfile(path):
        return "missing"
    return None


def sha256_matches(pinned: str, actual: str) -> bool:
    return pinned.strip().lower() == actual


def parse_json(data: bytes) -> Dict[str, Any]:
    """The manifest's JSON object, or ValueError (bad bytes, bad JSON, not an object, NaN)."""
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    value = json.loads(data.decode("utf-8"), parse_constant=no_constants)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, found {_kind(value)}")
    return value
