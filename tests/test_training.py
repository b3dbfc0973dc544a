"""Training a user can watch, interrupt and trust: resume after SIGKILL, the divergence
guard, early stopping, LR schedules, reproducibility, the curves SVG and the progress bar.

Every comparison is against an independent computation: a second, uninterrupted run; the
schedule's formula written out here; MXNet's own predict on the exported checkpoint.
"""
import io
import json
import os
import signal
import subprocess
import sys
import time
import types

import mxnet as mx
import numpy as np
import pytest

import helpers

from symbuilder.cli import main
from symbuilder.data import load_data
from symbuilder.errors import SpecError
from symbuilder.training.progress import ProgressReporter
from symbuilder.spec.load import load_spec
from symbuilder.training import train

EXE = os.path.join(os.path.dirname(sys.executable), "symbuilder")

MLP = """\
    name: mlp
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 32}
      - {op: Activation, name: relu1, act_type: relu}
      - {op: Dropout, name: drop, p: 0.3}
      - {op: FullyConnected, name: fc2, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data: {train: {path: bc.csv, label: benign}}
    train:
      epochs: 12
      batch_size: 16
      optimizer: adam
      optimizer_params: {learning_rate: 0.002}
      lr_scheduler: {name: cosine, warmup_epochs: 2}
      seed: 3
    """


def write_spec(folder, body=MLP, name="spec.yaml"):
    return helpers.write_spec(folder, body, name)


def params_of(folder, name, epoch):
    return {k: v.asnumpy() for k, v in mx.nd.load(os.path.join(folder, f"{name}-{epoch:04d}.params")).items()}


def state_epoch(run_dir):
    try:
        with open(os.path.join(run_dir, "state.json")) as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_sigkill_then_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
    spec = write_spec(tmp_path)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run([EXE, "build", spec, "--out", str(whole), "-q"], check=True, timeout=300)
    proc = subprocess.Popen([EXE, "build", spec, "--out", str(broken), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / ".broken.run"
    deadline = time.time() + 120
    while state_epoch(run_dir) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = state_epoch(run_dir)
    assert 5 <= killed_at < 12, "the build was not killed mid-training"
    assert not broken.exists()
    resumed = subprocess.run([EXE, "build", spec, "--out", str(broken), "--resume"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from epoch {killed_at}" in resumed.stderr
    epochs_run = [l for l in resumed.stderr.splitlines() if l.startswith("epoch ")]
    assert len(epochs_run) == 12 - killed_at  # only the missing epochs were trained
    a, b = params_of(whole, "mlp", 12), params_of(broken, "mlp", 12)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    log = [json.loads(l) for l in open(broken / "train_log.jsonl")]
    assert [e["epoch"] for e in log] == list(range(1, 13))
    assert not run_dir.exists()  # the run folder goes once the export is published


def test_resume_refuses_a_changed_spec(tmp_path, capsys):
    spec = write_spec(tmp_path, MLP.replace("epochs: 12", "epochs: 3"))
    out = tmp_path / "out"
    run_dir = tmp_path / ".out.run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps({"epoch": 1, "fingerprint": "other"}))
    assert main(["build", spec, "--out", str(out), "--resume", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"{spec}: the spec changed since the interrupted run in {run_dir} (only "
                   "train.epochs and export may change); build without --resume to start over")


DIVERGE = """\
    name: diverge
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 16}
      - {op: FullyConnected, name: fc2, num_hidden: 1}
    output: {op: LinearRegressionOutput, name: reg}
    data: {train: {path: bc.csv, label: mean_radius}}
    train:
      epochs: 9
      optimizer: sgd
      optimizer_params: {learning_rate: 0.2}
      # The rate ramps up linearly: epoch 1 stays below the stability limit (~0.025),
      # epoch 2 crosses it.
      lr_scheduler: {name: poly, power: 1, warmup_epochs: 8}
      seed: 1
    """


def test_divergence_names_epoch_and_batch_exits_1_and_keeps_the_last_checkpoint(tmp_path, capsys):
    spec = write_spec(tmp_path, DIVERGE)
    out = tmp_path / "out"
    assert main(["build", spec, "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    run_dir = tmp_path / ".out.run"
    assert err[0].startswith("symbuilder: failed: training diverged in epoch 2, batch ")
    assert err[0].endswith(f"lower the learning rate; the last good checkpoint (epoch 1) is in {run_dir}")
    assert not out.exists()
    params = params_of(run_dir, "diverge", 1)
    assert all(np.isfinite(v).all() for v in params.values())
    assert state_epoch(run_dir) == 1


@pytest.mark.slow
def test_early_stopping_exports_the_best_epoch(tmp_path):
    body = MLP.replace("epochs: 12", "epochs: 40").replace(
        "lr_scheduler: {name: cosine, warmup_epochs: 2}",
        "early_stopping: {metric: ce, patience: 3}").replace("0.002", "0.02")
    spec = load_spec(write_spec(tmp_path, body))
    from symbuilder.pipeline import build
    result = build(spec, out_dir=str(tmp_path / "out"))
    history = result.result.history
    losses = [h["val"]["cross-entropy"] for h in history]
    best = int(np.argmin(losses)) + 1
    m = result.manifest
    assert m["stopped_early"] and m["epoch"] == best and m["epochs_trained"] == best + 3
    assert len(history) < 40
    # Independent: the exported checkpoint, run by MXNet, reproduces the best epoch's loss.
    data = load_data(spec)
    module = mx.mod.Module.load(str(tmp_path / "out" / "mlp"), best, label_names=["softmax_label"])
    it = mx.io.NDArrayIter(data.val.features, data.val.labels, batch_size=len(data.val),
                           label_name="softmax_label")
    module.bind(it.provide_data, it.provide_label, for_training=False)
    probs = module.predict(it).asnumpy()
    ce = -np.log(probs[np.arange(len(probs)), data.val.labels.astype(int)] + 1e-12).mean()
    assert ce == pytest.approx(losses[best - 1], rel=1e-5)


def test_lr_schedules_follow_their_formulas(tmp_path):
    body = MLP.replace("epochs: 12", "epochs: 6").replace(
        "lr_scheduler: {name: cosine, warmup_epochs: 2}",
        "lr_scheduler: {name: multifactor, epochs: [2, 4], factor: 0.5}").replace("0.002", "0.1")
    spec = load_spec(write_spec(tmp_path, body))
    data = load_data(spec)
    result = train(spec, data)
    # MXNet's MultiFactorScheduler lowers the rate once the update count EXCEEDS a step:
    # at the end of epoch e it has made e*B updates, so epoch 2's last rate is still 0.1.
    expected = [0.1 * 0.5 ** sum(e > m for m in (2, 4)) for e in range(1, 7)]
    assert [h["lr"] for h in result.history] == pytest.approx(expected)

    cosine = load_spec(write_spec(tmp_path / "c", MLP.replace("epochs: 12", "epochs: 5")))
    lrs = [h["lr"] for h in train(cosine, load_data(cosine)).history]
    batches = -(-len(data.train) // 16)
    total, warm = 5 * batches, 2 * batches
    formula = [0.002 * (e * batches / warm) if e * batches < warm else
               0.002 * (1 + np.cos(np.pi * (e * batches - warm) / (total - warm))) / 2
               for e in range(1, 6)]
    assert lrs == pytest.approx(formula, abs=1e-9)


@pytest.mark.slow
def test_same_spec_and_seed_give_bit_identical_parameters(tmp_path):
    spec = load_spec(write_spec(tmp_path, MLP.replace("epochs: 12", "epochs: 4")))
    data = load_data(spec)
    first = train(spec, data)
    second = train(spec, data)
    for key, value in first.arg_params.items():
        assert np.array_equal(value.asnumpy(), second.arg_params[key].asnumpy()), key
    other = train(load_spec(write_spec(tmp_path / "o", MLP.replace("epochs: 12", "epochs: 4")
                                       .replace("seed: 3", "seed: 4"))), data)
    assert not np.array_equal(first.arg_params["fc1_weight"].asnumpy(),
                              other.arg_params["fc1_weight"].asnumpy())


def test_curves_svg_draws_each_epochs_values_in_order(tmp_path):
    """curves.svg is well-formed SVG with a train and a val line per metric; each line has a
    point per epoch whose heights rank as the logged values do (higher value, higher point),
    and the exported epoch's marker sits at that epoch's x."""
    import xml.etree.ElementTree as ET
    spec = write_spec(tmp_path, MLP.replace("epochs: 12", "epochs: 3"))
    assert main(["build", spec, "--out", str(tmp_path / "out"), "-q"]) == 0
    log = [json.loads(l) for l in open(tmp_path / "out" / "train_log.jsonl")]
    assert [e["epoch"] for e in log] == [1, 2, 3]
    assert set(log[0]) >= {"epoch", "train", "val", "lr", "seconds"}
    ns = {"svg": "http://www.w3.org/2000/svg"}
    root = ET.parse(str(tmp_path / "out" / "curves.svg")).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and float(root.get("width")) >= 600
    lines = root.findall("svg:polyline", ns)
    metrics = list(log[0]["train"])
    rates_change = len({e["lr"] for e in log}) > 1  # a schedule: a learning-rate panel too
    assert [l.get("class") for l in lines] == (["train", "val"] * len(metrics)
                                               + ["learning rate"] * rates_change)
    manifest = json.load(open(tmp_path / "out" / "manifest.json"))
    for k, line in enumerate(lines):
        split = line.get("class")
        points = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        values = ([e["lr"] for e in log] if split == "learning rate"
                  else [e[split][metrics[k // 2]] for e in log])
        assert len(points) == 3 and xs == sorted(xs)
        # SVG's y grows downwards: the ranks of -y equal the ranks of the values
        assert np.argsort(np.argsort(values)).tolist() == np.argsort(np.argsort(
            [-y for y in ys])).tolist() or len(set(values)) < 3
        exported = root.findall("svg:line[@class='exported']", ns)[k // 2]
        epoch_x = xs[manifest["epoch"] - 1]
        assert float(exported.get("x1")) == pytest.approx(epoch_x, abs=0.11)


def test_nice_ticks_are_round_and_cover_the_range():
    from symbuilder.export.curves import nice_ticks
    for low, high in [(0.0, 1.0), (0.93, 0.991), (-3e-5, 7e-4), (12.0, 480.0), (5.0, 5.0)]:
        ticks = nice_ticks(low, high)
        assert ticks and all(low - 1e-12 <= t <= high + 1e-12 for t in ticks)
        if high > low:
            steps = np.diff(ticks)
            assert np.allclose(steps, steps[0])
            mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
            assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6
            assert 3 <= len(ticks) <= 11 and ticks[0] - low < steps[0] and high - ticks[-1] < steps[0]


def test_progress_bar_draws_on_a_terminal_and_plain_lines_elsewhere():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    lines = []
    stream = Tty()
    reporter = ProgressReporter(lines.append, total_epochs=2, batches_per_epoch=3,
                                batch_size=10, stream=stream)
    metric = types.SimpleNamespace(get=lambda: (["accuracy"], [0.5]))
    for nbatch in range(3):
        reporter.batch_done(types.SimpleNamespace(epoch=0, nbatch=nbatch, eval_metric=metric))
    assert "\repoch 1/2 [" in stream.getvalue() and "3/3" in stream.getvalue()
    assert "accuracy=0.5000" in stream.getvalue()
    reporter.epoch_done({"epoch": 1, "train": {"accuracy": 0.5}, "val": {"accuracy": 0.6},
                         "lr": 0.1, "seconds": 1.0, "samples_per_sec": 30.0})
    assert lines[0].startswith("epoch 1/2  train accuracy=0.5000  val accuracy=0.6000  lr=0.1  "
                               "1.00s  30 samples/s  eta ")

    plain = io.StringIO()
    quiet = ProgressReporter(lines.append, total_epochs=2, batches_per_epoch=3, batch_size=10,
                             stream=plain)
    quiet.batch_done(types.SimpleNamespace(epoch=0, nbatch=2, eval_metric=metric))
    assert plain.getvalue() == ""


def test_a_batch_larger_than_twice_the_validation_split_trains_and_scores_every_row(tmp_path):
    # 456 training rows, 113 validation rows, batch 256: the validation batch is padded by
    # more than the split holds (a short padded batch once crashed the bind).
    spec = load_spec(write_spec(tmp_path, MLP.replace("batch_size: 16", "batch_size: 256")
                                .replace("epochs: 12", "epochs: 3")))
    data = load_data(spec)
    assert len(data.val) * 2 < 256
    result = train(spec, data)
    # Independent: the validation accuracy from a plain forward pass over the 113 rows.
    ex = result.symbol.simple_bind(mx.cpu(), grad_req="null", data=data.val.features.shape)
    ex.copy_params_from(result.arg_params, result.aux_params, allow_extra_params=True)
    probs = ex.forward(is_train=False, data=data.val.features)[0].asnumpy()
    accuracy = float((probs.argmax(axis=1) == data.val.labels).mean())
    assert result.history[-1]["val"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)


def test_a_warm_up_as_long_as_the_run_is_a_located_mistake_even_from_epochs(tmp_path, capsys):
    # MLP: cosine with warmup_epochs: 2. MXNet would divide by zero at the first update.
    path = write_spec(tmp_path, MLP)
    out = tmp_path / "out"
    assert main(["build", path, "--epochs", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"{path}:15:32: train.lr_scheduler.warmup_epochs: a warm-up of 2 epochs "
                   "leaves none of the 2 training epochs for the cosine decay; use fewer "
                   "warm-up epochs than train.epochs")
    assert sorted(os.listdir(tmp_path)) == ["bc.csv", "spec.yaml"]  # nothing written
    with pytest.raises(SpecError):
        train(load_spec(path), load_data(load_spec(path)), epochs=1)


def test_resume_with_nothing_to_resume_is_a_fresh_run(tmp_path, capsys):
    spec = write_spec(tmp_path, MLP.replace("epochs: 12", "epochs: 3"))
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    assert main(["build", spec, "--out", str(fresh), "-q"]) == 0
    assert main(["build", spec, "--out", str(resumed), "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().err
    a = mx.nd.load(str(fresh / "mlp-0003.params"))
    b = mx.nd.load(str(resumed / "mlp-0003.params"))
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key].asnumpy(), b[key].asnumpy()), key
