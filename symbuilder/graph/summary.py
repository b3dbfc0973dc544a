"""The summary table (`symbuilder summary`): every node's output shape and parameter count."""
from __future__ import annotations

import json
from typing import Any, Dict, List

from ..spec.model import Spec
from . import Model, build_model
from .shapes import data_shapes


def layer_shapes(model: Model) -> List[Dict[str, Any]]:
    """Per node: name, op, output shape (batch 1) and parameter count; for `summary`."""
    spec, symbol = model.spec, model.symbol
    internals = symbol.get_internals()
    shapes = data_shapes(spec, 1)
    arg_shapes, out_shapes, aux_shapes = internals.infer_shape(**shapes)
    out_by_name = dict(zip(internals.list_outputs(), out_shapes))
    arg_by_name = dict(zip(internals.list_arguments(), arg_shapes))
    aux_by_name = dict(zip(internals.list_auxiliary_states(), aux_shapes))
    nodes = json.loads(symbol.tojson())["nodes"]
    label_names = {spec.output.label_name}
    rows = []
    for node in nodes:
        if node["op"] == "null":
            continue
        name = node["name"]
        params = [nodes[i[0]]["name"] for i in node["inputs"] if nodes[i[0]]["op"] == "null"]
        count = 0
        for p in params:
            if p in label_names or p in shapes:
                continue
            shape = arg_by_name.get(p) or aux_by_name.get(p) or ()
            n = 1
            for d in shape:
                n *= d
            count += n
        out_key = f"{name}_output"
        rows.append({"name": name, "op": node["op"],
                     "shape": tuple(out_by_name.get(out_key, out_by_name.get(f"{name}_output0", ()))),
                     "params": count})
    return rows


def summary_table(spec: Spec) -> str:
    """The layers with their output shapes (batch 1) and parameter counts, as text."""
    rows = layer_shapes(build_model(spec))
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
