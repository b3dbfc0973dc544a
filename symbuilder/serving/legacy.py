"""`symbuilder export PREFIX EPOCH`: any MXNet Module checkpoint to a verified ONNX file.

Also the --input and --input-range parsers. The checkpoint reader every command uses
(load_checkpoint) lives with the writer, in export/checkpoint.py.
"""
from __future__ import annotations

import difflib
import functools
import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
import onnx

from .. import proof
from ..errors import ExportError, UsageError, mxnet_message
from ..export.checkpoint import checkpoint_files, load_checkpoint, to_numpy_params
from ..export.deploy import deploy_symbol
from ..files import write_atomic
from ..onnx import to_onnx

_INPUT_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.:-]*)=(\d+(?:,\d+)*)(?::([A-Za-z0-9]+))?$")
_RANGE_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.:-]*)=([^:]+):([^:]+)$")
# The dtypes an input may have: the ones both MXNet and ONNX Runtime take as graph inputs.
INPUT_DTYPES = ("float32", "float16", "float64", "int8", "int32", "int64", "uint8", "bool")


def parse_input(text: str) -> Tuple[str, Tuple[int, ...], str]:
    """'data=1,3,32,32' -> ('data', (1, 3, 32, 32), 'float32'); 'ids=1,16:int64' -> ('ids',
    (1, 16), 'int64'); UsageError otherwise."""
    match = _INPUT_RE.match(text.replace(" ", ""))
    if not match or any(int(d) <= 0 for d in match.group(2).split(",")):
        raise UsageError(f"--input {text!r}: expected NAME=D0,D1,...[:DTYPE] with positive "
                         "dims, batch axis first, e.g. data=1,3,32,32 or ids=1,16:int64")
    dtype = match.group(3) or "float32"
    if dtype not in INPUT_DTYPES:
        close = difflib.get_close_matches(dtype, INPUT_DTYPES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"--input {text!r}: unknown dtype '{dtype}' (one of "
                         f"{', '.join(INPUT_DTYPES)}){hint}")
    return match.group(1), tuple(int(d) for d in match.group(2).split(",")), dtype


def parse_input_range(text: str) -> Tuple[str, float, float]:
    """'ids=0:999' -> ('ids', 0.0, 999.0): the values random parity samples of that input
    take; UsageError for anything else or low > high."""
    match = _RANGE_RE.match(text.replace(" ", ""))
    try:
        low, high = float(match.group(2)), float(match.group(3))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        low = high = float("nan")
    if not (np.isfinite(low) and np.isfinite(high)):
        raise UsageError(f"--input-range {text!r}: expected NAME=LOW:HIGH with finite "
                         "numbers, e.g. ids=0:999")
    if low > high:
        raise UsageError(f"--input-range {text!r}: low {low:g} > high {high:g}")
    return match.group(1), low, high  # type: ignore[union-attr]


def export_checkpoint(prefix: str, epoch: int, input_shapes: Mapping[str, Sequence[int]], *,
                      out: Optional[str] = None, opset: int = 17,
                      atol: float = proof.DEFAULT_ATOL, rtol: float = proof.DEFAULT_RTOL,
                      dynamic_batch: bool = True, data: Optional[Mapping[str, np.ndarray]] = None,
                      random_samples: int = proof.DEFAULT_RANDOM_SAMPLES,
                      seed: int = proof.DEFAULT_SEED,
                      input_dtypes: Optional[Mapping[str, str]] = None,
                      input_ranges: Optional[Mapping[str, Tuple[float, float]]] = None,
                      deploy: bool = False) -> Dict[str, Any]:
    """Translate any Module checkpoint to ONNX, verify it against MXNet, write it atomically.

    `input_shapes` gives each data input's full shape, batch axis first; `input_dtypes` its
    dtype (INPUT_DTYPES, float32 by default), in the ONNX graph, the samples and MXNet's
    reference forward alike. `data` (optional) holds real samples per input; random samples
    are always added: uniform in `input_ranges[name]` = (low, high) when given (integers in
    [low, high] for an integer input), else over the real samples' per-feature range, else
    integers in [0, 9] for an integer input and standard normal for a float one. Every output
    is compared; integer and boolean ones exactly. Raises UsageError for a missing or
    unreadable checkpoint, wrong inputs or an untranslatable graph (the user's checkpoint:
    exit 2), ExportError when ONNX Runtime disagrees (exit 1). Returns the report.

    `deploy=True` also writes `PREFIX-deploy-symbol.json`, the label-free inference graph
    (export/deploy.py), after proving it computes what the ONNX model computes. Neither file
    overwrites one symbuilder did not write (an .onnx is symbuilder's by its producer name).
    """
    symbol, arg_params, aux_params = load_checkpoint(prefix, epoch)
    symbol_file, params_file = checkpoint_files(prefix, epoch)
    _check_input_names(symbol, arg_params, input_shapes, symbol_file)
    out, deploy_file = _output_files(prefix, epoch, out, deploy)
    dtypes = {name: (input_dtypes or {}).get(name, "float32") for name in input_shapes}
    params = to_numpy_params(arg_params, aux_params)
    model_bytes = _checked_onnx(symbol, params, input_shapes, dtypes, symbol_file, opset=opset,
                                dynamic_batch=dynamic_batch, model_name=os.path.basename(prefix))
    held_out = _held_out(data, input_shapes, dtypes)
    ranges = _sample_ranges(input_ranges or {}, dtypes, held_out or {})
    _guard_roi_batch_indices(symbol, params, input_shapes, ranges, dynamic_batch)
    # The same samples prove the checkpoint's graph and, with --deploy, the deploy graph.
    prove = functools.partial(
        proof.parity_or_fail, arg_params=arg_params, aux_params=aux_params, model=model_bytes,
        atol=atol, rtol=rtol, held_out=held_out,
        sample_shapes={k: tuple(v[1:]) for k, v in input_shapes.items()},
        random_samples=random_samples, seed=seed, dtypes=dtypes,
        ranges={k: v for k, v in ranges.items() if v["source"] != "standard normal"} or None)
    figures = prove(symbol)
    inference = deploy_symbol(symbol, input_shapes) if deploy_file else None
    if inference is not None:
        prove(inference)
    write_atomic(out, model_bytes)
    if inference is not None:
        write_atomic(deploy_file, inference.tojson().encode(), overwrite=False)
    return {"onnx": out, "deploy_symbol": deploy_file,
            "checkpoint": {"symbol": symbol_file, "params": params_file},
            "inputs": {k: list(v) for k, v in input_shapes.items()}, "input_dtypes": dtypes,
            "sample_ranges": ranges, "outputs": _output_figures(figures), "opset": opset,
            "dynamic_batch": dynamic_batch, "parity": figures}


def _check_input_names(symbol: mx.sym.Symbol, arg_params: Mapping[str, Any],
                       input_shapes: Mapping[str, Sequence[int]], symbol_file: str) -> None:
    if not input_shapes:
        raise UsageError("give each data input's shape, e.g. --input data=1,3,32,32")
    free = [a for a in symbol.list_arguments() if a not in arg_params]
    for name in input_shapes:
        if name not in free:
            why = "a parameter" if name in arg_params else "not an input"
            raise UsageError(f"--input {name}: {why} of {symbol_file} (its inputs: "
                             f"{', '.join(free) or 'none'})")


def _output_files(prefix: str, epoch: int, out: Optional[str],
                  deploy: bool) -> Tuple[str, Optional[str]]:
    """The .onnx file and the deploy symbol (or None) to write, refused before any work if
    writing them would replace a file symbuilder did not write."""
    out = out or f"{prefix}-{epoch:04d}.onnx"
    if os.path.isdir(out):
        raise UsageError("is a folder; --out takes the .onnx file to write", file=out)
    _refuse_foreign_onnx(out)
    deploy_file = f"{prefix}-deploy-symbol.json" if deploy else None
    if deploy_file and os.path.lexists(deploy_file):
        raise UsageError("already exists; export never overwrites a file (remove it to write "
                         "the deploy symbol again)", file=deploy_file)
    return out, deploy_file


def _checked_onnx(symbol: mx.sym.Symbol, params: Mapping[str, np.ndarray],
                  input_shapes: Mapping[str, Sequence[int]], dtypes: Mapping[str, str],
                  symbol_file: str, *, opset: int, dynamic_batch: bool, model_name: str) -> bytes:
    """The serialized ONNX model; every refusal located at the checkpoint's symbol file."""
    _check_shapes(symbol, params, input_shapes, symbol_file)
    _check_dtypes(symbol, params, dtypes, symbol_file)
    try:
        model = to_onnx(symbol, params, input_shapes, opset=opset, dynamic_batch=dynamic_batch,
                        model_name=model_name, input_dtypes=dtypes)
    except ExportError as e:
        # Untranslatable op, bad attribute, shapes MXNet rejects: all about the user's files.
        raise UsageError(str(e).replace("input_shapes", "--input"), file=symbol_file) from None
    return model.SerializeToString()


def _held_out(data: Optional[Mapping[str, np.ndarray]], input_shapes: Mapping[str, Sequence[int]],
              dtypes: Mapping[str, str]) -> Optional[Dict[str, np.ndarray]]:
    """--data's samples per input in the input's dtype and sample shape (None without --data)."""
    if not data:
        return None
    held_out = {}
    for name, values in data.items():
        want = tuple(input_shapes[name][1:])
        values = np.asarray(values).astype(dtypes[name])
        if int(np.prod(values.shape[1:])) != int(np.prod(want)):
            raise UsageError(f"--data: {values.shape[1:]} values per sample for input "
                             f"'{name}', whose sample shape is {want}")
        held_out[name] = values.reshape((len(values),) + want)
    return held_out


def _refuse_foreign_onnx(path: str) -> None:
    """An existing file at --out is replaced only if symbuilder wrote it (an earlier export of
    the same checkpoint): a command never overwrites a file it did not create."""
    if not os.path.lexists(path):
        return
    try:
        producer = onnx.load(path, load_external_data=False).producer_name
    except Exception:  # not an ONNX model at all (protobuf raises several kinds)
        producer = None
    if producer != "symbuilder" or os.path.islink(path):
        raise UsageError("already exists and is not an ONNX model symbuilder wrote; export "
                         "never overwrites such a file (choose another --out)", file=path)


def _sample_ranges(given: Mapping[str, Tuple[float, float]], dtypes: Mapping[str, str],
                   held_out: Mapping[str, np.ndarray]) -> Dict[str, Dict[str, Any]]:
    """Per input, what its random samples are drawn from and why ('source'): --input-range,
    the real samples' per-feature range, the integer default, or standard normal. A
    UsageError for a range of an unknown input or one its dtype cannot hold."""
    for name, (low, high) in given.items():
        if name not in dtypes:
            raise UsageError(f"--input-range {name}: not an --input (the inputs: "
                             f"{', '.join(dtypes)})")
        _check_range(name, low, high, dtypes[name])
    ranges: Dict[str, Dict[str, Any]] = {}
    for name, dtype in dtypes.items():
        if name in given:
            low, high = given[name]
            ranges[name] = {"low": low, "high": high, "source": "--input-range"}
        elif name in held_out:
            ranges[name] = dict(proof.feature_range(held_out[name]), source="--data")
        elif proof.default_range(dtype) is not None:
            ranges[name] = dict(proof.default_range(dtype), source="default")
        else:
            ranges[name] = {"source": "standard normal"}
    return ranges


# MXNet's ROI ops read rois[:, 0] as an image of the batch without checking it: an index past
# the batch reads outside it (measured: a segfault of the whole process).
_ROI_OPS = ("ROIPooling", "_contrib_ROIAlign")


def _roi_sources(symbol: mx.sym.Symbol) -> List[Tuple[str, str, str]]:
    """(op, node name, variable) for each ROI op whose rois come straight from a variable."""
    nodes = json.loads(symbol.tojson())["nodes"]
    found = []
    for node in nodes:
        if node["op"] in _ROI_OPS and len(node["inputs"]) > 1:
            source = nodes[node["inputs"][1][0]]
            if source["op"] == "null":
                found.append((node["op"], node["name"], source["name"]))
    return found


def _guard_roi_batch_indices(symbol: mx.sym.Symbol, params: Mapping[str, np.ndarray],
                             input_shapes: Mapping[str, Sequence[int]],
                             ranges: Dict[str, Dict[str, Any]], dynamic_batch: bool) -> None:
    """Keep the parity check's MXNet forward inside the batch: constant rois must name images
    below the smallest batch it runs (a UsageError otherwise), and the random samples of a
    rois input keep their batch-index column at 0 (coordinates from its range, which it
    then needs: standard-normal boxes mean nothing)."""
    smallest = 1 if dynamic_batch else min(int(s[0]) for s in input_shapes.values())
    for op, node, rois in _roi_sources(symbol):
        if rois in params:
            values = np.asarray(params[rois])
            column = values[..., 0] if values.size else np.zeros(0)
            if not np.isfinite(column).all():  # int() of it raised: a traceback
                bad = column[~np.isfinite(column)].flat[0]
                raise UsageError(f"{op} '{node}': its rois (parameter '{rois}') give {bad:g} as "
                                 "a batch index; MXNet casts it to an image of the batch "
                                 "unchecked (a finite index is needed)")
            top = int(column.max()) if column.size else -1
            if top >= smallest:
                raise UsageError(f"{op} '{node}': its rois (parameter '{rois}') name image "
                                 f"{top} of the batch, but the check runs the graph at a batch "
                                 f"of {smallest}, where MXNet would read outside the batch (it "
                                 "does not check the index); use --fixed-batch with an --input "
                                 f"batch above {top}")
        elif rois in ranges:
            entry = ranges[rois]
            if entry["source"] == "standard normal":
                raise UsageError(f"--input-range {rois}: {op} '{node}' reads its boxes from "
                                 f"input '{rois}'; give their coordinates' range (e.g. "
                                 f"{rois}=0:31). The batch-index column of its random samples "
                                 "stays 0: MXNet does not check it")
            given = (f"in [{entry['low']:g}, {entry['high']:g}] ({entry['source']})"
                     if not isinstance(entry["low"], list) else entry["source"])
            shape = tuple(int(d) for d in input_shapes[rois][1:])
            bounds = {k: np.broadcast_to(np.asarray(entry[k], np.float64), shape).copy()
                      for k in ("low", "high")}
            for bound in bounds.values():
                bound[..., 0] = 0
            entry.update({k: v.tolist() for k, v in bounds.items()},
                         source=f"{given}, batch-index column kept at 0 for {op} '{node}'")


def _check_range(name: str, low: float, high: float, dtype: str) -> None:
    """Integer inputs take integer bounds their dtype holds (bool: 0 and 1)."""
    if not proof.is_exact(dtype):
        return
    info = np.iinfo(np.dtype(dtype)) if dtype != "bool" else None
    lo, hi = (info.min, info.max) if info else (0, 1)
    if low != int(low) or high != int(high) or low < lo or high > hi:
        article = "an" if dtype.startswith("int") else "a"
        raise UsageError(f"--input-range {name}={low:g}:{high:g}: {article} {dtype} input takes "
                         f"integer bounds in [{lo}, {hi}]")


def _output_figures(figures: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One entry per model output: its worst difference over every check and whether it was
    compared exactly (integer and boolean outputs)."""
    outputs: Dict[str, Dict[str, Any]] = {}
    for row in figures["details"]:
        entry = outputs.setdefault(row["output"], {"name": row["output"], "max_abs": 0.0,
                                                   "exact": False, "passed": True})
        entry["max_abs"] = max(entry["max_abs"], row.get("max_abs", 0.0))  # none: a random output
        if "distribution" in row:
            entry["distribution"] = row["distribution"]
        entry["exact"] = entry["exact"] or bool(row.get("exact"))
        entry["passed"] = entry["passed"] and row["passed"]
    return list(outputs.values())


def _check_dtypes(symbol: Any, params: Mapping[str, np.ndarray], dtypes: Mapping[str, str],
                  symbol_file: str) -> None:
    """A UsageError naming the operator when MXNet rejects the --input dtypes (float16 data
    into a float32 FullyConnected): otherwise MXNet's forward fails with a traceback."""
    known = {k: v.dtype for k, v in params.items() if k in symbol.list_arguments()}
    known.update({k: np.dtype(v) for k, v in dtypes.items()})
    given = ", ".join(f"{k}:{v}" for k, v in dtypes.items())
    _inferred_or_refused(lambda: symbol.infer_type_partial(**known), given, "dtypes",
                         symbol_file)


def _check_shapes(symbol: Any, params: Mapping[str, np.ndarray],
                  input_shapes: Mapping[str, Sequence[int]], symbol_file: str) -> None:
    """A UsageError naming the operator when MXNet rejects the --input shapes."""
    known = {k: v.shape for k, v in params.items() if k in symbol.list_arguments()}
    known.update({k: tuple(v) for k, v in input_shapes.items()})
    given = ", ".join(f"{k}={','.join(map(str, v))}" for k, v in input_shapes.items())
    _inferred_or_refused(lambda: symbol.infer_shape_partial(**known), given, "shapes",
                         symbol_file)


def _inferred_or_refused(infer: Any, given: str, what: str, symbol_file: str) -> None:
    """Run MXNet's inference; its refusal as a UsageError naming the operator it names."""
    try:
        infer()
    except mx.base.MXNetError as e:
        op = re.search(r"Error in operator ([^:\s]+):", str(e))
        where = f"operator '{op.group(1)}' rejects " if op else "MXNet rejects "
        raise UsageError(f"--input {given}: {where}the {what}: {mxnet_message(e)}",
                         file=symbol_file) from None
