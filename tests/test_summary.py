"""`summary`: parameters split into trainable, frozen and statistics, and the inputs of every
layer of a DAG, against counts computed by hand from the symbol's own argument/aux shapes."""
import numpy as np

from helpers import write_spec
from symbuilder.cli import main
from symbuilder.graph import build_model
from symbuilder.graph.summary import layer_shapes
from symbuilder.spec.load import load_spec

DAG = """\
    name: dag
    inputs:
      - {name: means, shape: [10], columns: ["mean_*"]}
      - {name: worst, shape: [10], columns: ["worst_*"], normalize: {stats: running, momentum: 0.9}}
      - {name: errs, shape: [10], columns: ["*_error"], normalize: {freeze: false}}
    layers:
      - {op: FullyConnected, name: a, num_hidden: 8, inputs: [means]}
      - {op: FullyConnected, name: b, num_hidden: 8, inputs: [worst], params: {bias: {lr_mult: 0}}}
      - {op: Concat, name: ab, dim: 1, inputs: [a, b, errs]}
      - {op: Activation, name: r, act_type: relu}
      - {op: FullyConnected, name: out, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data: {train: {path: bc.csv, format: csv, label: benign}, val_fraction: 0.2}
    train: {epochs: 1, batch_size: 64, optimizer: adam, optimizer_params: {learning_rate: 0.01}}
"""


def _by_hand(symbol):
    """Sizes of every argument and aux state from the whole symbol's shape inference."""
    arg, _, aux = symbol.infer_shape(means=(1, 10), worst=(1, 10), errs=(1, 10))
    args = {n: int(np.prod(s)) for n, s in zip(symbol.list_arguments(), arg)}
    auxs = {n: int(np.prod(s)) for n, s in zip(symbol.list_auxiliary_states(), aux)}
    return args, auxs


def test_parameters_by_kind_and_connections_match_the_symbol(tmp_path):
    model = build_model(load_spec(write_spec(tmp_path, DAG)))
    args, auxs = _by_hand(model.symbol)
    # Frozen: the dataset-mode input layer (fixed_param_names, lr_mult 0), the running-mode
    # one (lr_mult 0), b's bias (lr_mult 0); errs' affine is learnable (freeze: false).
    frozen = {"means_norm_gamma", "means_norm_beta", "worst_norm_gamma", "worst_norm_beta",
              "b_bias"}
    not_params = {"means", "worst", "errs", "softmax_label"}
    trainable = {n for n in args if n not in frozen | not_params}
    assert trainable == {"errs_norm_gamma", "errs_norm_beta", "a_weight", "a_bias", "b_weight",
                         "out_weight", "out_bias"}
    rows = {r["name"]: r for r in layer_shapes(model)}
    assert sum(r["trainable"] for r in rows.values()) == sum(args[n] for n in trainable)
    assert sum(r["frozen"] for r in rows.values()) == sum(args[n] for n in frozen) == 48
    assert sum(r["stats"] for r in rows.values()) == sum(auxs.values()) == 60
    assert (rows["b"]["trainable"], rows["b"]["frozen"]) == (80, 8)
    assert (rows["errs_norm"]["trainable"], rows["errs_norm"]["stats"]) == (20, 20)
    assert rows["ab"]["inputs"] == ["a", "b", "errs_norm"]
    assert rows["means_norm"]["inputs"] == ["means"]
    assert rows["softmax"]["inputs"] == ["out"]  # the label is not a layer


def test_summary_prints_the_columns_and_the_totals(tmp_path, capsys):
    assert main(["summary", write_spec(tmp_path, DAG)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["layer", "op", "output", "shape", "connected", "to",
                                "trainable", "frozen", "stats"]
    rows = {line.split()[0]: line.split() for line in lines[2:-1]}
    assert rows["ab"][3:6] == ["a,", "b,", "errs_norm"] and rows["b"][-3:] == ["80", "8", "0"]
    args, auxs = _by_hand(build_model(load_spec(str(tmp_path / "spec.yaml"))).symbol)
    total = sum(v for n, v in args.items()
                if n not in {"means", "worst", "errs", "softmax_label"}) + sum(auxs.values())
    assert lines[-1] == (f"total parameters: {total:,} ({total - 48 - 60:,} trainable, "
                         "48 frozen, 60 statistics)")
