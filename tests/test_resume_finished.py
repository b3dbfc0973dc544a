"""--resume on a finished export says so and trains nothing; a refused resume names the
spec keys that changed (diffed against the spec stored in the run folder's state)."""
import json
import os
import textwrap

import pytest

import helpers
from symbuilder import build
from symbuilder.cli import main
from symbuilder.pipeline import finished_export
from symbuilder.spec.load import load_spec
from symbuilder.training.runstore import changed_keys

SPEC = """\
    name: fin
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 8}
      - {op: FullyConnected, name: fc2, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data: {train: {path: bc.csv, label: benign}}
    train: {epochs: 3, batch_size: 64, optimizer: adam, optimizer_params: {learning_rate: 0.01}}
    """


class _Stop(Exception):
    pass


def _stop_after(epochs):
    def say(line):
        if line.startswith(f"epoch {epochs}/"):
            raise _Stop()
    return say


def _snapshot(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}


def test_resume_on_a_finished_export_exits_0_and_trains_nothing(tmp_path, capsys):
    spec = helpers.write_spec(tmp_path, SPEC)
    out = str(tmp_path / "out")
    assert main(["build", spec, "--out", out, "-q"]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["build", spec, "--out", out, "--resume"]) == 0
    captured = capsys.readouterr()
    assert f"{out}: already built from this spec (3 epochs); nothing to resume" in captured.err
    assert not any(line.startswith("epoch ") for line in captured.err.splitlines())
    assert captured.out.startswith(f"{out}: val accuracy=")
    assert _snapshot(out) == before and not os.path.exists(tmp_path / ".out.run")


def test_a_finished_export_of_fewer_epochs_or_another_spec_is_not_finished(tmp_path):
    spec = load_spec(helpers.write_spec(tmp_path, SPEC))
    out = str(tmp_path / "out")
    build(spec, out_dir=out)
    assert finished_export(out, spec) is not None
    more = load_spec(helpers.write_spec(tmp_path / "b", SPEC.replace("epochs: 3", "epochs: 4")))
    other = load_spec(helpers.write_spec(tmp_path / "c", SPEC.replace("num_hidden: 8",
                                                                      "num_hidden: 9")))
    assert finished_export(out, more) is None and finished_export(out, other) is None


def test_a_refused_resume_names_the_changed_keys(tmp_path, capsys):
    spec = helpers.write_spec(tmp_path, SPEC)
    out = str(tmp_path / "out")
    with pytest.raises(_Stop):
        build(load_spec(spec), out_dir=out, progress=_stop_after(2))  # epoch 1 saved
    run_dir = tmp_path / ".out.run"
    state = json.loads((run_dir / "state.json").read_text())
    assert state["epoch"] == 1 and state["spec"]["layers"][1]["num_hidden"] == 2
    with open(spec, "w") as f:
        f.write(textwrap.dedent(SPEC).replace("learning_rate: 0.01",
                "learning_rate: 0.02").replace("num_hidden: 8", "num_hidden: 7")
                .replace("epochs: 3", "epochs: 5"))
    before = _snapshot(run_dir)
    assert main(["build", spec, "--out", out, "--resume", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"{spec}: the spec changed since the interrupted run in {run_dir}: "
                   "layers[0].num_hidden, train.optimizer_params.learning_rate changed (only "
                   "train.epochs and export may change); build without --resume to start over")
    assert _snapshot(run_dir) == before and not os.path.exists(out)


def test_changed_keys_names_added_removed_and_nested_keys():
    old = {"a": 1, "layers": [{"n": 1}, {"n": 2}], "t": {"p": {"lr": 0.1}, "gone": 1}}
    new = {"a": 1, "layers": [{"n": 1}, {"n": 3}, {"n": 4}], "t": {"p": {"lr": 0.2}}, "z": 0}
    assert changed_keys(old, new) == ["layers[1].n", "layers[2]", "t.p.lr", "t.gone", "z"]
