"""MXNet -> ONNX translations of the fused recurrent op ``RNN`` (lstm, gru, rnn_relu, rnn_tanh) and
of ``_rnn_param_concat``, the concat gluon's hybridized rnn layers emit to pack their weights.

MXNet's RNN takes ONE packed parameter vector; ONNX's LSTM/GRU/RNN take W, R, B per layer. The
vector is unpacked at export time, so it must be a constant (stored, or computed from stored
parameters alone). Packed layout (MXNet's rnn-inl.h, gluon's rnn_layer.py): every weight first,
per layer, per direction (left, right), i2h (G*H, in) then h2h (G*H, H); then every bias in the
same order, i2h (G*H) then h2h (G*H).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from symbuilder.onnx.registry import OpContext, register

# mode -> (ONNX op, gates, MXNet gate rows in ONNX's gate order). MXNet's LSTM gates are i, f, g, o
# (ONNX: i, o, f, c); MXNet's GRU gates r, z, n (ONNX: z, r, h), with cuDNN's reset applied after
# the recurrent matmul (ONNX linear_before_reset=1).
_MODES: Dict[str, Tuple[str, int, Tuple[int, ...]]] = {
    "lstm": ("LSTM", 4, (0, 3, 1, 2)),
    "gru": ("GRU", 3, (1, 0, 2)),
    "rnn_relu": ("RNN", 1, (0,)),
    "rnn_tanh": ("RNN", 1, (0,)),
}


@register("_rnn_param_concat")
def rnn_param_concat(ctx: OpContext) -> None:
    ctx.node("Concat", ctx.inputs, ctx.outputs[:1], axis=ctx.attr_int("dim", 1))


def _refuse_unsupported(ctx: OpContext) -> None:
    if ctx.attr_int("projection_size", None) is not None:
        # MXNet's CPU kernel runs LSTMP; ONNX LSTM has no projection of the recurrent state, so
        # only a step-by-step unrolled loop of MatMuls could express it.
        raise ctx.error("projection_size (LSTMP) has no ONNX LSTM form (ONNX LSTM has no projection; it would "
                        "need the sequence unrolled step by step)")
    for key in ("lstm_state_clip_min", "lstm_state_clip_max"):
        if ctx.attr_float(key, None) is not None:
            # Measured: MXNet 1.9.1's CPU kernel ignores the clip (outputs equal the unclipped
            # run); cuDNN clips the cell state; ONNX LSTM's `clip` bounds the gates' inputs
            # instead (ORT with clip=0.2 differs from both by 0.87). No form matches MXNet.
            raise ctx.error(f"{key} is backend-dependent in MXNet 1.9.1 (the CPU kernel ignores it, cuDNN clips the "
                            "cell state) and ONNX LSTM's clip bounds the gate inputs, not the cell state")
    if ctx.attr_bool("use_sequence_length", False):
        # Measured: MXNet 1.9.1's CPU kernel ignores the lengths (the output equals the run
        # without them); cuDNN honours them. There is no single MXNet answer to reproduce.
        raise ctx.error("use_sequence_length=True is backend-dependent in MXNet 1.9.1 (the CPU kernel ignores the "
                        "lengths); mask the outputs with SequenceMask instead")


def _unpack(ctx: OpContext, flat: np.ndarray, gates: int, hidden: int, layers: int, dirs: int,
            input_size: int) -> List[List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
    """[layer][direction] -> (W_i2h, W_h2h, b_i2h, b_h2h) as MXNet's arrays, from the packed vector."""
    rows = gates * hidden
    sizes = [input_size] + [dirs * hidden] * (layers - 1)
    expected = sum(dirs * (rows * sizes[l] + rows * hidden + 2 * rows) for l in range(layers))
    if flat.size != expected:
        raise ctx.error(f"the parameter vector has {flat.size} values; mode {ctx.attr_str('mode')}, "
                        f"{layers} layers, {dirs} directions, input {input_size}, state {hidden} need {expected}")
    pos = 0

    def take(n: int, shape: Tuple[int, ...]) -> np.ndarray:
        nonlocal pos
        part = flat[pos:pos + n].reshape(shape)
        pos += n
        return part

    weights = [[(take(rows * sizes[l], (rows, sizes[l])), take(rows * hidden, (rows, hidden)))
                for _ in range(dirs)] for l in range(layers)]
    biases = [[(take(rows, (rows,)), take(rows, (rows,))) for _ in range(dirs)] for _ in range(layers)]
    return [[weights[l][d] + biases[l][d] for d in range(dirs)] for l in range(layers)]


def _onnx_order(a: np.ndarray, order: Tuple[int, ...], hidden: int) -> np.ndarray:
    """Rows regrouped from MXNet's gate order into ONNX's."""
    return np.concatenate([a[g * hidden:(g + 1) * hidden] for g in order], axis=0)


@register("RNN")
def rnn(ctx: OpContext) -> None:
    _refuse_unsupported(ctx)
    mode = ctx.attr_str("mode")
    if mode not in _MODES:
        raise ctx.error(f"mode '{mode}' is not supported ({', '.join(_MODES)})")
    onnx_op, gates, order = _MODES[mode]
    hidden, layers = ctx.attr_int("state_size"), ctx.attr_int("num_layers")
    dirs = 2 if ctx.attr_bool("bidirectional", False) else 1
    flat = ctx.constant(1)
    if flat is None:
        raise ctx.error(f"the parameter input '{ctx.inputs[1]}' must be stored parameters (or computed from "
                        "them alone): the packed vector is unpacked into ONNX weights at export")
    dtype = ctx.input_infos[0].dtype
    packed = _unpack(ctx, np.asarray(flat).reshape(-1), gates, hidden, layers, dirs, ctx.in_shape(0)[2])
    extra = {"linear_before_reset": 1} if mode == "gru" else {}
    if onnx_op == "RNN":
        extra["activations"] = ["Relu" if mode == "rnn_relu" else "Tanh"] * dirs
    has_cell = mode == "lstm"
    want_states = ctx.attr_bool("state_outputs", False)
    x, last_h, last_c = ctx.inputs[0], [], []
    for l in range(layers):
        w = np.stack([_onnx_order(p[0], order, hidden) for p in packed[l]]).astype(dtype)
        r = np.stack([_onnx_order(p[1], order, hidden) for p in packed[l]]).astype(dtype)
        b = np.stack([np.concatenate([_onnx_order(p[2], order, hidden), _onnx_order(p[3], order, hidden)])
                      for p in packed[l]]).astype(dtype)
        states = [_layer_state(ctx, 2, l, dirs)] + ([_layer_state(ctx, 3, l, dirs)] if has_cell else [])
        outs = [ctx.fresh(f"l{l}_{k}") for k in (("y", "h", "c") if has_cell else ("y", "h"))]
        ctx.node(onnx_op, [x, ctx.const(w, f"l{l}_W"), ctx.const(r, f"l{l}_R"), ctx.const(b, f"l{l}_B"), ""] + states,
                 outs, suffix=f"l{l}_{onnx_op}", hidden_size=hidden,
                 direction="bidirectional" if dirs == 2 else "forward", **extra)
        # ONNX Y is (T, D, N, H); MXNet's output and the next layer's input are (T, N, D*H).
        y = ctx.transpose(outs[0], [0, 2, 1, 3], suffix=f"l{l}_y_tnd")
        x = ctx.reshape(y, [0, 0, dirs * hidden], ctx.outputs[:1] if l == layers - 1 else None, suffix=f"l{l}_out")
        last_h.append(outs[1])
        last_c.extend(outs[2:])
    if want_states:
        _emit_states(ctx, last_h, 1)
        if has_cell:
            _emit_states(ctx, last_c, 2)


def _layer_state(ctx: OpContext, i: int, layer: int, dirs: int) -> str:
    """Layer ``layer``'s initial state (dirs, N, H): rows layer*dirs.. of MXNet's (L*D, N, H)."""
    return ctx.node("Slice", [ctx.inputs[i], ctx.ints([layer * dirs], "state_start"),
                              ctx.ints([(layer + 1) * dirs], "state_end"), ctx.ints([0], "state_axis")],
                    suffix=f"l{layer}_state{i}")


def _emit_states(ctx: OpContext, per_layer: List[str], out: int) -> None:
    if len(ctx.outputs) <= out:
        return
    if len(per_layer) == 1:
        ctx.node("Identity", per_layer, ctx.outputs[out:out + 1])
    else:
        ctx.node("Concat", per_layer, ctx.outputs[out:out + 1], axis=0)
