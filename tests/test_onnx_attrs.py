"""Attribute values of existing translations whose ONNX form is pinned beyond MXNet parity."""
from __future__ import annotations

import mxnet as mx
import numpy as np

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
