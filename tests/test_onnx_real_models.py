"""Real-model graphs, assembled here from public architectures with random weights (nothing is
downloaded), exported with symbuilder.onnx.to_onnx at opsets 13 and 17 with a dynamic batch, and
run through ONNX Runtime against MXNet's own executor at two batch sizes.

- SSD head (Liu et al. 2016, GluonCV's SSD): two feature maps, class and box predictors,
  MultiBoxPrior anchors, box_decode, softmax, per-box best class, box_nms.
- Faster R-CNN second stage (Ren et al. 2015, GluonCV's RCNN): ROIAlign over a conv feature map,
  an FC head with class scores and box regression.
- FCN / DeepLab head (Long et al. 2015; Chen et al. 2017): strided backbone, dilated conv,
  1x1 classifier, bilinear upsampling to the input size, softmax over classes.
- A 2-layer bidirectional LSTM encoder and a GRU language model (Embedding -> GRU -> FullyConnected),
  gluon.rnn layers hybridized into symbols.
- A transformer encoder block (Vaswani et al. 2017; GluonNLP's BERT cell): interleaved QKV
  projection, masked softmax over the valid length, residuals, LayerNorm, GELU feed-forward.

Tolerance: random-weight graphs differ between MXNet's oneDNN kernels and ONNX Runtime by about
1e-4 of their output range (docs/mxnet-traps.md), so the bound is 1e-4 times each output's scale.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Tuple

import mxnet as mx
import numpy as np
import onnx
import pytest
from mxnet import gluon

from symbuilder.onnx import to_onnx
from onnx_cases import random_param
from test_onnx_translations import mxnet_reference, ort_run

pytestmark = pytest.mark.slow

Inputs = Callable[[np.random.RandomState, int], Dict[str, np.ndarray]]


def _random_params(sym: mx.sym.Symbol, shapes: Mapping[str, Tuple[int, ...]],
                   given: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    rng = np.random.RandomState(0)
    arg_shapes, _, aux_shapes = sym.infer_shape(**shapes, **{k: v.shape for k, v in given.items()})
    names = list(zip(sym.list_arguments(), arg_shapes)) + list(zip(sym.list_auxiliary_states(), aux_shapes))
    params = {n: random_param(rng, n, s) for n, s in names if n not in shapes and n not in given}
    return {**params, **given}


def _check(sym: mx.sym.Symbol, params: Mapping[str, np.ndarray], make_inputs: Inputs,
           batches: Tuple[int, int] = (1, 3)) -> None:
    """Export at opsets 13 and 17 (shapes inferred at the larger batch), run at both batches."""
    reference = make_inputs(np.random.RandomState(0), batches[1])
    shapes = {k: v.shape for k, v in reference.items()}
    dtypes = {k: str(v.dtype) for k, v in reference.items() if v.dtype != np.float32}
    for opset in (13, 17):
        model = to_onnx(sym, params, shapes, opset=opset, input_dtypes=dtypes)
        onnx.checker.check_model(model, full_check=True)
        for batch in batches:
            assert_matches_mxnet(model, sym, params, make_inputs(np.random.RandomState(batch), batch),
                                 f"opset {opset}, batch {batch}")


def assert_matches_mxnet(model: onnx.ModelProto, sym: mx.sym.Symbol, params: Mapping[str, np.ndarray],
                         inputs: Dict[str, np.ndarray], where: str) -> None:
    """ORT's outputs equal MXNet's executor's, shape for shape, within 1e-4 of each output's scale."""
    expected = mxnet_reference(sym, params, inputs)
    got = ort_run(model, inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape, f"{where}: {g.shape} != {e.shape}"
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-4 * scale, err_msg=where)


def _images(channels: int, size: int) -> Inputs:
    return lambda rng, batch: {"data": rng.randn(batch, channels, size, size).astype(np.float32)}


def _conv_block(x: mx.sym.Symbol, filters: int, name: str, stride: int = 1, dilate: int = 1) -> mx.sym.Symbol:
    x = mx.sym.Convolution(x, kernel=(3, 3), pad=(dilate, dilate), stride=(stride, stride), dilate=(dilate, dilate),
                           num_filter=filters, name=f"{name}_conv")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name=f"{name}_bn")
    return mx.sym.Activation(x, act_type="relu", name=f"{name}_relu")


# ---- SSD ---------------------------------------------------------------------------------------


def _ssd_head(num_classes: int = 3) -> mx.sym.Symbol:
    data = mx.sym.Variable("data")
    f1 = _conv_block(_conv_block(data, 8, "b1", stride=2), 8, "b2", stride=2)  # 8 x 8
    f2 = _conv_block(f1, 8, "b3", stride=2)  # 4 x 4
    cls, box, anchors = [], [], []
    for i, (feat, sizes) in enumerate([(f1, (0.2, 0.3)), (f2, (0.5, 0.7))]):
        ratios = (1, 2, 0.5)
        per_cell = len(sizes) + len(ratios) - 1
        c = mx.sym.Convolution(feat, kernel=(3, 3), pad=(1, 1), num_filter=per_cell * (num_classes + 1), name=f"cls{i}")
        b = mx.sym.Convolution(feat, kernel=(3, 3), pad=(1, 1), num_filter=per_cell * 4, name=f"box{i}")
        cls.append(mx.sym.Reshape(mx.sym.transpose(c, axes=(0, 2, 3, 1)), shape=(0, -1, num_classes + 1)))
        box.append(mx.sym.Reshape(mx.sym.transpose(b, axes=(0, 2, 3, 1)), shape=(0, -1, 4)))
        anchors.append(mx.sym.Reshape(mx.sym.contrib.MultiBoxPrior(feat, sizes=sizes, ratios=ratios, name=f"prior{i}"),
                                      shape=(1, -1, 4)))
    cls_prob = mx.sym.softmax(mx.sym.Concat(*cls, dim=1), axis=-1)
    boxes = mx.sym.contrib.box_decode(mx.sym.Concat(*box, dim=1), mx.sym.Concat(*anchors, dim=1), std0=0.1, std1=0.1,
                                      std2=0.2, std3=0.2, format="corner", name="decode")
    foreground = mx.sym.slice_axis(cls_prob, axis=-1, begin=1, end=None)
    ids = mx.sym.argmax(foreground, axis=-1, keepdims=True)
    scores = mx.sym.max(foreground, axis=-1, keepdims=True)
    dets = mx.sym.Concat(ids, scores, boxes, dim=-1)
    # GluonCV's SSD setting: per-class NMS (force_suppress=False).
    return mx.sym.contrib.box_nms(dets, overlap_thresh=0.45, valid_thresh=0.3, topk=60, id_index=0, name="nms")


def ssd_case() -> Tuple[mx.sym.Symbol, Dict[str, np.ndarray], Inputs, Tuple[int, int]]:
    sym = _ssd_head()
    shapes = {"data": (3, 3, 32, 32)}
    # Predictor weights small, as trained ones are: random 0.5-scale weights saturate the softmax
    # to exactly 1.0 for most boxes, and then NMS orders ties arbitrarily.
    rng = np.random.RandomState(3)
    arg_shapes = dict(zip(sym.list_arguments(), sym.infer_shape(**shapes)[0]))
    small = {n: (rng.randn(*arg_shapes[n]) * 0.02).astype(np.float32) for n in arg_shapes
             if n.startswith(("cls", "box")) and n.endswith("_weight")}
    return sym, _random_params(sym, shapes, small), _images(3, 32), (1, 3)


def test_ssd_head() -> None:
    sym, params, inputs, batches = ssd_case()
    _check(sym, params, inputs, batches)
    # The graph really suppresses and keeps: some rows are -1, some are detections.
    nms = mxnet_reference(sym, params, _images(3, 32)(np.random.RandomState(1), 1))[0]
    assert 0 < (nms[0, :, 1] > 0).sum() < nms.shape[1]


# ---- Faster R-CNN ------------------------------------------------------------------------------


def faster_rcnn_case() -> Tuple[mx.sym.Symbol, Dict[str, np.ndarray], Inputs, Tuple[int, int]]:
    data = mx.sym.Variable("data")
    feat = _conv_block(_conv_block(data, 8, "c1", stride=2), 16, "c2")  # stride 2: 16 x 16
    pooled = mx.sym.contrib.ROIAlign(feat, mx.sym.Variable("rois"), pooled_size=(4, 4), spatial_scale=0.5,
                                     sample_ratio=2, name="roi_align")
    top = mx.sym.Activation(mx.sym.FullyConnected(pooled, num_hidden=32, name="fc6"), act_type="relu")
    cls = mx.sym.softmax(mx.sym.FullyConnected(top, num_hidden=4, name="cls_score"), name="cls_prob")
    reg = mx.sym.FullyConnected(top, num_hidden=16, name="bbox_pred")
    sym = mx.sym.Group([cls, reg])
    # Proposals in image pixels on batch images 0 and 1 (run at batch 2 and 4).
    rng = np.random.RandomState(7)
    xy = rng.uniform(0, 20, size=(6, 2))
    rois = np.concatenate([[[0], [1], [0], [1], [1], [0]], xy, xy + rng.uniform(4, 12, size=(6, 2))], axis=1)
    params = _random_params(sym, {"data": (4, 3, 32, 32)}, {"rois": rois.astype(np.float32)})
    return sym, params, _images(3, 32), (2, 4)


def test_faster_rcnn_roialign_stage() -> None:
    _check(*faster_rcnn_case())


# ---- FCN / DeepLab -----------------------------------------------------------------------------


def fcn_case() -> Tuple[mx.sym.Symbol, Dict[str, np.ndarray], Inputs, Tuple[int, int]]:
    data = mx.sym.Variable("data")
    x = _conv_block(_conv_block(data, 8, "s1", stride=2), 8, "s2", stride=2)  # 1/4
    x = _conv_block(x, 8, "aspp", dilate=2)  # DeepLab's atrous conv
    logits = mx.sym.Convolution(x, kernel=(1, 1), num_filter=5, name="classifier")
    up = mx.sym.contrib.BilinearResize2D(logits, data, mode="like", align_corners=False, name="upsample")
    sym = mx.sym.softmax(up, axis=1, name="seg_prob")
    return (sym, _random_params(sym, {"data": (3, 3, 24, 20)}, {}),
            lambda rng, batch: {"data": rng.randn(batch, 3, 24, 20).astype(np.float32)}, (1, 3))


def test_fcn_bilinear_upsampling_head() -> None:
    _check(*fcn_case())


# ---- recurrent ---------------------------------------------------------------------------------


def _gluon_symbol(block: gluon.HybridBlock, example: np.ndarray) -> Tuple[mx.sym.Symbol, Dict[str, np.ndarray]]:
    """The block's symbol (hybridized, as gluon exports it) and its randomly initialised parameters."""
    block.initialize(mx.init.Uniform(0.4))
    block(mx.nd.array(example))  # resolve deferred shapes
    sym = block(mx.sym.Variable("data"))
    return sym, {name: p.data().asnumpy() for name, p in block.collect_params().items()}


def bilstm_case() -> Tuple[mx.sym.Symbol, Dict[str, np.ndarray], Inputs, Tuple[int, int]]:
    net = gluon.nn.HybridSequential(prefix="enc_")
    with net.name_scope():
        net.add(gluon.rnn.LSTM(8, num_layers=2, bidirectional=True, layout="NTC", input_size=6))
        net.add(gluon.nn.Dense(3, flatten=False))
    sequences = lambda rng, batch: {"data": rng.randn(batch, 5, 6).astype(np.float32)}  # noqa: E731
    sym, params = _gluon_symbol(net, sequences(np.random.RandomState(0), 3)["data"])
    return sym, params, sequences, (1, 3)


def test_bidirectional_lstm_encoder() -> None:
    _check(*bilstm_case())


def gru_lm_case() -> Tuple[mx.sym.Symbol, Dict[str, np.ndarray], Inputs, Tuple[int, int]]:
    vocab = 20
    net = gluon.nn.HybridSequential(prefix="lm_")
    with net.name_scope():
        net.add(gluon.nn.Embedding(vocab, 8))
        net.add(gluon.rnn.GRU(10, num_layers=2, layout="NTC", input_size=8))
        net.add(gluon.nn.Dense(vocab, flatten=False))
    tokens = lambda rng, batch: {"data": rng.randint(0, vocab, size=(batch, 5)).astype(np.float32)}  # noqa: E731
    sym, params = _gluon_symbol(net, tokens(np.random.RandomState(0), 3)["data"])
    return sym, params, tokens, (1, 3)


def test_gru_language_model() -> None:
    _check(*gru_lm_case())


# ---- transformer -------------------------------------------------------------------------------


def _encoder_block(units: int = 12, heads: int = 3, seq: int = 6) -> mx.sym.Symbol:
    x = mx.sym.swapaxes(mx.sym.Variable("data"), dim1=0, dim2=1)  # (T, N, C): the interleaved ops are time-major
    valid = mx.sym.Variable("valid_length")  # (N,)
    qkv = mx.sym.FullyConnected(x, num_hidden=3 * units, flatten=False, name="qkv")
    scores = mx.sym.contrib.interleaved_matmul_selfatt_qk(qkv, heads=heads, name="scores")  # (N*heads, T, T)
    # BERT's mask: each (sample, head) row of scores sees its sample's valid length.
    length = mx.sym.broadcast_axis(mx.sym.expand_dims(mx.sym.repeat(valid, repeats=heads, axis=0), axis=1),
                                   axis=1, size=seq)
    att = mx.sym.softmax(scores, mx.sym.Cast(length, dtype="int32"), axis=-1, use_length=True, name="att")
    context = mx.sym.contrib.interleaved_matmul_selfatt_valatt(qkv, att, heads=heads, name="context")
    proj = mx.sym.FullyConnected(context, num_hidden=units, flatten=False, name="proj")
    h = mx.sym.LayerNorm(x + proj, name="ln1")
    ffn = mx.sym.FullyConnected(mx.sym.LeakyReLU(mx.sym.FullyConnected(h, num_hidden=4 * units, flatten=False,
                                                                       name="ffn1"), act_type="gelu"),
                                num_hidden=units, flatten=False, name="ffn2")
    return mx.sym.swapaxes(mx.sym.LayerNorm(h + ffn, name="ln2"), dim1=0, dim2=1)


def transformer_case() -> Tuple[mx.sym.Symbol, Dict[str, np.ndarray], Inputs, Tuple[int, int]]:
    sym = _encoder_block()

    def inputs(rng: np.random.RandomState, batch: int) -> Dict[str, np.ndarray]:
        return {"data": rng.randn(batch, 6, 12).astype(np.float32),
                "valid_length": rng.randint(1, 7, size=(batch,)).astype(np.float32)}

    return sym, _random_params(sym, {"data": (3, 6, 12), "valid_length": (3,)}, {}), inputs, (1, 3)


def test_transformer_encoder_block_with_interleaved_attention() -> None:
    _check(*transformer_case())


CASES = {"ssd": ssd_case, "faster_rcnn": faster_rcnn_case, "fcn": fcn_case, "bilstm": bilstm_case,
         "gru_lm": gru_lm_case, "transformer": transformer_case}
