"""`symbuilder export` of any checkpoint, the Triton layout, and legacy MXNet use of an export
(serving/legacy.py, export/triton.py).

Every check compares with an independent computation: MXNet's own Module/Gluon outputs,
ONNX Runtime run directly here, the ONNX model's own graph.
"""
import hashlib
import json
import os
import re

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from serving_cases import module_predict, ort_run, prefix_of, run, val_rows
from serving_cases import built, plain_conv  # noqa: F401 (fixtures)

from symbuilder.export import triton
from symbuilder.serving import legacy
from symbuilder.cli import main


def test_plain_mxnet_conv_checkpoint_exports_and_matches_module_predict(plain_conv, tmp_path,
                                                                        capsys):
    prefix, X = plain_conv
    _, arg_params, _ = mx.model.load_checkpoint(prefix, 2)
    assert not np.allclose(arg_params["bn1_gamma"].asnumpy(), 1.0)  # fix_gamma really matters
    out = str(tmp_path / "conv.onnx")
    code, stdout, err = run(["export", prefix, "2", "--input", "data=1,3,8,8", "--out", out],
                            capsys)
    assert code == 0, err
    assert stdout.startswith(f"{out}: verified against MXNet: max|diff|=")
    assert "64 random samples, batch 1 and 64" in stdout
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["data"]  # the label is not an input
    x = X[:7]
    expected = module_predict(prefix, 2, x)
    for batch in (x[:1], x):  # dynamic batch axis
        np.testing.assert_allclose(ort_run(out, batch), expected[: len(batch)], atol=1e-5, rtol=0)


def test_export_with_real_samples_checks_them_and_random_ones_in_their_range(plain_conv,
                                                                              tmp_path):
    prefix, X = plain_conv
    report = legacy.export_checkpoint(prefix, 2, {"data": (1, 3, 8, 8)},
                                       out=str(tmp_path / "m.onnx"),
                                       data={"data": X[:10].reshape(10, -1)}, random_samples=12)
    parity = report["parity"]
    assert parity["inputs"]["held_out"]["samples"] == 10
    assert parity["inputs"]["random"]["samples"] == 12
    rows = {(d["inputs"], d["batch"], d["ort_level"]) for d in parity["details"]}
    assert rows == {(s, b, lvl) for s, b in (("held_out", 1), ("held_out", 10), ("random", 1),
                                             ("random", 12))
                    for lvl in ("ORT_ENABLE_ALL", "ORT_DISABLE_ALL")}
    # The recorded range is numpy's per-feature min/max of the samples.
    np.testing.assert_array_equal(np.array(parity["random_range"]["data"]["low"]),
                                  X[:10].min(axis=0))
    np.testing.assert_array_equal(np.array(parity["random_range"]["data"]["high"]),
                                  X[:10].max(axis=0))
    # And the figures are real: ORT run here against MXNet's Module on the same samples.
    got = ort_run(str(tmp_path / "m.onnx"), X[:10])
    direct = float(np.abs(got - module_predict(prefix, 2, X[:10])).max())
    assert parity["inputs"]["held_out"]["max_abs"] >= direct
    assert parity["max_abs"] <= 1e-5


def _erfinv_checkpoint(folder):
    data = mx.sym.var("data")
    net = mx.sym.erfinv(mx.sym.FullyConnected(data, num_hidden=2, name="fc"), name="odd_node")
    mod = mx.mod.Module(net, label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", (1, 3))], for_training=False)
    mod.init_params()
    prefix = os.path.join(folder, "odd")
    mod.save_checkpoint(prefix, 0)
    return prefix


@pytest.mark.parametrize("argv, expected", [
    (["{conv}", "7", "--input", "data=1,3,8,8"],
     "{conv}-0007.params: no such checkpoint file (epochs present: 0002)"),
    (["{tmp}/none", "1", "--input", "data=1,3,8,8"], "{tmp}/none-symbol.json: no such checkpoint file"),
    (["{conv}", "2", "--input", "data=1,3,x,8"],
     "symbuilder: error: --input 'data=1,3,x,8': expected NAME=D0,D1,...[:DTYPE] with "
     "positive dims"),
    (["{conv}", "2", "--input", "dat=1,3,8,8"],
     "symbuilder: error: --input dat: not an input of {conv}-symbol.json (its inputs: data, "
     "softmax_label)"),
    (["{conv}", "2", "--input", "data=1,3,8"],
     "{conv}-symbol.json: --input data=1,3,8: operator 'conv1' rejects the shapes: Input data "
     "should be 4D in batch-num_filter-y-x (3 vs. 4)"),
    (["{odd}", "0", "--input", "data=1,3"],
     "{odd}-symbol.json: no ONNX translation for MXNet op 'erfinv' (node 'odd_node'); "
     "symbuilder translates: "),
])
def test_export_mistakes_are_one_located_line_and_exit_2(plain_conv, tmp_path, capsys, argv,
                                                        expected):
    odd = _erfinv_checkpoint(str(tmp_path))
    subst = {"conv": plain_conv[0], "tmp": str(tmp_path), "odd": odd}
    out = str(tmp_path / "x.onnx")
    code, stdout, err = run(["export"] + [a.format(**subst) for a in argv] + ["--out", out],
                            capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected.format(**subst)), err
    assert not os.path.exists(out) and stdout == ""


@pytest.mark.parametrize("value", ["-1e-5", "inf", "nan", "x"])
def test_a_bad_rtol_is_one_line_exit_2_and_writes_nothing(plain_conv, tmp_path, capsys, value):
    out = str(tmp_path / "x.onnx")
    with pytest.raises(SystemExit) as exit_:
        main(["export", plain_conv[0], "2", "--input", "data=1,3,8,8", "--out", out,
              f"--rtol={value}"])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == ""
    assert captured.err.strip() == (f"symbuilder export: error: argument --rtol: expected a "
                                    f"number >= 0, received '{value}' (see symbuilder export "
                                    f"--help)")
    assert os.listdir(tmp_path) == []


def test_export_parity_failure_is_exit_1_with_figures_and_writes_nothing(plain_conv, tmp_path,
                                                                         capsys):
    out = str(tmp_path / "x.onnx")
    code, _, err = run(["export", plain_conv[0], "2", "--input", "data=1,3,8,8", "--out", out,
                        "--atol", "1e-30", "--rtol", "0"], capsys)
    assert code == 1
    assert re.match(r"symbuilder: failed: ONNX Runtime disagrees with MXNet: max abs difference "
                    r"\S+ > atol 1e-30 \+ rtol 0 x scale \S+ \(max rel \S+ of the output's "
                    r"scale; random: \S+ on 64 samples; worst: output "
                    r"'softmax_output' at batch (1|64), ORT_(ENABLE|DISABLE)_ALL", err), err
    assert not os.path.exists(out)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".x.onnx")]


def parse_pbtxt(text):
    """A small protobuf text-format reader (fields, messages, lists), independent of the writer:
    repeated fields become lists."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,]+', text)
    pos = 0

    def value():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if tok.startswith('"'):
            return tok[1:-1]
        return int(tok) if re.fullmatch(r"-?\d+", tok) else tok

    def message(end):
        nonlocal pos
        out = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            out.setdefault(key, []).append(value())
        pos += 1
        return {k: v[0] if len(v) == 1 else v for k, v in out.items()}

    return message(None)


@pytest.mark.parametrize("dynamic", [True, False])
def test_triton_config_matches_the_onnx_models_names_types_and_shapes(plain_conv, tmp_path,
                                                                      dynamic):
    prefix, _ = plain_conv
    onnx_path = str(tmp_path / "m.onnx")
    legacy.export_checkpoint(prefix, 2, {"data": (3, 3, 8, 8)}, out=onnx_path,
                              dynamic_batch=dynamic, random_samples=3)
    with open(onnx_path, "rb") as f:
        files = triton.write_triton(str(tmp_path / "repo"), "convnet", f.read())
    assert files == ["triton/convnet/config.pbtxt", "triton/convnet/1/model.onnx"]
    config = parse_pbtxt(open(tmp_path / "repo" / files[0]).read())
    session = ort.InferenceSession(str(tmp_path / "repo" / files[1]),
                                   providers=["CPUExecutionProvider"])
    assert config["name"] == "convnet" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == (triton.TRITON_MAX_BATCH if dynamic else 0)
    for section, values in (("input", session.get_inputs()), ("output", session.get_outputs())):
        entries = config[section]
        assert [e["name"] for e in entries] == [v.name for v in values]
        for entry, v in zip(entries, values):
            assert entry["data_type"] == "TYPE_FP32" and v.type == "tensor(float)"
            dims = entry["dims"]
            if dynamic:
                assert isinstance(v.shape[0], str) and dims == list(v.shape[1:])
            else:
                assert dims == list(v.shape) and v.shape[0] == 3
    assert config["input"][0]["dims"] == ([3, 8, 8] if dynamic else [3, 3, 8, 8])


@pytest.mark.slow
def test_build_writes_a_triton_repository_listed_in_the_manifest(built):
    spec, out, result = built
    triton = os.path.join(out, "triton", "srv_mlp")
    assert sorted(os.listdir(triton)) == ["1", "config.pbtxt"]
    model_file = os.path.join(triton, "1", "model.onnx")
    assert open(model_file, "rb").read() == open(os.path.join(out, "srv_mlp.onnx"), "rb").read()
    files = json.load(open(os.path.join(out, "manifest.json")))["files"]
    for rel in ("triton/srv_mlp/config.pbtxt", "triton/srv_mlp/1/model.onnx"):
        assert files[rel]["sha256"] == hashlib.sha256(
            open(os.path.join(out, rel), "rb").read()).hexdigest()
    config = parse_pbtxt(open(os.path.join(triton, "config.pbtxt")).read())
    assert config["input"] == [{"name": "data", "data_type": "TYPE_FP32", "dims": [30]}]
    assert config["output"] == [{"name": "softmax_output", "data_type": "TYPE_FP32",
                                 "dims": [2]}]


@pytest.mark.slow
def test_module_load_continues_training_with_beta_and_gamma_frozen_by_the_json(built):
    prefix, epoch = prefix_of(built)
    from symbuilder.data import load_data
    data = load_data(built[0])
    mod = mx.mod.Module.load(prefix, epoch, data_names=["data"], label_names=["softmax_label"],
                             context=mx.cpu())
    it = mx.io.NDArrayIter(data.train.features, data.train.labels, batch_size=32,
                           label_name="softmax_label", shuffle=True)
    # Module.load already holds the checkpoint's parameters; fit says so, and keeps them.
    with pytest.warns(UserWarning, match="Parameters already initialized"):
        mod.fit(it, num_epoch=1, optimizer="sgd",
                optimizer_params={"learning_rate": 0.1, "wd": 0.01})
    args, _ = mod.get_params()
    _, before, _ = mx.model.load_checkpoint(prefix, epoch)
    assert not np.array_equal(args["fc1_weight"].asnumpy(), before["fc1_weight"].asnumpy())
    assert np.all(args["data_norm_beta"].asnumpy() == 0.0)
    assert np.all(args["data_norm_gamma"].asnumpy() == 1.0)


@pytest.mark.slow
def test_gluon_symbolblock_imports_the_export_and_matches_the_checkpoint(built):
    prefix, epoch = prefix_of(built)
    x = val_rows(built)[:12]
    expected = module_predict(prefix, epoch, x)
    # 1. The label variable as a second input, fed anything of the right shape.
    # MXNet 1.9.1 warns for any imported symbol: imports makes the input variables itself.
    with pytest.warns(UserWarning, match="Cannot decide type"):
        net = mx.gluon.SymbolBlock.imports(f"{prefix}-symbol.json", ["data", "softmax_label"],
                                           f"{prefix}-{epoch:04d}.params")
    got = net(mx.nd.array(x), mx.nd.zeros(len(x))).asnumpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # 2. The head replaced by its inference op: a data-only block for serving.
    sym = mx.sym.load(f"{prefix}-symbol.json")
    logits = sym.get_children()[0]  # SoftmaxOutput's inputs: (logits, softmax_label)
    with pytest.warns(UserWarning, match="Cannot decide type"):
        net = mx.gluon.SymbolBlock(mx.sym.softmax(logits), mx.sym.var("data"))
    net.collect_params().load(f"{prefix}-{epoch:04d}.params", ctx=mx.cpu(), ignore_extra=True)
    np.testing.assert_allclose(net(mx.nd.array(x)).asnumpy(), expected, atol=1e-6, rtol=0)
    # 3. Without the label, imports refuses: the README says why.
    with pytest.warns(UserWarning, match="Cannot decide type"), \
            pytest.raises(AssertionError, match="softmax_label"):
        mx.gluon.SymbolBlock.imports(f"{prefix}-symbol.json", ["data"],
                                     f"{prefix}-{epoch:04d}.params")


def test_export_writes_a_checked_deploy_symbol_for_a_legacy_checkpoint(plain_conv, tmp_path,
                                                                        capsys):
    prefix, X = plain_conv
    out = str(tmp_path / "conv.onnx")
    code, stdout, err = run(["export", prefix, "2", "--input", "data=1,3,8,8", "--out", out,
                             "--deploy-symbol"], capsys)
    assert code == 0, err
    deploy = f"{prefix}-deploy-symbol.json"
    assert f"{deploy}: the label-free inference graph" in stdout
    assert "softmax_label" not in mx.sym.load(deploy).list_arguments()
    x = X[:5]
    with pytest.warns(UserWarning, match="Cannot decide type"):  # MXNet 1.9.1, any symbol
        net = mx.gluon.SymbolBlock.imports(deploy, ["data"], f"{prefix}-0002.params")
    np.testing.assert_allclose(net(mx.nd.array(x)).asnumpy(), ort_run(out, x), atol=1e-5,
                               rtol=0)
    # Again: the .onnx is symbuilder's own and may be replaced; the deploy symbol is kept.
    before = open(deploy).read()
    code, _, err = run(["export", prefix, "2", "--input", "data=1,3,8,8", "--out", out,
                        "--deploy-symbol"], capsys)
    assert code == 2 and open(deploy).read() == before
    assert err.strip() == (f"{deploy}: already exists; export never overwrites a file (remove "
                           "it to write the deploy symbol again)")


def test_export_never_overwrites_a_file_it_did_not_write(plain_conv, tmp_path, capsys):
    prefix, _ = plain_conv
    out = tmp_path / "notes.onnx"
    out.write_text("my notes\n")
    code, _, err = run(["export", prefix, "2", "--input", "data=1,3,8,8", "--out", str(out)],
                       capsys)
    assert code == 2 and out.read_text() == "my notes\n"
    assert err.strip() == (f"{out}: already exists and is not an ONNX model symbuilder wrote; "
                           "export never overwrites such a file (choose another --out)")
