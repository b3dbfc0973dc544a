"""The whole build, one direction: spec -> data -> train -> export folder -> verified.

`build` is what `symbuilder build` runs; library users call it (or the steps) directly.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Dict, Optional

import numpy as np

from . import deploy, exporting
from .builder import build_symbol
from .checkpoints import RunStore
from .checks import check_static
from .curves import plot_curves
from .data import SplitData, cache_dir_for, load_data
from .errors import ExportError, UsageError
from .spec.model import Spec
from .spec.semantics import check_schedule
from .train import Progress, TrainResult, train


@dataclasses.dataclass
class BuildResult:
    out_dir: str
    manifest: Dict[str, Any]
    result: TrainResult
    rank: int = 0  # a dist worker's rank; only rank 0 exports (manifest is {} elsewhere)


def default_out_dir(spec: Spec) -> str:
    return os.path.join("export", spec.name)


def check_out_dir(out_dir: str) -> None:
    """The export folder must be creatable beside where it goes: a usage error (exit 2) now,
    not an OSError after training. Probed by creating (and removing) a folder there, which
    is the only test that also holds for root and for read-only or virtual file systems."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError("--out names a file, not a folder", file=out_dir)
    probe_in = parent
    while not os.path.exists(probe_in):  # the nearest existing ancestor
        probe_in = os.path.dirname(probe_in)
    if not os.path.isdir(probe_in):
        raise UsageError("is a file, so --out cannot be created below it", file=probe_in)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".symbuilder-probe-", dir=probe_in))
    except OSError as e:
        raise UsageError(f"cannot create the output folder here: {e.strerror}",
                         file=probe_in) from None


def run_dir_for(out_dir: str) -> str:
    """Where resumable checkpoints live while a build trains: beside the export, hidden."""
    parent, base = os.path.split(os.path.abspath(out_dir))
    return os.path.join(parent, f".{base}.run")


def export_model(spec: Spec, result: TrainResult, data: SplitData, out_dir: str) -> Dict[str, Any]:
    """Write and verify the export folder for a trained result; atomic; returns the manifest."""
    formats = spec.export.formats
    input_shapes = {item.name: (1,) + tuple(item.shape) for item in spec.all_inputs}
    held_out = {name: np.ascontiguousarray(array[: spec.export.verify.samples])
                for name, array in data.val.inputs.items()}
    manifest: Dict[str, Any] = {
        "name": spec.name,
        "created": exporting.now_iso(),
        "epoch": result.epoch,
        "epochs_trained": result.epochs_trained,
        "stopped_early": result.stopped_early,
        "inputs": [{"name": item.name, "shape": ["batch"] + list(item.shape),
                    "dtype": "float32", "columns": data.columns.get(item.name, [])}
                   for item in spec.all_inputs],
        "outputs": [_output_entry(spec, result, data)],
        "label": spec.output.label_name,
        "classes": data.classes,
        "feature_names": data.feature_names,
        "input_normalization": result.input_stats,
        "metrics": result.final_metrics,
        "history": result.history,
        "spec": spec.to_dict(),
        "versions": exporting.versions(),
    }
    with exporting.staging_dir(out_dir) as staging:
        if "checkpoint" in formats:
            manifest["checkpoint"] = exporting.save_checkpoint(
                staging, spec.name, result.epoch, result.symbol, result.arg_params,
                result.aux_params)
            manifest["deploy"] = deploy.write_deploy(staging, spec.name, result.epoch,
                                                     result.symbol, input_shapes)
        if "onnx" in formats or "triton" in formats:
            from . import serving
            onnx_path = exporting.export_onnx(
                staging, spec.name, result.symbol, result.arg_params, result.aux_params,
                input_shapes, opset=spec.export.onnx.opset,
                dynamic_batch=spec.export.onnx.dynamic_batch)
            with open(onnx_path, "rb") as f:
                model_bytes = f.read()
            # Held-out samples plus as many random ones drawn over their per-feature range,
            # ORT with all optimisations and none, at batch 1 and as one batch.
            manifest["parity"] = serving.parity_or_fail(
                result.symbol, result.arg_params, result.aux_params, model_bytes,
                atol=spec.export.verify.atol,
                held_out=held_out, random_samples=len(next(iter(held_out.values()))))
            if "onnx" in formats:
                manifest["onnx"] = {"file": os.path.basename(onnx_path),
                                    "opset": spec.export.onnx.opset,
                                    "dynamic_batch": spec.export.onnx.dynamic_batch}
            else:
                os.unlink(onnx_path)
            if "triton" in formats:
                manifest["triton"] = {"repository": "triton", "model": spec.name,
                                      "files": serving.write_triton(staging, spec.name,
                                                                    model_bytes)}
        with open(os.path.join(staging, "train_log.jsonl"), "w") as f:
            for entry in result.history:
                f.write(json.dumps(entry) + "\n")
        if result.history:
            plot_curves(result.history, os.path.join(staging, "curves.png"),
                        title=f"{spec.name} (exported epoch {result.epoch})")
        deploy_problems = deploy.check_deploy_symbol(staging, manifest)  # against the ONNX model
        if deploy_problems:
            raise ExportError("; ".join(deploy_problems))
        exporting.write_manifest(staging, manifest)
        exporting.publish(staging, out_dir)
    return manifest


def _output_entry(spec: Spec, result: TrainResult, data: SplitData) -> Dict[str, Any]:
    from .builder import infer_shapes
    name = result.symbol.list_outputs()[0]
    shape = infer_shapes(spec, result.symbol)[name]
    meaning = {"SoftmaxOutput": "class probabilities", "LogisticRegressionOutput": "sigmoid "
               "probabilities", "LinearRegressionOutput": "values",
               "MAERegressionOutput": "values"}[spec.output.op]
    return {"name": name, "shape": ["batch"] + list(shape[1:]), "dtype": "float32",
            "meaning": meaning}


def build(spec: Spec, *, out_dir: Optional[str] = None, epochs: Optional[int] = None,
          progress: Optional[Progress] = None, verbose: bool = False, resume: bool = False,
          bar: Optional[bool] = None) -> BuildResult:
    """Load data, train, export and verify. Raises SpecError/DataError (user mistakes, before
    anything is written) or RunError (a failed run; the previous export stays whole).

    While training, checkpoints go to a hidden run folder beside the export
    (`export/.<name>.run/`); `resume=True` continues from its last complete checkpoint. The
    run folder is removed once the export is published.
    """
    from . import distributed
    say = progress or (lambda line: None)
    out_dir = out_dir or default_out_dir(spec)
    if epochs is not None:  # an --epochs override, checked before anything is read or written
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=epochs))
        check_schedule(spec)
    dist = distributed.check_env(spec, resume=resume)  # dist_* needs the DMLC_* variables
    check_out_dir(out_dir)
    check_static(spec, build_symbol(spec))  # before any data is read or any epoch is trained
    data = load_data(spec, cache_dir=cache_dir_for(out_dir))  # large sources: beside the export
    worker = distributed.join(spec, progress=say) if dist else None
    writes = worker is None or worker.chief
    run_dir = run_dir_for(out_dir)
    store = RunStore(run_dir, spec)
    if not resume:
        if writes and store.start_fresh():
            say(f"note: discarded the interrupted run in {run_dir} (use --resume to continue one)")
    elif store.exists():
        say(f"resuming from epoch {store.last_epoch()} in {run_dir}")
    elif writes:  # --resume with no complete checkpoint (or none at all): a fresh run
        store.start_fresh()
    result = train(spec, data, progress=progress, verbose=verbose,
                   run_dir=run_dir, resume=resume, bar=bar, worker=worker)
    if not writes:
        return BuildResult(out_dir, {}, result, rank=worker.rank)
    manifest = export_model(spec, result, data, out_dir)
    store.remove()
    return BuildResult(out_dir, manifest, result)
