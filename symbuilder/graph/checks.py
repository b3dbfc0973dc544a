"""`validate` and `summary`: everything that can be checked or shown without training."""
from __future__ import annotations

import json
import warnings
from typing import Any, List, Optional

import mxnet as mx
import numpy as np

from .builder import InputLayerNames, build_symbol, infer_shapes, layer_names, layer_shapes
from .errors import ExportError
from .spec.model import Spec


def check_static(spec: Spec, symbol: mx.sym.Symbol) -> None:
    """What needs the built graph but no data: devices, the optimizer against the parameter
    shapes, an ONNX translation for every op. `build` runs it before reading any data, so a
    spec that could never be exported fails in a second, not after training."""
    from .train import contexts
    contexts(spec)
    check_kvstore(spec)
    check_optimizer_shapes(spec, symbol)
    check_initialization(spec, symbol)
    if "onnx" in spec.export.formats:
        check_onnx_translatable(spec, symbol)


def check_onnx_translatable(spec: Spec, symbol: mx.sym.Symbol) -> None:
    """A located error at the layer whose op has no ONNX translation."""
    from .onnx.registry import lookup
    names = layer_names(spec)
    for node in json.loads(symbol.tojson())["nodes"]:
        if node["op"] == "null":
            continue
        try:
            lookup(node["op"], node["name"])
        except ExportError as e:
            if node["name"] in names:
                raise spec.error(("layers", names.index(node["name"]), "op"),
                                 f"{e} (or leave onnx out of export.formats)") from None
            raise spec.error(("export", "formats"), str(e)) from None


def check_kvstore(spec: Spec) -> None:
    """nccl reduces on GPUs through NVIDIA's library: a CPU build of MXNet cannot create it."""
    if spec.train.kvstore == "nccl" and mx.context.num_gpus() == 0:
        raise spec.error(("train", "kvstore"), "nccl needs GPUs and a CUDA build of mxnet, but "
                                               "this MXNet sees 0 GPU(s); use local or device")


def check_labels(spec: Spec, data: Any) -> None:
    """What needs the labels, checked after the data is read and before any training: a
    binary-only metric (f1, mcc raise on a batch with a third class) on more classes."""
    from .metrics import BINARY_ONLY, metric_kind
    from .spec.semantics import metric_path
    if data.classes is None or len(data.classes) <= 2:
        return
    for i, metric in enumerate(spec.metrics):
        if metric_kind(metric) == BINARY_ONLY:
            raise spec.error(metric_path(spec, i), f"'{metric}' is a binary metric, but the "
                             f"labels have {len(data.classes)} classes; use acc, ce or pcc")


def check_initialization(spec: Spec, symbol: mx.sym.Symbol) -> None:
    """Run the initializers Module.init_params would run, on every parameter of the graph
    (the real shape up to 2^16 elements, else the same rank with dimensions cut to 8): an
    initializer that cannot fill a parameter (xavier on a 1-D bias, a parameter named so that
    MXNet picks no default) fails here instead of after the data is read."""
    from .builder import _argument_owners
    from .spec.semantics import make_initializer
    shapes = infer_shapes(spec, symbol)
    initializer = make_initializer(spec, spec.train.initializer, ("train", "initializer"))
    attrs = symbol.attr_dict()
    owners = _argument_owners(spec, symbol)
    skip = {spec.output.label_name, *(item.name for item in spec.all_inputs)}
    for name in symbol.list_arguments() + symbol.list_auxiliary_states():
        if name in skip:
            continue
        shape = tuple(shapes[name])
        trial = shape if _elements(shape) <= 1 << 16 else tuple(min(d, 8) for d in shape)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy's "invalid value in sqrt": NaN weights
                array = mx.nd.zeros(trial)
                initializer(mx.init.InitDesc(name, attrs.get(name, {})), array)
                if not np.isfinite(array.asnumpy()).all():
                    raise ValueError("it gives values that are not finite (NaN or inf)")
        except Exception as e:  # ValueError/AssertionError/MXNetError from the initializer
            raise _initialization_error(spec, name, shape, owners.get(name), e) from None


def _elements(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _initialization_error(spec: Spec, name: str, shape: tuple, index: Optional[int],
                          error: Exception) -> Exception:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if index is None:
        return spec.error(("train", "initializer"), f"cannot initialize '{name}' of shape "
                                                    f"{shape}: {text}")
    layer = spec.layers[index]
    slot = name[len(layer_names(spec)[index]) + 1:]
    if slot in layer.params and layer.params[slot].init is not None:
        return spec.error(("layers", index, "params", slot, "init"),
                          f"cannot initialize '{name}' of shape {shape}: {text}")
    if "Unknown initialization pattern" in text:
        return spec.error(("layers", index), f"MXNet picks an initializer by the parameter's "
                          f"name (*_weight, *_bias, *_gamma, *_beta), and '{name}' has none; "
                          f"give one: params: {{{slot}: {{init: {{name: normal}}}}}}")
    return spec.error(("train", "initializer"), f"cannot initialize '{name}' of shape {shape} "
                                                f"(layer '{layer_names(spec)[index]}'): {text}")


def validate(spec: Spec, *, check_data: bool = True) -> str:
    """Build the symbol with shape inference, check devices, ONNX support and (unless
    `check_data` is false) the data files, labels and shapes. Returns a one-line summary."""
    symbol = build_symbol(spec)
    check_static(spec, symbol)
    parts = [f"{len(spec.layers)} layers",
             f"{sum(r['params'] for r in layer_shapes(spec, symbol)):,} parameters"]
    if check_data:
        from .data import load_data
        data = load_data(spec)
        check_labels(spec, data)
        parts.append(f"{len(data.train)} training and {len(data.val)} validation samples")
        if data.classes is not None:
            parts.append(f"{len(data.classes)} classes")
    return ", ".join(parts)


def summary_table(spec: Spec) -> str:
    """The layers with their output shapes (batch 1) and parameter counts, as text."""
    symbol = build_symbol(spec)
    rows = layer_shapes(spec, symbol)
    header = ("layer", "op", "output shape", "params")
    table: List[tuple] = [header] + [
        (r["name"], r["op"], "x".join(map(str, r["shape"][1:])) or "-", f"{r['params']:,}")
        for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in table]
    total = sum(r["params"] for r in rows)
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"total parameters: {total:,} (input statistics included)")
    return "\n".join(lines)


def check_optimizer_shapes(spec: Spec, symbol: mx.sym.Symbol) -> None:
    """groupadagrad (MXNet contrib) keeps one learning rate per row and asserts, mid-training,
    that every parameter it updates is 2-D. Refuse such a spec here, where `validate` sees it
    before any data is read. lr_mult=0 does not help: a parameter with a gradient is still
    updated; only the Module's fixed_param_names (stats: dataset) take one out."""
    if spec.train.optimizer.lower() != "groupadagrad":
        return
    shapes = infer_shapes(spec, symbol)
    from .train import fixed_param_names
    skip = {spec.output.label_name, *fixed_param_names(spec)}
    skip.update(item.name for item in spec.all_inputs)
    input_layer_params = set()
    for item in spec.all_inputs:
        names = InputLayerNames.for_input(item.name)
        input_layer_params.update((names.gamma, names.beta))
    for name in symbol.list_arguments():
        shape = tuple(shapes.get(name, ()))
        if name in skip or len(shape) == 2:
            continue
        if name in input_layer_params:
            fix = ("use stats: dataset with freeze: true, which takes the input layer out of "
                   "training (lr_mult=0 alone does not)")
        elif name.endswith("_bias"):
            fix = "set no_bias: true on that layer"
        else:
            fix = "use only FullyConnected (no_bias: true) and Embedding layers"
        raise spec.error(("train", "optimizer"),
                         f"'{spec.train.optimizer}' updates only 2-D parameters (one learning "
                         f"rate per row; MXNet asserts on any other shape), but it would update "
                         f"'{name}' of shape {shape}: {fix}, or use adagrad")
