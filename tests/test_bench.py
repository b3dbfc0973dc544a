"""`symbuilder bench` and the benchmark's fairness: fast checks only, no timing assertions.

The comparison is only worth something if the contenders do identical work: the
hand-written Module.fit must train the same symbol to the same parameters as symbuilder,
and the Gluon and PyTorch twins must compute what the MXNet symbol computes.
"""
import json
import os
import warnings

import mxnet as mx
import numpy as np
import pytest

from helpers import write_spec
from symbuilder import bench
from symbuilder.graph import build_symbol
from symbuilder.cli import main
from symbuilder.data import load_data
from symbuilder.spec.load import load_spec, loads_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TWO_INPUTS = """\
    name: tiny_two
    inputs:
      - {name: means, shape: [10], columns: ["mean_*"]}
      - {name: worst, shape: [10], columns: ["worst_*"], normalize: {stats: running, momentum: 0.9}}
    layers:
      - {op: FullyConnected, name: a, num_hidden: 8, inputs: [means]}
      - {op: FullyConnected, name: b, num_hidden: 8, inputs: [worst]}
      - {op: Concat, name: ab, dim: 1, inputs: [a, b]}
      - {op: Activation, name: r, act_type: relu}
      - {op: FullyConnected, name: out, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data: {train: {path: bc.csv, format: csv, label: benign}, val_fraction: 0.2}
    train: {epochs: 1, batch_size: 64, optimizer: adam, optimizer_params: {learning_rate: 0.01}}
"""


def test_cli_bench_prints_a_table_whose_rows_are_the_contenders(tmp_path, capsys):
    path = write_spec(tmp_path, TWO_INPUTS)  # two inputs: every contender handles them
    code = main(["bench", path, "--repeats", "1", "--epochs", "1", "--inference-repeats", "1",
                 "--no-torch", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line.split("|")[1].strip() for line in out.splitlines()
            if line.startswith("| ") and "---" not in line]
    assert rows[:9] == ["training", bench.HAND_WRITTEN, bench.SB_TRAINING, bench.HAND_WRITTEN_VAL,
                        bench.HAND_WRITTEN_EXTRAS, bench.SB_AS_BUILT, bench.GLUON,
                        "inference", "ONNX Runtime (export)"]
    assert "MXNet Module forward" in rows
    assert "tiny_two: 456 training samples" in out


def test_cli_bench_json(tmp_path, capsys):
    path = write_spec(tmp_path, TWO_INPUTS)
    assert main(["bench", path, "--repeats", "1", "--epochs", "1", "--inference-repeats", "1",
                 "--no-torch", "--no-gluon", "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in report["training"]][:2] == [bench.HAND_WRITTEN, bench.SB_TRAINING]
    assert all(f["whole_run"] > 0 and f["epoch_loop"] > 0 for f in report["training"])


def test_cli_bench_refuses_a_dist_kvstore_in_one_line(tmp_path, capsys):
    path = write_spec(tmp_path, TWO_INPUTS)
    code = main(["bench", path, "--set", "train.kvstore=dist_sync"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "kvstore" in err and "Traceback" not in err


FULL_BATCH = """\
    name: fair
    input: {name: data, shape: [30], normalize: {stats: dataset, eps: 0.001}}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 16}
      - {op: Activation, name: relu1, act_type: tanh}
      - {op: FullyConnected, name: fc2, num_hidden: 2,
         params: {bias: {lr_mult: 2.0, wd_mult: 0.0}}}
    output: {op: SoftmaxOutput, name: softmax}
    data: {train: {path: bc.csv, format: csv, label: benign}, val_fraction: 0.5}
    train:
      epochs: 3
      batch_size: 1000
      optimizer: sgd
      optimizer_params: {learning_rate: 0.1, momentum: 0.9, wd: 0.01}
      initializer: {name: xavier, magnitude: 2.0}
      seed: 0
"""


def _params(contender):
    arg, aux = contender.last["arg_params"], contender.last["aux_params"]
    return {k: v.asnumpy() for k, v in {**arg, **aux}.items()}


def test_hand_written_contender_trains_the_same_symbol_to_the_same_parameters(tmp_path):
    # One full batch per epoch and seed 0 (mx.random.seed(0) in both: the same initial
    # draws); no dropout. Only the order of the rows inside the batch differs. (val_fraction
    # 0.5: symbuilder's ArrayIter pads a batch from one pass over the order, so a batch
    # more than twice the validation rows fails there.)
    spec = load_spec(write_spec(tmp_path, FULL_BATCH))
    data = load_data(spec)
    mine = bench.symbuilder_contender(spec, data, as_built=False)
    theirs = bench.hand_written_contender(spec, data)
    mine.run(3)
    theirs.run(3)
    a, b = _params(mine), _params(theirs)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6, err_msg=key)
    # The input layer's statistics are numpy's, in both.
    x = data.train.features.astype(np.float64)
    np.testing.assert_allclose(b["data_norm_moving_mean"], x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(b["data_norm_moving_var"], x.var(0), rtol=1e-5)
    # Training moved the weights, and a different learning rate gives other weights: the
    # comparison above can fail.
    other = bench.hand_written_contender(loads_spec(
        open(spec.source).read().replace("learning_rate: 0.1", "learning_rate: 0.05"),
        source=spec.source), data)
    other.run(3)
    assert not np.allclose(_params(other)["fc1_weight"], b["fc1_weight"], rtol=1e-4, atol=1e-6)


def _random_params(spec, symbol, seed=3):
    """Module-initialised weights plus random BatchNorm statistics and gammas."""
    names = [i.name for i in spec.all_inputs]
    mod = mx.mod.Module(symbol, data_names=names, label_names=[spec.output.label_name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod.bind(data_shapes=[(i.name, (4,) + tuple(i.shape)) for i in spec.all_inputs],
                 for_training=False)
    mx.random.seed(seed)
    mod.init_params(mx.init.Xavier(magnitude=2.0))
    arg, aux = mod.get_params()
    rng = np.random.RandomState(seed)
    for key, value in list(aux.items()):
        shape = value.shape
        aux[key] = mx.nd.array(rng.uniform(-1, 1, shape) if key.endswith("mean")
                               else rng.uniform(0.5, 2.0, shape))
    for key, value in list(arg.items()):
        if key.endswith(("_gamma", "_beta", "_bias")) and not key.startswith(names[0] + "_norm"):
            arg[key] = mx.nd.array(rng.uniform(-0.5, 1.5, value.shape))
    return arg, aux


def _mxnet_outputs(spec, symbol, arg, aux, inputs):
    names = [i.name for i in spec.all_inputs]
    n = len(next(iter(inputs.values())))
    mod = mx.mod.Module(symbol, data_names=names, label_names=[spec.output.label_name])
    with warnings.catch_warnings():  # bound for inference: no label shapes
        warnings.simplefilter("ignore")
        mod.bind(data_shapes=[(k, inputs[k].shape) for k in names], for_training=False)
    mod.set_params(arg, aux)
    mod.forward(mx.io.DataBatch([mx.nd.array(inputs[k]) for k in names]), is_train=False)
    out = mod.get_outputs()[0].asnumpy()
    assert out.shape[0] == n
    return out


TWIN_SPECS = ["specs/digits_cnn.yaml", "specs/breast_cancer_branches.yaml",
              "specs/breast_cancer_mlp.yaml"]


def _case(path):
    return _case_of(load_spec(os.path.join(ROOT, path)))


def _case_of(spec):
    """The spec's symbol, random weights and inputs, and the symbol's outputs: the oracle."""
    symbol = build_symbol(spec)
    arg, aux = _random_params(spec, symbol)
    rng = np.random.RandomState(0)
    inputs = {i.name: rng.normal(2.0, 3.0, (5,) + tuple(i.shape)).astype(np.float32)
              for i in spec.all_inputs}
    return spec, symbol, arg, aux, inputs, _mxnet_outputs(spec, symbol, arg, aux, inputs)


def _gluon_output(spec, symbol, arg, aux, inputs):
    net, pmap = bench.gluon_twin(spec, symbol)
    net.initialize()
    net.hybridize()
    names = [i.name for i in spec.all_inputs]
    net(*[mx.nd.array(inputs[k]) for k in names])  # shapes settle before the params are set
    assert set(pmap) == set(arg) | set(aux) - {spec.output.label_name}
    for key, value in {**arg, **aux}.items():
        pmap[key].set_data(value)
    return bench.gluon_head(spec, mx.nd, net(*[mx.nd.array(inputs[k]) for k in names])).asnumpy()


def _torch_output(spec, symbol, arg, aux, inputs):
    torch = pytest.importorskip("torch")
    net, pmap = bench.torch_twin(spec, symbol)
    assert set(pmap) == set(arg) | set(aux) - {spec.output.label_name}
    with torch.no_grad():
        for key, value in {**arg, **aux}.items():
            pmap[key].copy_(torch.from_numpy(value.asnumpy()))
        net.eval()
        out = net(*[torch.from_numpy(inputs[i.name]) for i in spec.all_inputs])
        return bench.torch_head(spec, out).numpy()


TWIN_OUTPUT = {"gluon": _gluon_output, "torch": _torch_output}


@pytest.mark.parametrize("path", TWIN_SPECS)
def test_gluon_twin_computes_what_the_symbol_computes(path):
    spec, symbol, arg, aux, inputs, want = _case(path)
    got = _gluon_output(spec, symbol, arg, aux, inputs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", TWIN_SPECS)
def test_torch_twin_computes_what_the_symbol_computes(path):
    spec, symbol, arg, aux, inputs, want = _case(path)
    got = _torch_output(spec, symbol, arg, aux, inputs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_twin_refuses_an_op_it_does_not_write(tmp_path):
    spec = load_spec(write_spec(tmp_path, FULL_BATCH.replace(
        "{op: Activation, name: relu1, act_type: tanh}", "{op: SoftmaxActivation, name: sa}")))
    with pytest.raises(bench.TwinUnsupported, match="SoftmaxActivation"):
        bench.twin_plan(spec, build_symbol(spec))


# ---------------------------------------------------------------------------------------------
# The twin registry: every registered (framework, op), one layer plus a dense head, against
# the symbol on the same weights.

_IMAGE, _SEQ, _FLAT = [2, 6, 6], [2, 9], [6]
# op -> cases: (input shape, the layer's YAML mapping after `op:`), each built as that one
# layer on the normalized input, then FullyConnected(3) and SoftmaxOutput. A new
# registration without a case fails test_every_registered_twin_op_has_a_case.
TWIN_OP_CASES = {
    "FullyConnected": [(_FLAT, "num_hidden: 5"), (_IMAGE, "num_hidden: 5, no_bias: true"),
                       (_SEQ, "num_hidden: 4, flatten: false")],
    "Convolution": [(_IMAGE, "num_filter: 4, kernel: [3, 3], stride: [2, 2], pad: [1, 1], "
                             "num_group: 2"),
                    (_SEQ, "num_filter: 3, kernel: [3], dilate: [2], no_bias: true")],
    "BatchNorm": [(_IMAGE, "fix_gamma: false, eps: 0.01"), (_IMAGE, "momentum: 0.8"),
                  (_FLAT, "fix_gamma: false, use_global_stats: true")],
    "Activation": [(_FLAT, f"act_type: {a}")
                   for a in ("relu", "sigmoid", "tanh", "softrelu", "softsign")],
    "LeakyReLU": [(_FLAT, "act_type: leaky, slope: 0.1"), (_FLAT, "act_type: elu, slope: 0.5")],
    "Dropout": [(_FLAT, "p: 0.5")],
    "Pooling": [(_IMAGE, "pool_type: max, kernel: [2, 2], stride: [2, 2]"),
                (_IMAGE, "pool_type: avg, kernel: [3, 3], stride: [2, 2], pad: [1, 1], "
                         "pooling_convention: full, count_include_pad: false"),
                (_IMAGE, "pool_type: avg, global_pool: true, kernel: [1, 1]"),
                (_IMAGE, "pool_type: max, global_pool: true, kernel: [1, 1]"),
                (_SEQ, "pool_type: max, kernel: [2], stride: [1]")],
    "Flatten": [(_IMAGE, "")],
    "flatten": [(_IMAGE, "")],
    "elemwise_add": [(_IMAGE, "inputs: [data, data]")],
    "broadcast_add": [(_FLAT, "inputs: [data, data]")],
    "Concat": [(_IMAGE, "dim: 1, inputs: [data, data]"), (_IMAGE, "dim: 2, inputs: [data, data]")],
    "concat": [(_FLAT, "dim: 1, inputs: [data, data]")],
}


def _one_layer_spec(tmp_path, op, shape, attrs):
    layer = f"{{op: {op}, name: layer{', ' + attrs if attrs else ''}}}"
    return load_spec(write_spec(tmp_path, f"""\
        name: one_{op}
        input: {{name: data, shape: {shape}, normalize: {{stats: dataset, eps: 0.001}}}}
        layers:
          - {layer}
          - {{op: FullyConnected, name: out, num_hidden: 3}}
        output: {{op: SoftmaxOutput, name: softmax}}
        data: {{train: {{path: bc.csv, format: csv, label: benign}}}}
        """))


def _registered_cases():
    return [pytest.param(fw, op, k, id=f"{fw}-{op}-{k}")
            for fw, op in bench.registered_twin_ops()
            for k in range(len(TWIN_OP_CASES.get(op, [None])))]


@pytest.mark.parametrize("framework, op, k", _registered_cases())
def test_every_registered_twin_op_computes_what_the_symbol_computes(tmp_path, framework, op, k):
    shape, attrs = TWIN_OP_CASES[op][k]
    spec, symbol, arg, aux, inputs, want = _case_of(_one_layer_spec(tmp_path, op, shape, attrs))
    assert spec.layers[0].op == op
    got = TWIN_OUTPUT[framework](spec, symbol, arg, aux, inputs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_every_registered_twin_op_has_a_case():
    for framework in bench.twins.FRAMEWORKS + ("plan",):
        ops = {op for _, op in bench.registered_twin_ops(framework)}
        assert ops == set(TWIN_OP_CASES), framework  # and every framework writes every plan


def test_a_second_registration_of_a_twin_op_is_an_error():
    with pytest.raises(ValueError, match="duplicate twin gluon builder for MXNet op 'Pooling'"):
        bench.twins.register_twin_op("Pooling", framework="gluon")(lambda step, pmap: None)
    with pytest.raises(ValueError, match="duplicate twin plan for MXNet op 'Dropout'"):
        bench.twins.register_twin_plan("Dropout")(lambda layer: {})
    assert len(bench.registered_twin_ops("gluon")) == len(TWIN_OP_CASES)  # nothing replaced


def test_a_framework_without_a_builder_for_an_op_refuses_it_by_name(tmp_path, monkeypatch):
    from symbuilder.bench.twins import registry
    monkeypatch.setattr(registry, "_BUILDERS", {key: fn for key, fn in registry._BUILDERS.items()
                                                if key != ("gluon", "Dropout")})
    spec = _one_layer_spec(tmp_path, "Dropout", [30], "p: 0.5")  # 30: the csv's features
    with pytest.raises(bench.TwinUnsupported, match="the gluon twin does not write Dropout"):
        bench.gluon_twin(spec)
    data = load_data(spec)
    _, skipped = bench.twin_contenders(spec, data, torch=False)  # reported, not raised
    assert skipped == [f"{bench.GLUON}: the gluon twin does not write Dropout (it writes: "
                       "Activation, BatchNorm, Concat, Convolution, Flatten, FullyConnected, "
                       "LeakyReLU, Pooling, broadcast_add, concat, elemwise_add, flatten)"]


# ---------------------------------------------------------------------------------------------
# bench is a package apart: the product never imports it, and it uses only the product's
# public names (the private ones it still needs sit behind bench/_product.py).

BENCH_DIR = os.path.join(ROOT, "symbuilder", "bench")


def _private_product_imports(path):
    """(line, module, name) of every private name a bench module imports from a symbuilder
    module outside bench."""
    import ast
    package = os.path.relpath(os.path.dirname(path), ROOT).split(os.sep)
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = package[:len(package) - node.level + 1] if node.level else []
        module = ".".join(base + (node.module.split(".") if node.module else []))
        if module.startswith("symbuilder") and not module.startswith("symbuilder.bench"):
            found += [(node.lineno, module, a.name) for a in node.names if a.name.startswith("_")]
    return found


def test_bench_imports_no_private_product_name_outside_its_adapter():
    paths = [os.path.join(d, f) for d, _, files in os.walk(BENCH_DIR) for f in files
             if f.endswith(".py")]
    adapter = os.path.join(BENCH_DIR, "_product.py")
    assert {name for _, _, name in _private_product_imports(adapter)} == set()  # now public
    leaks = {os.path.relpath(p, ROOT): _private_product_imports(p) for p in paths if p != adapter}
    assert {p: found for p, found in leaks.items() if found} == {}


def test_the_product_path_never_imports_bench(tmp_path):
    import subprocess
    import sys
    path = write_spec(tmp_path, FULL_BATCH)
    probe = ("import sys\n"
             "import importlib, os, symbuilder\n"
             "top = os.path.dirname(os.path.dirname(symbuilder.__file__))\n"
             "for folder, _, files in os.walk(os.path.dirname(symbuilder.__file__)):\n"
             "    for f in files:\n"
             "        rel = os.path.relpath(os.path.join(folder, f), top)[:-3]\n"
             "        name = rel.replace(os.sep, '.').replace('.__init__', '')\n"
             "        if f.endswith('.py') and not name.startswith(\n"
             "                ('symbuilder.bench', 'symbuilder.__main__')):\n"
             "            importlib.import_module(name)\n"
             "from symbuilder.cli import main\n"
             f"assert main(['validate', {path!r}]) == 0\n"
             "print(sorted(m for m in sys.modules if m.startswith('symbuilder.bench')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
