"""Static checks: what needs the built graph (the Model) but no data: devices, the
kvstore, the optimizer against the parameter shapes, the initializers, an ONNX translation
for every op. `build` and `validate` run them before reading any data, so a spec that could
never be trained or exported fails in a second, not after training."""
from __future__ import annotations

import json
import warnings
from typing import List, Optional

import mxnet as mx
import numpy as np

from ..errors import ExportError
from ..inputlayer import InputLayerNames, fixed_param_names
from ..spec.model import CONTEXT_RE, Spec
from ..spec.semantics import check_metric_outputs, make_initializer
from . import Model
from .layers import layer_names
from .shapes import argument_owners, elements


def check_static(model: Model) -> None:
    """Every static check of the Model, in the order a user would fix them."""
    spec = model.spec
    check_devices(spec)
    check_kvstore(spec)
    check_optimizer_shapes(model)
    check_initialization(model)
    check_metric_outputs(spec, model.num_outputs)
    if "onnx" in spec.export.formats:
        check_onnx_translatable(spec, model.symbol)


def check_devices(spec: Spec) -> List[mx.Context]:
    """mx.Context objects for train.context; gpu(N) needs an MXNet build that sees N+1 GPUs."""
    out = []
    for i, text in enumerate(spec.train.context):
        kind, index = CONTEXT_RE.match(text).groups()
        if kind == "gpu":
            available = mx.context.num_gpus()
            if int(index) >= available:
                raise spec.error(("train", "context", i) if len(spec.train.context) > 1
                                 else ("train", "context"),
                                 f"{text} requested, but this MXNet sees {available} GPU(s); "
                                 "use cpu(0), or a CUDA build of mxnet on a GPU machine")
            out.append(mx.gpu(int(index)))
        else:
            out.append(mx.cpu(int(index)))
    return out


def check_onnx_translatable(spec: Spec, symbol: mx.sym.Symbol) -> None:
    """Every op without an ONNX translation at the spec's opset, in one located error at the
    first such layer (the message lists each op with its count and first node)."""
    from ..onnx.convert import check_translatable  # lazy: onnx is imported only to export
    opset = spec.export.onnx.opset
    try:
        check_translatable(symbol, opset)
    except ExportError as e:
        names = layer_names(spec)
        first = next((node["name"] for node in json.loads(symbol.tojson())["nodes"]
                      if node["op"] != "null" and node["name"] in names
                      and not _translated(node["op"], opset)), None)
        where = ("layers", names.index(first), "op") if first else ("export", "formats")
        raise spec.error(where, f"{e} (or leave onnx out of export.formats)") from None


def _translated(op: str, opset: int) -> bool:
    from ..onnx.registry import find  # lazy: onnx is imported only to export
    return find(op, opset) is not None


def check_kvstore(spec: Spec) -> None:
    """nccl reduces on GPUs through NVIDIA's library: a CPU build of MXNet cannot create it."""
    if spec.train.kvstore == "nccl" and mx.context.num_gpus() == 0:
        raise spec.error(("train", "kvstore"), "nccl needs GPUs and a CUDA build of mxnet, but "
                                               "this MXNet sees 0 GPU(s); use local or device")


def check_initialization(model: Model) -> None:
    """Run the initializers Module.init_params would run, on every parameter of the graph
    (the real shape up to 2^16 elements, else the same rank with dimensions cut to 8): an
    initializer that cannot fill a parameter (xavier on a 1-D bias, a parameter named so that
    MXNet picks no default) fails here instead of after the data is read."""
    spec, symbol, shapes = model.spec, model.symbol, model.shapes
    initializer = make_initializer(spec, spec.train.initializer, ("train", "initializer"))
    attrs = symbol.attr_dict()
    owners = argument_owners(spec, symbol)
    skip = {spec.output.label_name, *(item.name for item in spec.all_inputs)}
    for name in symbol.list_arguments() + symbol.list_auxiliary_states():
        if name in skip:
            continue
        shape = tuple(shapes[name])
        trial = shape if elements(shape) <= 1 << 16 else tuple(min(d, 8) for d in shape)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy's "invalid value in sqrt": NaN weights
                array = mx.nd.zeros(trial)
                initializer(mx.init.InitDesc(name, attrs.get(name, {})), array)
                if not np.isfinite(array.asnumpy()).all():
                    raise ValueError("it gives values that are not finite (NaN or inf)")
        except Exception as e:  # ValueError/AssertionError/MXNetError from the initializer
            raise _initialization_error(spec, name, shape, owners.get(name), e) from None


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


def check_optimizer_shapes(model: Model) -> None:
    """groupadagrad (MXNet contrib) keeps one learning rate per row and asserts, mid-training,
    that every parameter it updates is 2-D. Refuse such a spec here, where `validate` sees it
    before any data is read. lr_mult=0 does not help: a parameter with a gradient is still
    updated; only the Module's fixed_param_names (stats: dataset) take one out."""
    spec, symbol, shapes = model.spec, model.symbol, model.shapes
    if spec.train.optimizer.lower() != "groupadagrad":
        return
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
