"""Attribute values the new translations cannot express faithfully are refused, naming the op,
the node and the attribute; and an op with two versions really emits two ONNX forms."""
from __future__ import annotations

import mxnet as mx
import pytest

from symbuilder.errors import ExportError
from symbuilder.onnx import to_onnx

D = mx.sym.Variable("data")
E = mx.sym.Variable("data2")

REFUSED = [
    ("Pooling", mx.sym.Pooling(D, kernel=(2,), pool_type="lp", p_value=4, name="n0"), {"data": (1, 2, 6)},
     "p_value=4"),
    ("norm", mx.sym.norm(D, axis=1, out_dtype="float64", name="n0"), {"data": (2, 3)}, "out_dtype='float64'"),
    ("_arange", mx.sym.elemwise_add(D, mx.sym.arange(start=0, infer_range=True, name="n0")),
     {"data": (2,)}, "infer_range=True takes its length from a tensor that changes with the batch size"),
    ("RNN", mx.sym.RNN(D, mx.sym.Variable("p"), mx.sym.Variable("h"), mx.sym.Variable("c"), mode="lstm",
                       state_size=4, num_layers=1, projection_size=2, name="n0"), {"data": (5, 2, 3)},
     "projection_size (LSTMP) has no ONNX LSTM form (ONNX LSTM has no projection"),
    ("RNN", mx.sym.RNN(D, mx.sym.Variable("p"), mx.sym.Variable("h"), mx.sym.Variable("c"), mode="lstm",
                       state_size=4, num_layers=1, lstm_state_clip_min=-1.0, lstm_state_clip_max=1.0, name="n0"),
     {"data": (5, 2, 3)}, "lstm_state_clip_min is backend-dependent in MXNet 1.9.1 (the CPU kernel ignores it"),
    ("RNN", mx.sym.RNN(D, mx.sym.Variable("p"), mx.sym.Variable("h"), mx.sym.Variable("c"), mx.sym.Variable("len"),
                       mode="lstm", state_size=4, num_layers=1, use_sequence_length=True, name="n0"),
     {"data": (5, 2, 3)}, "use_sequence_length=True is backend-dependent"),
    # The packed vector is unpacked at export: one computed from data has no fixed ONNX weights.
    ("RNN", mx.sym.RNN(D, mx.sym.broadcast_add(mx.sym.Variable("p"), mx.sym.sum(D) * 0.0), mx.sym.Variable("h"),
                       mode="gru", state_size=4, num_layers=1, name="n0"), {"data": (5, 2, 3)},
     "must be stored parameters"),
]


@pytest.mark.parametrize("op,sym,shapes,attr", REFUSED, ids=[f"{r[0]}-{r[3]}" for r in REFUSED])
def test_unfaithful_attribute_values_are_refused(op, sym, shapes, attr) -> None:
    with pytest.raises(ExportError) as info:
        to_onnx(sym, {}, shapes)
    message = str(info.value)
    assert message.startswith(f"cannot export MXNet op '{op}' (node 'n0'): "), message
    assert attr in message


@pytest.mark.parametrize("opset,has_num_outputs", [(13, False), (17, False), (18, True), (21, True)])
def test_split_version_follows_the_opset(opset: int, has_num_outputs: bool) -> None:
    sym = mx.sym.Group(list(mx.sym.split(D, num_outputs=3, axis=1, name="sp")))
    model = to_onnx(sym, {}, {"data": (2, 6)}, opset=opset)
    split = [n for n in model.graph.node if n.op_type == "Split"]
    assert len(split) == 1 and len(split[0].output) == 3
    assert ("num_outputs" in {a.name for a in split[0].attribute}) is has_num_outputs
