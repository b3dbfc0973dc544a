"""Stage 2, the graph: the spec's network built ONCE per build, as a `Model`.

Every later stage (static checks, data, statistics, training, export) receives the Model
instead of building the symbol or inferring its shapes again (tests/test_stages.py counts
the builds).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import mxnet as mx
import numpy as np

from ..spec.model import Spec
from .layers import build_graph, layer_names
from .shapes import check_graph, infer_shapes


@dataclasses.dataclass(frozen=True)
class Model:
    """The built network and everything the later stages read off it."""
    spec: Spec
    symbol: mx.sym.Symbol                   # the training symbol, loss head included
    layer_names: Tuple[str, ...]            # node name of every spec layer, in order
    data_names: Tuple[str, ...]             # the data inputs, in spec order
    label_name: str
    output_name: str                        # the head's output (e.g. softmax_output)
    shapes: Dict[str, Tuple[int, ...]]      # every argument, aux state and output, batch 1
    num_outputs: int                        # values per sample the head outputs

    @property
    def output_shape(self) -> Tuple[int, ...]:
        """The head's output shape at batch 1."""
        return self.shapes[self.output_name]


def build_model(spec: Spec) -> Model:
    """Build the symbol, infer every shape at batch 1 and check that training can hold
    them; a located SpecError at the failing layer otherwise."""
    symbol = build_graph(spec)
    shapes = infer_shapes(spec, symbol)
    check_graph(spec, symbol, shapes)
    output = symbol.list_outputs()[0]
    return Model(spec=spec, symbol=symbol, layer_names=tuple(layer_names(spec)),
                 data_names=tuple(item.name for item in spec.all_inputs),
                 label_name=spec.output.label_name, output_name=output,
                 shapes={k: tuple(v) for k, v in shapes.items()},
                 num_outputs=int(np.prod(shapes[output][1:])))


def build_symbol(spec: Spec, *, check_shapes: bool = True) -> mx.sym.Symbol:
    """The full training symbol: input layer, layers and loss head (with its label variable).

    This is the function a legacy pipeline calls to get the symbol for its own Module code.
    """
    return build_model(spec).symbol if check_shapes else build_graph(spec)


__all__ = ["Model", "build_model", "build_symbol"]
