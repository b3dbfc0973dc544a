"""`validate` and `summary`: everything that can be checked or shown without training."""
from __future__ import annotations

import json
from typing import List

import mxnet as mx

from .builder import InputLayerNames, build_symbol, infer_shapes, layer_names, layer_shapes
from .errors import ExportError
from .spec.model import Spec


def check_static(spec: Spec, symbol: mx.sym.Symbol) -> None:
    """What needs the built graph but no data: devices, the optimizer against the parameter
    shapes, an ONNX translation for every op. `build` runs it before reading any data, so a
    spec that could never be exported fails in a second, not after training."""
    from .train import contexts
    contexts(spec)
    check_optimizer_shapes(spec, symbol)
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
