"""The deploy symbol: the inference graph of a Module checkpoint, without labels.

A training symbol ends in a loss head whose label is a free variable, so
`gluon.SymbolBlock.imports(json, ["data"], params)` fails on it (`Parameter 'softmax_label' is
missing`). The deploy symbol replaces every loss head by the prediction its forward pass
computes (the ONNX model computes the same), drops the label variables, and keeps the output
names, so `<name>-deploy-symbol.json` loads in Gluon, in a label-free Module and, through a
relative symlink `<name>-deploy-NNNN.params -> <name>-NNNN.params`, with
`mx.model.load_checkpoint("<name>-deploy", NNNN)`. The link costs no bytes: the parameters
are the training symbol's, stored once. The check that the deploy symbol computes what the
ONNX model computes is the audit's (symbuilder.serving.audit.check_deploy_symbol).
"""
from __future__ import annotations

import itertools
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import mxnet as mx

from ..errors import ExportError
from ..files import write_atomic
from ..spec.model import HEADS  # the four loss heads; the alias `Softmax` loads as SoftmaxOutput

_TRUE = ("true", "1")

def deploy_names(name: str, epoch: int) -> Dict[str, str]:
    """File names beside `<name>-symbol.json`: the deploy symbol and its params link."""
    return {"symbol": f"{name}-deploy-symbol.json",
            "params_link": f"{name}-deploy-{epoch:04d}.params"}


def deploy_symbol(training_symbol: Any,
                  input_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> Any:
    """`training_symbol` with every loss head replaced by its prediction and its label
    variable removed; every other node and output kept, output names unchanged.

    SoftmaxOutput -> softmax as its forward computes it: over axis 1 with `multi_output`,
    over the last axis with `preserve_shape`, otherwise over all non-batch axes (flatten,
    softmax, reshape back, as MXNet's native kernel does; with `input_shapes` a 2-D head input
    gets a plain softmax, and a 4-D one is refused (ExportError), as the ONNX export refuses it:
    there oneDNN's kernel takes the last axis instead).
    LogisticRegressionOutput -> sigmoid; Linear/MAERegressionOutput -> identity. Attributes
    that only shape the gradient (grad_scale, use_ignore, normalization, ...) are dropped.
    """
    graph = json.loads(training_symbol.tojson())
    ranks = _head_input_ranks(training_symbol, input_shapes) if input_shapes else {}
    nodes, n_outputs, moved = _rewrite(graph, ranks)
    graph.update(nodes=nodes, node_row_ptr=[0, *itertools.accumulate(n_outputs)],
                 arg_nodes=[i for i, node in enumerate(nodes) if node["op"] == "null"],
                 heads=[[moved[nid], idx, 0] for nid, idx, *_ in graph["heads"]])
    return mx.sym.load_json(json.dumps(graph))


def _rewrite(graph: Mapping[str, Any], ranks: Mapping[Tuple[str, int], int]
             ) -> Tuple[List[Dict[str, Any]], List[int], Dict[int, int]]:
    """The new node list (in topological order, as MXNet writes it), each new node's output
    count, and where each kept old node went (for a head: its prediction's last node)."""
    nodes, row_ptr = graph["nodes"], graph["node_row_ptr"]
    labels = _label_variables(nodes)
    taken = {node["name"] for node in nodes}
    out: List[Dict[str, Any]] = []
    n_outputs: List[int] = []
    moved: Dict[int, int] = {}
    for nid, node in enumerate(nodes):
        if nid in labels:
            continue
        # A dropped label is not in `moved`; a head's prediction reads its first input only.
        inputs = [[moved[src], idx, 0] for src, idx, *_ in node["inputs"] if src in moved]
        if node["op"] in HEADS:
            src, idx = node["inputs"][0][:2]
            chain = _prediction(node, inputs[0], len(out), ranks.get((nodes[src]["name"], idx)),
                                taken)
            n_outputs += [1] * len(chain)
        else:
            chain = [dict(node, inputs=inputs)]
            n_outputs.append(row_ptr[nid + 1] - row_ptr[nid])
        out += chain
        moved[nid] = len(out) - 1
    return out, n_outputs, moved


def _label_variables(nodes: Sequence[Mapping[str, Any]]) -> Set[int]:
    """Variables read only as a loss head's label (its second input)."""
    as_label: Set[int] = set()
    elsewhere: Set[int] = set()
    for node in nodes:
        for slot, (src, *_rest) in enumerate(node["inputs"]):
            is_label = node["op"] in HEADS and slot == 1
            (as_label if is_label else elsewhere).add(src)
    return {nid for nid in as_label - elsewhere if nodes[nid]["op"] == "null"}


def _head_input_ranks(symbol: Any, input_shapes: Mapping[str, Sequence[int]]
                      ) -> Dict[Tuple[str, int], int]:
    """Rank of every internal output, keyed by (node name, output index), where MXNet's
    shape inference knows it."""
    internals = symbol.get_internals()
    heads = json.loads(internals.tojson())
    _, shapes, _ = internals.infer_shape_partial(**{k: tuple(v) for k, v in input_shapes.items()})
    return {(heads["nodes"][nid]["name"], idx): len(shape)
            for (nid, idx, *_), shape in zip(heads["heads"], shapes) if shape}


def _prediction(head: Mapping[str, Any], data: List[int], first_id: int, rank: Optional[int],
                taken: Set[str]) -> List[Dict[str, Any]]:
    """The nodes computing `head`'s forward output from `data`; the last one takes the head's
    name, so the output keeps its name (`softmax_output`, as in the ONNX model)."""
    name = head["name"]
    attrs = {k: str(v).lower() for k, v in (head.get("attrs") or {}).items()}
    if head["op"] == "LogisticRegressionOutput":
        return [{"op": "sigmoid", "name": name, "inputs": [data]}]
    if head["op"] in ("LinearRegressionOutput", "MAERegressionOutput"):
        return [{"op": "_copy", "name": name, "inputs": [data]}]
    if attrs.get("multi_output") in _TRUE:
        return [_softmax(name, data, 1)]
    if attrs.get("preserve_shape") in _TRUE or rank == 2:
        return [_softmax(name, data, -1)]
    if rank == 4:  # measured: oneDNN's kernel takes the last axis, the native one all of them
        raise ExportError(f"'{name}': SoftmaxOutput of a 4-D input without multi_output or "
                          "preserve_shape has backend-dependent results in MXNet 1.9.1; set "
                          "one of them, or flatten before the head")
    # MXNet's forward: reshape to (batch, -1), softmax over axis 1, back to the input's shape.
    flat, soft = _unique(f"{name}_flatten", taken), _unique(f"{name}_softmax", taken)
    return [{"op": "Reshape", "name": flat, "attrs": {"shape": "(0, -1)"}, "inputs": [data]},
            _softmax(soft, [first_id, 0, 0], -1),
            {"op": "reshape_like", "name": name, "inputs": [[first_id + 1, 0, 0], data]}]


def _softmax(name: str, data: List[int], axis: int) -> Dict[str, Any]:
    return {"op": "softmax", "name": name, "attrs": {"axis": str(axis)}, "inputs": [data]}


def _unique(name: str, taken: Set[str]) -> str:
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}{n}"
    taken.add(candidate)
    return candidate


def write_deploy(folder: str, name: str, epoch: int, training_symbol: Any,
                 input_shapes: Mapping[str, Sequence[int]]) -> Dict[str, Any]:
    """Write `<name>-deploy-symbol.json` and the params link into `folder` (beside the
    checkpoint `<name>-NNNN.params`); return the manifest's `deploy` entry."""
    files = deploy_names(name, epoch)
    symbol = deploy_symbol(training_symbol, input_shapes)
    write_atomic(os.path.join(folder, files["symbol"]), symbol.save)
    params = f"{name}-{epoch:04d}.params"
    try:
        # Relative, so the folder can move; verify checks where it points.
        os.symlink(params, os.path.join(folder, files["params_link"]))
        link: Optional[str] = files["params_link"]
    except OSError:  # a file system without symlinks: the params file is still named below
        link = None
    return {"symbol": files["symbol"], "params": params, "params_link": link,
            "inputs": list(input_shapes),
            "outputs": symbol.list_outputs()}
