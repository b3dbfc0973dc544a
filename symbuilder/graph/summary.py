"""The summary table (`symbuilder summary`): every node's output shape, what it reads from
(Keras's "connected to") and its parameters, split into trainable, frozen and statistics."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Set

import numpy as np

from ..inputlayer import fixed_param_names
from ..spec.model import Spec
from . import Model, build_model
from .shapes import data_shapes

KINDS = ("trainable", "frozen", "stats")


def frozen_names(model: Model) -> Set[str]:
    """Arguments no optimizer moves: the Module's fixed_param_names (the input layer's
    beta/gamma in stats: dataset) and every variable with lr_mult 0 (the symbol's
    __lr_mult__, which is what the optimizer reads)."""
    attrs = model.symbol.attr_dict()
    by_lr = {name for name, a in attrs.items() if float(a.get("__lr_mult__", 1)) == 0.0}
    return by_lr | set(fixed_param_names(model.spec))


def layer_shapes(model: Model) -> List[Dict[str, Any]]:
    """Per node: name, op, output shape (batch 1), `inputs` (the node names it reads,
    parameters and labels excluded), and its parameter counts by kind (`trainable`,
    `frozen`, `stats`: aux states such as moving mean/var) with their sum in `params`."""
    spec, symbol = model.spec, model.symbol
    internals = symbol.get_internals()
    shapes = data_shapes(spec, 1)
    arg_shapes, out_shapes, aux_shapes = internals.infer_shape(**shapes)
    out_by_name = dict(zip(internals.list_outputs(), out_shapes))
    sizes = {n: int(np.prod(s)) for n, s in zip(internals.list_arguments(), arg_shapes)}
    aux = dict(zip(internals.list_auxiliary_states(), aux_shapes))
    sizes.update({n: int(np.prod(s)) for n, s in aux.items()})
    frozen = frozen_names(model)
    not_params = {spec.output.label_name, *shapes}
    nodes = json.loads(symbol.tojson())["nodes"]
    rows = []
    for node in nodes:
        if node["op"] == "null":
            continue
        name = node["name"]
        sources = [(nodes[i]["name"], i, k) for i, k, *_ in node["inputs"]]
        counts = dict.fromkeys(KINDS, 0)
        for p, i, _ in sources:
            if nodes[i]["op"] == "null" and p not in not_params:
                kind = "stats" if p in aux else "frozen" if p in frozen else "trainable"
                counts[kind] += sizes.get(p, 0)
        inputs = [p if k == 0 else f"{p}[{k}]" for p, i, k in sources
                  if nodes[i]["op"] != "null" or p in shapes]
        shape = out_by_name.get(f"{name}_output", out_by_name.get(f"{name}_output0", ()))
        rows.append({"name": name, "op": node["op"], "shape": tuple(shape), "inputs": inputs,
                     **counts, "params": sum(counts.values())})
    return rows


def summary_table(spec: Spec) -> str:
    """The layers with their output shapes (batch 1), inputs and parameter counts, as text,
    with the totals by kind."""
    rows = layer_shapes(build_model(spec))
    header = ("layer", "op", "output shape", "connected to", *KINDS)
    table: List[tuple] = [header] + [
        (r["name"], r["op"], "x".join(map(str, r["shape"][1:])) or "-",
         ", ".join(r["inputs"]) or "-", *(f"{r[k]:,}" for k in KINDS)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in table]
    lines.insert(1, "-" * len(lines[0]))
    totals = {k: sum(r[k] for r in rows) for k in KINDS}
    lines.append(f"total parameters: {sum(totals.values()):,} ({totals['trainable']:,} "
                 f"trainable, {totals['frozen']:,} frozen, {totals['stats']:,} statistics)")
    return "\n".join(lines)
