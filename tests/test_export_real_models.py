"""`symbuilder export` on the real-model graphs of test_onnx_real_models (SSD head, Faster
R-CNN ROIAlign stage, FCN head, BiLSTM, GRU language model, transformer block), each saved as
a Module checkpoint: the command must convert it with its own parity proof at opsets 13 and
17 with a dynamic batch, and the ONNX file it writes must then match MXNet's executor at two
batch sizes, run here with ONNX Runtime (an independent check of what the command claims).

Index-like inputs get value ranges (--input-range), as a user gives them: token ids within
the vocabulary, valid lengths within the sequence. Tolerance: 1e-4 of each output's scale,
the oneDNN-vs-ORT rounding of random-weight graphs (docs/mxnet-traps.md)."""
from __future__ import annotations

import os

import mxnet as mx
import numpy as np
import onnx
import pytest

from symbuilder.cli import main
from test_onnx_real_models import CASES, assert_matches_mxnet

pytestmark = pytest.mark.slow

FLAGS = {"gru_lm": ["--input-range", "data=0:19"],
         "transformer": ["--input-range", "valid_length=1:6.99"],
         # Its proposals are a constant naming images 0 and 1: a batch of one would make
         # MXNet's ROIAlign read outside the batch (it does not check; a segfault).
         "faster_rcnn": ["--fixed-batch"]}


def _save(prefix: str, sym: mx.sym.Symbol, params: dict) -> None:
    args = set(sym.list_arguments())
    arg = {k: mx.nd.array(v) for k, v in params.items() if k in args}
    aux = {k: mx.nd.array(v) for k, v in params.items() if k not in args}
    mx.model.save_checkpoint(prefix, 0, sym, arg, aux)


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", sorted(CASES))
def test_symbuilder_export_converts_the_real_model_with_parity(tmp_path, capsys, name, opset):
    sym, params, make_inputs, batches = CASES[name]()
    prefix = str(tmp_path / name)
    _save(prefix, sym, params)
    example = make_inputs(np.random.RandomState(0), batches[1])
    flags = []
    for key, value in example.items():
        flags += ["--input", f"{key}={','.join(map(str, value.shape))}"]
    out = str(tmp_path / f"{name}.onnx")
    code = main(["export", prefix, "0", *flags, *FLAGS.get(name, []), "--opset", str(opset),
                 "--rtol", "1e-4", "--out", out])
    assert code == 0, capsys.readouterr().err
    assert os.path.isfile(out)
    model = onnx.load(out)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    if "--fixed-batch" in FLAGS.get(name, []):
        assert batch_dim.dim_value == batches[1]
        batches = batches[1:]
    else:
        assert batch_dim.dim_param and not batch_dim.dim_value, "the batch axis stays dynamic"
    for batch in batches:
        assert_matches_mxnet(model, sym, params, make_inputs(np.random.RandomState(batch + 10), batch),
                             f"batch {batch}")
