"""The deploy symbol: every export carries a label-free inference symbol that Gluon, a
label-free Module and `mx.model.load_checkpoint` load with the export's one params file.

References are independent of symbuilder.export.deploy and symbuilder.serving.audit: ONNX
Runtime run here on the exported .onnx, the training symbol's own forward in MXNet (its
loss-head kernels), and numpy softmax/sigmoid.
"""
import glob
import json
import os
import shutil
import warnings

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

from helpers import write_spec

from symbuilder.export import deploy
from symbuilder.serving import audit
from symbuilder.errors import ExportError
from symbuilder.pipeline import build
from symbuilder.spec.load import load_spec
from symbuilder.spec.model import HEADS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))


@pytest.fixture(scope="module", params=SPECS, ids=os.path.basename)
def built(request, tmp_path_factory):
    spec = load_spec(request.param)
    out = str(tmp_path_factory.mktemp("export") / spec.name)
    build(spec, out_dir=out, epochs=2)
    with open(os.path.join(out, "manifest.json")) as f:
        return out, json.load(f)


def _inputs(manifest, n=16, seed=1):
    """Samples uniform over the manifest's per-feature range (not the build's seed 0)."""
    rng = np.random.RandomState(seed)
    feed = {}
    for item in manifest["inputs"]:
        shape = tuple(item["shape"][1:])
        span = manifest["parity"]["random_range"][item["name"]]
        low = np.reshape(span["low"], shape)
        high = np.reshape(span["high"], shape)
        values = low + (high - low) * rng.random_sample((n,) + shape)
        feed[item["name"]] = values.astype(np.float32)
    return feed


def _ort(out, manifest, feed):
    session = ort.InferenceSession(os.path.join(out, manifest["onnx"]["file"]),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _assert_matches_onnx(got, expected):
    """Within 1e-5 of the output's scale (max |ORT output|), output by output."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        scale = float(np.abs(e).max())
        assert float(np.abs(g - e).max()) <= 1e-5 * scale


def _names(manifest):
    return [item["name"] for item in manifest["inputs"]]


def _prefix(out, manifest, kind):
    entry = manifest["deploy"] if kind == "deploy" else manifest["checkpoint"]
    return os.path.join(out, entry["symbol"][: -len("-symbol.json")])


def _module_forward(symbol, arg_params, aux_params, feed, names):
    mod = mx.mod.Module(symbol, data_names=names, label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[(n, feed[n].shape) for n in names], for_training=False)
    mod.set_params(arg_params, aux_params)
    mod.forward(mx.io.DataBatch([mx.nd.array(feed[n]) for n in names]), is_train=False)
    return [o.asnumpy() for o in mod.get_outputs()]


def _training_forward(symbol, arg_params, aux_params, feed):  # also used by the legacy tests
    """The training symbol's inference forward, its labels left at zero (they are not read)."""
    exe = symbol.simple_bind(mx.cpu(), grad_req="null", **{k: v.shape for k, v in feed.items()})
    for name, array in exe.arg_dict.items():
        if name in feed or name in arg_params:
            array[:] = feed[name] if name in feed else arg_params[name]
    for name, array in exe.aux_dict.items():
        array[:] = aux_params[name]
    return [o.asnumpy() for o in exe.forward(is_train=False)]


@pytest.mark.slow
def test_deploy_files_are_listed_hashed_and_share_the_one_params_file(built):
    out, manifest = built
    entry, epoch, name = manifest["deploy"], manifest["epoch"], manifest["name"]
    assert entry["symbol"] == f"{name}-deploy-symbol.json"
    assert entry["params"] == manifest["checkpoint"]["params"] == f"{name}-{epoch:04d}.params"
    link = os.path.join(out, entry["params_link"])
    # A relative link inside the folder: no second copy of the bytes, and the folder can move.
    assert entry["params_link"] == f"{name}-deploy-{epoch:04d}.params"
    assert os.path.islink(link) and os.readlink(link) == entry["params"]
    for file in (entry["symbol"], entry["params_link"]):
        assert file in manifest["files"]
    assert manifest["files"][entry["params_link"]] == manifest["files"][entry["params"]]
    assert entry["inputs"] == _names(manifest)
    assert entry["outputs"] == [o["name"] for o in manifest["outputs"]]
    session = ort.InferenceSession(os.path.join(out, manifest["onnx"]["file"]),
                                   providers=["CPUExecutionProvider"])
    assert entry["outputs"] == [o.name for o in session.get_outputs()]
    symbol = mx.sym.load(os.path.join(out, entry["symbol"]))
    assert not [a for a in symbol.list_arguments() if a.endswith("_label")]


@pytest.mark.slow
def test_gluon_symbolblock_loads_it_without_a_warning_and_matches_onnx_runtime(built):
    out, manifest = built
    feed = _inputs(manifest)
    names = _names(manifest)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any MXNet warning fails the test
        net = mx.gluon.SymbolBlock(mx.sym.load(os.path.join(out, manifest["deploy"]["symbol"])),
                                   [mx.sym.var(n, dtype="float32") for n in names])
        net.collect_params().load(os.path.join(out, manifest["deploy"]["params"]), ctx=mx.cpu())
        got = net(*[mx.nd.array(feed[n]) for n in names])
    got = [o.asnumpy() for o in (got if isinstance(got, (list, tuple)) else [got])]
    _assert_matches_onnx(got, _ort(out, manifest, feed))


@pytest.mark.slow
def test_gluon_imports_loads_it_with_mxnets_own_dtype_warning(built):
    """`SymbolBlock.imports(json, names, params)` makes untyped input variables itself, so
    MXNet 1.9.1 warns for any symbol; the result is still right."""
    out, manifest = built
    feed = _inputs(manifest)
    names = _names(manifest)
    with pytest.warns(UserWarning, match="Cannot decide type for the following arguments"):
        net = mx.gluon.SymbolBlock.imports(os.path.join(out, manifest["deploy"]["symbol"]), names,
                                           os.path.join(out, manifest["deploy"]["params"]))
    got = net(*[mx.nd.array(feed[n]) for n in names])
    got = [o.asnumpy() for o in (got if isinstance(got, (list, tuple)) else [got])]
    _assert_matches_onnx(got, _ort(out, manifest, feed))


@pytest.mark.slow
def test_label_free_module_from_load_checkpoint_matches_onnx_and_the_training_symbol(built):
    out, manifest = built
    feed = _inputs(manifest)
    names = _names(manifest)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        symbol, args, aux = mx.model.load_checkpoint(_prefix(out, manifest, "deploy"),
                                                     manifest["epoch"])
        got = _module_forward(symbol, args, aux, feed, names)
    _assert_matches_onnx(got, _ort(out, manifest, feed))
    train_symbol, train_args, train_aux = mx.model.load_checkpoint(
        _prefix(out, manifest, "train"), manifest["epoch"])
    expected = _training_forward(train_symbol, train_args, train_aux, feed)
    for g, e in zip(got, expected):  # softmax is SoftmaxOutput's forward kernel: bit for bit
        np.testing.assert_array_equal(g, e)


@pytest.mark.slow
def test_check_deploy_symbol_passes_on_every_built_export(built):
    out, manifest = built
    assert audit.check_deploy_symbol(out, manifest) == []


# ------------------------------------------------------------------------------------------
# Every head, and check_deploy_symbol catching a deploy symbol that computes something else

HEAD_SPEC = """\
    name: head_{op}
    input: {{shape: [30]}}
    layers:
      - {{op: FullyConnected, name: fc1, num_hidden: 8}}
      - {{op: Activation, name: relu1, act_type: relu}}
      - {{op: FullyConnected, name: fc2, num_hidden: {k}}}
    output: {{op: {op}, name: head}}
    data:
      train: {{path: bc.csv, label: benign}}
    train: {{epochs: 1, batch_size: 64, optimizer: adam, optimizer_params: {{learning_rate: 0.01}}}}
    """
# The prediction each head becomes, and a wrong one to swap in.
PREDICTION = {"SoftmaxOutput": "softmax", "LogisticRegressionOutput": "sigmoid",
              "LinearRegressionOutput": "_copy", "MAERegressionOutput": "_copy"}
WRONG = {"softmax": "_copy", "sigmoid": "_copy", "_copy": "sigmoid"}


@pytest.fixture(scope="module", params=HEADS)
def head_export(request, tmp_path_factory):
    op = request.param
    folder = tmp_path_factory.mktemp(op)
    body = HEAD_SPEC.format(op=op, k=2 if op == "SoftmaxOutput" else 1)
    spec = load_spec(write_spec(folder, body))
    build(spec, out_dir=str(folder / "out"), epochs=1)
    with open(folder / "out" / "manifest.json") as f:
        return op, str(folder / "out"), json.load(f)


def _rewrite(path, edit):
    with open(path) as f:
        graph = json.load(f)
    edit(graph)
    with open(path, "w") as f:
        json.dump(graph, f)


@pytest.mark.slow
def test_every_head_becomes_its_prediction_and_passes_the_check(head_export):
    op, out, manifest = head_export
    graph = json.load(open(os.path.join(out, manifest["deploy"]["symbol"])))
    last = graph["nodes"][graph["heads"][0][0]]
    assert (last["op"], last["name"]) == (PREDICTION[op], "head")
    assert not [n for n in graph["nodes"] if n["op"] in HEADS or n["name"] == "head_label"]
    assert audit.check_deploy_symbol(out, manifest) == []


@pytest.mark.slow
def test_check_catches_a_deploy_symbol_with_the_wrong_prediction(head_export, tmp_path):
    op, out, manifest = head_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)  # the link stays a link

    def swap(graph):
        node = graph["nodes"][graph["heads"][0][0]]
        node["op"] = WRONG[node["op"]]
        node.pop("attrs", None)

    _rewrite(copy / manifest["deploy"]["symbol"], swap)
    problems = audit.check_deploy_symbol(str(copy), manifest)
    assert len(problems) == 1
    assert problems[0].startswith(f"{manifest['deploy']['symbol']}: disagrees with "
                                  f"{manifest['onnx']['file']}: max abs difference ")


@pytest.fixture
def mlp_copy(tmp_path):
    """A fresh one-epoch softmax export to tamper with."""
    spec = load_spec(write_spec(tmp_path, HEAD_SPEC.format(op="SoftmaxOutput", k=2)))
    out = str(tmp_path / "out")
    build(spec, out_dir=out, epochs=1)
    with open(os.path.join(out, "manifest.json")) as f:
        return out, json.load(f)


@pytest.mark.slow
def test_a_copy_that_followed_the_link_still_passes(mlp_copy, tmp_path):
    out, manifest = mlp_copy
    copy = tmp_path / "followed"
    shutil.copytree(out, copy)  # the default: the link becomes a second copy of the bytes
    assert not os.path.islink(copy / manifest["deploy"]["params_link"])
    assert audit.check_deploy_symbol(str(copy), manifest) == []


@pytest.mark.slow
def test_check_catches_a_label_a_moved_link_and_renamed_outputs(mlp_copy, tmp_path):
    out, manifest = mlp_copy
    entry = manifest["deploy"]
    train_json = os.path.join(out, manifest["checkpoint"]["symbol"])
    deploy_json = os.path.join(out, entry["symbol"])
    with open(train_json) as f, open(deploy_json, "w") as g:  # the training symbol as deploy
        g.write(f.read())
    assert audit.check_deploy_symbol(out, manifest) == [
        f"{entry['symbol']}: reads data, head_label besides its parameters; the inputs are data"]
    elsewhere = tmp_path / "elsewhere.params"
    with open(os.path.join(out, entry["params"]), "rb") as f, open(elsewhere, "wb") as g:
        g.write(f.read())  # the same bytes, outside the folder
    os.remove(os.path.join(out, entry["params_link"]))
    os.symlink(str(elsewhere), os.path.join(out, entry["params_link"]))
    renamed = dict(manifest, deploy=dict(entry, outputs=["probabilities"]))
    problems = audit.check_deploy_symbol(out, renamed)
    assert problems[0] == f"{entry['params_link']}: links to {elsewhere}, not to {entry['params']}"
    assert problems[-1] == (f"{entry['symbol']}: outputs ['head_output'], the manifest says "
                            "['probabilities']")


@pytest.mark.slow
def test_a_build_whose_deploy_symbol_disagrees_with_onnx_fails_and_writes_nothing(
        tmp_path, monkeypatch):
    """Fault injection: a deploy_symbol that drops the softmax must not reach an export."""
    spec = load_spec(write_spec(tmp_path, HEAD_SPEC.format(op="SoftmaxOutput", k=2)))
    monkeypatch.setattr(deploy, "deploy_symbol",
                        lambda symbol, shapes: mx.sym.identity(symbol.get_children()[0],
                                                               name="head"))
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"head_SoftmaxOutput-deploy-symbol.json: disagrees with "
                                          r"head_SoftmaxOutput.onnx: max abs difference"):
        build(spec, out_dir=str(out), epochs=1)
    # No export and no staging folder; the run folder stays, as after any failed export.
    assert sorted(os.listdir(tmp_path)) == [".out.run", "bc.csv", "spec.yaml"]


# ------------------------------------------------------------------------------------------
# deploy_symbol on a checkpoint written by plain mx.sym code (what `symbuilder export` reads)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _flat_softmax(x):
    return _softmax(x.reshape(len(x), -1), 1).reshape(x.shape)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """Every head variant in one Group, beside an ordinary output, saved as a checkpoint."""
    data = mx.sym.var("data")  # (n, 3, 4, 5)
    conv = mx.sym.Convolution(data, num_filter=4, kernel=(1, 1), name="conv")
    bn = mx.sym.BatchNorm(conv, name="bn")
    seq = mx.sym.reshape(bn, shape=(0, 4, 20), name="seq")
    fc = mx.sym.FullyConnected(bn, num_hidden=3, name="fc")
    heads = [mx.sym.SoftmaxOutput(bn, multi_output=True, name="per_pixel"),
             mx.sym.SoftmaxOutput(seq, preserve_shape=True, name="per_step"),
             mx.sym.SoftmaxOutput(seq, name="flat", grad_scale=2.0, use_ignore=True),
             mx.sym.SoftmaxOutput(fc, name="softmax"),
             mx.sym.LogisticRegressionOutput(fc, name="logistic"),
             mx.sym.LinearRegressionOutput(fc, name="linear"),
             mx.sym.MAERegressionOutput(fc, name="mae"),
             mx.sym.BlockGrad(fc, name="features")]
    symbol = mx.sym.Group(heads)
    rng = np.random.RandomState(0)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(2, 3, 4, 5))
    args = {n: mx.nd.array(rng.randn(*s)) for n, s in zip(symbol.list_arguments(), arg_shapes)
            if n != "data" and not n.endswith("_label")}
    aux = {n: mx.nd.array(rng.rand(*s) + 0.5) for n, s in
           zip(symbol.list_auxiliary_states(), aux_shapes)}
    prefix = str(tmp_path_factory.mktemp("legacy") / "net")
    mx.model.save_checkpoint(prefix, 3, symbol, args, aux)
    x = rng.randn(2, 3, 4, 5).astype(np.float32)
    # The heads' inputs, by MXNet, from the training graph itself.
    inner = mx.sym.Group([bn, seq, fc])
    exe = inner.bind(mx.cpu(), dict(args, data=mx.nd.array(x)), aux_states=aux, grad_req="null")
    return prefix, x, [o.asnumpy() for o in exe.forward(is_train=False)]


@pytest.mark.parametrize("shapes", [None, {"data": (2, 3, 4, 5)}], ids=["no shapes", "shapes"])
def test_deploy_symbol_of_a_legacy_checkpoint_computes_every_heads_prediction(legacy, shapes):
    prefix, x, (bn, seq, fc) = legacy
    symbol, args, aux = mx.model.load_checkpoint(prefix, 3)
    dep = deploy.deploy_symbol(symbol, shapes)
    assert dep.list_outputs() == symbol.list_outputs()
    assert dep.list_arguments() == [a for a in symbol.list_arguments() if not a.endswith("_label")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _module_forward(dep, args, aux, {"data": x}, ["data"])
    expected = [_softmax(bn, 1), _softmax(seq, -1), _flat_softmax(seq), _softmax(fc, -1),
                1 / (1 + np.exp(-fc)), fc, fc, fc]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    for g, e in zip(got, _training_forward(symbol, args, aux, {"data": x})):
        # Float32 rounding: a unit or two in the last place of values <= 1.
        np.testing.assert_allclose(g, e, rtol=0, atol=2 * np.finfo(np.float32).eps)


def test_a_label_read_elsewhere_stays_and_other_nodes_keep_their_attributes():
    data, label = mx.sym.var("data"), mx.sym.var("target")
    fc = mx.sym.FullyConnected(data, num_hidden=2, name="fc", attr={"__lr_mult__": "0.5"})
    symbol = mx.sym.Group([mx.sym.SoftmaxOutput(fc, label, name="softmax"),
                           mx.sym.BlockGrad(label, name="echo")])
    dep = deploy.deploy_symbol(symbol)
    assert dep.list_arguments() == ["data", "fc_weight", "fc_bias", "target"]
    assert dep.list_outputs() == ["softmax_output", "echo_output"]
    assert dep.attr_dict()["fc"]["__lr_mult__"] == "0.5"


def test_a_4d_softmax_without_an_axis_is_refused_when_the_shape_is_known():
    """MXNet 1.9.1's answer depends on the kernel (measured: oneDNN takes the last axis)."""
    head = mx.sym.SoftmaxOutput(mx.sym.var("data"), name="softmax")
    with pytest.raises(ExportError, match="'softmax': SoftmaxOutput of a 4-D input without "
                                          "multi_output or preserve_shape"):
        deploy.deploy_symbol(head, {"data": (1, 2, 3, 4)})
    # Without shapes, MXNet's own definition: softmax over all non-batch axes.
    x = np.random.RandomState(0).randn(2, 2, 3, 4).astype(np.float32)
    dep = deploy.deploy_symbol(head)
    got = dep.bind(mx.cpu(), {"data": mx.nd.array(x)}).forward()[0].asnumpy()
    np.testing.assert_allclose(got, _flat_softmax(x), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_without_symlinks_the_export_names_the_params_file_and_still_checks(tmp_path, monkeypatch):
    """A file system that refuses symlinks (EPERM, as some FUSE and Windows mounts do)."""
    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)
    spec = load_spec(write_spec(tmp_path, HEAD_SPEC.format(op="LogisticRegressionOutput", k=1)))
    out = str(tmp_path / "out")
    build(spec, out_dir=out, epochs=1)
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    entry = manifest["deploy"]
    assert entry["params_link"] is None and entry["params"] == manifest["checkpoint"]["params"]
    assert not [name for name in os.listdir(out) if name.endswith(".params")
                and name != entry["params"]]
    assert audit.check_deploy_symbol(out, manifest) == []
