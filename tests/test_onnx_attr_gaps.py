"""Attribute values once refused that ONNX expresses, pinned beyond the in-range parity cases of
tests/onnx_cases.py: what happens at the edges where MXNet itself fails or decides a length."""
from __future__ import annotations

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

from symbuilder.onnx import to_onnx

D, W = mx.sym.Variable("data"), mx.sym.Variable("w")
TABLE = np.arange(8, dtype=np.float32).reshape(4, 2)


def _quiet_session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failure is the point: keep ORT's own error log out
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("index", [-1.0, 4.0, -5.0])
def test_take_raise_fails_where_mxnet_fails(index: float) -> None:
    # ONNX Gather counts -1 from the end; MXNet's mode='raise' refuses it, and so must the export.
    sym = mx.sym.take(W, D, mode="raise", name="tk")
    feed = np.array([0.0, index], np.float32)
    with pytest.raises(mx.base.MXNetError, match="take operator contains indices out of bound"):
        sym.bind(mx.cpu(), {"w": mx.nd.array(TABLE), "data": mx.nd.array(feed)}).forward()[0].asnumpy()
    session = _quiet_session(to_onnx(sym, {"w": TABLE}, {"data": (2,)}))
    with pytest.raises(Exception, match="indices element out of data bounds"):
        session.run(None, {"data": feed})
    np.testing.assert_array_equal(session.run(None, {"data": np.array([3.0, 0.9], np.float32)})[0],
                                  TABLE[[3, 0]])  # in range, fractions truncated as MXNet does
