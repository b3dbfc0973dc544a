"""The command line: exit codes, one-line located errors, nothing written on a mistake."""
import os
import subprocess
import sys

import pytest

from helpers import write_spec
from symbuilder.cli import main



GOOD = """\
    name: cli_mlp
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 16}
      - {op: Activation, name: relu1, act_type: relu}
      - {op: FullyConnected, name: fc2, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data:
      train: {path: bc.csv, label: benign}
    train: {epochs: 3, batch_size: 32, optimizer: adam, optimizer_params: {learning_rate: 0.01}}
    """


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_validate_ok(tmp_path, capsys):
    spec = write_spec(tmp_path, GOOD)
    code, out, err = run(["validate", spec], capsys)
    assert code == 0, err
    assert out.strip() == (f"{spec}: ok (3 layers, 650 parameters, 456 training and 113 "
                           "validation samples, 2 classes)")


@pytest.mark.parametrize("change, expected", [
    (("num_hidden: 16", "num_hidden: sixteen"),
     ":4:37: layers[0].num_hidden: expected int, received 'sixteen' (str)"),
    (("op: FullyConnected, name: fc1", "op: FullyConected, name: fc1"),
     ":4:6: layers[0].op: unknown MXNet operator 'FullyConected'; did you mean 'FullyConnected'?"),
    (("label: benign", "label: benig"),
     ":9:25: data.train.label: no label column 'benig' in bc.csv (closest: benign, "),
    (("optimizer: adam", "optimizer: adamw"),
     ":10:36: train.optimizer: unknown optimizer 'adamw' (did you mean 'adam'?)"),
    (("input: {shape: [30]}", "input: {shape: [31]}"),
     ":2:9: input.shape: shape [31] needs 31 features per sample, but bc.csv gives this "
     "input 30 (mean_radius, mean_texture, mean_perimeter, mean_area, mean_smoothness, ...)"),
    (("num_hidden: 2}", "num_hidden: 2, inputs: [fc3]}"),
     ":6:61: layers[2].inputs[0]: 'fc3' is not an earlier layer or input (did you mean 'fc1'?)"),
    # Refused before training: no epoch is spent on a model that could never be exported.
    (("op: Activation, name: relu1, act_type: relu", "op: erfinv, name: relu1"),
     ":5:6: layers[1].op: no ONNX translation for MXNet op 'erfinv' (node 'relu1'); "
     "symbuilder translates: Activation, "),
])
def test_user_mistakes_are_one_located_line_and_exit_2(tmp_path, capsys, monkeypatch, change,
                                                       expected):
    monkeypatch.chdir(tmp_path)  # data paths are shown as openable from the working folder
    spec = write_spec(tmp_path, GOOD.replace(*change))
    out_dir = tmp_path / "export"
    code, out, err = run(["build", spec, "--out", str(out_dir)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err and "epoch" not in err + out
    assert not out_dir.exists() and not any(p.name.startswith(".export") for p in tmp_path.iterdir())


def test_shape_error_names_the_layer_and_the_shapes(tmp_path, capsys):
    body = GOOD.replace("- {op: Activation, name: relu1, act_type: relu}",
                        "- {op: Convolution, name: conv1, num_filter: 4, kernel: [3, 3]}")
    code, _, err = run(["validate", write_spec(tmp_path, body)], capsys)
    assert code == 2
    assert err.strip().endswith(":5:5: layers[1]: Convolution 'conv1' cannot take input shape "
                               "(1, 16): Input data should be 4D in batch-num_filter-y-x (2 vs. 4)")


def test_missing_spec_and_bad_flags_exit_2(tmp_path, capsys):
    code, _, err = run(["build", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and err.strip() == f"{tmp_path / 'none.yaml'}: no such spec file"
    with pytest.raises(SystemExit) as info:
        main(["build", "x.yaml", "--epochs", "0"])
    assert info.value.code == 2
    assert "expected a positive integer, received '0'" in capsys.readouterr().err


def test_set_overrides_reach_the_spec(tmp_path, capsys):
    spec = write_spec(tmp_path, GOOD)
    code, _, err = run(["validate", spec, "--set", "layers[0].num_hidden=-1"], capsys)
    # The mistake is on the command line, so the message points there, not at the file.
    assert code == 2 and err.strip() == ("--set layers[0].num_hidden=-1: layers[0].num_hidden: "
                                         "expected a value >= 1, received -1")
    code, _, err = run(["validate", spec, "--set", "train={epochs: 0}"], capsys)
    assert err.strip() == "--set train={epochs: 0}: train.epochs: expected an integer >= 1, " \
                          "received 0 (integer)"
    # A mistake elsewhere in the file keeps its file location.
    code, _, err = run(["validate", write_spec(tmp_path / "b", GOOD.replace("num_hidden: 2}",
                        "num_hidden: 0}")), "--set", "train.epochs=2"], capsys)
    assert code == 2 and ":6:37: layers[2].num_hidden: expected a value >= 1" in err, err


def test_summary_lists_layers_shapes_and_parameters(tmp_path, capsys):
    code, out, _ = run(["summary", write_spec(tmp_path, GOOD)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["layer", "op", "output", "shape", "connected", "to",
                                "trainable", "frozen", "stats"]
    rows = {line.split()[0]: line.split() for line in lines[2:-1]}
    # fc1: 30*16 + 16 = 496; fc2: 16*2 + 2 = 34; input layer: beta/gamma 60 frozen, 60 stats.
    assert rows["fc1"][-3:] == ["496", "0", "0"] and rows["fc2"][-3:] == ["34", "0", "0"]
    assert rows["data_norm"][-3:] == ["0", "60", "60"] and rows["fc1"][3] == "data_norm"
    assert lines[-1] == "total parameters: 650 (530 trainable, 60 frozen, 60 statistics)"


@pytest.mark.slow
def test_console_script_builds_and_reports(tmp_path):
    spec = write_spec(tmp_path, GOOD)
    exe = os.path.join(os.path.dirname(sys.executable), "symbuilder")
    proc = subprocess.run([exe, "build", spec, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{tmp_path / 'out'}: val accuracy=")
    assert len([l for l in proc.stderr.splitlines() if l.startswith("epoch ")]) == 3
    assert sorted(os.listdir(tmp_path / "out")) == [
        "cli_mlp-0003.params", "cli_mlp-deploy-0003.params", "cli_mlp-deploy-symbol.json",
        "cli_mlp-symbol.json", "cli_mlp.onnx", "curves.svg", "manifest.json", "train_log.jsonl"]


def _edit_csv(folder, edit):
    """Rewrite the bc.csv beside a spec: edit(header, rows) changes the rows in place."""
    import csv
    path = os.path.join(folder, "bc.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    edit(rows[0], rows[1:])
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_a_non_finite_value_is_located_at_its_row_and_column(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data paths are shown as openable from the working folder
    spec = write_spec(tmp_path, GOOD)

    def put_nan(header, rows):
        rows[4][header.index("mean_area")] = "nan"  # file line 6
    _edit_csv(tmp_path, put_nan)
    code, _, err = run(["validate", spec], capsys)
    assert code == 2
    # The file as the user can open it from the working folder.
    assert err.strip() == "bc.csv:6: column 'mean_area': not a finite number: nan"


def test_a_zero_variance_feature_is_a_warning_naming_it_and_the_build_goes_on(tmp_path, capsys):
    spec = write_spec(tmp_path, GOOD.replace("epochs: 3", "epochs: 1"))

    def constant(header, rows):
        for row in rows:
            row[header.index("mean_texture")] = "7.5"
    _edit_csv(tmp_path, constant)
    out = tmp_path / "out"
    code, _, err = run(["build", spec, "--out", str(out)], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: feature 'mean_texture' has zero variance in the training data; "
                        "the input layer divides by sqrt(eps=0.001)"]
    import json
    report = json.load(open(out / "manifest.json"))["input_normalization"]["data"]
    assert report["exact_var"][1] == 0.0 and report["exact_mean"][1] == 7.5


def test_an_out_folder_that_cannot_be_created_is_exit_2_before_any_training(tmp_path, capsys):
    spec = write_spec(tmp_path, GOOD)
    blocker = tmp_path / "afile"
    blocker.write_text("")
    for out, message in [(blocker, "--out names a file, not a folder"),
                         (blocker / "sub" / "x", "is a file, so --out cannot be created below it"),
                         ("/proc/symbuilder-out", "cannot create the output folder here")]:
        code, out_text, err = run(["build", spec, "--out", str(out)], capsys)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and message in err, err
        assert "epoch" not in err + out_text  # refused before training


def test_an_os_error_mid_run_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    import symbuilder.pipeline as pipeline

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out"))
    monkeypatch.setattr(pipeline, "export_model", disk_full)
    code, _, err = run(["build", write_spec(tmp_path, GOOD), "--out", str(tmp_path / "out"),
                        "-q"], capsys)
    assert code == 1
    assert err.strip() == f"symbuilder: failed: No space left on device: {tmp_path / 'out'}"


def test_validate_lists_every_op_without_an_onnx_translation_at_once(tmp_path, capsys):
    spec = write_spec(tmp_path, GOOD.replace(
        "      - {op: Activation, name: relu1, act_type: relu}\n",
        "      - {op: erfinv, name: odd1}\n      - {op: gammaln, name: odd2}\n"
        "      - {op: erfinv, name: odd3}\n"))
    code, out, err = run(["validate", spec], capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"{spec}:5:6: layers[1].op: no ONNX translation at opset 17 for 2 ops: "
                          "'erfinv' (2 nodes, first 'odd1'), 'gammaln' (1 node, first 'odd2'); "), err
    assert err.rstrip().endswith("(or leave onnx out of export.formats)")
