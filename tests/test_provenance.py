"""The manifest's provenance: each data file's size and sha256 (an image folder: a hash over
its sorted [relative path, size, sha256] list) and the command line, against hashlib."""
import hashlib
import json
import os

import numpy as np

import helpers
from symbuilder import build
from symbuilder.cli import main
from symbuilder.export import provenance
from symbuilder.spec.load import load_spec

SPEC = """\
    name: prov
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data:
      train: {path: bc.csv, label: benign}
    train: {epochs: 1, batch_size: 64}
    """


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_a_cli_build_records_the_data_files_hash_and_the_command_line(tmp_path, capsys):
    spec = helpers.write_spec(tmp_path, SPEC)
    argv = ["build", spec, "--out", str(tmp_path / "out"), "-q"]
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    csv_path = str(tmp_path / "bc.csv")
    assert manifest["provenance"] == {
        "data": [{"role": "train", "path": "bc.csv", "size": os.path.getsize(csv_path),
                  "sha256": _sha(csv_path)}],
        "command": ["symbuilder", *argv]}


def test_a_library_build_has_no_command_line(tmp_path):
    spec = load_spec(helpers.write_spec(tmp_path, SPEC))
    manifest = build(spec, out_dir=str(tmp_path / "out")).manifest
    assert manifest["provenance"]["command"] is None
    assert manifest["provenance"]["data"][0]["sha256"] == _sha(tmp_path / "bc.csv")


def test_npy_label_files_and_a_separate_validation_file_are_hashed(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(60, dtype=np.float32).reshape(20, 3))
    np.save(tmp_path / "y.npy", np.arange(20) % 2)
    np.save(tmp_path / "vx.npy", np.ones((4, 3), np.float32))
    np.save(tmp_path / "vy.npy", np.array([0, 1, 0, 1]))
    body = SPEC.replace("shape: [30]", "shape: [3]").replace(
        "train: {path: bc.csv, label: benign}",
        "train: {path: x.npy, label: y.npy}\n      val: {path: vx.npy, label: vy.npy}")
    spec = load_spec(helpers.write_spec(tmp_path, body))
    got = provenance(spec)["data"]
    want = [(role, name, os.path.getsize(tmp_path / name), _sha(tmp_path / name))
            for role, name in [("train", "x.npy"), ("train_labels", "y.npy"),
                               ("val", "vx.npy"), ("val_labels", "vy.npy")]]
    assert [(d["role"], d["path"], d["size"], d["sha256"]) for d in got] == want


def test_an_image_folder_is_hashed_over_its_sorted_file_list(tmp_path):
    root = tmp_path / "imgs"
    for rel, data in [("b/2.png", b"two"), ("a/1.png", b"one"), ("a/10.png", b"ten!")]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    body = SPEC.replace("shape: [30]", "shape: [3, 8, 8]").replace(
        "train: {path: bc.csv, label: benign}", "train: {path: imgs, format: image_folder}")
    entry = provenance(load_spec(helpers.write_spec(tmp_path, body)))["data"][0]
    listing = [["a/1.png", 3, hashlib.sha256(b"one").hexdigest()],
               ["a/10.png", 4, hashlib.sha256(b"ten!").hexdigest()],
               ["b/2.png", 3, hashlib.sha256(b"two").hexdigest()]]
    want = hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()
    assert entry == {"role": "train", "path": "imgs", "files": 3, "size": 10, "sha256": want}
