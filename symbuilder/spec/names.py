"""The names a spec gives the graph: every layer's node name and the input layer's names.

They are part of the spec's contract, not the builder's choice: parameter keys (`fc1_weight`,
`data_norm_gamma`), ONNX node names, checkpoint keys a legacy pipeline loads, and error messages
all derive from them. So they are pure functions of the spec, here, where the spec's own checks
(duplicate and colliding names) can use them; the graph and the input layer build with them.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Dict, List

if TYPE_CHECKING:  # type hints only: model.py imports nothing of this module at run time
    from .model import Spec


@dataclasses.dataclass(frozen=True)
class InputLayerNames:
    """Names of the input BatchNorm's node and its four parameters."""
    node: str
    gamma: str
    beta: str
    moving_mean: str
    moving_var: str

    @classmethod
    def for_input(cls, input_name: str) -> "InputLayerNames":
        node = f"{input_name}_norm"
        return cls(node, f"{node}_gamma", f"{node}_beta", f"{node}_moving_mean",
                   f"{node}_moving_var")


def layer_names(spec: "Spec") -> List[str]:
    """The node name of every layer: its own, or a generated `<op><k>` unique in the spec."""
    taken = {layer.name for layer in spec.layers if layer.name}
    taken.update(i.name for i in spec.all_inputs)
    counts: Dict[str, int] = {}
    names = []
    for layer in spec.layers:
        if layer.name:
            names.append(layer.name)
            continue
        base = layer.op.lower().lstrip("_")
        while True:
            k = counts.get(base, 0)
            counts[base] = k + 1
            candidate = f"{base}{k}"
            if candidate not in taken:
                break
        taken.add(candidate)
        names.append(candidate)
    return names
