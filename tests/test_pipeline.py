"""End-to-end: every spec in specs/ builds, and its export keeps every promise.

Each check compares against an independent computation: numpy float64 statistics of the
training split, ONNX Runtime run here (not through symbuilder.proof), MXNet's own loaders.
"""
import glob
import hashlib
import json
import os

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from symbuilder.data import load_data
from symbuilder.pipeline import build
from symbuilder.spec.load import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=SPECS, ids=lambda p: os.path.basename(p))
def built(request, tmp_path_factory):
    spec = load_spec(request.param)
    out = str(tmp_path_factory.mktemp("export") / spec.name)
    result = build(spec, out_dir=out)
    return spec, out, result


def _prefix(spec, out):
    return os.path.join(out, spec.name)


def test_every_spec_is_built_by_this_module():
    assert len(SPECS) >= 2  # breast_cancer_mlp and digits_cnn at least


def test_export_folder_has_exactly_the_promised_files(built):
    spec, out, result = built
    epoch = result.result.epoch
    assert sorted(os.listdir(out)) == sorted([
        f"{spec.name}-symbol.json", f"{spec.name}-{epoch:04d}.params", f"{spec.name}.onnx",
        f"{spec.name}-deploy-symbol.json", f"{spec.name}-deploy-{epoch:04d}.params",
        "manifest.json", "train_log.jsonl", "curves.svg"])


def test_manifest_hashes_match_the_files(built):
    spec, out, _ = built
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert set(manifest["files"]) == set(os.listdir(out)) - {"manifest.json"}
    for name, entry in manifest["files"].items():
        data = open(os.path.join(out, name), "rb").read()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]


def test_validation_accuracy_is_what_a_practitioner_accepts(built):
    spec, out, result = built
    if spec.output.op == "SoftmaxOutput":
        assert result.manifest["metrics"]["val"]["accuracy"] >= 0.95


def test_checkpoint_loads_with_mxnet_and_predicts_the_recorded_accuracy(built):
    spec, out, result = built
    epoch = result.result.epoch
    symbol, arg_params, aux_params = mx.model.load_checkpoint(_prefix(spec, out), epoch)
    data = load_data(spec)
    names = [item.name for item in spec.all_inputs]
    module = mx.mod.Module.load(_prefix(spec, out), epoch, data_names=names,
                                label_names=[spec.output.label_name], context=mx.cpu())
    it = mx.io.NDArrayIter(data={n: data.val.inputs[n] for n in names}, batch_size=50)
    # The training symbol bound for inference without labels, as legacy code does: MXNet
    # notes that the label variable gets no data (it is not read by the forward pass).
    with pytest.warns(UserWarning, match="label_shapes don't match names"):
        module.bind(data_shapes=it.provide_data, for_training=False)
    probs = module.predict(it).asnumpy()
    if spec.output.op == "SoftmaxOutput":
        accuracy = float((probs.argmax(axis=1) == data.val.labels).mean())
        assert accuracy == pytest.approx(result.manifest["metrics"]["val"]["accuracy"], abs=1e-9)
    for n in names:
        assert f"{n}_norm_gamma" in arg_params and f"{n}_norm_moving_mean" in aux_params


def test_symbol_json_carries_the_freeze_on_beta_and_gamma(built):
    spec, out, _ = built
    graph = json.load(open(_prefix(spec, out) + "-symbol.json"))
    nodes = {n["name"]: n for n in graph["nodes"]}
    for item in spec.all_inputs:
        for name in (f"{item.name}_norm_gamma", f"{item.name}_norm_beta"):
            attrs = nodes[name]["attrs"]
            assert attrs["__lr_mult__"] == "0" and attrs["__wd_mult__"] == "0"
        bn = nodes[f"{item.name}_norm"]["attrs"]
        assert bn["use_global_stats"] == str(item.normalize.stats == "dataset")
        assert float(bn["eps"]) == item.normalize.eps


def test_input_layer_is_frozen_and_holds_the_exact_training_statistics(built):
    spec, out, result = built
    _, arg_params, aux_params = mx.model.load_checkpoint(_prefix(spec, out), result.result.epoch)
    train = load_data(spec).train
    for item in spec.all_inputs:
        n = item.name
        assert np.all(arg_params[f"{n}_norm_beta"].asnumpy() == 0.0)
        assert np.all(arg_params[f"{n}_norm_gamma"].asnumpy() == 1.0)
        # Independent: numpy float64 two-pass statistics of the training split, per channel.
        x = train.inputs[n].astype(np.float64)
        axes = (0,) + tuple(range(2, x.ndim))
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        report = result.manifest["input_normalization"][n]
        np.testing.assert_allclose(report["exact_mean"], mean, rtol=1e-9)
        np.testing.assert_allclose(report["exact_var"], var, rtol=1e-9)
        moving_mean = aux_params[f"{n}_norm_moving_mean"].asnumpy()
        moving_var = aux_params[f"{n}_norm_moving_var"].asnumpy()
        if item.normalize.stats == "dataset":
            np.testing.assert_allclose(moving_mean, mean, rtol=1e-6)
            np.testing.assert_allclose(moving_var, var, rtol=1e-6)
        else:  # running: moving averages, warm-started from the exact statistics, then moved
            assert not np.array_equal(moving_mean, mean.astype(np.float32))
            np.testing.assert_allclose(report["moving_mean"], moving_mean, rtol=1e-6)


def test_onnx_passes_the_full_checker_and_matches_mxnet_in_onnx_runtime(built):
    spec, out, result = built
    model = onnx.load(os.path.join(out, f"{spec.name}.onnx"))
    onnx.checker.check_model(model, full_check=True)
    names = [item.name for item in spec.all_inputs]
    assert [i.name for i in model.graph.input] == names  # every data input, no label input
    symbol, arg_params, aux_params = mx.model.load_checkpoint(_prefix(spec, out), result.result.epoch)
    val = load_data(spec).val
    feed = {n: val.inputs[n][:40] for n in names}
    executor = symbol.simple_bind(mx.cpu(), grad_req="null", **{n: x.shape for n, x in feed.items()})
    executor.copy_params_from(arg_params, aux_params, allow_extra_params=True)
    expected = executor.forward(is_train=False, **feed)[0].asnumpy()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for size in (1, 40):
        got = session.run(None, {n: x[:size] for n, x in feed.items()})[0]
        np.testing.assert_allclose(got, expected[:size], atol=spec.export.verify.atol, rtol=0)
    assert result.manifest["parity"]["max_abs"] <= spec.export.verify.atol
