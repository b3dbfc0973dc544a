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
    ("Pooling", mx.sym.Pooling(D, kernel=(2,), pool_type="lp", p_value=5, name="n0"), {"data": (1, 2, 6)},
     "p_value=5: MXNet 1.9.1's Lp pooling kernel fails on it (it runs p_value 1, 2, 3)"),
    ("norm", mx.sym.norm(D, axis=1, out_dtype="float64", name="n0"), {"data": (2, 3)},
     "out_dtype='float64' differs from the input's float32: MXNet 1.9.1's norm kernel fails on it"),
    ("norm", mx.sym.norm(D, ord=3, name="n0"), {"data": (2, 3)},
     "ord=3: MXNet 1.9.1's norm kernel fails on it (it runs ord 1 and 2)"),
    ("Convolution", mx.sym.Convolution(D, kernel=(3, 3), num_filter=2, layout="NHWC", name="n0"),
     {"data": (1, 5, 5, 3)}, "layout='NHWC': MXNet 1.9.1's CPU kernel fails on channel-last layouts"),
    ("Deconvolution", mx.sym.Deconvolution(D, kernel=(3, 3), num_filter=2, layout="NHWC", name="n0"),
     {"data": (1, 5, 5, 3)}, "layout='NHWC': MXNet 1.9.1's CPU kernel fails on channel-last layouts"),
    ("Dropout", mx.sym.Dropout(D, mode="always", name="n0"), {"data": (2, 3)},
     "mode='always' drops units at inference too: a random mask"),
    ("_contrib_box_nms", mx.sym.contrib.box_nms(D, name="n0"), {"data": (5, 6)},
     "the boxes axis of the (5, 6) input changes with the batch size (rank 2: boxes are the second-to-last axis); "
     "export with dynamic_batch=False"),
    # bfloat16 raised numpy's ValueError (a traceback) before it was refused by name.
    *[(op, sym, {"data": (2, 3)}, "dtype='bfloat16': MXNet truncates to bfloat16 where ONNX's Cast rounds")
      for op, sym in [("Cast", mx.sym.Cast(D, dtype="bfloat16", name="n0")),
                      ("one_hot", mx.sym.one_hot(D, depth=3, dtype="bfloat16", name="n0")),
                      ("_zeros", mx.sym.broadcast_add(D, mx.sym.Cast(mx.sym.zeros((3,), dtype="bfloat16", name="n0"),
                                                                        dtype="float32")))]],
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


# The refusals removed as dead code: MXNet itself rejects these values before any translation runs,
# at symbol creation (its parameter parser; mx.sym.load_json parses the same way) or in shape inference.
MXNET_REJECTS = [
    ("Activation act_type", lambda: mx.sym.Activation(D, act_type="mish"), None),
    ("LeakyReLU act_type", lambda: mx.sym.LeakyReLU(D, act_type="gelu_tanh"), None),
    ("Pooling pool_type", lambda: mx.sym.Pooling(D, kernel=(2,), pool_type="median"), None),
    ("Pad mode", lambda: mx.sym.Pad(D, mode="symmetric", pad_width=(0, 0, 0, 0, 1, 1, 1, 1)), None),
    ("take mode", lambda: mx.sym.take(D, E, mode="fill"), None),
    ("UpSampling sample_type", lambda: mx.sym.UpSampling(D, scale=2, sample_type="area"), None),
    ("L2Normalization mode", lambda: mx.sym.L2Normalization(D, mode="batch"), None),
    ("topk ret_typ", lambda: mx.sym.topk(D, ret_typ="values"), None),
    ("box_decode format", lambda: mx.sym.contrib.box_decode(D, E, format="xywh"), None),
    ("box_nms in_format", lambda: mx.sym.contrib.box_nms(D, in_format="xywh"), None),
    ("Pooling pooling_convention=same 1-D", lambda: mx.sym.Pooling(D, kernel=(3,), pooling_convention="same"),
     {"data": (1, 2, 7)}),
    ("Pooling pooling_convention=same 2-D", lambda: mx.sym.Pooling(D, kernel=(3, 3), pooling_convention="same"),
     {"data": (1, 2, 7, 7)}),
    ("pick axis=None", lambda: mx.sym.pick(D, E, axis=None), {"data": (2, 3), "data2": (2,)}),
    ("SequenceMask axis=2", lambda: mx.sym.SequenceMask(D, axis=2), {"data": (2, 3, 4)}),
    ("SequenceLast axis=-1", lambda: mx.sym.SequenceLast(D, axis=-1), {"data": (2, 3, 4)}),
    ("SequenceReverse axis=1", lambda: mx.sym.SequenceReverse(D, axis=1), {"data": (2, 3, 4)}),
]


@pytest.mark.parametrize("build,shapes", [r[1:] for r in MXNET_REJECTS], ids=[r[0] for r in MXNET_REJECTS])
def test_values_mxnet_rejects_never_reach_a_translation(build, shapes) -> None:
    with pytest.raises(mx.base.MXNetError):
        build().infer_shape(**(shapes or {}))
