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


def test_zeros_with_an_inferred_batch_dim_follow_the_runtime_batch() -> None:
    # gluon's begin_state writes zeros of shape (L*D, 0, H); MXNet infers the 0 from the consumer.
    data = mx.sym.Variable("data")
    sym = mx.sym.elemwise_add(data, mx.sym.ones(shape=(0, 3), name="o") * 2.0, name="add")  # infers both ways
    model = to_onnx(sym, {}, {"data": (4, 3)})
    for batch in (1, 6):
        x = np.random.RandomState(batch).randn(batch, 3).astype(np.float32)
        np.testing.assert_allclose(ort_run(model, {"data": x})[0], x + 2.0, rtol=0, atol=1e-6)


def test_zeros_with_an_inferred_dim_that_is_a_batch_multiple_are_refused() -> None:
    data = mx.sym.Reshape(mx.sym.Variable("data"), shape=(-1,), name="flat")  # (2 * batch,)
    sym = mx.sym.elemwise_add(data, mx.sym.zeros(shape=(0,), name="z"), name="add")
    with pytest.raises(ExportError, match=r"op '_zeros' \(node 'z'\): shape=\(0,\): the inferred \(8,\) has dims "
                                          r"that are multiples of the batch; export with dynamic_batch=False"):
        to_onnx(sym, {}, {"data": (4, 2)})
    model = to_onnx(sym, {}, {"data": (4, 2)}, dynamic_batch=False)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.testing.assert_array_equal(ort_run(model, {"data": x})[0], x.reshape(-1))
