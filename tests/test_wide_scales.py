"""A spec whose features span |mean|/std up to 1e6 builds, and its export passes the default
parity tolerance with ONNX Runtime's optimisations on and off (issue 13). The data is made
here: timestamps, coordinates, prices and sensor readings are exactly this kind of feature."""
import csv
import json
import os

import numpy as np
import pytest

from symbuilder.cli import main
from symbuilder.defaults import DEFAULT_ATOL, DEFAULT_RTOL

# (mean, std) per feature: |mean|/std of 1e6, 5e4, 6.7e-3 and 3.
FEATURES = [(1.0e4, 1.0e-2), (-50.0, 1.0e-3), (6.7, 1.0e3), (3.0, 1.0)]

SPEC = """\
name: wide
input: {shape: [4]}
layers:
  - {op: FullyConnected, name: fc1, num_hidden: 16}
  - {op: Activation, name: act1, act_type: tanh}
  - {op: FullyConnected, name: fc2, num_hidden: 2}
output: {op: SoftmaxOutput, name: softmax}
data:
  train: {path: wide.csv, label: y}
train: {epochs: 15, batch_size: 32, optimizer: adam, optimizer_params: {learning_rate: 0.01},
        seed: 3}
"""


@pytest.mark.slow
def test_features_at_a_million_times_their_std_export_within_the_default_tolerance(tmp_path):
    rng = np.random.RandomState(0)
    n = 600
    z = rng.randn(n, len(FEATURES))
    x = np.array([m for m, _ in FEATURES]) + z * np.array([s for _, s in FEATURES])
    y = (z @ np.array([1.0, -1.0, 0.5, 0.25]) > 0).astype(int)
    with open(tmp_path / "wide.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{i}" for i in range(len(FEATURES))] + ["y"])
        for row, label in zip(x, y):
            w.writerow([repr(float(v)) for v in row] + [label])
    (tmp_path / "spec.yaml").write_text(SPEC)
    out = str(tmp_path / "export")
    assert main(["build", str(tmp_path / "spec.yaml"), "--out", out, "-q"]) == 0
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    parity = manifest["parity"]
    assert parity["passed"] and (parity["atol"], parity["rtol"]) == (DEFAULT_ATOL, DEFAULT_RTOL)
    assert sorted({d["ort_level"] for d in parity["details"]}) == ["ORT_DISABLE_ALL",
                                                                   "ORT_ENABLE_ALL"]
    # The statistics the input layer uses are the data's own, to float32 precision of the mean.
    stats = manifest["input_normalization"]["data"]
    train_rows = stats["count"]
    assert train_rows == n - round(0.2 * n)
    assert np.all(np.abs(np.array(stats["exact_mean"]) - [m for m, _ in FEATURES])
                  < 5 * np.array([s for _, s in FEATURES]))
    # And the model learned something through the normalization (it would not on raw inputs).
    assert manifest["metrics"]["val"]["accuracy"] > 0.8
