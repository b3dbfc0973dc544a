"""A new user's first hour, end to end, as the README's quick start tells it: `init` from their
CSV (with an id column), `build`, `evaluate` on a held-out CSV, `predict` from stdin with the
ids kept, `verify`. Each output is checked against numpy or ONNX Runtime run directly."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from helpers import DATA, ROOT


def run(argv, cwd, stdin=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "symbuilder"] + argv, cwd=cwd, env=env,
                          input=stdin, capture_output=True, text=True)


@pytest.mark.slow
def test_init_build_evaluate_predict_verify(tmp_path):
    with open(DATA, newline="") as f:
        table = list(csv.reader(f))
    header, rows = table[0], table[1:]
    rng = np.random.RandomState(3)
    order = rng.permutation(len(rows))
    held_out, training = order[:100], order[100:]

    def write(name, index):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["patient_id"] + header)
            for i in index:
                w.writerow([f"P{i:04d}" if name == "new.csv" else i] + rows[i])

    write("patients.csv", training)
    write("heldout.csv", held_out)
    write("new.csv", held_out)  # text ids: predict must pass them through exactly

    done = run(["init", "patients.csv", "--label", "benign", "--out", "spec.yaml"], tmp_path)
    assert done.returncode == 0, done.stderr
    spec_text = (tmp_path / "spec.yaml").read_text()
    assert "# Column 'patient_id' is left out: its name says it identifies a row" in spec_text

    done = run(["build", "spec.yaml", "--epochs", "8", "-q"], tmp_path)
    assert done.returncode == 0, done.stderr
    export = tmp_path / "export" / "patients"
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["inputs"][0]["columns"] == [h for h in header if h != "benign"]

    # The model as a server runs it, for the independent side of every check below.
    session = ort.InferenceSession(str(export / "patients.onnx"),
                                   providers=["CPUExecutionProvider"])
    label = header.index("benign")
    features = np.array([[float(c) for j, c in enumerate(rows[i]) if j != label]
                         for i in held_out], dtype=np.float32)
    truth = np.array([int(rows[i][label]) for i in held_out])
    probabilities = session.run(None, {"data": features})[0]
    predicted = probabilities.argmax(axis=1)

    done = run(["evaluate", "export/patients", "heldout.csv", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == 100
    assert report["accuracy"] == pytest.approx(float((predicted == truth).mean()))
    assert report["confusion_matrix"] == [[int(((truth == i) & (predicted == j)).sum())
                                           for j in range(2)] for i in range(2)]

    with open(tmp_path / "new.csv") as f:
        done = run(["predict", "export/patients", "-", "--keep", "patient_id"], tmp_path,
                   stdin=f.read())
    assert done.returncode == 0, done.stderr
    out = list(csv.reader(done.stdout.splitlines()))
    assert out[0][:2] == ["patient_id", "class"]
    assert [r[0] for r in out[1:]] == [f"P{i:04d}" for i in held_out]
    assert [int(r[1]) for r in out[1:]] == [int(manifest["classes"][k]) for k in predicted]
    got = np.array([[float(v) for v in r[2:]] for r in out[1:]])
    np.testing.assert_allclose(got, probabilities, rtol=0, atol=1e-7)

    done = run(["verify", "export/patients"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("export/patients: ok (")
