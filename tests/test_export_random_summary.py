"""`symbuilder export`'s top line for a model whose every output is random: max|diff| is taken
over the deterministic outputs only, so it read 0 although no value was compared."""
from __future__ import annotations

import os

import mxnet as mx

from serving_cases import run

D = mx.sym.Variable("data")


def _save(symbol: mx.sym.Symbol, folder) -> str:
    mod = mx.mod.Module(symbol, data_names=["data"], label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", (1, 4))], for_training=False)
    mod.init_params(mx.init.Uniform(1.0))
    prefix = os.path.join(str(folder), "noisy")
    mod.save_checkpoint(prefix, 0)
    return prefix


def test_an_all_random_model_says_it_was_compared_by_distribution(tmp_path, capsys) -> None:
    fc = mx.sym.FullyConnected(D, num_hidden=3, name="fc")
    prefix = _save(mx.sym.random.normal_like(fc, loc=1.0, scale=0.5, name="noise"), tmp_path)
    code, stdout, err = run(["export", prefix, "0", "--input", "data=1,4", "--random", "200"], capsys)
    assert code == 0, err
    top = stdout.splitlines()[0]
    assert top.startswith(f"{prefix}-0000.onnx: verified against MXNet: every output is random, compared by "
                          "distribution (two-sample Kolmogorov-Smirnov), shape and dtype exactly; 200 random "
                          "samples, batch "), top
    assert "max|diff|" not in stdout
    assert "  output noise_output: random, compared by distribution" in stdout


def test_a_model_with_a_deterministic_output_keeps_max_diff(tmp_path, capsys) -> None:
    fc = mx.sym.FullyConnected(D, num_hidden=3, name="fc")
    prefix = _save(mx.sym.Group([fc, mx.sym.random.normal_like(fc, name="noise")]), tmp_path)
    code, stdout, err = run(["export", prefix, "0", "--input", "data=1,4", "--random", "200"], capsys)
    assert code == 0, err
    assert stdout.startswith(f"{prefix}-0000.onnx: verified against MXNet: max|diff|="), stdout
