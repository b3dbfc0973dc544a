"""Graph assembly: walk an MXNet symbol, call one registered translation per op node, and build a
checked ONNX model (inputs, initializers, outputs, dynamic batch axis, opset and IR version).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
import onnx
from onnx import helper, numpy_helper

from symbuilder.errors import ExportError
from symbuilder import __version__
from symbuilder.defaults import SUPPORTED_OPSETS
from symbuilder.onnx.registry import (GraphParts, OpContext, TensorInfo, find, lookup, opset_ranges, random_ops,
                                       ranges_text, registered_ops)

BATCH_DIM = "batch"


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, mx.nd.NDArray):
        return value.asnumpy()
    return np.asarray(value)


def _graph_json(symbol: mx.sym.Symbol) -> Dict[str, Any]:
    return json.loads(symbol.tojson())


def _node_attrs(node: Mapping[str, Any]) -> Dict[str, str]:
    # Older MXNet JSON used "param"/"attr"; "__lr_mult__"-style keys are training hints, not op attributes.
    raw = node.get("attrs") or node.get("attr") or node.get("param") or {}
    return {k: str(v) for k, v in raw.items() if not k.startswith("__")}


def _check_opset(opset: int) -> None:
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is not supported; choose one of {', '.join(map(str, SUPPORTED_OPSETS))}")


def check_translatable(symbol: mx.sym.Symbol, opset: int = 17) -> None:
    """Raise ONE ExportError listing every op of ``symbol`` without a translation at ``opset``,
    with its node count and first node, so a user learns all of them at once."""
    _check_opset(opset)
    missing: Dict[str, List[str]] = {}
    for node in _graph_json(symbol)["nodes"]:
        if node["op"] != "null" and find(node["op"], opset) is None:
            missing.setdefault(node["op"], []).append(node["name"])
    if not missing:
        return
    if len(missing) == 1:  # one op: lookup's message, which callers and users already know
        op, names = next(iter(missing.items()))
        lookup(op, names[0], opset)
    items = []
    for op, names in missing.items():
        item = f"'{op}' ({len(names)} node{'s' if len(names) > 1 else ''}, first '{names[0]}'"
        if opset_ranges(op):  # the op is translated, just not at this opset
            item += f"; translated at opsets {ranges_text(op)}"
        items.append(item + ")")
    raise ExportError(f"no ONNX translation at opset {opset} for {len(missing)} ops: {', '.join(items)}; "
                      f"symbuilder translates {len(registered_ops(opset))} ops at this opset "
                      "(the README's list of ONNX operators)")


def _infer(internals: mx.sym.Symbol, known: Mapping[str, Tuple[int, ...]]) -> List[Optional[Tuple[int, ...]]]:
    """Static shape of every internal output (None where MXNet cannot tell)."""
    try:
        _, out_shapes, _ = internals.infer_shape_partial(**known)
    except mx.base.MXNetError as e:
        # MXNet's message is a C++ traceback; its last line says what went wrong.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise ExportError(f"MXNet shape inference failed for {dict(known)}: {lines[-1] if lines else e!r}") from e
    shapes: List[Optional[Tuple[int, ...]]] = []
    for shape in out_shapes:
        # infer_shape_partial writes 0 for an unknown dim (and () for an unknown rank).
        shapes.append(tuple(shape) if shape and all(d > 0 for d in shape) else None)
    return shapes


def _infer_dtypes(internals: mx.sym.Symbol, dtypes: Mapping[str, Any]) -> List[Any]:
    n = len(internals.list_outputs())
    try:
        _, out_types, _ = internals.infer_type_partial(**dtypes)
    except mx.base.MXNetError:
        return [np.float32] * n
    return [np.dtype(t).type if t is not None else np.float32 for t in out_types]


def _tensor_infos(
    internals: mx.sym.Symbol,
    params: Mapping[str, np.ndarray],
    input_shapes: Mapping[str, Sequence[int]],
    input_dtypes: Mapping[str, str],
    dynamic_batch: bool,
) -> Dict[str, TensorInfo]:
    """TensorInfo for every internal output name, from MXNet's own shape and type inference.

    With a dynamic batch, shapes are inferred a second time at twice the batch size: the dims
    that change are the ones an ONNX graph must keep dynamic (e.g. Reshape's -1).
    """
    names = internals.list_outputs()
    declared = set(internals.list_arguments()) | set(internals.list_auxiliary_states())
    param_shapes = {k: tuple(v.shape) for k, v in params.items() if k in declared}
    shapes_a = _infer(internals, {**param_shapes, **{k: tuple(v) for k, v in input_shapes.items()}})
    if dynamic_batch:
        batch = int(next(iter(input_shapes.values()))[0])
        doubled = {k: (2 * int(v[0]),) + tuple(v[1:]) for k, v in input_shapes.items()}
        try:
            shapes_b = _infer(internals, {**param_shapes, **doubled})
        except ExportError as e:
            raise ExportError(f"the graph only works at batch {batch} ({e}); export with dynamic_batch=False") from e
        for name, a, b in zip(names, shapes_a, shapes_b):
            if a is not None and b is None:
                raise ExportError(
                    f"the graph only works at batch {batch}: MXNet cannot infer the shape of '{name}' at batch "
                    f"{2 * batch}; export with dynamic_batch=False"
                )
    else:
        shapes_b = shapes_a
    # Inputs without a declared dtype are float32: without it, MXNet's type inference of ops
    # that set their own dtype (one_hot dtype=float16) was lost.
    dtypes = {k: np.dtype(input_dtypes.get(k, "float32")) for k in input_shapes}
    dtypes.update({k: v.dtype for k, v in params.items() if k in declared})
    types = _infer_dtypes(internals, dtypes)
    infos: Dict[str, TensorInfo] = {}
    for name, a, b, t in zip(names, shapes_a, shapes_b, types):
        if a is None or b is None or len(a) != len(b):
            infos[name] = TensorInfo(a, (), t)
        else:
            infos[name] = TensorInfo(a, tuple(x != y for x, y in zip(a, b)), t)
    return infos


def _value_info(name: str, dtype: Any, info: TensorInfo, batch: Optional[int], dynamic_batch: bool) -> onnx.ValueInfoProto:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    if info.shape is None:
        return helper.make_tensor_value_info(name, elem, None)
    dims: List[Any] = []
    for i, d in enumerate(info.shape):
        if dynamic_batch and info.batch_dims and info.batch_dims[i]:
            # Only the dim that IS the batch gets the shared symbol; a derived dim (2*batch) is left open.
            dims.append(BATCH_DIM if d == batch else None)
        else:
            dims.append(int(d))
    return helper.make_tensor_value_info(name, elem, dims)


def to_onnx(
    symbol: mx.sym.Symbol,
    params: Mapping[str, np.ndarray],
    input_shapes: Mapping[str, Sequence[int]],
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    model_name: str = "symbuilder",
    input_dtypes: Optional[Mapping[str, str]] = None,
) -> onnx.ModelProto:
    """Translate ``symbol`` with ``params`` into a checked ONNX model (public API).

    - ``symbol``: any MXNet symbol, a Group with several outputs included; loss heads become
      their prediction and their label variables are dropped.
    - ``params``: arg and aux parameters merged in one dict, numpy arrays or NDArrays (e.g.
      ``symbuilder.export.checkpoint.to_numpy_params(arg_params, aux_params)``; ``{}`` for a
      graph without parameters).
    - ``input_shapes``: every data input's full shape, batch axis first; the graph inputs, in
      this order.
    - ``opset``: the ONNX opset, one of ``symbuilder.defaults.SUPPORTED_OPSETS``.
    - ``dynamic_batch``: a symbolic batch axis on the inputs and outputs (else fixed to
      ``input_shapes``' batch).
    - ``model_name``: the ONNX graph's name.
    - ``input_dtypes``: a numpy dtype name per input ("int64" for Embedding indices); float32
      for an input not named. Outputs get the dtypes MXNet infers from them.

    The outputs carry MXNet's output names. Raises ExportError for an op without a
    translation, shapes MXNet rejects, or an invalid resulting model. The model is not
    compared with MXNet here: ``symbuilder.proof.parity_or_fail`` does that.
    """
    check_translatable(symbol, opset)
    params = {k: _as_numpy(v) for k, v in params.items()}
    input_dtypes = dict(input_dtypes or {})
    _check_input_shapes(symbol, input_shapes)
    internals = symbol.get_internals()
    infos = _tensor_infos(internals, params, input_shapes, input_dtypes, dynamic_batch)
    parts = _translate_nodes(internals, params, input_shapes, infos, opset, dynamic_batch)
    output_names = symbol.list_outputs()
    kept_nodes, graph_inputs, used_params = _prune(parts, output_names, params, input_shapes, symbol)
    onnx_inputs = _input_value_infos(graph_inputs, input_shapes, input_dtypes, dynamic_batch)
    onnx_outputs = _output_value_infos(output_names, infos, input_shapes, dynamic_batch)
    initializers = _initializers(params, used_params, parts, kept_nodes)
    onnx_graph = helper.make_graph(kept_nodes, model_name, onnx_inputs, onnx_outputs, initializer=initializers)
    return _checked_model(onnx_graph, opset)


def _check_input_shapes(symbol: mx.sym.Symbol, input_shapes: Mapping[str, Sequence[int]]) -> None:
    arguments = set(symbol.list_arguments())
    for name, shape in input_shapes.items():
        if name not in arguments:
            raise ExportError(f"input_shapes names '{name}', which is not an input of the symbol "
                              f"(its variables: {', '.join(symbol.list_arguments())})")
        if len(shape) == 0 or any(int(d) <= 0 for d in shape):
            raise ExportError(f"input_shapes['{name}'] = {tuple(shape)}: expected positive dims, batch axis first")


def _translate_nodes(
    internals: mx.sym.Symbol,
    params: Mapping[str, np.ndarray],
    input_shapes: Mapping[str, Sequence[int]],
    infos: Mapping[str, TensorInfo],
    opset: int,
    dynamic_batch: bool,
) -> GraphParts:
    """Call each op node's registered translation, in graph order; the ONNX nodes it adds land
    in the returned GraphParts (unpruned: loss labels and unused params are still there)."""
    graph = _graph_json(internals)
    nodes = graph["nodes"]
    # internals' heads are every output of every node, in the order of internals.list_outputs().
    tensor_name: Dict[Tuple[int, int], str] = {
        (int(h[0]), int(h[1])): n for h, n in zip(graph["heads"], internals.list_outputs())
    }
    unknown = TensorInfo(None)

    def name_of(nid: int, idx: int) -> str:
        if nodes[nid]["op"] == "null":
            return nodes[nid]["name"]
        return tensor_name.get((nid, idx), f"{nodes[nid]['name']}_output{idx}")

    first_input = next(iter(input_shapes), None)
    parts = GraphParts(batch_source=first_input if dynamic_batch else None,
                       batch_size=int(input_shapes[first_input][0]) if first_input else None,
                       fold=_folder(internals, params))
    parts.tensor_names.update(tensor_name.values())
    n_outputs = _outputs_per_node(tensor_name)
    for nid, node in enumerate(nodes):
        if node["op"] == "null":
            continue
        inputs = [name_of(int(src[0]), int(src[1])) for src in node["inputs"]]
        outputs = [name_of(nid, i) for i in range(n_outputs.get(nid, 1))]
        ctx = OpContext(
            name=node["name"],
            op=node["op"],
            attrs=_node_attrs(node),
            inputs=inputs,
            outputs=outputs,
            input_infos=[infos.get(n, unknown) for n in inputs],
            output_infos=[infos.get(n, unknown) for n in outputs],
            constants=params,
            opset=opset,
            dynamic_batch=dynamic_batch,
            parts=parts,
        )
        lookup(node["op"], node["name"], opset)(ctx)
    return parts


def _outputs_per_node(tensor_name: Mapping[Tuple[int, int], str]) -> Dict[int, int]:
    # Counted once for all nodes: a scan of tensor_name per node was quadratic in the graph
    # size (2.5 s of a 3,000-layer export).
    n_outputs: Dict[int, int] = {}
    for j, i in tensor_name:
        n_outputs[j] = max(n_outputs.get(j, 1), i + 1)
    return n_outputs


def _input_value_infos(
    graph_inputs: Sequence[str],
    input_shapes: Mapping[str, Sequence[int]],
    input_dtypes: Mapping[str, str],
    dynamic_batch: bool,
) -> List[onnx.ValueInfoProto]:
    onnx_inputs = []
    for name in graph_inputs:
        shape = tuple(int(d) for d in input_shapes[name])
        info = TensorInfo(shape, (True,) + (False,) * (len(shape) - 1))
        onnx_inputs.append(_value_info(name, input_dtypes.get(name, "float32"), info, shape[0], dynamic_batch))
    return onnx_inputs


def _output_value_infos(
    output_names: Sequence[str],
    infos: Mapping[str, TensorInfo],
    input_shapes: Mapping[str, Sequence[int]],
    dynamic_batch: bool,
) -> List[onnx.ValueInfoProto]:
    batch = int(next(iter(input_shapes.values()))[0]) if input_shapes else None
    unknown = TensorInfo(None)
    return [_value_info(name, infos.get(name, unknown).dtype, infos.get(name, unknown), batch, dynamic_batch)
            for name in output_names]


def _initializers(
    params: Mapping[str, np.ndarray],
    used_params: Sequence[str],
    parts: GraphParts,
    kept_nodes: Sequence[onnx.NodeProto],
) -> List[onnx.TensorProto]:
    initializers = [numpy_helper.from_array(np.ascontiguousarray(params[n]), n) for n in used_params]
    consumed = _consumed(kept_nodes)  # once, not per initializer (that was quadratic)
    return initializers + [t for n, t in parts.initializers.items() if n in consumed]


def _checked_model(onnx_graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(onnx_graph, opset_imports=opset_ids, producer_name="symbuilder", producer_version=__version__)
    # The lowest IR version that carries this opset: the widest range of runtimes can load it.
    model.ir_version = helper.find_min_ir_version_for(opset_ids)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported ONNX model is invalid: {e}") from e
    return model


def _folder(internals: mx.sym.Symbol, params: Mapping[str, np.ndarray]) -> Callable[[str], Optional[np.ndarray]]:
    """fold(name): the value of internal tensor ``name`` when it depends on stored parameters
    only, computed by MXNet itself (so the folded value is MXNet's, not a re-implementation);
    None when it needs a data input or MXNet cannot compute it alone."""
    index = {n: i for i, n in enumerate(internals.list_outputs())}
    cache: Dict[str, Optional[np.ndarray]] = {}

    def fold(name: str) -> Optional[np.ndarray]:
        if name in params:
            return params[name]
        if name not in cache:
            cache[name] = _evaluate(internals[index[name]], params) if name in index else None
        return cache[name]

    return fold


def _evaluate(sub: mx.sym.Symbol, params: Mapping[str, np.ndarray]) -> Optional[np.ndarray]:
    args, aux = sub.list_arguments(), sub.list_auxiliary_states()
    if not all(n in params for n in args + aux):
        return None
    if any(n["op"] in random_ops() for n in json.loads(sub.tojson())["nodes"]):
        return None  # a random draw folded into a constant would be one draw forever
    try:
        exe = sub.bind(mx.cpu(), args={n: mx.nd.array(params[n], dtype=params[n].dtype) for n in args},
                       aux_states={n: mx.nd.array(params[n], dtype=params[n].dtype) for n in aux}, grad_req="null")
        return exe.forward(is_train=False)[0].asnumpy()
    except mx.base.MXNetError:  # e.g. a shape MXNet infers only from a data input
        return None


def _consumed(nodes: Sequence[onnx.NodeProto]) -> set:
    return {i for n in nodes for i in n.input if i}


def _prune(
    parts: GraphParts,
    output_names: Sequence[str],
    params: Mapping[str, np.ndarray],
    input_shapes: Mapping[str, Sequence[int]],
    symbol: mx.sym.Symbol,
) -> Tuple[List[onnx.NodeProto], List[str], List[str]]:
    """Keep only what the outputs need: this is what drops loss labels and unused stored params."""
    producer = {o: k for k, n in enumerate(parts.nodes) for o in n.output}
    needed = set(output_names)
    stack = list(output_names)
    keep = set()
    for name in output_names:
        if name not in producer and name not in params and name not in input_shapes:
            raise ExportError(
                f"output '{name}' has no inference meaning and is not exported (e.g. a training mask); "
                "select the outputs inference needs, e.g. symbol[0]"
            )
    while stack:
        t = stack.pop()
        k = producer.get(t)
        if k is None or k in keep:
            continue
        keep.add(k)
        for i in parts.nodes[k].input:
            if i and i not in needed:
                needed.add(i)
                stack.append(i)
    kept = [n for k, n in enumerate(parts.nodes) if k in keep]
    variables = symbol.list_arguments() + symbol.list_auxiliary_states()
    graph_inputs: List[str] = []
    used_params: List[str] = []
    for v in variables:
        if v not in needed:
            continue
        if v in params:
            used_params.append(v)
        elif v in input_shapes:
            graph_inputs.append(v)
        else:
            raise ExportError(
                f"variable '{v}' is needed for inference but is neither in params nor in input_shapes "
                f"(inputs given: {sorted(input_shapes)})"
            )
    produced = set(producer) | set(parts.initializers) | set(used_params) | set(graph_inputs)
    missing = sorted(n for n in needed if n not in produced)
    if missing:
        raise ExportError(f"tensors {missing} are used but no translation produces them")
    return kept, graph_inputs, used_params
