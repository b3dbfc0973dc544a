"""ONNX arithmetic follows MXNet's order wherever a large offset is removed (issue 13).

Each graph is built by hand with mx.sym, fed large-offset or large-magnitude data made here with
numpy, and run three ways: MXNet's executor, ONNX Runtime at both optimisation levels, and a
float64 numpy computation of the same graph. ORT must agree with MXNet, and both with float64,
relative to the output's scale (an element-wise relative error near zero means nothing).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
import pytest

from symbuilder.onnx import to_onnx
from test_onnx_translations import mxnet_reference, ort_run

EPS32 = float(np.finfo(np.float32).eps)
# Of the output's scale: float32 rounding with room for a dense layer's sums (measured 1e-7;
# the old BatchNorm export was 3.2e-3 off, the old temperature softmax 5.6e-5).
RTOL = 1e-5
BATCH = 16
D = mx.sym.Variable("data")

Oracle = Callable[[np.ndarray], np.ndarray]


def _scaled_error(got: np.ndarray, ref: np.ndarray, scale: Optional[float]) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / (scale or np.abs(ref).max()))


def assert_exact_everywhere(symbol: mx.sym.Symbol, params: Mapping[str, np.ndarray], x: np.ndarray,
                            oracle: Oracle, rtol: float = RTOL, scale: Optional[float] = None) -> None:
    """MXNet == float64 and ORT (both levels) == MXNet == float64 at batch 1 and the full batch,
    relative to ``scale`` (default: the largest |output| of the batch)."""
    model = to_onnx(symbol, params, {"data": x.shape})
    for batch in (1, len(x)):
        xb = x[:batch]
        exact = oracle(xb.astype(np.float64))
        mx_out = mxnet_reference(symbol, params, {"data": xb})[0]
        assert _scaled_error(mx_out, exact, scale) <= rtol, f"batch {batch}: MXNet itself is off"
        for optimize in (True, False):
            got = ort_run(model, {"data": xb}, optimize)[0]
            where = f"batch {batch}, ORT optimize={optimize}"
            assert _scaled_error(got, mx_out.astype(np.float64), scale) <= rtol, f"{where}: ORT != MXNet"
            assert _scaled_error(got, exact, scale) <= rtol, f"{where}: ORT != float64"


def _features(rng: np.random.RandomState, shape: Tuple[int, ...], axis: int,
              mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Float32 samples whose channel c along ``axis`` has mean[c] and std[c]."""
    bshape = [1] * len(shape)
    bshape[axis] = -1
    m = np.asarray(mean, np.float64).reshape(bshape)
    s = np.asarray(std, np.float64).reshape(bshape)
    return (rng.randn(*shape) * s + m).astype(np.float32)


def _bn_oracle(params: Mapping[str, np.ndarray], prefix: str, axis: int, rank: int, eps: float,
               fix_gamma: bool) -> Oracle:
    """MXNet's inference BatchNorm in float64: (x - mean) / sqrt(var + eps) * gamma + beta."""
    bshape = [1] * rank
    bshape[axis] = -1

    def per_channel(name: str) -> np.ndarray:
        return params[f"{prefix}_{name}"].astype(np.float64).reshape(bshape)

    def oracle(x: np.ndarray) -> np.ndarray:
        gamma = 1.0 if fix_gamma else per_channel("gamma")
        std = np.sqrt(per_channel("moving_var") + np.float64(np.float32(eps)))
        return (x - per_channel("moving_mean")) / std * gamma + per_channel("beta")

    return oracle


# ---- the issue's measurement: input BatchNorm, an MLP and a logistic head --------------------


def _issue_net() -> Tuple[mx.sym.Symbol, Dict[str, np.ndarray], np.ndarray, Oracle]:
    rng = np.random.RandomState(13)
    mean, std = [1e4, 6.7, -50.0, 3.0], [0.1, 1e3, 1e-3, 1.0]
    x = _features(rng, (64, 4), 1, mean, std)
    # As the builder makes it: frozen gamma=1/beta=0, eps 1e-3, the data's exact statistics.
    h = mx.sym.BatchNorm(D, fix_gamma=False, use_global_stats=True, eps=1e-3, name="input_bn")
    h = mx.sym.Activation(mx.sym.FullyConnected(h, num_hidden=16, name="fc1"), act_type="relu", name="relu1")
    out = mx.sym.LogisticRegressionOutput(mx.sym.FullyConnected(h, num_hidden=1, name="fc2"), name="prob")
    params = {
        "input_bn_gamma": np.ones(4, np.float32), "input_bn_beta": np.zeros(4, np.float32),
        "input_bn_moving_mean": x.astype(np.float64).mean(0).astype(np.float32),
        "input_bn_moving_var": x.astype(np.float64).var(0).astype(np.float32),
        "fc1_weight": rng.randn(16, 4).astype(np.float32), "fc1_bias": (rng.randn(16) * 0.1).astype(np.float32),
        "fc2_weight": rng.randn(1, 16).astype(np.float32), "fc2_bias": np.zeros(1, np.float32),
    }
    bn = _bn_oracle(params, "input_bn", 1, 2, 1e-3, fix_gamma=False)
    p64 = {k: v.astype(np.float64) for k, v in params.items()}

    def oracle(xb: np.ndarray) -> np.ndarray:
        h1 = np.maximum(bn(xb) @ p64["fc1_weight"].T + p64["fc1_bias"], 0.0)
        return 1.0 / (1.0 + np.exp(-(h1 @ p64["fc2_weight"].T + p64["fc2_bias"])))

    return out, params, x, oracle


def test_input_batchnorm_mlp_logistic_matches_mxnet() -> None:
    # ONNX BatchNormalization (x * scale + (beta - mean * scale) in ORT) was 3.2e-3 off here.
    assert_exact_everywhere(*_issue_net())


def test_batchnorm_is_not_exported_as_onnx_batchnormalization() -> None:
    # The order is the fix: ORT's kernel, or a fusion into one, would bring the cancellation back.
    model = to_onnx(*_issue_net()[:2], {"data": (4, 4)})
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops
    assert ops[:3] == ["Sub", "Mul", "Add"]


# ---- every BatchNorm form: axes, fix_gamma, use_global_stats, hidden, |mean|/std up to 1e6 ----

# Per channel: |mean| / std of 1e6, 1e5, 1e3 and 1.
_MEAN = [1e5, -2e3, 50.0, 0.3]
_STD = [0.1, 2e-2, 5e-2, 0.3]
_EPS = 1e-6  # below every variance, so the ratios above are what the layer really divides by

_LAYOUTS = {  # id: (sample shape without batch, BatchNorm axis)
    "2d_axis1": ((4,), 1),
    "2d_axis_minus1": ((4,), -1),
    "nchw_axis1": ((4, 2, 3), 1),
    "nchw_axis3": ((2, 3, 4), 3),
    "ntc_axis_minus1": ((5, 4), -1),
}


def _bn_params(rng: np.random.RandomState, prefix: str, stored_gamma: np.ndarray) -> Dict[str, np.ndarray]:
    return {f"{prefix}_gamma": stored_gamma, f"{prefix}_beta": rng.uniform(-1, 1, 4).astype(np.float32),
            f"{prefix}_moving_mean": np.asarray(_MEAN, np.float32),
            f"{prefix}_moving_var": (np.asarray(_STD, np.float64) ** 2).astype(np.float32)}


@pytest.mark.parametrize("use_global_stats", [True, False])
@pytest.mark.parametrize("fix_gamma", [True, False])
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_batchnorm_large_mean_tiny_std(layout: str, fix_gamma: bool, use_global_stats: bool) -> None:
    sample, axis = _LAYOUTS[layout]
    rank = len(sample) + 1
    rng = np.random.RandomState(4 * sorted(_LAYOUTS).index(layout) + 2 * fix_gamma + use_global_stats)
    x = _features(rng, (BATCH,) + sample, axis, _MEAN, _STD)
    # A stored gamma far from 1: fix_gamma must ignore it, fix_gamma=False must use it.
    params = _bn_params(rng, "bn", rng.uniform(0.5, 2.0, 4).astype(np.float32))
    sym = mx.sym.BatchNorm(D, fix_gamma=fix_gamma, use_global_stats=use_global_stats, eps=_EPS, axis=axis,
                           name="bn")
    assert_exact_everywhere(sym, params, x, _bn_oracle(params, "bn", axis % rank, rank, _EPS, fix_gamma))


@pytest.mark.parametrize("fix_gamma", [True, False])
def test_hidden_batchnorm_after_dense_layer(fix_gamma: bool) -> None:
    # An identity dense layer passes the data through exactly (in MXNet and in ORT's Gemm), so
    # the hidden BatchNorm sees the same large-offset float32 values on both sides.
    rng = np.random.RandomState(7)
    x = _features(rng, (BATCH, 4), 1, _MEAN, _STD)
    hidden = mx.sym.FullyConnected(D, num_hidden=4, name="fc")
    sym = mx.sym.BatchNorm(hidden, fix_gamma=fix_gamma, eps=_EPS, name="bn")
    params = {"fc_weight": np.eye(4, dtype=np.float32), "fc_bias": np.zeros(4, np.float32),
              **_bn_params(rng, "bn", rng.uniform(0.5, 2.0, 4).astype(np.float32))}
    assert_exact_everywhere(sym, params, x, _bn_oracle(params, "bn", 1, 2, _EPS, fix_gamma))


# ---- the softmax family and the loss heads' predictions --------------------------------------


def _log_softmax64(z: np.ndarray, axis: int) -> np.ndarray:
    shifted = z - z.max(axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis, keepdims=True))


def _logits(offset: float, spread: float, shape: Tuple[int, ...] = (BATCH, 7)) -> np.ndarray:
    return (np.random.RandomState(int(spread)).randn(*shape) * spread + offset).astype(np.float32)


@pytest.mark.parametrize("temperature", [None, 2.5, 0.01])
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_of_large_logits(log: bool, axis: int, temperature: Optional[float]) -> None:
    # Dividing x by the temperature before the max is removed was 5.6e-5 off (T=2.5, logits 1e4).
    x = _logits(1e4, 3.0, (BATCH, 7, 5))
    kw = {} if temperature is None else {"temperature": temperature}
    op = mx.sym.log_softmax if log else mx.sym.softmax
    sym = op(D, axis=axis, name="sm", **kw)

    def oracle(z: np.ndarray) -> np.ndarray:
        out = _log_softmax64(z / (temperature or 1.0), axis)
        return out if log else np.exp(out)

    assert_exact_everywhere(sym, {}, x, oracle)


@pytest.mark.parametrize("offset,spread", [(1e4, 3.0), (0.0, 1e4)])
def test_softmax_output_prediction_of_large_logits(offset: float, spread: float) -> None:
    x = _logits(offset, spread)
    assert_exact_everywhere(mx.sym.SoftmaxOutput(D, name="softmax"), {}, x,
                            lambda z: np.exp(_log_softmax64(z, 1)))


def test_log_softmax_of_widely_spread_logits() -> None:
    # log-sum-exp form: the max must come out before exp, or exp(1e4) overflows.
    assert_exact_everywhere(mx.sym.log_softmax(D, name="lsm"), {}, _logits(0.0, 1e4),
                            lambda z: _log_softmax64(z, -1))


def test_logistic_regression_output_of_large_magnitude() -> None:
    # ORT's Sigmoid returns 0 at and below -20 where MXNet returns 2e-9 (1.8e-35 at -80, 0 at
    # -100): within float32 rounding of a probability's scale, 1, which is how it is read.
    x = np.concatenate([np.linspace(-100, 100, 41), np.linspace(-20, 20, 23)]).astype(np.float32)
    assert_exact_everywhere(mx.sym.LogisticRegressionOutput(D, name="prob"), {}, x.reshape(-1, 1),
                            lambda z: 1.0 / (1.0 + np.exp(-z)), scale=1.0)


# ---- norms whose statistics come from the input itself ----------------------------------------
# The mean is computed in float32 on both sides, so MXNet and ORT can only agree to the rounding
# of that mean: a few EPS32 * |mean| / std. A one-pass variance (E[x^2] - E[x]^2) would be off by
# EPS32 * (|mean| / std)^2 instead: at the ratio 1e4 used here, more than the whole output.
_RATIO = 1e4
_DATA_STATS_RTOL = 8 * EPS32 * _RATIO


def _norm64(x: np.ndarray, axes: Tuple[int, ...], eps: float) -> np.ndarray:
    centered = x - x.mean(axes, keepdims=True)
    return centered / np.sqrt((centered ** 2).mean(axes, keepdims=True) + eps)


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_norm_of_large_offset(axis: int) -> None:
    x = _logits(_RATIO, 1.0, (BATCH, 6, 6))
    params = {"ln_gamma": np.linspace(0.5, 1.5, 6).astype(np.float32),
              "ln_beta": np.linspace(-1, 1, 6).astype(np.float32)}
    bshape = [1, 1, 1]
    bshape[axis] = -1
    g, b = (params[k].astype(np.float64).reshape(bshape) for k in ("ln_gamma", "ln_beta"))
    assert_exact_everywhere(mx.sym.LayerNorm(D, axis=axis, eps=1e-5, name="ln"), params, x,
                            lambda z: _norm64(z, (axis,), np.float32(1e-5)) * g + b, rtol=_DATA_STATS_RTOL)


def test_instance_norm_of_large_offset() -> None:
    x = _logits(_RATIO, 1.0, (BATCH, 3, 5, 6))
    params = {"inorm_gamma": np.array([0.5, 1.0, 2.0], np.float32), "inorm_beta": np.array([-1, 0, 1], np.float32)}
    g, b = (params[k].astype(np.float64).reshape(1, -1, 1, 1) for k in ("inorm_gamma", "inorm_beta"))
    assert_exact_everywhere(mx.sym.InstanceNorm(D, eps=1e-5, name="inorm"), params, x,
                            lambda z: _norm64(z, (2, 3), np.float32(1e-5)) * g + b, rtol=_DATA_STATS_RTOL)


# ---- a BatchNorm after a Convolution: MXNet's answer depends on its backend -------------------


def conv_bn_net() -> Tuple[mx.sym.Symbol, Dict[str, np.ndarray], np.ndarray, Oracle]:
    """An identity 1x1 convolution (exact on both sides) feeding a BatchNorm with |mean|/std 1e6."""
    rng = np.random.RandomState(5)
    x = _features(rng, (BATCH, 4, 3, 3), 1, _MEAN, _STD)
    sym = mx.sym.BatchNorm(mx.sym.Convolution(D, kernel=(1, 1), num_filter=4, name="conv"), fix_gamma=False,
                           eps=_EPS, name="bn")
    params = {"conv_weight": np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1), "conv_bias": np.zeros(4, np.float32),
              **_bn_params(rng, "bn", rng.uniform(0.5, 2.0, 4).astype(np.float32))}
    return sym, params, x, _bn_oracle(params, "bn", 1, 4, _EPS, fix_gamma=False)


def test_batchnorm_after_convolution_matches_native_mxnet(tmp_path) -> None:
    """MXNet 1.9.1's default oneDNN subgraph folds a Convolution's BatchNorm into its weights and
    bias, which cancels as ONNX BatchNormalization does; its native kernels do not. The export
    follows the native (exact) answer, so a parity check against the default executor can fail
    on such a graph: this pins both facts (MXNET_SUBGRAPH_BACKEND is read once per process)."""
    script = tmp_path / "native.py"
    script.write_text(
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "from test_onnx_cancellation import conv_bn_net, mxnet_reference\n"
        "sym, params, x, _ = conv_bn_net()\n"
        f"np.save({str(tmp_path / 'native.npy')!r}, mxnet_reference(sym, params, {{'data': x}})[0])\n"
    )
    env = dict(os.environ, MXNET_SUBGRAPH_BACKEND="NONE", MXNET_SUBGRAPH_VERBOSE="0")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    native = np.load(tmp_path / "native.npy", allow_pickle=False)
    sym, params, x, oracle = conv_bn_net()
    exact = oracle(x.astype(np.float64))
    assert _scaled_error(native, exact, None) <= RTOL
    model = to_onnx(sym, params, {"data": x.shape})
    for optimize in (True, False):
        assert _scaled_error(ort_run(model, {"data": x}, optimize)[0], exact, None) <= RTOL
    fused = mxnet_reference(sym, params, {"data": x})[0]
    assert _scaled_error(fused, exact, None) > 1e-3, "MXNet's oneDNN conv+BatchNorm fold no longer cancels"
