"""The table of tiny MXNet graphs, one or more per registered ONNX translation, keyed by MXNet op.

Each case is built with plain ``mx.sym`` code (never through symbuilder's builder) so the test
compares symbuilder's ONNX export against MXNet itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np

D = mx.sym.Variable("data")
D2 = mx.sym.Variable("data2")


def positive(rng: np.random.RandomState, shape: Tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0.5, 2.0, size=shape).astype(np.float32)


def offset(rng: np.random.RandomState, shape: Tuple[int, ...]) -> np.ndarray:
    # A mean far from 0 catches one-pass variance formulas.
    return (rng.randn(*shape) * 2.0 + 3.0).astype(np.float32)


def indices(high: int) -> Callable[[np.random.RandomState, Tuple[int, ...]], np.ndarray]:
    def make(rng: np.random.RandomState, shape: Tuple[int, ...]) -> np.ndarray:
        # Out-of-range and fractional values too: MXNet truncates then clips.
        return rng.uniform(-1.5, high + 1.5, size=shape).astype(np.int64).astype(np.float32)

    return make


@dataclass
class Case:
    id: str
    symbol: mx.sym.Symbol
    sample_shapes: Dict[str, Tuple[int, ...]]  # per input, WITHOUT the batch axis
    make_input: Optional[Callable[[np.random.RandomState, Tuple[int, ...]], np.ndarray]] = None
    atol: float = 1e-5
    batches: Tuple[int, ...] = (1, 5)
    why: str = ""  # reason for a looser atol, fewer batch sizes or a reference twin
    reference: Optional[mx.sym.Symbol] = None  # an MXNet twin to run instead, when MXNet cannot run `symbol`
    # Per-input generators overriding make_input (index-like inputs need values in range).
    input_makers: Dict[str, Callable[[np.random.RandomState, Tuple[int, ...]], np.ndarray]] = field(
        default_factory=dict)
    # Parameters given as values instead of random ones (lengths, ROIs: unbatched index-like tensors).
    params: Dict[str, np.ndarray] = field(default_factory=dict)
    min_opset: int = 13  # an attribute value ONNX expresses only from this opset on
    random: bool = False  # outputs downstream of a random op are compared by distribution


CASES: Dict[str, List[Case]] = {}


def case(op: str, *cases: Case) -> None:
    CASES.setdefault(op, []).extend(cases)


def random_param(rng: np.random.RandomState, name: str, shape: Tuple[int, ...]) -> np.ndarray:
    """Non-trivial parameter values: variances and gammas away from 1, means away from 0."""
    if name.endswith("moving_var"):
        return rng.uniform(0.3, 3.0, size=shape).astype(np.float32)
    if name.endswith("gamma"):
        return rng.uniform(0.3, 1.7, size=shape).astype(np.float32)
    return (rng.randn(*shape) * 0.5).astype(np.float32)


# ---- layers ---------------------------------------------------------------------------------
case(
    "FullyConnected",
    Case("flatten_4d", mx.sym.FullyConnected(D, num_hidden=4, name="fc"), {"data": (3, 2, 2)}),
    Case("no_bias", mx.sym.FullyConnected(D, num_hidden=4, no_bias=True, name="fc"), {"data": (6,)}),
    Case("no_flatten_3d", mx.sym.FullyConnected(D, num_hidden=4, flatten=False, name="fc"), {"data": (3, 6)}),
    Case("no_flatten_no_bias", mx.sym.FullyConnected(D, num_hidden=2, flatten=False, no_bias=True, name="fc"),
         {"data": (2, 3, 5)}),
)
case(
    "Convolution",
    Case("2d_stride_pad_dilate", mx.sym.Convolution(D, kernel=(3, 3), num_filter=4, stride=(2, 1), pad=(1, 2),
                                                    dilate=(1, 2), name="conv"), {"data": (3, 9, 8)}),
    Case("1d", mx.sym.Convolution(D, kernel=(3,), num_filter=4, stride=(2,), pad=(1,), name="conv"), {"data": (2, 11)}),
    Case("grouped_no_bias", mx.sym.Convolution(D, kernel=(1, 3), num_filter=6, num_group=2, no_bias=True,
                                               name="conv"), {"data": (4, 5, 5)}),
)
case(
    "Deconvolution",
    Case("2d_stride_pad_adj", mx.sym.Deconvolution(D, kernel=(3, 3), num_filter=3, stride=(2, 2), pad=(1, 1),
                                                   adj=(1, 0), name="deconv"), {"data": (2, 4, 5)}),
    Case("bias_dilate", mx.sym.Deconvolution(D, kernel=(2, 3), num_filter=2, dilate=(2, 1), no_bias=False,
                                             name="deconv"), {"data": (3, 4, 4)}),
    Case("target_shape", mx.sym.Deconvolution(D, kernel=(4, 4), num_filter=2, stride=(2, 2), target_shape=(9, 10),
                                              name="deconv"), {"data": (2, 4, 5)},
         reference=mx.sym.Deconvolution(D, kernel=(4, 4), num_filter=2, stride=(2, 2), pad=(1, 1), adj=(1, 0),
                                        name="deconv"),
         why="MXNet 1.9.1's oneDNN deconvolution fails on target_shape needing padding; the pad/adj twin is "
             "proven equal to native MXNet by test_deconvolution_target_shape_twin_is_native_mxnet"),
    Case("1d_grouped", mx.sym.Deconvolution(D, kernel=(3,), num_filter=4, num_group=2, stride=(3,), name="deconv"),
         {"data": (4, 6)}),
)
case(
    "Pooling",
    Case("max_valid", mx.sym.Pooling(D, kernel=(2, 2), stride=(2, 2), name="pool"), {"data": (2, 6, 7)}),
    Case("max_valid_pad", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pad=(1, 1), name="pool"),
         {"data": (2, 6, 7)}),
    Case("max_full_pad", mx.sym.Pooling(D, kernel=(2, 2), stride=(2, 2), pad=(1, 1), pooling_convention="full",
                                        name="pool"), {"data": (2, 5, 6)}),
    Case("max_full", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pooling_convention="full", name="pool"),
         {"data": (2, 6, 7)}),
    Case("avg_pad_include", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="avg",
                                           name="pool"), {"data": (2, 6, 7)}),
    Case("avg_pad_exclude", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="avg",
                                           count_include_pad=False, name="pool"), {"data": (2, 6, 7)}),
    Case("avg_full", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pool_type="avg", pooling_convention="full",
                                    name="pool"), {"data": (2, 6, 7)}),
    Case("avg_full_pad_include", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="avg",
                                                pooling_convention="full", name="pool"), {"data": (2, 6, 7)}),
    Case("avg_full_pad_exclude", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="avg",
                                                pooling_convention="full", count_include_pad=False, name="pool"),
         {"data": (2, 6, 7)}),
    # Windows that start inside the right padding (kernel 2, stride 2, pad 1 on 5 x 6): no ONNX pool keeps them.
    *[Case(f"avg_full_window_in_padding_{'include' if inc else 'exclude'}", mx.sym.Pooling(
        D, kernel=(2, 2), stride=(2, 2), pad=(1, 1), pool_type="avg", pooling_convention="full",
        count_include_pad=inc, name="pool"), {"data": (2, 5, 6)}) for inc in (True, False)],
    Case("sum_pad", mx.sym.Pooling(D, kernel=(2, 3), stride=(1, 2), pad=(1, 1), pool_type="sum", name="pool"),
         {"data": (2, 5, 6)}),
    Case("sum_full", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pool_type="sum", pooling_convention="full",
                                    name="pool"), {"data": (2, 6, 7)}),
    Case("global_max", mx.sym.Pooling(D, kernel=(1, 1), global_pool=True, name="pool"), {"data": (3, 4, 5)}),
    Case("global_avg", mx.sym.Pooling(D, kernel=(1, 1), global_pool=True, pool_type="avg", name="pool"),
         {"data": (3, 4, 5)}),
    Case("global_sum", mx.sym.Pooling(D, kernel=(1, 1), global_pool=True, pool_type="sum", name="pool"),
         {"data": (3, 4, 5)}),
    Case("1d_max", mx.sym.Pooling(D, kernel=(3,), stride=(2,), name="pool"), {"data": (3, 9)}),
    Case("1d_avg", mx.sym.Pooling(D, kernel=(2,), stride=(2,), pool_type="avg", name="pool"), {"data": (3, 8)}),
    # Lp pooling keeps the sign of the sum of powers (odd p): random signs catch an |x| ** p form.
    *[Case(f"lp{p}_pad", mx.sym.Pooling(D, kernel=(2, 3), stride=(2, 2), pad=(1, 1), pool_type="lp", p_value=p,
                                        name="pool"), {"data": (2, 5, 6)}) for p in (1, 2, 3)],
    Case("lp2_full", mx.sym.Pooling(D, kernel=(2, 2), stride=(2, 2), pad=(1, 1), pool_type="lp", p_value=2,
                                    pooling_convention="full", name="pool"), {"data": (2, 5, 6)}),
    *[Case(f"global_lp{p}", mx.sym.Pooling(D, kernel=(1, 1), global_pool=True, pool_type="lp", p_value=p,
                                           name="pool"), {"data": (3, 4, 5)}, atol=2e-5) for p in (2, 3)],
    Case("1d_lp3", mx.sym.Pooling(D, kernel=(3,), stride=(2,), pool_type="lp", p_value=3, name="pool"),
         {"data": (3, 9)}),
    Case("nhwc_max_pad", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pad=(1, 1), layout="NHWC", name="pool"),
         {"data": (6, 7, 3)}),
    Case("nhwc_avg_full", mx.sym.Pooling(D, kernel=(3, 3), stride=(2, 2), pool_type="avg", pooling_convention="full",
                                         layout="NHWC", name="pool"), {"data": (6, 7, 2)}),
    Case("nwc_lp2", mx.sym.Pooling(D, kernel=(2,), stride=(2,), pool_type="lp", p_value=2, layout="NWC",
                                   name="pool"), {"data": (8, 3)}),
    Case("ndhwc_global_avg", mx.sym.Pooling(D, kernel=(1, 1, 1), global_pool=True, pool_type="avg", layout="NDHWC",
                                            name="pool"), {"data": (3, 4, 5, 2)}),
)
case(
    "Activation",
    *[Case(a, mx.sym.Activation(D, act_type=a, name="act"), {"data": (7,)})
      for a in ("relu", "sigmoid", "tanh", "softrelu", "softsign")],
)
case(
    "LeakyReLU",
    Case("leaky", mx.sym.LeakyReLU(D, act_type="leaky", slope=0.1, name="lrelu"), {"data": (7,)}),
    Case("leaky_default", mx.sym.LeakyReLU(D, name="lrelu"), {"data": (7,)}),
    Case("elu", mx.sym.LeakyReLU(D, act_type="elu", slope=0.7, name="lrelu"), {"data": (7,)}),
    Case("selu", mx.sym.LeakyReLU(D, act_type="selu", name="lrelu"), {"data": (7,)}),
    Case("prelu_4d", mx.sym.LeakyReLU(D, act_type="prelu", name="lrelu"), {"data": (3, 2, 2)}),
    Case("prelu_2d", mx.sym.LeakyReLU(D, act_type="prelu", name="lrelu"), {"data": (4,)}),
    Case("gelu", mx.sym.LeakyReLU(D, act_type="gelu", name="lrelu"), {"data": (7,)}),
    # [0]: rrelu's second output is a training mask (uninitialised at inference).
    Case("rrelu", mx.sym.LeakyReLU(D, act_type="rrelu", lower_bound=0.1, upper_bound=0.3, name="lrelu")[0],
         {"data": (7,)}),
)
case(
    "BatchNorm",
    # fix_gamma absent = True: the random stored gamma (!= 1) must be ignored.
    Case("fix_gamma_default_4d", mx.sym.BatchNorm(D, name="bn"), {"data": (3, 2, 2)}, offset),
    Case("gamma_2d", mx.sym.BatchNorm(D, fix_gamma=False, name="bn"), {"data": (5,)}, offset),
    Case("global_stats_eps", mx.sym.BatchNorm(D, fix_gamma=False, use_global_stats=True, eps=2e-5, name="bn"),
         {"data": (3, 4)}),
    Case("axis_last_3d", mx.sym.BatchNorm(D, fix_gamma=False, axis=-1, name="bn"), {"data": (4, 3)}),
)
case(
    "LayerNorm",
    Case("last_axis", mx.sym.LayerNorm(D, name="ln"), {"data": (3, 6)}, offset),
    Case("axis_1_of_3d", mx.sym.LayerNorm(D, axis=1, eps=1e-3, name="ln"), {"data": (4, 3)}, offset),
    Case("2d", mx.sym.LayerNorm(D, name="ln"), {"data": (8,)}),
)
case("InstanceNorm", Case("4d_offset", mx.sym.InstanceNorm(D, name="inorm"), {"data": (3, 4, 5)}, offset))
case(
    "Dropout",
    Case("default", mx.sym.Dropout(D, name="drop"), {"data": (6,)}),
    Case("p03", mx.sym.Dropout(D, p=0.3, name="drop"), {"data": (2, 3)}),
)
case(
    "Embedding",
    Case("float_indices", mx.sym.Embedding(D, input_dim=10, output_dim=3, name="emb"), {"data": (4,)}, indices(10)),
    # sparse_grad changes the gradient's storage only: the forward lookup is the same.
    Case("sparse_grad", mx.sym.Embedding(D, input_dim=10, output_dim=3, sparse_grad=True, name="emb"), {"data": (4,)},
         indices(10)),
)

# ---- loss heads (their label never reaches the ONNX graph) ------------------------------------
case(
    "SoftmaxOutput",
    Case("2d", mx.sym.SoftmaxOutput(D, name="softmax"), {"data": (5,)}),
    Case("3d_flattened", mx.sym.SoftmaxOutput(D, name="softmax"), {"data": (2, 3)}),
    Case("5d_flattened", mx.sym.SoftmaxOutput(D, name="softmax"), {"data": (2, 2, 2, 3)}),
    Case("multi_output_3d", mx.sym.SoftmaxOutput(D, multi_output=True, name="softmax"), {"data": (3, 4)}),
    Case("multi_output_4d", mx.sym.SoftmaxOutput(D, multi_output=True, name="softmax"), {"data": (3, 2, 4)}),
    Case("preserve_shape_3d", mx.sym.SoftmaxOutput(D, preserve_shape=True, name="softmax"), {"data": (3, 4)}),
    Case("preserve_shape_4d", mx.sym.SoftmaxOutput(D, preserve_shape=True, name="softmax"), {"data": (3, 2, 4)}),
)
case("LinearRegressionOutput", Case("2d", mx.sym.LinearRegressionOutput(D, name="lro"), {"data": (3,)}))
case("LogisticRegressionOutput", Case("2d", mx.sym.LogisticRegressionOutput(D, name="lgo"), {"data": (3,)}))
case("MAERegressionOutput", Case("2d", mx.sym.MAERegressionOutput(D, name="mae"), {"data": (3,)}))

# ---- arithmetic -------------------------------------------------------------------------------
for op, fn in [("elemwise_add", mx.sym.elemwise_add), ("elemwise_sub", mx.sym.elemwise_sub),
               ("elemwise_mul", mx.sym.elemwise_mul), ("elemwise_div", mx.sym.elemwise_div)]:
    case(op, Case("same_shape", fn(D, D2, name="op"), {"data": (3, 4), "data2": (3, 4)}, positive))
for op, fn in [("broadcast_add", mx.sym.broadcast_add), ("broadcast_sub", mx.sym.broadcast_sub),
               ("broadcast_mul", mx.sym.broadcast_mul), ("broadcast_div", mx.sym.broadcast_div),
               ("broadcast_maximum", mx.sym.broadcast_maximum), ("broadcast_minimum", mx.sym.broadcast_minimum),
               ("broadcast_power", mx.sym.broadcast_power)]:
    case(op, Case("row_broadcast", fn(D, D2, name="op"), {"data": (3, 4), "data2": (1, 4)}, positive))
case("_maximum", Case("pair", mx.sym.maximum(D, D2), {"data": (4,), "data2": (4,)}))
case("_minimum", Case("pair", mx.sym.minimum(D, D2), {"data": (4,), "data2": (4,)}))
case("_power", Case("pair", mx.sym.pow(D, D2), {"data": (4,), "data2": (4,)}, positive))
for op, fn in [("_plus_scalar", lambda x: x + 1.5), ("_minus_scalar", lambda x: x - 1.5),
               ("_rminus_scalar", lambda x: 1.5 - x), ("_mul_scalar", lambda x: x * -2.5),
               ("_div_scalar", lambda x: x / 3.0), ("_rdiv_scalar", lambda x: 3.0 / x),
               ("_power_scalar", lambda x: x ** 3), ("_rpower_scalar", lambda x: 2.0 ** x),
               ("_maximum_scalar", lambda x: mx.sym.maximum(x, 1.1)),
               ("_minimum_scalar", lambda x: mx.sym.minimum(x, 1.1))]:
    case(op, Case("scalar", fn(D), {"data": (6,)}, positive))

_POSITIVE_UNARY = {"log", "sqrt", "rsqrt", "reciprocal"}
for op in ("exp", "log", "sqrt", "abs", "negative", "reciprocal", "relu", "sigmoid", "tanh", "floor", "ceil",
           "erf", "square", "rsqrt"):
    case(op, Case("unary", getattr(mx.sym, op)(D, name="op"), {"data": (2, 5)},
                  positive if op in _POSITIVE_UNARY else None))
def _unit(rng: np.random.RandomState, shape: Tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-0.95, 0.95, size=shape).astype(np.float32)


def _above_one(rng: np.random.RandomState, shape: Tuple[int, ...]) -> np.ndarray:
    return rng.uniform(1.05, 4.0, size=shape).astype(np.float32)


def _with_halves(rng: np.random.RandomState, shape: Tuple[int, ...]) -> np.ndarray:
    # Values either side of zero, some exactly integral or half-way: rounding toward zero.
    values = np.round(rng.randn(*shape) * 6.0) / 2.0
    return (values + rng.choice([0.0, 0.3, -0.3], size=shape)).astype(np.float32)


_DOMAIN = {"arcsin": _unit, "arccos": _unit, "arctanh": _unit, "arccosh": _above_one}
for op in ("sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "arcsinh",
           "arccosh", "arctanh", "sign", "softsign", "cbrt", "degrees", "radians"):
    case(op, Case("unary", getattr(mx.sym, op)(D, name="op"), {"data": (2, 5)},
                  _DOMAIN.get(op)))
case("trunc", Case("toward_zero", mx.sym.trunc(D, name="op"), {"data": (3, 4)}, _with_halves))
case("fix", Case("toward_zero", mx.sym.fix(D, name="op"), {"data": (3, 4)}, _with_halves))
case("MakeLoss", Case("forward_is_input", mx.sym.MakeLoss(D * 2.0, grad_scale=0.5, name="op"),
                      {"data": (4,)}))
case("_copy", Case("identity", mx.sym.identity(D, name="op"), {"data": (5,)}))
case("BlockGrad", Case("stop_gradient", mx.sym.stop_gradient(D, name="op"), {"data": (5,)}))
case(
    "clip",
    Case("range", mx.sym.clip(D, a_min=-0.5, a_max=0.7, name="clip"), {"data": (6,)}),
)
case(
    "softmax",
    Case("last_axis", mx.sym.softmax(D, name="sm"), {"data": (3, 4)}),
    Case("axis1_temperature", mx.sym.softmax(D, axis=1, temperature=2.5, name="sm"), {"data": (3, 4)}),
    # BERT's masked softmax: MXNet wants an integer length (data's shape without the axis); 0 gives zeros.
    Case("use_length", mx.sym.softmax(D, mx.sym.Cast(D2, dtype="int32"), use_length=True, name="sm"),
         {"data": (3, 4), "data2": (3,)}, input_makers={"data2": lambda rng, shape: rng.randint(
             0, 5, size=shape).astype(np.float32)}),
    Case("use_length_axis1_temperature", mx.sym.softmax(D, mx.sym.Cast(D2, dtype="int32"), axis=1, use_length=True,
                                                        temperature=2.0, name="sm"),
         {"data": (4, 3), "data2": (3,)}, input_makers={"data2": lambda rng, shape: rng.randint(
             0, 5, size=shape).astype(np.float32)}),
    Case("dtype_float64", mx.sym.softmax(D, dtype="float64", name="sm"), {"data": (3, 4)}),
    Case("use_length_dtype_float16", mx.sym.softmax(D, mx.sym.Cast(D2, dtype="int32"), use_length=True,
                                                    dtype="float16", name="sm"), {"data": (3, 4), "data2": (3,)},
         input_makers={"data2": lambda rng, shape: rng.randint(0, 5, size=shape).astype(np.float32)}, atol=1e-3,
         why="float16 output: its rounding step near 1 is 4.9e-4"),
)
case(
    "log_softmax",
    Case("last_axis", mx.sym.log_softmax(D, name="lsm"), {"data": (3, 4)}),
    Case("axis1", mx.sym.log_softmax(D, axis=1, name="lsm"), {"data": (3, 4)}),
    Case("dtype_float64", mx.sym.log_softmax(D, dtype="float64", name="lsm"), {"data": (3, 4)}),
)
for op in ("sum", "mean", "max", "min", "prod"):
    fn = getattr(mx.sym, op)
    case(
        op,
        Case("axis1_keepdims", fn(D, axis=1, keepdims=True, name="red"), {"data": (3, 4)}),
        Case("axes_12", fn(D, axis=(1, 2), name="red"), {"data": (3, 4)}),
        Case("exclude_axis1", fn(D, axis=1, exclude=True, name="red"), {"data": (3, 4)}),
        # Shape (1,) whatever the batch: MXNet's full reduction is not a 0-d scalar.
        Case("all", fn(D, name="red"), {"data": (3,)}),
    )

# ---- shape ------------------------------------------------------------------------------------
case("Flatten", Case("4d", mx.sym.Flatten(D, name="flat"), {"data": (2, 3, 4)}))
case(
    "Concat",
    Case("dim1", mx.sym.Concat(D, D2, dim=1, name="cat"), {"data": (2, 3), "data2": (4, 3)}),
    Case("dim_last", mx.sym.Concat(D, D2, dim=2, name="cat"), {"data": (2, 3), "data2": (2, 1)}),
)
case(
    "Reshape",
    Case("keep_batch", mx.sym.Reshape(D, shape=(0, -1), name="rs"), {"data": (2, 3, 4)}),
    Case("merge_and_copy_rest", mx.sym.Reshape(D, shape=(0, -3, -2), name="rs"), {"data": (2, 3, 4)}),
    Case("split", mx.sym.Reshape(D, shape=(0, -4, 1, 2, -2), name="rs"), {"data": (2, 3, 4)}),
    Case("batch_folded", mx.sym.Reshape(D, shape=(-1, 4), name="rs"), {"data": (2, 3, 4)}),
    Case("reverse", mx.sym.Reshape(D, shape=(-1, 0), reverse=True, name="rs"), {"data": (2, 3, 4)}),
)
case(
    "transpose",
    Case("reverse_all", mx.sym.transpose(D, name="tr"), {"data": (3, 4)}),
    Case("swap_last", mx.sym.transpose(D, axes=(0, 2, 1), name="tr"), {"data": (3, 4)}),
)
case(
    "slice_axis",
    Case("middle", mx.sym.slice_axis(D, axis=1, begin=1, end=3, name="sl"), {"data": (5, 2)}),
    Case("negative_open_end", mx.sym.slice_axis(D, axis=-1, begin=-2, end=None, name="sl"), {"data": (5, 3)}),
)
case(
    "slice",
    Case("open_and_stepped", mx.sym.slice(D, begin=(None, 1), end=(None, -1), step=(1, 2), name="sl"),
         {"data": (6, 3)}),
    Case("negative_step", mx.sym.slice(D, begin=(None, None, 3), end=(None, None, None), step=(1, 1, -2),
                                       name="sl"), {"data": (2, 5)}),
    Case("no_step", mx.sym.slice(D, begin=(0, 1), end=(None, 4), name="sl"), {"data": (5,)}),
)
case(
    "Cast",
    Case("to_float16", mx.sym.Cast(D, dtype="float16", name="cast"), {"data": (4,)}),
    Case("to_int32_truncates", mx.sym.Cast(D * 3.0, dtype="int32", name="cast"), {"data": (4,)}),
)
case("expand_dims", Case("axis1", mx.sym.expand_dims(D, axis=1, name="ed"), {"data": (3,)}))
case(
    "squeeze",
    Case("axis", mx.sym.squeeze(D, axis=2, name="sq"), {"data": (3, 1, 4)}),
    Case("all_static_ones", mx.sym.squeeze(D, name="sq"), {"data": (3, 1)}, batches=(5,),
         why="MXNet's squeeze() also drops a batch axis of size 1; the export keeps the batch axis"),
    # A (1, 1) tensor squeezes to MXNet's (1,), not to a 0-d scalar.
    Case("all_ones_to_1d", mx.sym.squeeze(mx.sym.sum(D, axis=(0, 1), keepdims=True), name="sq"), {"data": (3,)}),
)


# ---- tensor construction and layout (symbuilder/onnx/ops_tensor.py) ---------------------------
def in_range(low: int, high: int) -> Callable[[np.random.RandomState, Tuple[int, ...]], np.ndarray]:
    """Integer-valued floats in [low, high): index-like inputs that must be valid."""
    return lambda rng, shape: rng.randint(low, high, size=shape).astype(np.float32)


def _elemwise(op: str, a: mx.sym.Symbol, b: mx.sym.Symbol) -> mx.sym.Symbol:
    # The non-broadcast comparisons (`a == b` on symbols) are only reachable by their op name.
    return getattr(mx.sym._internal, op)(a, b, name="cmp")


def _scalar_op(op: str, a: mx.sym.Symbol, scalar: float) -> mx.sym.Symbol:
    return getattr(mx.sym._internal, op)(a, scalar=scalar, name="cmp")


def with_ties(rng: np.random.RandomState, shape: Tuple[int, ...]) -> np.ndarray:
    # Few distinct values: equal operands are frequent, so == / <= / >= are really exercised.
    return rng.randint(-2, 3, size=shape).astype(np.float32)


case("ones_like", Case("4d", mx.sym.ones_like(D, name="o"), {"data": (2, 3, 1)}))
case("zeros_like", Case("2d", mx.sym.zeros_like(D, name="z"), {"data": (4,)}))
case("_ones", Case("added", mx.sym.broadcast_add(D, mx.sym.ones(shape=(1, 3), name="o")), {"data": (3,)}))
case("_zeros", Case("int32_cast", mx.sym.broadcast_add(D, mx.sym.Cast(mx.sym.zeros(shape=(3,), dtype="int32", name="z"),
                                                                     dtype="float32")), {"data": (3,)}))
case(
    "_arange",
    Case("start_stop_step_repeat", mx.sym.broadcast_add(D, mx.sym.arange(start=1.5, stop=4.0, step=0.5, repeat=2,
                                                                         name="ar")), {"data": (10,)}),
    Case("count_only", mx.sym.broadcast_mul(D, mx.sym.arange(4, name="ar")), {"data": (4,)}),
    # The length (7) from the consumer's shape, not a multiple of repeat; start without a stop.
    Case("infer_range_repeat", mx.sym.broadcast_add(D, mx.sym.elemwise_add(
        mx.sym.Variable("w"), mx.sym.arange(start=3.0, step=-1.5, repeat=2, infer_range=True, name="ar"))),
        {"data": (7,)}, params={"w": np.linspace(-1, 1, 7, dtype=np.float32)}),
)
case(
    "_contrib_arange_like",
    Case("all", mx.sym.contrib.arange_like(D, start=2.0, step=0.5, name="al"), {"data": (2, 3)}),
    Case("batch_axis_repeat", mx.sym.contrib.arange_like(D, axis=0, repeat=2, step=3.0, name="al"), {"data": (3,)}),
    Case("axis1", mx.sym.contrib.arange_like(D, axis=-1, name="al"), {"data": (2, 4)}),
)
case(
    "tile",
    Case("same_rank", mx.sym.tile(D, reps=(2, 1, 3), name="t"), {"data": (2, 3)}),
    Case("short_reps", mx.sym.tile(D, reps=(2,), name="t"), {"data": (2, 3)}),
    Case("long_reps", mx.sym.tile(D, reps=(2, 1, 2), name="t"), {"data": (3,)}),
)
case(
    "repeat",
    Case("axis1", mx.sym.repeat(D, repeats=2, axis=1, name="rp"), {"data": (3, 2)}),
    Case("batch_axis", mx.sym.repeat(D, repeats=3, axis=0, name="rp"), {"data": (2,)}),
    Case("flattened", mx.sym.repeat(D, repeats=2, name="rp"), {"data": (3,)}),
)
case(
    "SliceChannel",
    Case("three_parts", mx.sym.Group(list(mx.sym.split(D, num_outputs=3, axis=1, name="sp"))), {"data": (6, 2)}),
    Case("squeeze_axis", mx.sym.Group(list(mx.sym.split(D, num_outputs=2, axis=-1, squeeze_axis=True,
                                                        name="sp"))), {"data": (3, 2)}),
)
case(
    "_split_v2",
    # mx.sym.split_v2 takes no name: the node is named _split_v2<k>.
    Case("indices", mx.sym.Group(list(mx.sym.split_v2(D, indices_or_sections=(1, 3), axis=1))),
         {"data": (6, 2)}),
    Case("sections_squeezed", mx.sym.Group(list(mx.sym.split_v2(
        D, indices_or_sections=2, axis=-1, squeeze_axis=True))), {"data": (3, 2)}),
)
case(
    "stack",
    Case("axis1", mx.sym.stack(D, D2, axis=1, name="st"), {"data": (3,), "data2": (3,)}),
    Case("axis_last", mx.sym.stack(D, D2, D, axis=-1, name="st"), {"data": (2, 3), "data2": (2, 3)}),
)
case("add_n", Case("three", mx.sym.add_n(D, D2, D, name="an"), {"data": (4,), "data2": (4,)}))
case(
    "SwapAxis",
    Case("1_2", mx.sym.swapaxes(D, dim1=1, dim2=2, name="sw"), {"data": (3, 4)}),
    Case("batch_last", mx.sym.swapaxes(D, dim1=0, dim2=2, name="sw"), {"data": (3, 4)}),
)
case(
    "reverse",
    Case("axis1", mx.sym.reverse(D, axis=1, name="rv"), {"data": (4, 2)}),
    Case("two_axes", mx.sym.reverse(D, axis=(0, 2), name="rv"), {"data": (3, 2)}),
)
case(
    "shape_array",
    # Dynamic: the batch entry must follow the batch the model runs at.
    Case("3d", mx.sym.shape_array(D, name="sa"), {"data": (3, 4)}),
)
case("size_array", Case("3d", mx.sym.size_array(D, name="sz"), {"data": (3, 4)}))
case(
    "broadcast_to",
    Case("keep_batch", mx.sym.broadcast_to(D, shape=(0, 3, 4), name="bt"), {"data": (1, 4)}),
)
case(
    "broadcast_axis",
    Case("two_axes", mx.sym.broadcast_axis(D, axis=(1, 3), size=(3, 2), name="ba"), {"data": (1, 4, 1)}),
)
case(
    "broadcast_like",
    Case("whole_shape", mx.sym.broadcast_like(D, D2, name="bl"), {"data": (1, 4), "data2": (3, 4)}),
    Case("axes", mx.sym.broadcast_like(D, D2, lhs_axes=(1, -1), rhs_axes=(2, 0), name="bl"),
         {"data": (1, 4, 1), "data2": (2, 3)}),
)
case(
    "reshape_like",
    Case("whole", mx.sym.reshape_like(D, D2, name="rl"), {"data": (6,), "data2": (2, 3)}),
    Case("ranges", mx.sym.reshape_like(D, D2, lhs_begin=1, lhs_end=2, rhs_begin=1, rhs_end=3, name="rl"),
         {"data": (6, 2), "data2": (3, 2, 7)}),
)
case(
    "slice_like",
    Case("all_axes", mx.sym.slice_like(D, D2, name="sl"), {"data": (5, 4), "data2": (3, 2)}),
    Case("axes_2", mx.sym.slice_like(D, D2, axes=(2,), name="sl"), {"data": (5, 4), "data2": (1, 2)}),
    Case("batch_axis", mx.sym.slice_like(D, mx.sym.slice_axis(D2, axis=0, begin=0, end=-1), axes=(0, -1),
                                         name="sl"), {"data": (4,), "data2": (2,)}, batches=(2, 5)),
)
case(
    "Pad",
    Case("constant", mx.sym.pad(D, mode="constant", pad_width=(0, 0, 0, 0, 1, 2, 2, 1), constant_value=1.5,
                                name="pd"), {"data": (2, 3, 4)}),
    Case("edge", mx.sym.pad(D, mode="edge", pad_width=(0, 0, 0, 0, 2, 1, 0, 3), name="pd"), {"data": (2, 3, 4)}),
    Case("reflect", mx.sym.pad(D, mode="reflect", pad_width=(0, 0, 0, 0, 1, 2, 2, 1), name="pd"),
         {"data": (2, 3, 4)}),
)
case(
    "Crop",
    Case("offset_hw", mx.sym.Crop(D, offset=(1, 2), h_w=(3, 2), name="cr"), {"data": (2, 5, 6)}),
    Case("center_like", mx.sym.Crop(D, D2, center_crop=True, num_args=2, name="cr"),
         {"data": (2, 7, 6), "data2": (1, 4, 3)}),
)
case("space_to_depth", Case("block2", mx.sym.space_to_depth(D, block_size=2, name="sd"), {"data": (3, 4, 6)}))
case("depth_to_space", Case("block2", mx.sym.depth_to_space(D, block_size=2, name="ds"), {"data": (8, 2, 3)}))

# ---- comparison and logical (symbuilder/onnx/ops_compare.py) ----------------------------------
for name in ("equal", "not_equal", "greater", "greater_equal", "lesser", "lesser_equal",
             "logical_and", "logical_or", "logical_xor"):
    case(f"broadcast_{name}", Case("row_broadcast", getattr(mx.sym, f"broadcast_{name}")(D, D2, name="cmp"),
                                   {"data": (3, 4), "data2": (1, 4)}, with_ties))
    case(f"_{name}", Case("same_shape", _elemwise(f"_{name}", D, D2), {"data": (3, 4), "data2": (3, 4)}, with_ties))
    case(f"_{name}_scalar", Case("scalar", _scalar_op(f"_{name}_scalar", D, 1.0), {"data": (6,)}, with_ties),
         Case("scalar_zero", _scalar_op(f"_{name}_scalar", D, 0.0), {"data": (6,)}, with_ties))
case("logical_not", Case("ties", mx.sym.logical_not(D, name="ln"), {"data": (6,)}, with_ties))


def mod_operands(rng: np.random.RandomState, shape: Tuple[int, ...]) -> np.ndarray:
    # Both signs, zeros (MXNet: x mod 0 = 0) and exact multiples (remainder 0 keeps its sign).
    return (rng.randint(-6, 7, size=shape) * 0.5).astype(np.float32)


case("broadcast_mod", Case("signs_and_zeros", mx.sym.broadcast_mod(D, D2, name="md"),
                           {"data": (3, 4), "data2": (1, 4)}, mod_operands))
case("_mod", Case("signs_and_zeros", _elemwise("_mod", D, D2), {"data": (3, 4), "data2": (3, 4)}, mod_operands))
case("_mod_scalar", Case("positive", D % 1.5, {"data": (6,)}, mod_operands),
     Case("negative", D % -1.5, {"data": (6,)}, mod_operands))
case("_rmod_scalar", Case("positive", 2.5 % D, {"data": (6,)}, mod_operands))
case(
    "where",
    Case("same_shape", mx.sym.where(D, D2, D2 * 2.0, name="wh"), {"data": (3, 4), "data2": (3, 4)}, with_ties),
    Case("row_condition", mx.sym.where(mx.sym.sum(D, axis=1, name="s"), D2, D2 * 2.0, name="wh"),
         {"data": (3,), "data2": (2, 3)}, with_ties),
)

# ---- sorting and indexing (symbuilder/onnx/ops_index.py) --------------------------------------
case(
    "topk",
    Case("indices_default", mx.sym.topk(D, k=2, name="tk"), {"data": (3, 5)}),
    Case("value_axis1_ascend", mx.sym.topk(D, k=3, axis=1, ret_typ="value", is_ascend=True, name="tk"),
         {"data": (4, 2)}),
    Case("both_int32", mx.sym.Group(list(mx.sym.topk(D, k=2, ret_typ="both", dtype="int32", name="tk"))),
         {"data": (6,)}),
    Case("k0_whole_axis", mx.sym.topk(D, k=0, ret_typ="value", name="tk"), {"data": (5,)}),
    Case("k0_batch_axis", mx.sym.topk(D, k=0, axis=0, name="tk"), {"data": (3,)}),
    Case("mask_axis1", mx.sym.topk(D, k=2, axis=1, ret_typ="mask", name="tk"), {"data": (3, 4)}),
    Case("mask_ascend_k0", mx.sym.topk(D, k=0, ret_typ="mask", is_ascend=True, name="tk"), {"data": (4,)}),
    Case("flattened_both", mx.sym.Group(list(mx.sym.topk(D, k=3, axis=None, ret_typ="both", name="tk"))),
         {"data": (2, 3)}),
    Case("flattened_mask", mx.sym.topk(D, k=4, axis=None, ret_typ="mask", name="tk"), {"data": (2, 3)}),
)
case(
    "argsort",
    Case("ascend", mx.sym.argsort(D, name="as"), {"data": (3, 5)}),
    Case("descend_axis1", mx.sym.argsort(D, axis=1, is_ascend=False, dtype="int64", name="as"), {"data": (4, 2)}),
    Case("flattened", mx.sym.argsort(D, axis=None, name="as"), {"data": (2, 3)}),
    Case("batch_axis", mx.sym.argsort(D, axis=0, name="as"), {"data": (3,)}),
)
for op in ("argmax", "argmin"):
    fn = getattr(mx.sym, op)
    case(op, Case("axis1", fn(D, axis=1, name="am"), {"data": (4, 3)}),
         Case("keepdims", fn(D, axis=-1, keepdims=True, name="am"), {"data": (4, 3)}),
         Case("flattened", fn(D, name="am"), {"data": (4, 3)}))
case(
    "take",
    Case("clip_axis0", mx.sym.take(mx.sym.Variable("w"), D, name="tk"), {"data": (4,)}, indices(7),
         params={"w": np.arange(14, dtype=np.float32).reshape(7, 2)}),
    Case("wrap_axis1", mx.sym.take(D2, D, axis=1, mode="wrap", name="tk"), {"data": (3,), "data2": (5, 2)},
         input_makers={"data": in_range(-12, 12)}),
    Case("clip_batch_axis", mx.sym.take(D2, mx.sym.Variable("idx"), axis=0, name="tk"), {"data2": (3,)},
         params={"idx": np.array([0, 9, -3, 1], np.float32)}),
    # In range only: out of range, MXNet and ONNX Runtime both fail (test_onnx_attr_gaps.py).
    Case("raise_axis1", mx.sym.take(D2, D, axis=1, mode="raise", name="tk"), {"data": (3,), "data2": (5, 2)},
         input_makers={"data": in_range(0, 2)}),
)
case(
    "pick",
    Case("axis_last", mx.sym.pick(D2, D, name="pk"), {"data": (3,), "data2": (3, 4)},
         input_makers={"data": in_range(0, 4)}),
    Case("axis1_keepdims_clip", mx.sym.pick(D2, D, axis=1, keepdims=True, name="pk"), {"data": (1, 4), "data2": (3, 4)},
         input_makers={"data": indices(3)}),
    Case("wrap", mx.sym.pick(D2, D, axis=1, mode="wrap", name="pk"), {"data": (4,), "data2": (3, 4)},
         input_makers={"data": in_range(-7, 7)}),
)
case(
    "gather_nd",
    # MXNet indexes with the first axis of the indices: (2, batch) pairs into a (3, 4) table.
    Case("pairs", mx.sym.gather_nd(mx.sym.Variable("w"), mx.sym.transpose(D), name="gn"), {"data": (2,)},
         input_makers={"data": in_range(0, 3)}, params={"w": np.arange(12, dtype=np.float32).reshape(3, 4)}),
    Case("slices", mx.sym.gather_nd(mx.sym.Variable("w"), mx.sym.transpose(D), name="gn"), {"data": (1,)},
         input_makers={"data": in_range(0, 3)}, params={"w": np.arange(12, dtype=np.float32).reshape(3, 4)}),
)
case(
    "one_hot",
    Case("out_of_range_rows", mx.sym.one_hot(D, depth=5, name="oh"), {"data": (3,)}, indices(5)),
    Case("values_dtype", mx.sym.one_hot(D, depth=4, on_value=2.5, off_value=-1.0, dtype="float16", name="oh"),
         {"data": (2,)}, in_range(0, 4)),
)

# ---- layers (symbuilder/onnx/ops_nn.py) -------------------------------------------------------
case(
    "_contrib_AdaptiveAvgPooling2D",
    Case("global", mx.sym.contrib.AdaptiveAvgPooling2D(D, output_size=1, name="ap"), {"data": (3, 5, 6)}),
    Case("uneven_bins", mx.sym.contrib.AdaptiveAvgPooling2D(D, output_size=(3, 4), name="ap"), {"data": (2, 7, 9)}),
    Case("even", mx.sym.contrib.AdaptiveAvgPooling2D(D, output_size=(2, 3), name="ap"), {"data": (2, 4, 6)}),
)
case(
    "_contrib_BilinearResize2D",
    Case("size_align", mx.sym.contrib.BilinearResize2D(D, height=7, width=5, name="br"), {"data": (2, 4, 3)}),
    Case("down_half_pixel", mx.sym.contrib.BilinearResize2D(D, height=3, width=4, align_corners=False, name="br"),
         {"data": (2, 5, 7)}),
    Case("scale_up_half_pixel", mx.sym.contrib.BilinearResize2D(D, scale_height=2.0, scale_width=1.5, mode="odd_scale",
                                                               align_corners=False, name="br"), {"data": (2, 4, 4)}),
)
case(
    "UpSampling",
    Case("nearest_2", mx.sym.UpSampling(D, scale=2, sample_type="nearest", name="up"), {"data": (2, 3, 4)}),
    Case("nearest_3", mx.sym.UpSampling(D, scale=3, sample_type="nearest", name="up"), {"data": (1, 2, 2)}),
    *[Case(f"bilinear_{s}", mx.sym.UpSampling(D, mx.sym.Variable("up_weight"), scale=s, sample_type="bilinear",
                                              num_filter=3, name="up"), {"data": (3, 4, 5)}) for s in (2, 3)],
    # Each input scaled to the first one's output (x2, x1, x3 here), then concatenated or summed.
    Case("nearest_concat_3", mx.sym.UpSampling(D, D2, mx.sym.Variable("data3"), scale=2, num_args=3,
                                               sample_type="nearest", name="up"),
         {"data": (2, 3, 3), "data2": (1, 6, 6), "data3": (1, 2, 2)}),
    Case("nearest_sum", mx.sym.UpSampling(D, D2, scale=2, num_args=2, sample_type="nearest",
                                          multi_input_mode="sum", name="up"), {"data": (2, 3, 3), "data2": (2, 6, 6)}),
)
case(
    "L2Normalization",
    Case("instance", mx.sym.L2Normalization(D, name="l2"), {"data": (3, 2, 2)}),
    Case("channel", mx.sym.L2Normalization(D, mode="channel", name="l2"), {"data": (3, 2, 2)}),
    Case("spatial_eps", mx.sym.L2Normalization(D, mode="spatial", eps=1e-3, name="l2"), {"data": (3, 2, 2)}),
)
case("LRN", Case("nsize3", mx.sym.LRN(D, nsize=3, alpha=1e-3, beta=0.7, knorm=1.5, name="lrn"), {"data": (5, 3, 3)},
                 positive))
case(
    "norm",
    Case("all", mx.sym.norm(D, name="nm"), {"data": (3, 4)}),
    Case("l1_axis1_keepdims", mx.sym.norm(D, ord=1, axis=1, keepdims=True, name="nm"), {"data": (3, 4)}),
    Case("l2_axes", mx.sym.norm(D, axis=(1, 2), name="nm"), {"data": (3, 4)}),
    Case("out_dtype_same", mx.sym.norm(D, axis=1, out_dtype="float32", name="nm"), {"data": (3, 4)}),
)
case("hard_sigmoid", Case("alpha_beta", mx.sym.hard_sigmoid(D * 3.0, alpha=0.3, beta=0.4, name="hs"), {"data": (8,)}))
case("log2", Case("unary", mx.sym.log2(D, name="l2"), {"data": (5,)}, positive))
case(
    "dot",
    Case("2d_param", mx.sym.dot(D, mx.sym.Variable("w"), name="dt"), {"data": (4,)},
         params={"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)}),
    Case("2d_transposes", mx.sym.dot(mx.sym.Variable("w"), D, transpose_a=True, transpose_b=True, name="dt"),
         {"data": (4,)}, params={"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)}),
    Case("3d_tensordot", mx.sym.dot(D, mx.sym.Variable("w"), name="dt"), {"data": (2, 3)},
         params={"w": np.linspace(-1, 1, 15, dtype=np.float32).reshape(3, 5)}),
    # forward_stype only names the output's storage: on dense inputs MXNet computes the dense product.
    *[Case(f"forward_stype_{stype}", mx.sym.dot(D, mx.sym.Variable("w"), forward_stype=stype, name="dt"),
           {"data": (4,)}, params={"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)})
      for stype in ("default", "csr", "row_sparse")],
    # N-D with transposes: transpose_a contracts a's first (batch) axis, transpose_b b's last.
    Case("3d_transpose_a_over_batch", mx.sym.dot(D, D2, transpose_a=True, name="dt"), {"data": (2, 3), "data2": (4,)}),
    Case("3d_transpose_b_3d_param", mx.sym.dot(D, mx.sym.Variable("w"), transpose_b=True, name="dt"), {"data": (2, 3)},
         params={"w": np.linspace(-1, 1, 30, dtype=np.float32).reshape(2, 5, 3)}),
)
case(
    "batch_dot",
    Case("plain", mx.sym.batch_dot(D, D2, name="bd"), {"data": (2, 3), "data2": (3, 4)}),
    Case("transposes", mx.sym.batch_dot(D, D2, transpose_a=True, transpose_b=True, name="bd"),
         {"data": (3, 2), "data2": (4, 3)}),
)
case(
    "_linalg_gemm2",
    Case("alpha_transpose_b", mx.sym.linalg.gemm2(D, D2, transpose_b=True, alpha=0.5, name="gm"),
         {"data": (2, 3), "data2": (4, 3)}),
    Case("transpose_a", mx.sym.linalg.gemm2(D, D2, transpose_a=True, name="gm"), {"data": (3, 2), "data2": (3, 4)}),
    # Rows on axis 1 of rank 4 (the batch is axis 0), and on the batch axis itself.
    Case("axis1_rank4", mx.sym.linalg.gemm2(D, D2, axis=1, alpha=2.0, name="gm"),
         {"data": (3, 4, 5), "data2": (5, 4, 2)}),
    Case("axis0_transpose_b", mx.sym.linalg.gemm2(D, D2, axis=0, transpose_b=True, name="gm"),
         {"data": (4, 5), "data2": (4, 5)}),
)


# ---- sequences (symbuilder/onnx/ops_sequence.py) ----------------------------------------------
L = mx.sym.Variable("lengths")
_LEN_N4 = np.array([1.0, 3.0, 2.5, 2.0], np.float32)  # for time-major data (T=batch, N=4): T >= 3
for op, fn in [("SequenceMask", mx.sym.SequenceMask), ("SequenceLast", mx.sym.SequenceLast)]:
    case(
        op,
        Case("batch_major", fn(D, L, use_sequence_length=True, axis=1, name="sq"), {"data": (4, 2), "lengths": ()},
             input_makers={"lengths": in_range(1, 5)}),
        Case("time_major", fn(D, L, use_sequence_length=True, name="sq"), {"data": (4, 3)}, batches=(3, 5),
             params={"lengths": _LEN_N4}, why="the batch is the time axis: lengths up to 3 need T >= 3"),
        Case("no_lengths", fn(D, name="sq"), {"data": (4,)}),
    )
case("SequenceMask", Case("value_4d", mx.sym.SequenceMask(D, L, use_sequence_length=True, value=-2.0, axis=1,
                                                          name="sq"), {"data": (3, 2, 2), "lengths": ()},
                          input_makers={"lengths": in_range(0, 4)}))
case(
    "SequenceReverse",
    Case("lengths", mx.sym.SequenceReverse(D, L, use_sequence_length=True, name="sr"), {"data": (4, 2)},
         batches=(3, 5), params={"lengths": np.array([1.0, 3.0, 2.0, 3.0], np.float32)}),
    Case("no_lengths", mx.sym.SequenceReverse(D, name="sr"), {"data": (4, 2)}),
)
case("_contrib_div_sqrt_dim", Case("last_axis", mx.sym.contrib.div_sqrt_dim(D, name="ds"), {"data": (3, 6)}))


# ---- random draws (symbuilder/onnx/ops_random.py) ---------------------------------------------
# Each random output is large (>= 400 independent draws at batch 1) so the distribution check has
# power; a deterministic output beside it keeps the exact rule in the same graph.
def _with_exact(draw: mx.sym.Symbol) -> mx.sym.Symbol:
    return mx.sym.Group([mx.sym.relu(D, name="exact"), draw])


def small_probs(rng: np.random.RandomState, shape: Tuple[int, ...]) -> np.ndarray:
    # Rows summing to less than 1: MXNet then draws the out-of-range category k (measured).
    return rng.uniform(0.0, 0.2, size=shape).astype(np.float32)


def _multinomial(p: mx.sym.Symbol, **kwargs) -> mx.sym.Symbol:
    return mx.sym.Group(list(mx.sym.sample_multinomial(p, name="mn", **kwargs)))


case(
    "_random_normal",
    Case("loc_scale", _with_exact(mx.sym.random.normal(loc=1.5, scale=2.0, shape=(40, 50), name="rn")),
         {"data": (3,)}, random=True),
    Case("float16", _with_exact(mx.sym.random.normal(loc=-1.0, shape=(40, 50), dtype="float16", name="rn")),
         {"data": (3,)}, random=True),
)
case(
    "_random_uniform",
    Case("low_high", _with_exact(mx.sym.random.uniform(low=-1.0, high=3.0, shape=(40, 50), name="ru")),
         {"data": (3,)}, random=True),
    Case("float64", _with_exact(mx.sym.random.uniform(low=2.0, high=2.5, shape=(2000,), dtype="float64",
                                                      name="ru")), {"data": (3,)}, random=True),
)
case("_random_normal_like", Case("loc_scale", mx.sym.random.normal_like(D, loc=-1.0, scale=0.5, name="rn"),
                                 {"data": (400,)}, random=True))
case("_random_uniform_like", Case("low_high", mx.sym.random.uniform_like(D, low=2.0, high=5.0, name="ru"),
                                  {"data": (400,)}, random=True))
case(
    "_sample_multinomial",
    Case("shape_get_prob", _multinomial(mx.sym.softmax(D), shape=(20, 30), get_prob=True), {"data": (4,)},
         random=True),
    Case("rank3_uint8", _multinomial(mx.sym.softmax(D), dtype="uint8"), {"data": (500, 3)}, random=True),
    Case("unnormalised_below_1", _multinomial(D, shape=(600,)), {"data": (3,)}, make_input=small_probs,
         random=True, why="no get_prob: MXNet's log-probability of the draw k reads past the row"),
    Case("unnormalised_above_1", _multinomial(D, shape=(600,), dtype="float32"), {"data": (4,)},
         make_input=positive, random=True),
)


def all_cases() -> List[Tuple[str, Case]]:
    return [(op, c) for op, cases in CASES.items() for c in cases]


# ---- recurrent (symbuilder/onnx/ops_rnn.py) ---------------------------------------------------
def gluon_rnn(cls: type, **kwargs) -> mx.sym.Symbol:
    """A gluon.rnn layer called on a symbol, as a hybridized parent block exports it: batch-major
    data, swapaxes, the packed parameter vector from _rnn_param_concat and begin_state zeros of
    shape (L*D, 0, H)."""
    layer = cls(prefix=f"{cls.__name__.lower()}_", layout="NTC", **kwargs)
    return layer(mx.sym.Variable("data"))


def _explicit_rnn(mode: str, layers: int, bidirectional: bool) -> Tuple[mx.sym.Symbol, Dict[str, Tuple[int, ...]]]:
    """mx.sym.RNN with given initial states (batch-major inputs swapped to MXNet's (L*D, N, H)) and
    every state output."""
    dirs = 2 if bidirectional else 1
    states = [mx.sym.swapaxes(mx.sym.Variable("h0"), dim1=0, dim2=1)]
    if mode == "lstm":
        states.append(mx.sym.swapaxes(mx.sym.Variable("c0"), dim1=0, dim2=1))
    out = mx.sym.RNN(mx.sym.swapaxes(D, dim1=0, dim2=1), mx.sym.Variable("rnn_parameters"), *states, mode=mode,
                     state_size=3, num_layers=layers, bidirectional=bidirectional, state_outputs=True, name="rnn")
    return mx.sym.Group(list(out)), {"h0": (layers * dirs, 3), **({"c0": (layers * dirs, 3)} if mode == "lstm" else {})}


def _rnn_cases() -> List[Case]:
    from mxnet import gluon
    cases = []
    for cls in (gluon.rnn.LSTM, gluon.rnn.GRU, gluon.rnn.RNN):
        cases.append(Case(f"gluon_{cls.__name__.lower()}_2layer_bidir",
                          gluon_rnn(cls, hidden_size=4, num_layers=2, bidirectional=True, input_size=3),
                          {"data": (5, 3)}))
    cases.append(Case("gluon_rnn_tanh_1layer", gluon_rnn(gluon.rnn.RNN, hidden_size=4, activation="tanh",
                                                         input_size=3), {"data": (5, 3)}))
    for mode, layers, bidir in (("lstm", 2, True), ("gru", 1, True), ("rnn_tanh", 2, False), ("lstm", 1, False)):
        sym, state_shapes = _explicit_rnn(mode, layers, bidir)
        cases.append(Case(f"{mode}_{layers}layer{'_bidir' if bidir else ''}_states", sym,
                          {"data": (5, 3), **state_shapes}))
    return cases


case("RNN", *_rnn_cases())
case("_rnn_param_concat", Case("packed_vector", mx.sym._internal._rnn_param_concat(
    mx.sym.Reshape(D, shape=(0, -1)), mx.sym.Reshape(D2, shape=(0, -1)), dim=1, num_args=2, name="pc"),
    {"data": (2, 3), "data2": (4,)}))


# ---- interleaved attention (symbuilder/onnx/ops_attention.py) ----------------------------------
def time_major(x: mx.sym.Symbol) -> mx.sym.Symbol:
    """Batch-major inputs (the export's batch axis first) swapped to MXNet's (T, N, C)."""
    return mx.sym.swapaxes(x, dim1=0, dim2=1)


_QKV = time_major(D)  # (T=4, N, heads=2 * 3 * d=3)
_SELF_SCORES = mx.sym.contrib.interleaved_matmul_selfatt_qk(_QKV, heads=2, name="qk")
case("_contrib_interleaved_matmul_selfatt_qk", Case("2_heads", _SELF_SCORES, {"data": (4, 18)}))
case("_contrib_interleaved_matmul_selfatt_valatt", Case(
    "softmax_scores", mx.sym.contrib.interleaved_matmul_selfatt_valatt(_QKV, mx.sym.softmax(_SELF_SCORES), heads=2,
                                                                       name="va"), {"data": (4, 18)}))
_ENC_SCORES = mx.sym.contrib.interleaved_matmul_encdec_qk(time_major(D), time_major(D2), heads=3, name="qk")
case("_contrib_interleaved_matmul_encdec_qk", Case("3_heads", _ENC_SCORES, {"data": (4, 6), "data2": (5, 12)}))
case("_contrib_interleaved_matmul_encdec_valatt", Case(
    "softmax_scores", mx.sym.contrib.interleaved_matmul_encdec_valatt(time_major(D2), mx.sym.softmax(_ENC_SCORES),
                                                                      heads=3, name="va"),
    {"data": (4, 6), "data2": (5, 12)}))


# ---- detection (symbuilder/onnx/ops_detection.py) ---------------------------------------------
def _anchors(rng: np.random.RandomState, n: int, fmt: str) -> np.ndarray:
    xy = rng.uniform(0.1, 0.9, size=(1, n, 2))
    wh = rng.uniform(0.05, 0.4, size=(1, n, 2))
    boxes = np.concatenate([xy, wh] if fmt == "center" else [xy - wh / 2, xy + wh / 2], axis=-1)
    return boxes.astype(np.float32)


_A = mx.sym.Variable("anchors")
case(
    "_contrib_box_decode",
    Case("center_std", mx.sym.contrib.box_decode(D, _A, std0=0.1, std1=0.1, std2=0.2, std3=0.2, name="bd"),
         {"data": (6, 4)}, params={"anchors": _anchors(np.random.RandomState(0), 6, "center")}),
    Case("corner_clip", mx.sym.contrib.box_decode(D * 3.0, _A, format="corner", clip=1.5, name="bd"),
         {"data": (6, 4)}, params={"anchors": _anchors(np.random.RandomState(1), 6, "corner")}),
)
case(
    "_contrib_MultiBoxPrior",
    Case("sizes_ratios", mx.sym.broadcast_add(mx.sym.contrib.MultiBoxPrior(D, sizes=(0.3, 0.5), ratios=(1, 2, 0.5),
                                                                         name="mbp"), mx.sym.sum(D) * 0.0),
         {"data": (2, 3, 4)}),
    Case("steps_offsets_clip", mx.sym.contrib.MultiBoxPrior(D, sizes=(0.9,), ratios=(1, 3), steps=(0.3, 0.2),
                                                            offsets=(0.4, 0.6), clip=True, name="mbp"),
         {"data": (2, 3, 5)}),
)
# ROIs in image coordinates (spatial_scale 0.5 maps them onto the 8 x 9 map); batch ids 0 and 1.
_ROIS = np.array([[0, 1, 1, 12, 9], [1, 4.5, 2.4, 15.8, 12.6], [1, 0, 0, 30, 30], [0, 3, 5, 3.5, 5.2]], np.float32)
_R = mx.sym.Variable("rois")
case(
    "_contrib_ROIAlign",
    Case("adaptive", mx.sym.contrib.ROIAlign(D, _R, pooled_size=(2, 3), spatial_scale=0.5, name="ra"),
         {"data": (3, 8, 9)}, batches=(2, 5), params={"rois": _ROIS}, why="the ROIs index batch 0 and 1"),
    Case("sample_ratio_2", mx.sym.contrib.ROIAlign(D, _R, pooled_size=(3, 3), spatial_scale=0.5, sample_ratio=2,
                                                   name="ra"), {"data": (3, 8, 9)}, batches=(2, 5),
         params={"rois": _ROIS}, why="the ROIs index batch 0 and 1"),
    Case("aligned", mx.sym.contrib.ROIAlign(D, _R, pooled_size=(2, 2), spatial_scale=0.5, sample_ratio=2,
                                            aligned=True, name="ra"), {"data": (3, 8, 9)}, batches=(2, 5),
         params={"rois": _ROIS}, min_opset=16, why="the ROIs index batch 0 and 1; aligned needs RoiAlign-16"),
    # 12 channels = 2 outputs x (2 x 3) bins, each bin from its own channel.
    Case("position_sensitive", mx.sym.contrib.ROIAlign(D, _R, pooled_size=(2, 3), spatial_scale=0.5, sample_ratio=2,
                                                       position_sensitive=True, name="ra"), {"data": (12, 8, 9)},
         batches=(2, 5), params={"rois": _ROIS}, why="the ROIs index batch 0 and 1"),
)
case(
    "ROIPooling",
    # A negative batch index gives MXNet's zeros (MXNet's ROIAlign writes uninitialised memory there instead).
    Case("with_ignored_roi", mx.sym.ROIPooling(D, _R, pooled_size=(2, 3), spatial_scale=0.5, name="rp"),
         {"data": (3, 8, 9)}, batches=(2, 5), why="the ROIs index batch 0 and 1",
         params={"rois": np.concatenate([_ROIS, [[-1, 1, 1, 5, 5]]]).astype(np.float32)}),
)


def detections(rng: np.random.RandomState, shape: Tuple[int, ...]) -> np.ndarray:
    """(B, N, 6) rows [class id, score, x1, y1, x2, y2]: valid corners, clustered so that boxes
    overlap, distinct random scores (ties are tested separately, with an order-tolerant match)."""
    b, n = shape[:2]
    centers = rng.uniform(0.2, 0.8, size=(b, n, 2)) + rng.choice([0.0, 1.0], size=(b, n, 1))
    half = rng.uniform(0.1, 0.3, size=(b, n, 2))
    ids = rng.randint(0, 3, size=(b, n, 1))
    scores = rng.uniform(0.0, 1.0, size=(b, n, 1))
    rows = np.concatenate([ids, scores, centers - half, centers + half] + [rng.randn(b, n, shape[2] - 6)], axis=-1)
    return rows.astype(np.float32)


case(
    "_contrib_box_nms",
    Case("defaults", mx.sym.contrib.box_nms(D, name="nms"), {"data": (12, 6)}, detections),
    Case("thresholds_topk", mx.sym.contrib.box_nms(D, overlap_thresh=0.3, valid_thresh=0.2, topk=7, name="nms"),
         {"data": (12, 6)}, detections),
    Case("background_force", mx.sym.contrib.box_nms(D, id_index=0, background_id=2, force_suppress=True,
                                                   name="nms"), {"data": (12, 6)}, detections),
    Case("center_to_corner_extra_cols", mx.sym.contrib.box_nms(D, in_format="center", out_format="corner",
                                                              name="nms"), {"data": (10, 7)}, detections),
    Case("corner_to_center", mx.sym.contrib.box_nms(D, out_format="center", overlap_thresh=0.4, name="nms"),
         {"data": (10, 6)}, detections),
    # MXNet treats every axis before (boxes, width) as batch: a rank-4 input (rank 2 is pinned in
    # test_onnx_ops_refusals: its boxes axis is the batch).
    Case("rank4", mx.sym.contrib.box_nms(D, overlap_thresh=0.3, name="nms"), {"data": (2, 12, 6)},
         lambda rng, shape: detections(rng, (shape[0] * shape[1],) + shape[2:]).reshape(shape)),
    # Per-class NMS (GluonCV SSD's setting): boxes of different ids never suppress each other.
    Case("per_class", mx.sym.contrib.box_nms(D, id_index=0, overlap_thresh=0.3, name="nms"), {"data": (12, 6)},
         detections),
    Case("per_class_background_topk", mx.sym.contrib.box_nms(D, id_index=0, background_id=0, topk=8, valid_thresh=0.1,
                                                             name="nms"), {"data": (12, 6)}, detections),
)
