"""Attribute values of existing translations whose ONNX form is pinned beyond MXNet parity."""
from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest

from symbuilder.errors import ExportError

from symbuilder.onnx import to_onnx
from test_onnx_translations import ort_run


def test_squeeze_with_nothing_to_squeeze_keeps_a_runtime_batch_of_1() -> None:
    # ONNX Squeeze with an EMPTY axes list removes every size-1 dim, so a batch of 1 vanished at
    # run time although the export promises to keep the batch axis.
    sym = mx.sym.squeeze(mx.sym.Variable("data"), name="sq")
    model = to_onnx(sym, {}, {"data": (5, 3)})
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    got = ort_run(model, {"data": x})[0]
    assert got.shape == (1, 3)
    np.testing.assert_array_equal(got, x)


def _gru(parameters: mx.sym.Symbol) -> mx.sym.Symbol:
    data = mx.sym.swapaxes(mx.sym.Variable("data"), dim1=0, dim2=1)  # (N, T, C) -> MXNet's (T, N, C)
    state = mx.sym.swapaxes(mx.sym.Variable("h0"), dim1=0, dim2=1)
    return mx.sym.RNN(data, parameters, state, mode="gru", state_size=4, num_layers=1, name="gru")


_GRU_PARAMS = 3 * 4 * (3 + 4 + 2)  # gates * state * (input + state + two biases)


def test_rnn_parameters_computed_from_stored_parameters_are_folded() -> None:
    # MXNet itself computes the vector (here p * 0.5) at export; the ONNX graph carries weights only.
    p = np.random.RandomState(0).randn(_GRU_PARAMS).astype(np.float32)
    sym = _gru(mx.sym.Variable("p") * 0.5)
    model = to_onnx(sym, {"p": p}, {"data": (2, 5, 3), "h0": (2, 1, 4)})
    assert "p" not in {t.name for t in model.graph.initializer}
    rng = np.random.RandomState(1)
    x, h0 = rng.randn(2, 5, 3).astype(np.float32), rng.randn(2, 1, 4).astype(np.float32)
    exe = sym.bind(mx.cpu(), {"data": mx.nd.array(x), "p": mx.nd.array(p), "h0": mx.nd.array(h0)}, grad_req="null")
    expected = exe.forward(is_train=False)[0].asnumpy()
    np.testing.assert_allclose(ort_run(model, {"data": x, "h0": h0})[0], expected, rtol=0, atol=1e-5)


def test_rnn_parameters_computed_from_data_are_refused_by_name() -> None:
    p = np.zeros(_GRU_PARAMS, np.float32)
    sym = _gru(mx.sym.broadcast_add(mx.sym.Variable("p"), mx.sym.sum(mx.sym.Variable("data"), name="s") * 0.0))
    with pytest.raises(ExportError, match=r"op 'RNN' \(node 'gru'\): the parameter input '\w+' must be stored"):
        to_onnx(sym, {"p": p}, {"data": (2, 5, 3), "h0": (2, 1, 4)})
