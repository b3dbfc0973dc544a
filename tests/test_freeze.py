"""Frozen means frozen: every optimizer MXNet ships, in both stats modes; a legacy Module.fit
on the exported symbol JSON; and the running mode's warm start.

Every check is independent of symbuilder's own post-training check (input_layer_report):
beta/gamma are compared with np.array_equal against 0/1, statistics against numpy float64
two-pass mean/var of the training split, and the running-mode refusals are shown to be
needed by forcing each refused optimizer past validation and watching the freeze break.
"""
import json
import os
import textwrap

import mxnet as mx
import numpy as np
import pytest

from symbuilder.cli import main
from symbuilder.data import load_data
from symbuilder.errors import RunError, SpecError
from symbuilder.pipeline import build
from symbuilder.spec.load import loads_spec
from symbuilder.spec.semantics import LR_MULT_UNSAFE
from symbuilder.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "specs", "data", "breast_cancer.csv")
slow = pytest.mark.slow

OPTIMIZERS = sorted(mx.optimizer.Optimizer.opt_registry)

# A learning rate per optimizer that trains this net in 2 epochs. Every registered optimizer
# must be listed: a new one in MXNet fails test_every_registered_optimizer_is_covered.
LR = {"sgd": 0.1, "nag": 0.1, "ccsgd": 0.1, "dcasgd": 0.1, "lbsgd": 0.1, "lars": 2.0,
      "signum": 0.01, "adam": 0.01, "adamax": 0.01, "nadam": 0.01, "lamb": 0.01,
      "rmsprop": 0.005, "adagrad": 0.05, "groupadagrad": 0.05, "adadelta": 1.0,
      "ftml": 0.01, "ftrl": 0.1, "sgld": 0.003, "test": 0.01}
# Optimizers that are not meant to reach a good model here; every other one must reach
# val accuracy >= 0.8, so "beta/gamma stayed exact" is never the result of not training.
NOT_LEARNING = {"test": "adds the gradient (MXNet's own test optimizer)",
                "sgld": "Langevin sampling, not minimisation"}

_REFUSED = ("'{opt}' cannot keep the input layer frozen in stats: running mode: it {why}; "
            "use stats: dataset (every optimizer works there) or sgd, nag, adam, rmsprop, "
            "adagrad")
_IGNORES_LR = "ignores the learning rate, so lr_mult=0 does not stop it"
_DIVIDES = "divides by the learning rate: lr_mult=0 turns beta/gamma into NaN"
_GROUPADAGRAD = ("'groupadagrad' updates only 2-D parameters (one learning rate per row; "
                 "MXNet asserts on any other shape), but it would update '{param}' of shape "
                 "{shape}: {fix}, or use adagrad")
# In stats: running, the full validation message (after `file:line:col: train.optimizer: `).
REFUSED_RUNNING = {
    "adadelta": _REFUSED.format(opt="adadelta", why=_IGNORES_LR),
    "test": _REFUSED.format(opt="test", why=_IGNORES_LR),
    "ftml": _REFUSED.format(opt="ftml", why=_DIVIDES),
    "ftrl": _REFUSED.format(opt="ftrl", why=_DIVIDES),
    "sgld": _REFUSED.format(opt="sgld", why="draws noise with scale sqrt(learning rate): MXNet "
                                            "fails at lr_mult=0"),
    "groupadagrad": _GROUPADAGRAD.format(
        param="data_norm_gamma", shape="(30,)",
        fix="use stats: dataset with freeze: true, which takes the input layer out of "
            "training (lr_mult=0 alone does not)"),
}
RUNNING_OK = [o for o in OPTIMIZERS if o not in REFUSED_RUNNING]


def spec_text(mode="dataset", optimizer="sgd", *, data=DATA, lr=None, epochs=2,
              momentum=0.9, no_bias=False, normalize=None, extra_params="", formats=None):
    lr = LR.get(optimizer, 0.01) if lr is None else lr
    nb = ", no_bias: true" if no_bias else ""
    norm = normalize or f"{{stats: {mode}, momentum: {momentum}}}"
    export = f"export: {{formats: [{', '.join(formats)}]}}" if formats else ""
    return textwrap.dedent(f"""\
        name: freeze
        input: {{shape: [30], normalize: {norm}}}
        layers:
          - {{op: FullyConnected, name: fc1, num_hidden: 16{nb}}}
          - {{op: Activation, name: relu1, act_type: relu}}
          - {{op: FullyConnected, name: fc2, num_hidden: 2{nb}}}
        output: {{op: SoftmaxOutput, name: softmax}}
        data:
          train: {{path: {data}, label: benign}}
        train: {{epochs: {epochs}, batch_size: 32, optimizer: {optimizer},
                optimizer_params: {{learning_rate: {lr}{extra_params}}}}}
        {export}
        """)


@pytest.fixture(scope="module")
def data():
    return load_data(loads_spec(spec_text()))


@pytest.fixture(scope="module")
def exact(data):
    """numpy float64 two-pass mean and population variance of the training split."""
    x = data.train.features.astype(np.float64)
    return x.mean(axis=0), x.var(axis=0)


def beta_gamma(arg_params):
    return arg_params["data_norm_beta"].asnumpy(), arg_params["data_norm_gamma"].asnumpy()


def assert_exactly_frozen(arg_params):
    beta, gamma = beta_gamma(arg_params)
    assert beta.dtype == np.float32 and beta.shape == gamma.shape == (30,)
    assert np.array_equal(beta, np.zeros(30, np.float32)), np.abs(beta).max()
    assert np.array_equal(gamma, np.ones(30, np.float32)), np.abs(gamma - 1).max()


def input_report(result):
    """The input layer's report (manifest["input_normalization"]): keyed by input name since
    specs may have several inputs; a bare report before that."""
    report = result.input_stats
    return report["data"] if "data" in report else report


def assert_learned(optimizer, result):
    if optimizer in NOT_LEARNING:
        for value in result.arg_params.values():
            assert np.all(np.isfinite(value.asnumpy()))
        return
    assert result.history[-1]["val"]["accuracy"] >= 0.8, result.history[-1]


def write_spec(folder, text, name="spec.yaml"):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- every optimizer, both modes -------------------------------------------------------------

def test_every_registered_optimizer_is_covered():
    assert sorted(LR) == OPTIMIZERS
    assert set(REFUSED_RUNNING) - {"groupadagrad"} == set(LR_MULT_UNSAFE)


@slow
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_dataset_mode_every_optimizer_trains_with_beta_gamma_bit_exact(optimizer, data, exact):
    # groupadagrad updates only 2-D parameters: with no_bias it can train this net (the input
    # layer's 1-D beta/gamma are out of training in dataset mode).
    spec = loads_spec(spec_text("dataset", optimizer, no_bias=optimizer == "groupadagrad"))
    result = train(spec, data)
    assert_exactly_frozen(result.arg_params)
    # The moving statistics are numpy's float64 statistics of the training split, as float32,
    # bit for bit: calibrated once, never touched by training (use_global_stats).
    mean, var = exact
    assert np.array_equal(result.aux_params["data_norm_moving_mean"].asnumpy(),
                          mean.astype(np.float32))
    assert np.array_equal(result.aux_params["data_norm_moving_var"].asnumpy(),
                          var.astype(np.float32))
    assert_learned(optimizer, result)


@slow
@pytest.mark.parametrize("optimizer", RUNNING_OK)
def test_running_mode_every_accepted_optimizer_trains_with_beta_gamma_bit_exact(
        optimizer, data, exact):
    result = train(loads_spec(spec_text("running", optimizer)), data)
    assert_exactly_frozen(result.arg_params)
    mean, var = exact
    moving_mean = result.aux_params["data_norm_moving_mean"].asnumpy()
    moving_var = result.aux_params["data_norm_moving_var"].asnumpy()
    # Moved off the warm start (the exact statistics as float32) in every channel...
    assert np.all(moving_mean != mean.astype(np.float32))
    assert np.all(moving_var != var.astype(np.float32))
    # ...but stayed near the truth (batch-mean noise only: 32 samples, momentum 0.9).
    std = np.sqrt(var)
    assert np.max(np.abs(moving_mean - mean) / std) < 0.25
    assert np.max(np.abs(moving_var - var) / var) < 0.5
    # The report (manifest["input_normalization"]) states those same deviations.
    report = input_report(result)
    np.testing.assert_allclose(report["mean_deviation_in_std"],
                               np.abs(moving_mean.astype(np.float64) - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(report["exact_mean"], mean, rtol=1e-12)
    assert_learned(optimizer, result)


@pytest.mark.parametrize("optimizer", sorted(REFUSED_RUNNING))
def test_running_mode_refuses_at_validate_time_naming_the_optimizer(optimizer, tmp_path, capsys):
    # The data file does not exist: the refusal comes before any data is read.
    spec = write_spec(tmp_path, spec_text("running", optimizer, data=tmp_path / "missing.csv"))
    code, out, err = cli(["validate", spec], capsys)
    assert code == 2 and out == ""
    assert err == f"{spec}:10:36: train.optimizer: {REFUSED_RUNNING[optimizer]}\n"


@slow
@pytest.mark.parametrize("optimizer", sorted(LR_MULT_UNSAFE))
def test_each_refusal_is_needed_forced_past_validation_the_freeze_breaks(optimizer, data):
    # check=False skips the semantic checks: what a spec would do without the refusal.
    spec = loads_spec(spec_text("running", optimizer), check=False)
    with pytest.raises(RunError) as info:
        train(spec, data)
    message = str(info.value)
    assert ("was not frozen: max |beta| = " in message
            or message.startswith(("training failed in MXNet: ", "training diverged in epoch "))
            ), message


def test_groupadagrad_in_dataset_mode_is_refused_for_1d_biases(tmp_path, capsys):
    spec = write_spec(tmp_path, spec_text("dataset", "groupadagrad",
                                          data=tmp_path / "missing.csv"))
    code, _, err = cli(["validate", spec, "--no-data"], capsys)
    assert code == 2
    assert err == f"{spec}:10:36: train.optimizer: " + _GROUPADAGRAD.format(
        param="fc1_bias", shape="(16,)", fix="set no_bias: true on that layer") + "\n"


def test_groupadagrad_refuses_weight_decay(tmp_path, capsys):
    spec = write_spec(tmp_path, spec_text("dataset", "groupadagrad", no_bias=True,
                                          extra_params=", wd: 0.001"))
    code, _, err = cli(["validate", spec], capsys)
    assert code == 2
    assert err.endswith(": train.optimizer_params: 'groupadagrad' does not support weight "
                        "decay (MXNet asserts wd == 0); remove wd, or use adagrad\n"), err


def test_groupadagrad_refused_even_with_no_bias_in_running_mode():
    from symbuilder.pipeline import validate
    with pytest.raises(SpecError) as info:
        validate(loads_spec(spec_text("running", "groupadagrad", no_bias=True)), check_data=False)
    assert str(info.value).endswith("train.optimizer: " + REFUSED_RUNNING["groupadagrad"])


# --- a legacy Module.fit on the exported symbol ----------------------------------------------

@pytest.fixture(scope="module", params=["dataset", "running"])
def exported(request, tmp_path_factory):
    mode = request.param
    spec = loads_spec(spec_text(mode, "adam", formats=["checkpoint"]))
    out = str(tmp_path_factory.mktemp(f"legacy_{mode}") / "freeze")
    built = build(spec, out_dir=out)
    return mode, os.path.join(out, "freeze"), built.result.epoch


def legacy_fit(symbol, arg_params, aux_params, data):
    """What a pipeline written before symbuilder does: plain Module, no fixed_param_names,
    sgd with momentum and weight decay (wd hits every *_gamma by name unless wd_mult says 0)."""
    module = mx.mod.Module(symbol, data_names=["data"], label_names=["softmax_label"],
                           context=mx.cpu())
    it = mx.io.NDArrayIter(data.train.features, data.train.labels.astype(np.float32),
                           batch_size=32, shuffle=True, label_name="softmax_label")
    module.fit(it, num_epoch=2, arg_params=arg_params, aux_params=aux_params,
               optimizer="sgd", optimizer_params={"learning_rate": 0.1, "momentum": 0.9,
                                                  "wd": 1e-3})
    return module.get_params()


@slow
def test_legacy_module_fit_on_the_exported_json_keeps_beta_gamma_exact(exported, data):
    mode, prefix, epoch = exported
    symbol, arg_params, aux_params = mx.model.load_checkpoint(prefix, epoch)
    assert_exactly_frozen(arg_params)
    new_args, _ = legacy_fit(symbol, arg_params, aux_params, data)
    assert_exactly_frozen(new_args)
    # The rest of the network did train: the freeze is specific, not a dead module.
    assert not np.array_equal(new_args["fc1_weight"].asnumpy(), arg_params["fc1_weight"].asnumpy())


@slow
def test_control_without_the_json_multipliers_beta_gamma_move(exported, data):
    mode, prefix, epoch = exported
    graph = json.load(open(prefix + "-symbol.json"))
    stripped = 0
    for node in graph["nodes"]:
        if node["name"] in ("data_norm_beta", "data_norm_gamma"):
            attrs = node["attrs"]
            assert attrs.pop("__lr_mult__") == "0" and attrs.pop("__wd_mult__") == "0"
            stripped += 1
    assert stripped == 2
    symbol = mx.sym.load_json(json.dumps(graph))
    _, arg_params, aux_params = mx.model.load_checkpoint(prefix, epoch)
    new_args, _ = legacy_fit(symbol, arg_params, aux_params, data)
    beta, gamma = beta_gamma(new_args)
    assert not np.array_equal(beta, np.zeros(30, np.float32))
    assert not np.array_equal(gamma, np.ones(30, np.float32))


# --- the warm start, measured against MXNet's 0/1 start --------------------------------------

WARM_EPOCHS = 3


def plain_batchnorm_net():
    """The seed thread's layer by hand: frozen beta/gamma, MXNet's own 0/1 moving start."""
    data = mx.sym.Variable("data")
    gamma = mx.sym.Variable("bn_gamma", lr_mult=0, wd_mult=0, init=mx.init.One())
    beta = mx.sym.Variable("bn_beta", lr_mult=0, wd_mult=0, init=mx.init.Zero())
    net = mx.sym.BatchNorm(data, gamma=gamma, beta=beta, name="bn", momentum=0.99, eps=1e-3,
                           fix_gamma=False)
    net = mx.sym.FullyConnected(net, num_hidden=16, name="fc1")
    net = mx.sym.Activation(net, act_type="relu", name="relu1")
    net = mx.sym.FullyConnected(net, num_hidden=2, name="fc2")
    return mx.sym.SoftmaxOutput(net, name="softmax")


@slow
def test_warm_start_lands_on_the_exact_statistics_where_mxnets_0_1_start_does_not(data, exact):
    mean, var = exact
    std = np.sqrt(var)
    spec = loads_spec(spec_text("running", "sgd", epochs=WARM_EPOCHS, momentum=0.99))
    result = train(spec, data)
    ours_mean = result.aux_params["data_norm_moving_mean"].asnumpy().astype(np.float64)
    ours_var = result.aux_params["data_norm_moving_var"].asnumpy().astype(np.float64)

    mx.random.seed(7)
    np.random.seed(7)
    module = mx.mod.Module(plain_batchnorm_net(), context=mx.cpu())
    it = mx.io.NDArrayIter(data.train.features, data.train.labels.astype(np.float32),
                           batch_size=32, shuffle=True, label_name="softmax_label")
    module.fit(it, num_epoch=WARM_EPOCHS, optimizer="sgd",
               optimizer_params={"learning_rate": LR["sgd"]},
               initializer=mx.init.Xavier(magnitude=2.0))
    _, aux = module.get_params()
    plain_mean = aux["bn_moving_mean"].asnumpy().astype(np.float64)
    plain_var = aux["bn_moving_var"].asnumpy().astype(np.float64)

    ours_dev = np.abs(ours_mean - mean) / std
    plain_dev = np.abs(plain_mean - mean) / std
    ours_var_dev = np.abs(ours_var - var) / var
    plain_var_dev = np.abs(plain_var - var) / var
    updates = WARM_EPOCHS * -(-len(data.train) // 32)
    left = 0.99 ** updates  # the share of MXNet's 0 start still in its moving mean
    print(f"\nwarm start, momentum 0.99, {WARM_EPOCHS} epochs = {updates} updates "
          f"(0.99**{updates} = {left:.3f} of the start remains):\n"
          f"  symbuilder : |moving_mean - mean|/std max {ours_dev.max():.4f} median "
          f"{np.median(ours_dev):.4f}; |moving_var - var|/var max {ours_var_dev.max():.4f}\n"
          f"  plain 0/1  : |moving_mean - mean|/std max {plain_dev.max():.3f} median "
          f"{np.median(plain_dev):.3f} min {plain_dev.min():.3f}; |moving_var - var|/var "
          f"median {np.median(plain_var_dev):.3g}")
    assert ours_dev.max() < 0.02          # within 2% of a std, every feature
    assert ours_var_dev.max() < 0.05      # within 5% of the variance, every feature
    # MXNet's start: the moving mean still holds `left` of its zero start, so it sits about
    # left * |mean| / std below the truth (these features are positive: |mean|/std > 1).
    np.testing.assert_allclose(plain_dev, left * np.abs(mean) / std, rtol=0.1)
    assert np.median(plain_dev) > 0.5
    assert np.median(plain_var_dev) > 1.0
    assert ours_dev.max() < plain_dev.min() / 10
