"""`symbuilder verify EXPORT_DIR`: an export folder against its manifest. Every file against
the manifest's sha256 and size, each ONNX model against the manifest's inputs and outputs, the
parity suite re-run (ONNX against the checkpoint) on the random samples the build drew, and
the deploy symbol loaded as a user loads it and compared with the ONNX model.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
import onnx

from .. import manifest as manifest_check
from .. import proof
from ..data import first_non_byte, non_byte_message
from ..errors import DataError, ExportError, SymbuilderError, UsageError, mxnet_message
from ..export import folder as export_folder
from ..export.checkpoint import load_checkpoint
from .samples import first_line, load_samples

def read_manifest(folder: str) -> Dict[str, Any]:
    """The manifest's JSON object, unchecked. A path that is not an export (no folder, no
    manifest) is a UsageError (exit 2); a manifest that is not a JSON object is an export that
    fails its check: ExportError (exit 1)."""
    path = os.path.join(folder, export_folder.MANIFEST)
    if not os.path.isdir(folder):
        raise UsageError("no such export folder", file=folder)
    if not os.path.isfile(path) or os.path.islink(path):
        raise UsageError(f"not an export folder: no {export_folder.MANIFEST}", file=folder)
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
    path = os.path.join(folder, export_folder.MANIFEST)
    if manifest_sha256 is not None:
        actual = export_folder.manifest_sha256(folder)
        if not manifest_check.sha256_matches(manifest_sha256, actual):
            raise ExportError(f"{path}: sha256 is {actual}, but --manifest-sha256 pins "
                              f"{manifest_sha256.strip().lower()}")
    try:
        manifest_check.check_schema(manifest)
        manifest_check.check_consistent(manifest)
    except manifest_check.ManifestFieldError as e:
        raise manifest_check.located(path, e) from None
    return manifest


def listed_files(folder: str) -> List[str]:
    """Every file under `folder` (relative, '/'-separated) except the manifest; a symlinked
    folder is listed as an entry too (an export has none, so it is named, not followed)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        for name in sorted(files + links):
            rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if rel != export_folder.MANIFEST:
                found.append(rel)
    return found


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
                    export_folder.sha256_file(path) != listed[name]["sha256"]:
                why = "changed (sha256 differs from the manifest)"
        if why:
            problems.append(f"{name}: {why}")
        else:
            ok.append(name)
    for name in sorted(present - set(listed)):
        problems.append(f"{name}: not in the manifest")
    return ok, problems


def model_files(manifest: Mapping[str, Any]) -> List[str]:
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
    problems = []
    for name in model_files(manifest):
        try:
            with open(os.path.join(folder, name), "rb") as f:
                model = onnx.load_model_from_string(f.read())
            manifest_check.check_onnx_graph(manifest, model.graph.input, model.graph.output,
                                            name)
            ort_session(os.path.join(folder, name), ExportError)  # cached for the run after
        except manifest_check.ManifestFieldError as e:
            problems.append(f"{export_folder.MANIFEST}: {e}")
        except ExportError as e:
            problems.append(str(e)[len(folder) + 1:] if str(e).startswith(folder) else str(e))
        except Exception as e:  # protobuf's DecodeError and friends: bytes that are no model
            problems.append(f"{name}: not a readable ONNX model ({first_line(e)})")
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


@contextlib.contextmanager
def _failed_check() -> Iterator[None]:
    """Inside an export that passed its hash check, an unreadable file is a failed check
    (exit 1), not the user's bad input: a UsageError becomes an ExportError."""
    try:
        yield
    except UsageError as e:
        raise ExportError(str(e)) from None


def load_export_checkpoint(folder: str, manifest: Mapping[str, Any]
                           ) -> Tuple[Any, Dict[str, Any], Dict[str, Any]]:
    """The export's checkpoint, with parameters that fit its symbol at the manifest's input
    shapes; ExportError naming the file otherwise (a readable but wrong file included)."""
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


def ort_session(path: str, error: type) -> Any:
    """An ONNX Runtime session for `path`; `error` (UsageError for a user's bare .onnx,
    ExportError inside an export) naming the file when ORT cannot load it."""
    try:
        return proof.session(path, True)
    except Exception as e:  # ORT's pybind errors (InvalidProtobuf, Fail, InvalidGraph ...)
        message = f"not a model ONNX Runtime can load: {first_line(e)}"
        raise (error(message, file=path) if issubclass(error, UsageError)
               else error(f"{path}: {message}")) from None


def recorded_tolerance(parity: Mapping[str, Any]) -> Dict[str, float]:
    """The atol and rtol the build applied, as its manifest records them. A manifest without
    rtol was written when the rule was max|ort - mxnet| <= atol alone: rtol 0 is that rule."""
    return {"atol": float(parity.get("atol", proof.DEFAULT_ATOL)),
            "rtol": float(parity.get("rtol") or 0.0)}


def verify_export(folder: str, *, data: Optional[Any] = None,
                  random_samples: int = proof.DEFAULT_RANDOM_SAMPLES,
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
    models = model_files(manifest)
    if not problems and manifest.get("checkpoint") and models:
        report["parity"] = _verify_parity(folder, manifest, models, data, random_samples,
                                          problems)
    if not problems and manifest.get("deploy"):
        problems += check_deploy_symbol(folder, manifest)
    report["passed"] = not problems
    return report


def _verify_parity(folder: str, manifest: Mapping[str, Any], models: Sequence[str],
                   data: Optional[Any], random_samples: int, problems: List[str]
                   ) -> Dict[str, Any]:
    """parity_suite for each model file against the export's checkpoint; a problem per model
    that disagrees."""
    symbol, arg_params, aux_params = load_export_checkpoint(folder, manifest)
    recorded = manifest["parity"]
    shapes = {i["name"]: tuple(i["shape"][1:]) for i in manifest["inputs"]}
    held_out = None
    shown = data if isinstance(data, str) else None
    if isinstance(data, str):
        data = load_samples(data, manifest)
    if data is not None:
        name = manifest["inputs"][0]["name"]
        values = _as_samples(np.asarray(data, np.float32), shapes[name], name)
        held_out = {name: _as_input_dtype(values, manifest, name, shown)}
    random_info = recorded["inputs"].get("random") or {}
    parity = {}
    for model_file in models:
        with _failed_check():
            p = proof.parity_suite(symbol, arg_params, aux_params,
                             os.path.join(folder, model_file), held_out=held_out,
                             **recorded_tolerance(recorded),
                             sample_shapes=shapes, random_samples=random_samples,
                             seed=int(random_info.get("seed", proof.DEFAULT_SEED)),
                             ranges=recorded.get("random_range"),
                             dtypes=manifest_dtypes(manifest))
        parity[model_file] = p
        if not p["passed"]:
            problems.append(f"{model_file}: ONNX Runtime disagrees with the checkpoint: "
                            f"{proof.failure_figures(p)}")
    return parity


def manifest_dtypes(manifest: Mapping[str, Any]) -> Dict[str, str]:
    """Each input's dtype as the manifest records it (float32, or uint8 for raw bytes)."""
    return {i["name"]: i.get("dtype", "float32") for i in manifest.get("inputs") or []}


def _as_input_dtype(values: np.ndarray, manifest: Mapping[str, Any], name: str,
                    shown: Optional[str]) -> np.ndarray:
    """--data samples in the input's dtype; for uint8 a DataError at the first value that is
    not a whole number in 0..255 (the cast would wrap or truncate it)."""
    dtype = manifest_dtypes(manifest)[name]
    found = first_non_byte(values.reshape(len(values), -1)) if dtype == "uint8" else None
    if found is not None:
        names = manifest.get("feature_names") or []
        column = names[found[1]] if found[1] < len(names) else f"x{found[1]}"
        raise DataError(f"{'' if shown else '--data: '}row {found[0]}, " + non_byte_message(
            column, values.reshape(len(values), -1)[found], name), file=shown)
    return values.astype(dtype)


def _as_samples(values: np.ndarray, shape: Sequence[int], name: str) -> np.ndarray:
    if values.ndim < 1 or int(np.prod(values.shape[1:])) != int(np.prod(shape)):
        raise DataError(f"--data: {list(values.shape[1:])} values per sample for input "
                        f"'{name}', whose sample shape is {list(shape)}")
    return values.reshape((len(values),) + tuple(shape))


def check_deploy_symbol(folder: str, manifest: Mapping[str, Any]) -> List[str]:
    """What is wrong with the export's deploy symbol (empty: nothing): it must load with the
    params (through the link, as `mx.model.load_checkpoint` does), read exactly the manifest's
    inputs, keep the manifest's output names and compute what the ONNX model computes, within
    the manifest's parity atol and rtol, on random samples drawn as the build drew them."""
    entry = manifest.get("deploy")
    if not entry:
        return []
    problems = _check_link(folder, entry)
    try:
        symbol, arg_params, aux_params = _load(folder, entry, int(manifest["epoch"]))
    except SymbuilderError as e:
        return problems + [f"{entry['symbol']}: {e}"]
    inputs = [i["name"] for i in manifest.get("inputs") or []]
    free = [a for a in symbol.list_arguments() if a not in arg_params]
    if sorted(free) != sorted(inputs):
        problems.append(f"{entry['symbol']}: reads {', '.join(free) or 'nothing'} besides its "
                        f"parameters; the inputs are {', '.join(inputs)}")
    if symbol.list_outputs() != list(entry.get("outputs") or []):
        problems.append(f"{entry['symbol']}: outputs {symbol.list_outputs()}, the manifest "
                        f"says {entry.get('outputs')}")
    model = _onnx_file(manifest)
    if problems or model is None:
        return problems
    return _parity_problems(folder, manifest, entry, model, symbol, arg_params, aux_params)


def _check_link(folder: str, entry: Mapping[str, Any]) -> List[str]:
    link = entry.get("params_link")
    if not link:
        return []
    path = os.path.join(folder, link)
    # A copy that followed the link (shutil.copytree, S3) holds the same bytes, which verify's
    # hashes check; a link elsewhere would make the export depend on a file outside it.
    if os.path.islink(path) and os.readlink(path) != entry["params"]:
        return [f"{link}: links to {os.readlink(path)}, not to {entry['params']}"]
    return []


def _load(folder: str, entry: Mapping[str, Any], epoch: int) -> Tuple[Any, Dict, Dict]:
    """The deploy symbol and its params, read the way a user reads them."""
    if entry.get("params_link"):
        return load_checkpoint(os.path.join(folder, entry["symbol"][: -len("-symbol.json")]), epoch)
    _, arg_params, aux_params = load_checkpoint(
        os.path.join(folder, entry["params"][: -len(f"-{epoch:04d}.params")]), epoch)
    try:
        return mx.sym.load(os.path.join(folder, entry["symbol"])), arg_params, aux_params
    except mx.base.MXNetError as e:
        raise SymbuilderError(f"not a readable MXNet symbol file: {mxnet_message(e)}") from None


def _onnx_file(manifest: Mapping[str, Any]) -> Optional[str]:
    if manifest.get("onnx"):
        return manifest["onnx"]["file"]
    triton = manifest.get("triton")
    return f"triton/{triton['model']}/1/model.onnx" if triton else None


def _parity_problems(folder: str, manifest: Mapping[str, Any], entry: Mapping[str, Any],
                     model: str, symbol: Any, arg_params: Mapping, aux_params: Mapping
                     ) -> List[str]:
    recorded = manifest.get("parity") or {}
    random_info = (recorded.get("inputs") or {}).get("random") or {}
    shapes = {i["name"]: tuple(i["shape"][1:]) for i in manifest["inputs"]}
    figures = proof.parity_suite(symbol, arg_params, aux_params, os.path.join(folder, model),
                           **recorded_tolerance(recorded), sample_shapes=shapes,
                           random_samples=int(random_info.get("samples",
                                                              proof.DEFAULT_RANDOM_SAMPLES)),
                           seed=int(random_info.get("seed", proof.DEFAULT_SEED)),
                           ranges=recorded.get("random_range"), dtypes=manifest_dtypes(manifest))
    if figures["passed"]:
        return []
    return [f"{entry['symbol']}: disagrees with {model}: {proof.failure_figures(figures)}"]
