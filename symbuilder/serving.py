"""Serving-side use of checkpoints and export folders: any Module checkpoint to a verified ONNX
file, the parity suite every export runs, Triton layouts, CSV prediction, export verification.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import re
import sys
import tempfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, TextIO, Tuple

import numpy as np

from . import exporting
from . import manifest as manifest_check
from .errors import DataError, ExportError, UsageError

DEFAULT_SEED = 0
DEFAULT_RANDOM_SAMPLES = 64
TRITON_MAX_BATCH = 64  # max_batch_size written into config.pbtxt for a dynamic batch axis
_INPUT_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.:-]*)=(\d+(?:,\d+)*)$")


# --------------------------------------------------------------------------------------------
# Checkpoints and --input


def parse_input(text: str) -> Tuple[str, Tuple[int, ...]]:
    """'data=1,3,32,32' -> ('data', (1, 3, 32, 32)); UsageError otherwise."""
    match = _INPUT_RE.match(text.replace(" ", ""))
    if not match or any(int(d) <= 0 for d in match.group(2).split(",")):
        raise UsageError(f"--input {text!r}: expected NAME=D0,D1,... with positive dims, batch "
                         "axis first, e.g. data=1,3,32,32")
    return match.group(1), tuple(int(d) for d in match.group(2).split(","))


def checkpoint_files(prefix: str, epoch: int) -> Tuple[str, str]:
    return f"{prefix}-symbol.json", f"{prefix}-{epoch:04d}.params"


def load_checkpoint(prefix: str, epoch: int):
    """(symbol, arg_params, aux_params) of a Module checkpoint; a UsageError naming the file
    that is missing or unreadable."""
    import mxnet as mx
    from .errors import mxnet_message
    symbol_file, params_file = checkpoint_files(prefix, epoch)
    for path in (symbol_file, params_file):
        if not os.path.isfile(path):
            others = _sibling_params(prefix) if path == params_file else []
            hint = f" (epochs present: {', '.join(others)})" if others else ""
            raise UsageError(f"no such checkpoint file{hint}", file=path)
    try:
        text = read_symbol_json(symbol_file)
        with _cxx_log_silenced():  # "Loading symbol saved by previous version ..." (C++ INFO)
            symbol = mx.sym.load_json(text)
    except mx.base.MXNetError as e:
        raise UsageError(f"not a readable MXNet symbol file: {mxnet_message(e)}",
                         file=symbol_file) from None
    try:
        saved = mx.nd.load(params_file)
    except mx.base.MXNetError as e:
        raise UsageError(f"not a readable MXNet params file: {mxnet_message(e)}",
                         file=params_file) from None
    arg_params, aux_params = {}, {}
    for key, value in (saved.items() if isinstance(saved, dict) else []):
        kind, _, name = key.partition(":")
        if kind == "arg":
            arg_params[name] = value
        elif kind == "aux":
            aux_params[name] = value
    if not arg_params and not aux_params:
        raise UsageError("no arg:/aux: parameters in this file (not written by "
                         "Module.save_checkpoint?)", file=params_file)
    return symbol, arg_params, aux_params


@contextlib.contextmanager
def _cxx_log_silenced() -> Iterator[None]:
    """MXNet's C++ log lines go to file descriptor 2 directly; for one short call that only
    logs (its errors come back as exceptions), point it at /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def read_symbol_json(path: str) -> str:
    """The text of an MXNet symbol file, checked before MXNet parses it: UTF-8 JSON with a
    node list in which every input refers to an earlier node (MXNet writes them in
    topological order; a later or missing one is a cycle or a dangling edge), and heads and
    arg_nodes that name nodes. A UsageError naming the file otherwise."""
    def bad(message: str) -> UsageError:
        return UsageError(f"not a readable MXNet symbol file: {message}", file=path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        graph = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"not UTF-8 JSON ({e})") from None
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, list) or not nodes:
        raise bad("expected a JSON object with a non-empty 'nodes' list")
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("op"), str) or \
                not isinstance(node.get("name"), str):
            raise bad(f"nodes[{i}]: expected an object with 'op' and 'name' strings")
        for edge in node.get("inputs", []):
            if not _edge_to(edge, i):
                raise bad(f"nodes[{i}] ('{node['name']}'): input {json.dumps(edge)} is not "
                          f"an earlier node (a cycle or a missing node)")
    for key in ("heads", "arg_nodes"):
        refs = graph.get(key, [])
        ok = isinstance(refs, list) and all(
            _edge_to(r, len(nodes)) if key == "heads" else _index_below(r, len(nodes))
            for r in refs)
        if not ok or (key == "heads" and not refs):
            raise bad(f"{key}: expected references to the {len(nodes)} nodes, found "
                      f"{json.dumps(refs)[:60]}")
    return data.decode("utf-8")


def _index_below(value: Any, limit: int) -> bool:
    return type(value) is int and 0 <= value < limit


def _edge_to(edge: Any, limit: int) -> bool:
    """[node, output(, version)] with node < limit and non-negative integers."""
    return isinstance(edge, list) and len(edge) in (2, 3) and _index_below(edge[0], limit) and \
        all(type(v) is int and v >= 0 for v in edge[1:])


def _sibling_params(prefix: str) -> List[str]:
    folder = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix)
    pattern = re.compile(re.escape(base) + r"-(\d{4})\.params$")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(m.group(1) for m in map(pattern.match, names) if m)


# --------------------------------------------------------------------------------------------
# Parity: held-out samples plus random ones, ORT with all optimisations and none, batch 1 and N


def feature_range(samples: np.ndarray) -> Dict[str, List[Any]]:
    """Per-feature (per element of one sample) min and max over the samples."""
    samples = np.asarray(samples, dtype=np.float64)
    return {"low": samples.min(axis=0).tolist(), "high": samples.max(axis=0).tolist()}


def random_inputs(shapes: Mapping[str, Sequence[int]], n: int, *, seed: int = DEFAULT_SEED,
                  ranges: Optional[Mapping[str, Mapping[str, Any]]] = None
                  ) -> Dict[str, np.ndarray]:
    """`n` random samples per input (float32): uniform over the per-feature [low, high] of
    `ranges[name]` when given, standard normal otherwise. Same seed, same samples."""
    rng = np.random.RandomState(seed)
    out = {}
    for name in sorted(shapes):
        sample_shape = tuple(int(d) for d in shapes[name])
        rnge = (ranges or {}).get(name)
        if rnge is not None:
            low = np.asarray(rnge["low"], dtype=np.float64).reshape(sample_shape)
            high = np.asarray(rnge["high"], dtype=np.float64).reshape(sample_shape)
            values = low + (high - low) * rng.random_sample((n,) + sample_shape)
        else:
            values = rng.standard_normal((n,) + sample_shape)
        out[name] = values.astype(np.float32)
    return out


def parity_suite(symbol: Any, arg_params: Mapping, aux_params: Mapping, model: Any, *,
                 atol: float, held_out: Optional[Mapping[str, np.ndarray]] = None,
                 sample_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                 random_samples: int = DEFAULT_RANDOM_SAMPLES, seed: int = DEFAULT_SEED,
                 ranges: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """ONNX Runtime (all graph optimisations, and none) against MXNet at batch 1 and the full
    batch, on the held-out samples and on random samples; the figures, as the manifest keeps
    them. Random samples are drawn uniformly over the held-out samples' per-feature range
    (or over `ranges`, or standard normal when neither is known)."""
    from .verify import verify_parity
    model_bytes = _model_bytes(model)
    held_out = {k: np.ascontiguousarray(v) for k, v in (held_out or {}).items()}
    if ranges is None and held_out:
        ranges = {k: feature_range(v) for k, v in held_out.items()}
    if sample_shapes is None:
        sample_shapes = {k: v.shape[1:] for k, v in held_out.items()}
    checks: Dict[str, Dict[str, Any]] = {}
    details: List[Dict[str, Any]] = []
    sets = []
    if held_out:
        sets.append(("held_out", held_out))
    if random_samples > 0:
        sets.append(("random", random_inputs(sample_shapes, random_samples, seed=seed,
                                             ranges=ranges)))
    if not sets:
        raise ValueError("parity_suite needs held-out samples or random_samples > 0")
    fixed = _fixed_batch(model_bytes)
    for label, inputs in sets:
        n = min(len(v) for v in inputs.values())
        if fixed and fixed > 1:
            rows = _fixed_batch_parity(symbol, arg_params, aux_params, model_bytes, inputs,
                                       fixed, atol)
        else:
            rows = verify_parity(symbol, arg_params, aux_params, model_bytes, inputs,
                                 atol=atol).details
        checks[label] = {"samples": n, "max_abs": max(r["max_abs"] for r in rows),
                         "max_rel": max(r["max_rel"] for r in rows),
                         "passed": bool(rows) and all(r["passed"] for r in rows)}
        details.extend(dict(row, inputs=label) for row in rows)
    if "random" in checks:
        checks["random"].update(
            seed=seed, distribution="uniform over the per-feature [low, high] in random_range"
            if ranges else "standard normal")
    return {
        "passed": all(c["passed"] for c in checks.values()),
        "atol": atol,
        "max_abs": max(c["max_abs"] for c in checks.values()),
        "max_rel": max(c["max_rel"] for c in checks.values()),
        "ort_levels": ["ORT_ENABLE_ALL", "ORT_DISABLE_ALL"],
        "batches": sorted({d["batch"] for d in details}),
        "inputs": checks,
        "random_range": {k: dict(v) for k, v in ranges.items()} if ranges else None,
        "details": details,
    }


def _fixed_batch(model_bytes: bytes) -> Optional[int]:
    """The batch size an ONNX model is fixed to (first dim of its first input), or None."""
    import onnx
    model = onnx.load_from_string(model_bytes)
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") else None


def _fixed_batch_parity(symbol: Any, arg_params: Mapping, aux_params: Mapping,
                        model_bytes: bytes, inputs: Mapping[str, np.ndarray], batch: int,
                        atol: float) -> List[Dict[str, Any]]:
    """verify_parity's rows for a model that only takes `batch` samples at a time: every
    chunk of `batch` (the last one padded by repeating its last sample), both ORT levels."""
    from .verify import _compare, mxnet_forward, onnx_forward
    n = min(len(v) for v in inputs.values())
    rows = []
    for optimize in (True, False):
        level = "ORT_ENABLE_ALL" if optimize else "ORT_DISABLE_ALL"
        worst: Dict[str, Dict[str, Any]] = {}
        for start in range(0, n, batch):
            feed = {}
            for k, v in inputs.items():
                chunk = v[start:start + batch]
                pad = batch - len(chunk)
                feed[k] = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) \
                    if pad else chunk
            reference = mxnet_forward(symbol, arg_params, aux_params, feed)
            got = onnx_forward(model_bytes, feed, optimize=optimize)
            for name, ref, out in zip(symbol.list_outputs(), reference, got):
                row = _compare(ref, np.asarray(out), atol, 0.0)
                agg = worst.setdefault(name, {"max_abs": 0.0, "max_rel": 0.0, "passed": True})
                agg["max_abs"] = max(agg["max_abs"], row["max_abs"])
                agg["max_rel"] = max(agg["max_rel"], row["max_rel"])
                agg["passed"] = agg["passed"] and row["passed"]
        rows += [dict({"output": k, "batch": batch, "ort_level": level}, **v)
                 for k, v in worst.items()]
    return rows


def parity_or_fail(symbol: Any, arg_params: Mapping, aux_params: Mapping, model: Any, *,
                   atol: float, **kwargs: Any) -> Dict[str, Any]:
    """parity_suite, raising ExportError with the figures when ONNX Runtime disagrees."""
    figures = parity_suite(symbol, arg_params, aux_params, model, atol=atol, **kwargs)
    if not figures["passed"]:
        worst = max(figures["details"], key=lambda d: d["max_abs"])
        parts = ", ".join(f"{k}: {c['max_abs']:.3g} on {c['samples']} samples"
                          for k, c in figures["inputs"].items())
        raise ExportError(
            f"ONNX Runtime disagrees with MXNet: max abs difference {figures['max_abs']:.3g} > "
            f"atol {atol:g} (max rel {figures['max_rel']:.3g}; {parts}; worst: output "
            f"'{worst['output']}' at batch {worst['batch']}, {worst['ort_level']}, "
            f"{worst['inputs']} inputs)")
    return figures


def _model_bytes(model: Any) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, str):
        with open(model, "rb") as f:
            return f.read()
    return model.SerializeToString()


# --------------------------------------------------------------------------------------------
# symbuilder export PREFIX EPOCH


def export_checkpoint(prefix: str, epoch: int, input_shapes: Mapping[str, Sequence[int]], *,
                      out: Optional[str] = None, opset: int = 17, atol: float = 1e-5,
                      dynamic_batch: bool = True, data: Optional[Mapping[str, np.ndarray]] = None,
                      random_samples: int = 16, seed: int = DEFAULT_SEED) -> Dict[str, Any]:
    """Translate any Module checkpoint to ONNX, verify it against MXNet, write it atomically.

    `input_shapes` gives each data input's full shape, batch axis first. `data` (optional) holds
    real samples per input; random samples are always added (uniform over the real samples'
    per-feature range, or standard normal without data). Raises UsageError for a missing or
    unreadable checkpoint, wrong inputs or an untranslatable graph (the user's checkpoint:
    exit 2), ExportError when ONNX Runtime disagrees (exit 1). Returns the report.
    """
    from .onnx import to_onnx
    symbol, arg_params, aux_params = load_checkpoint(prefix, epoch)
    symbol_file = checkpoint_files(prefix, epoch)[0]
    if not input_shapes:
        raise UsageError("give each data input's shape, e.g. --input data=1,3,32,32")
    free = [a for a in symbol.list_arguments() if a not in arg_params]
    for name in input_shapes:
        if name not in free:
            why = "a parameter" if name in arg_params else "not an input"
            raise UsageError(f"--input {name}: {why} of {symbol_file} (its inputs: "
                             f"{', '.join(free) or 'none'})")
    out = out or f"{prefix}-{epoch:04d}.onnx"
    if os.path.isdir(out):
        raise UsageError("is a folder; --out takes the .onnx file to write", file=out)
    params = exporting.to_numpy_params(arg_params, aux_params)
    _check_shapes(symbol, params, input_shapes, symbol_file)
    try:
        model = to_onnx(symbol, params, input_shapes, opset=opset, dynamic_batch=dynamic_batch,
                        model_name=os.path.basename(prefix))
    except ExportError as e:
        # Untranslatable op, bad attribute, shapes MXNet rejects: all about the user's files.
        raise UsageError(str(e).replace("input_shapes", "--input"), file=symbol_file) from None
    model_bytes = model.SerializeToString()
    held_out = None
    if data:
        held_out = {}
        for name, values in data.items():
            want = tuple(input_shapes[name][1:])
            values = np.asarray(values, dtype=np.float32)
            if int(np.prod(values.shape[1:])) != int(np.prod(want)):
                raise UsageError(f"--data: {values.shape[1:]} values per sample for input "
                                 f"'{name}', whose sample shape is {want}")
            held_out[name] = values.reshape((len(values),) + want)
    sample_shapes = {k: tuple(v[1:]) for k, v in input_shapes.items()}
    figures = parity_or_fail(symbol, arg_params, aux_params, model_bytes, atol=atol,
                             held_out=held_out, sample_shapes=sample_shapes,
                             random_samples=random_samples, seed=seed)
    _atomic_write(out, model_bytes)
    return {"onnx": out, "checkpoint": {"symbol": symbol_file,
                                        "params": checkpoint_files(prefix, epoch)[1]},
            "inputs": {k: list(v) for k, v in input_shapes.items()},
            "outputs": [o.name for o in model.graph.output], "opset": opset,
            "dynamic_batch": dynamic_batch, "parity": figures}


def _check_shapes(symbol: Any, params: Mapping[str, np.ndarray],
                  input_shapes: Mapping[str, Sequence[int]], symbol_file: str) -> None:
    """A UsageError naming the operator when MXNet rejects the --input shapes."""
    import mxnet as mx
    from .errors import mxnet_message
    known = {k: v.shape for k, v in params.items() if k in symbol.list_arguments()}
    known.update({k: tuple(v) for k, v in input_shapes.items()})
    try:
        symbol.infer_shape_partial(**known)
    except mx.base.MXNetError as e:
        op = re.search(r"Error in operator ([^:\s]+):", str(e))
        where = f"operator '{op.group(1)}' rejects " if op else "MXNet rejects "
        given = ", ".join(f"{k}={','.join(map(str, v))}" for k, v in input_shapes.items())
        raise UsageError(f"--input {given}: {where}the shapes: {mxnet_message(e)}",
                         file=symbol_file) from None


def _atomic_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------------------------
# Triton model repository


_TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32",
                 7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64"}


def triton_config(model: Any, name: str, *, max_batch_size: int = TRITON_MAX_BATCH) -> str:
    """config.pbtxt for the ONNX model, read off the model's own inputs and outputs. With a
    symbolic batch axis (dim 0 on every input and output), max_batch_size is set and dims omit
    it; otherwise max_batch_size is 0 and dims are the full fixed shapes."""
    import onnx
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load_from_string(_model_bytes(model))
    values = list(model.graph.input) + list(model.graph.output)
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else -1
                     for d in v.type.tensor_type.shape.dim] for v in values}
    batched = all(dims[v.name] and dims[v.name][0] == -1 for v in values)
    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"',
             f"max_batch_size: {max_batch_size if batched else 0}"]
    for section, entries in (("input", model.graph.input), ("output", model.graph.output)):
        blocks = []
        for v in entries:
            elem = v.type.tensor_type.elem_type
            if elem not in _TRITON_TYPES:
                raise ExportError(f"{section} '{v.name}' has ONNX element type {elem}, which "
                                  "the Triton layout does not map")
            shape = dims[v.name][1:] if batched else dims[v.name]
            blocks.append(f'  {{\n    name: "{v.name}"\n    data_type: {_TRITON_TYPES[elem]}\n'
                          f"    dims: [ {', '.join(str(d) for d in shape)} ]\n  }}")
        lines.append(f"{section} [\n" + ",\n".join(blocks) + "\n]")
    return "\n".join(lines) + "\n"


def write_triton(folder: str, name: str, model_bytes: bytes, *,
                 max_batch_size: int = TRITON_MAX_BATCH) -> List[str]:
    """triton/<name>/config.pbtxt and triton/<name>/1/model.onnx under `folder`; the paths
    written, relative to `folder`."""
    base = os.path.join(folder, "triton", name)
    os.makedirs(os.path.join(base, "1"), exist_ok=True)
    with open(os.path.join(base, "config.pbtxt"), "w") as f:
        f.write(triton_config(model_bytes, name, max_batch_size=max_batch_size))
    with open(os.path.join(base, "1", "model.onnx"), "wb") as f:
        f.write(model_bytes)
    return [f"triton/{name}/config.pbtxt", f"triton/{name}/1/model.onnx"]


# --------------------------------------------------------------------------------------------
# symbuilder predict


@dataclasses.dataclass
class Predictions:
    """One row per input row: `columns` names the output columns; `values` (N, K) float32;
    `classes` the predicted class value per row (classification only)."""
    columns: List[str]
    values: np.ndarray
    classes: Optional[List[Any]] = None

    def write_csv(self, stream: TextIO) -> None:
        writer = csv.writer(stream, lineterminator="\n")
        head = (["class"] if self.classes is not None else []) + self.columns
        writer.writerow(head)
        for i, row in enumerate(self.values):
            cells = [f"{float(v):.9g}" for v in row]  # 9 digits: float32 round-trips
            writer.writerow(([self.classes[i]] if self.classes is not None else []) + cells)


def read_manifest(folder: str) -> Dict[str, Any]:
    """The manifest's JSON object, unchecked. A path that is not an export (no folder, no
    manifest) is a UsageError (exit 2); a manifest that is not a JSON object is an export that
    fails its check: ExportError (exit 1)."""
    path = os.path.join(folder, exporting.MANIFEST)
    if not os.path.isdir(folder):
        raise UsageError("no such export folder", file=folder)
    if not os.path.isfile(path) or os.path.islink(path):
        raise UsageError(f"not an export folder: no {exporting.MANIFEST}", file=folder)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return manifest_check.parse_json(data)
    except ValueError as e:  # UnicodeDecodeError and json's errors included
        raise ExportError(f"{path}: not a readable manifest: {e}") from None


def load_export(folder: str, *, manifest_sha256: Optional[str] = None) -> Dict[str, Any]:
    """The manifest of an export folder, checked: the pinned sha256 when given, then every
    field verify and predict rely on (symbuilder.manifest). ExportError naming the manifest
    and the field otherwise."""
    manifest = read_manifest(folder)
    path = os.path.join(folder, exporting.MANIFEST)
    if manifest_sha256 is not None:
        actual = exporting.manifest_sha256(folder)
        if not manifest_check.sha256_matches(manifest_sha256, actual):
            raise ExportError(f"{path}: sha256 is {actual}, but --manifest-sha256 pins "
                              f"{manifest_sha256.strip().lower()}")
    try:
        manifest_check.check_schema(manifest)
        manifest_check.check_consistent(manifest)
    except manifest_check.ManifestFieldError as e:
        raise manifest_check.located(path, e) from None
    return manifest


def file_problems(folder: str, manifest: Mapping[str, Any]) -> Tuple[List[str], List[str]]:
    """(files that match the manifest, problems): every listed file present, a regular file
    inside the folder, with the manifest's size and sha256; no file the manifest omits."""
    listed = manifest["files"]
    present = set(listed_files(folder))
    problems: List[str] = []
    ok = []
    links = manifest_check.declared_links(manifest)
    for name in sorted(listed):
        why = manifest_check.inside(folder, name, links)
        if why is None:
            path = os.path.join(folder, name)
            if os.path.getsize(path) != listed[name]["bytes"] or \
                    exporting.sha256_file(path) != listed[name]["sha256"]:
                why = "changed (sha256 differs from the manifest)"
        if why:
            problems.append(f"{name}: {why}")
        else:
            ok.append(name)
    for name in sorted(present - set(listed)):
        problems.append(f"{name}: not in the manifest")
    return ok, problems


def _model_files(manifest: Mapping[str, Any]) -> List[str]:
    """The ONNX models of an export: its .onnx, and the Triton copies (once per content)."""
    models = [manifest["onnx"]["file"]] if manifest.get("onnx") else []
    models += [n for n in manifest["files"] if n.startswith("triton/") and
               n.endswith("/model.onnx")]
    seen: set = set()
    return [m for m in models if not (manifest["files"][m]["sha256"] in seen or
                                      seen.add(manifest["files"][m]["sha256"]))]


def model_problems(folder: str, manifest: Mapping[str, Any]) -> List[str]:
    """Each ONNX model against the manifest: readable, and taking the inputs and giving the
    output width the manifest declares (after file_problems found the bytes unchanged)."""
    import onnx
    problems = []
    for name in _model_files(manifest):
        try:
            with open(os.path.join(folder, name), "rb") as f:
                model = onnx.load_model_from_string(f.read())
            manifest_check.check_onnx_graph(manifest, model.graph.input, model.graph.output,
                                            name)
            _ort_session(os.path.join(folder, name), ExportError)  # cached for the run after
        except manifest_check.ManifestFieldError as e:
            problems.append(f"{exporting.MANIFEST}: {e}")
        except ExportError as e:
            problems.append(str(e)[len(folder) + 1:] if str(e).startswith(folder) else str(e))
        except Exception as e:  # protobuf's DecodeError and friends: bytes that are no model
            problems.append(f"{name}: not a readable ONNX model ({_first_line(e)})")
    return problems


def checked_export(folder: str, *, manifest_sha256: Optional[str] = None) -> Dict[str, Any]:
    """load_export, and the files and models held against it: what predict runs before it
    trusts an export. ExportError with the first problem otherwise."""
    manifest = load_export(folder, manifest_sha256=manifest_sha256)
    _, problems = file_problems(folder, manifest)
    problems = problems or model_problems(folder, manifest)
    if problems:
        more = f" (and {len(problems) - 1} more; see symbuilder verify)" if len(problems) > 1 \
            else ""
        raise ExportError(f"{folder}: {problems[0]}{more}")
    return manifest


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__


@contextlib.contextmanager
def _failed_check() -> Iterator[None]:
    """Inside an export that passed its hash check, an unreadable file is a failed check
    (exit 1), not the user's bad input: a UsageError becomes an ExportError."""
    try:
        yield
    except UsageError as e:
        raise ExportError(str(e)) from None


def _load_export_checkpoint(folder: str, manifest: Mapping[str, Any]):
    """The export's checkpoint, with parameters that fit its symbol at the manifest's input
    shapes; ExportError naming the file otherwise (a readable but wrong file included)."""
    import mxnet as mx
    from .errors import mxnet_message
    prefix = os.path.join(folder, manifest["checkpoint"]["symbol"][: -len("-symbol.json")])
    with _failed_check():
        symbol, arg_params, aux_params = load_checkpoint(prefix, manifest["epoch"])
    params_file = os.path.join(folder, manifest["checkpoint"]["params"])
    shapes = {i["name"]: (1,) + tuple(i["shape"][1:]) for i in manifest["inputs"]}
    try:
        arg_shapes, _, aux_shapes = symbol.infer_shape_partial(**shapes)
    except mx.base.MXNetError as e:
        raise ExportError(f"{prefix}-symbol.json: does not take the manifest's inputs: "
                          f"{mxnet_message(e)}") from None
    wanted = list(zip(symbol.list_arguments(), arg_shapes)) + \
        list(zip(symbol.list_auxiliary_states(), aux_shapes))
    given = {**arg_params, **aux_params}
    for name, shape in wanted:
        if name in shapes or name.endswith("_label"):
            continue
        if name not in given or tuple(given[name].shape) != tuple(shape or ()):
            found = tuple(given[name].shape) if name in given else "missing"
            raise ExportError(f"{params_file}: parameter '{name}': expected shape "
                              f"{tuple(shape or ())}, found {found}")
    return symbol, arg_params, aux_params


def _ort_session(path: str, error: type):
    """An ONNX Runtime session for `path`; `error` (UsageError for a user's bare .onnx,
    ExportError inside an export) naming the file when ORT cannot load it."""
    from .verify import _session
    try:
        return _session(path, True)
    except Exception as e:  # ORT's pybind errors (InvalidProtobuf, Fail, InvalidGraph ...)
        message = f"not a model ONNX Runtime can load: {_first_line(e)}"
        raise (error(message, file=path) if issubclass(error, UsageError)
               else error(f"{path}: {message}")) from None


def _resolve_model(target: str, manifest_sha256: Optional[str] = None
                   ) -> Tuple[Optional[str], Optional[Dict[str, Any]], Optional[str]]:
    """(export folder or None, checked manifest or None, onnx path or None) for a folder or
    an .onnx file."""
    if os.path.isdir(target):
        manifest = checked_export(target, manifest_sha256=manifest_sha256)
        onnx_entry = manifest.get("onnx")
        path = os.path.join(target, onnx_entry["file"]) if onnx_entry else None
        return target, manifest, path
    if not os.path.isfile(target):
        raise UsageError("no such export folder or ONNX file", file=target)
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isfile(os.path.join(folder, exporting.MANIFEST)):
        manifest = read_manifest(folder)
        if (manifest.get("onnx") or {}).get("file") == os.path.basename(target):
            return folder, checked_export(folder, manifest_sha256=manifest_sha256), target
    if manifest_sha256 is not None:
        raise UsageError("--manifest-sha256 needs an export folder (this file has no "
                         "manifest beside it)", file=target)
    return None, None, target


def label_column(manifest: Mapping[str, Any]) -> Optional[str]:
    """The data's label column (csv) as the build's spec named it; None when unknown."""
    value: Any = manifest
    for key in ("spec", "data", "train", "label"):
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


def read_rows(path: str, feature_names: Optional[Sequence[str]], label: Optional[str]
              ) -> np.ndarray:
    """The feature columns of a CSV, by name, in the model's order, as float32 (N, F); a
    located error naming missing columns. Without `feature_names` every column except `label`
    is a feature, in file order."""
    if not os.path.isfile(path):
        raise DataError("no such data file", file=path)
    with open(path, "r", newline="", encoding="utf-8-sig") as f:
        try:
            rows = list(csv.reader(f))
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"not a readable CSV file: {e}", file=path) from None
    if not rows or not any(c.strip() for c in rows[0]):
        raise DataError("empty CSV file; expected a header row", file=path, line=1)
    header = [h.strip() for h in rows[0]]
    _refuse_duplicates(header, path)
    if feature_names is None:
        feature_names = [h for h in header if h != label]
    missing = [n for n in feature_names if n not in header]
    # Columns the model does not read are ignored (ids, a subset chosen by input.columns),
    # but named next to missing ones: there they are usually the misspelling.
    unexpected = [h for h in header if h not in feature_names and h != label]
    if missing:
        from .spec.catalog_suggest import suggest_text
        parts = []
        if missing:
            parts.append("missing column" + ("s " if len(missing) > 1 else " ") +
                         ", ".join(f"'{m}'{suggest_text(m, unexpected)}" for m in missing[:8]) +
                         (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append("unexpected column" + ("s " if len(unexpected) > 1 else " ") +
                         ", ".join(f"'{u}'" for u in unexpected[:8]) +
                         (" ..." if len(unexpected) > 8 else ""))
        raise DataError("; ".join(parts) + f" (the model takes {len(feature_names)} features"
                        f"{', and ignores ' + repr(label) if label else ''})", file=path, line=1)
    index = [header.index(n) for n in feature_names]
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"expected {len(header)} fields as in the header, found {len(row)}",
                            file=path, line=lineno)
        vals = []
        for i in index:
            text = row[i].strip()
            try:
                v = float(text)
            except ValueError:
                what = "empty value" if text == "" else f"not a number: {text!r}"
                raise DataError(f"column '{header[i]}': {what}", file=path, line=lineno) from None
            if not np.isfinite(v):
                raise DataError(f"column '{header[i]}': not a finite number: {text}", file=path,
                                line=lineno)
            if abs(v) >= _FLOAT32_OVERFLOW:
                raise DataError(f"column '{header[i]}': {text} is outside float32's range "
                                f"(largest {np.finfo(np.float32).max:.7g}), the model's input "
                                "type", file=path, line=lineno)
            vals.append(v)
        out.append(vals)
    if not out:
        raise DataError("no data rows", file=path)
    return np.asarray(out, dtype=np.float32)


# The smallest magnitude float32 rounds to infinity: the largest float32 plus half an ulp.
_FLOAT32_OVERFLOW = 2.0 ** 128 - 2.0 ** 103


def _refuse_duplicates(header: Sequence[str], path: str) -> None:
    """Two columns of one name: matching by name would feed the first into both places."""
    first: Dict[str, int] = {}
    for k, name in enumerate(header, start=1):
        if name in first:
            raise DataError(f"column name '{name}' appears twice (fields {first[name]} and "
                            f"{k}); columns are matched by name, so each must be unique",
                            file=path, line=1)
        first[name] = k


def predict(target: str, csv_path: str, *, checkpoint: bool = False,
            batch_size: int = 1024, manifest_sha256: Optional[str] = None) -> Predictions:
    """Run an export (folder, or its .onnx; or the checkpoint with `checkpoint=True`) on the
    CSV's rows. Columns are matched to the manifest's feature names; the label column, if
    present, is ignored. A bare .onnx without a manifest takes every column in file order.
    An export is checked first (manifest fields, file hashes, the ONNX graph against the
    manifest): ExportError when it fails."""
    folder, manifest, onnx_path = _resolve_model(target, manifest_sha256)
    manifest = manifest or {}
    label = label_column(manifest)
    fixed_batch = None
    if checkpoint:
        if not folder or not manifest.get("checkpoint"):
            raise UsageError("--checkpoint needs an export folder with a checkpoint", file=target)
        from .verify import mxnet_forward
        symbol, arg_params, aux_params = _load_export_checkpoint(folder, manifest)
        run = lambda feed: mxnet_forward(symbol, arg_params, aux_params, feed)[0]  # noqa: E731
        output_name = symbol.list_outputs()[0]
        graph_inputs = [(i["name"], None) for i in manifest["inputs"]]
    else:
        if onnx_path is None:
            raise UsageError("this export has no ONNX model; use --checkpoint", file=target)
        from .verify import onnx_forward
        session = _ort_session(onnx_path, ExportError if folder else UsageError)
        graph_inputs = [(i.name, i.shape) for i in session.get_inputs()]
        if not graph_inputs or not session.get_outputs():
            raise UsageError("an ONNX model without inputs or outputs", file=onnx_path)
        first = graph_inputs[0][1]
        fixed_batch = first[0] if first and isinstance(first[0], int) else None
        if fixed_batch:
            batch_size = fixed_batch
        run = lambda feed: onnx_forward(onnx_path, feed)[0]  # noqa: E731
        output_name = session.get_outputs()[0].name
    # Each input's columns and sample shape: from the manifest, else (a bare ONNX file with one
    # input) every column in file order and the graph's own shape.
    entries = {i["name"]: i for i in manifest.get("inputs") or []}
    plan = []
    for name, onnx_shape in graph_inputs:
        entry = entries.get(name, {})
        columns = entry.get("columns") or (manifest.get("feature_names")
                                           if len(graph_inputs) == 1 else None)
        if manifest and columns is None:
            raise UsageError(f"the manifest does not say which columns input '{name}' reads",
                             file=target)
        shape = tuple(entry["shape"][1:]) if entry else tuple(onnx_shape[1:])
        plan.append((name, columns, shape))
    if len(plan) == 1 and plan[0][1] is None:
        rows = read_rows(csv_path, None, label)
        plan = [(plan[0][0], list(range(rows.shape[1])), plan[0][2])]
        position = {i: i for i in range(rows.shape[1])}
    else:
        wanted = list(dict.fromkeys(c for _, cols, _ in plan for c in cols))
        rows = read_rows(csv_path, wanted, label)
        position = {c: k for k, c in enumerate(wanted)}
    feeds = {}
    for name, columns, shape in plan:
        per_sample = int(np.prod(shape)) if shape else 1
        if any(not isinstance(d, int) for d in shape) or len(columns) != per_sample:
            raise DataError(f"{len(columns)} feature columns, but the model's input '{name}' "
                            f"takes samples of shape {list(shape)}", file=csv_path, line=1)
        x = rows[:, [position[c] for c in columns]]
        feeds[name] = np.ascontiguousarray(x.reshape((len(rows),) + tuple(shape)))
    parts = []
    for start in range(0, len(rows), batch_size):
        chunk = {k: v[start:start + batch_size] for k, v in feeds.items()}
        n = len(next(iter(chunk.values())))
        if fixed_batch and n < fixed_batch:  # a fixed-batch ONNX model: pad the last chunk
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], fixed_batch - n, axis=0)])
                     for k, v in chunk.items()}
        try:
            parts.append(np.asarray(run(chunk))[:n])
        except Exception as e:  # ORT/MXNet refusing the inputs: name the model and the cause
            if folder:
                raise ExportError(f"{target}: the model fails on these inputs: "
                                  f"{_first_line(e)}") from None
            raise UsageError(f"the model fails on {csv_path}'s rows: {_first_line(e)}",
                             file=target) from None
    values = np.concatenate(parts).reshape(len(rows), -1).astype(np.float32)
    classes = manifest.get("classes")
    meaning = ((manifest.get("outputs") or [{}])[0]).get("meaning", "")
    if classes and values.shape[1] == len(classes):
        return Predictions([f"p_{c}" for c in classes], values,
                           [classes[i] for i in values.argmax(axis=1)])
    base = label or manifest.get("label") or output_name
    if meaning.startswith("sigmoid"):
        base = f"p_{base}"
    columns = [base] if values.shape[1] == 1 else [f"{base}_{i}" for i in range(values.shape[1])]
    return Predictions(columns, values)


# --------------------------------------------------------------------------------------------
# symbuilder verify EXPORT_DIR


def listed_files(folder: str) -> List[str]:
    """Every file under `folder` (relative, '/'-separated) except the manifest; a symlinked
    folder is listed as an entry too (an export has none, so it is named, not followed)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        for name in sorted(files + links):
            rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if rel != exporting.MANIFEST:
                found.append(rel)
    return found


def load_samples(path: str, manifest: Optional[Mapping[str, Any]] = None) -> np.ndarray:
    """Real samples from .npy, .npz (array X) or .csv; a CSV's columns are matched by the
    manifest's feature names (its label column ignored), or all taken in file order. A
    DataError naming the file for anything else (object arrays and pickles included: they are
    never loaded)."""
    from .data.sources import read_table
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in ("npy", "npz"):
        if not os.path.isfile(path):
            raise DataError("no such data file", file=path)
        try:
            values = np.asarray(read_table(path, ext, label=None).features)
        except (ValueError, OSError, EOFError) as e:  # numpy's refusals: pickles, bad headers
            raise DataError(f"not a readable .{ext} file: {_first_line(e)}", file=path) from None
        if values.dtype.kind not in "fiub" or values.ndim < 2 or not len(values):
            raise DataError(f"expected a numeric array of samples (N, ...), found "
                            f"{values.dtype} {list(values.shape)}", file=path)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise DataError("NaN or infinite values", file=path)
        if np.abs(values).max() >= _FLOAT32_OVERFLOW:
            raise DataError("values outside float32's range, the model's input type", file=path)
        return values
    if ext != "csv":
        raise DataError("expected a .npy, .npz or .csv file", file=path)
    manifest = manifest or {}
    return read_rows(path, manifest.get("feature_names"), label_column(manifest))


def verify_export(folder: str, *, data: Optional[Any] = None,
                  random_samples: int = DEFAULT_RANDOM_SAMPLES,
                  manifest_sha256: Optional[str] = None) -> Dict[str, Any]:
    """Check an export folder: the manifest's fields (and its sha256 when pinned), every file
    against the manifest's sha256 and size, the ONNX graph against the manifest, then re-run
    the parity check (ONNX vs checkpoint) on random samples drawn as the build drew them, plus
    `data` (an array, or a file for load_samples) when given. Returns {"passed", "problems",
    "files", "parity"}; UsageError when the folder is not an export, ExportError when its
    manifest is not valid."""
    manifest = load_export(folder, manifest_sha256=manifest_sha256)
    ok, problems = file_problems(folder, manifest)
    problems = problems or model_problems(folder, manifest)
    report: Dict[str, Any] = {"folder": folder, "files": ok, "problems": problems,
                              "parity": None}
    models = _model_files(manifest)
    if not problems and manifest.get("checkpoint") and models:
        report["parity"] = _verify_parity(folder, manifest, models, data, random_samples,
                                          problems)
    if not problems and manifest.get("deploy"):
        from .deploy import check_deploy_symbol  # deploy imports this module's parity suite
        problems += check_deploy_symbol(folder, manifest)
    report["passed"] = not problems
    return report


def _verify_parity(folder: str, manifest: Mapping[str, Any], models: Sequence[str],
                   data: Optional[Any], random_samples: int, problems: List[str]
                   ) -> Dict[str, Any]:
    """parity_suite for each model file against the export's checkpoint; a problem per model
    that disagrees."""
    symbol, arg_params, aux_params = _load_export_checkpoint(folder, manifest)
    recorded = manifest["parity"]
    shapes = {i["name"]: tuple(i["shape"][1:]) for i in manifest["inputs"]}
    held_out = None
    if isinstance(data, str):
        data = load_samples(data, manifest)
    if data is not None:
        name = manifest["inputs"][0]["name"]
        held_out = {name: _as_samples(np.asarray(data, np.float32), shapes[name], name)}
    random_info = recorded["inputs"].get("random") or {}
    parity = {}
    for model_file in models:
        with _failed_check():
            p = parity_suite(symbol, arg_params, aux_params, os.path.join(folder, model_file),
                             atol=float(recorded["atol"]), held_out=held_out,
                             sample_shapes=shapes, random_samples=random_samples,
                             seed=int(random_info.get("seed", DEFAULT_SEED)),
                             ranges=recorded.get("random_range"))
        parity[model_file] = p
        if not p["passed"]:
            problems.append(f"{model_file}: ONNX Runtime disagrees with the checkpoint: max "
                            f"abs difference {p['max_abs']:.3g} > atol {p['atol']:g}")
    return parity


def _as_samples(values: np.ndarray, shape: Sequence[int], name: str) -> np.ndarray:
    if values.ndim < 1 or int(np.prod(values.shape[1:])) != int(np.prod(shape)):
        raise DataError(f"--data: {list(values.shape[1:])} values per sample for input "
                        f"'{name}', whose sample shape is {list(shape)}")
    return values.reshape((len(values),) + tuple(shape))
