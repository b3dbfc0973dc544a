"""`symbuilder verify` (serving/audit.py) and the parity figures a build's manifest keeps.

Every check compares with an independent computation: numpy min/max, hashlib, MXNet's own
checkpoint loader.
"""
import json
import os
import shutil

import mxnet as mx
import numpy as np
import pytest

from serving_cases import csv_of, run, val_rows
from serving_cases import built  # noqa: F401 (fixtures)

from symbuilder.export.folder import write_manifest
from symbuilder.serving import audit


@pytest.mark.slow
def test_build_manifest_records_parity_on_held_out_and_ranged_random_samples(built):
    manifest = built[2].manifest
    parity = manifest["parity"]
    assert parity["passed"] and parity["max_abs"] <= 1e-5 and parity["atol"] == 1e-5
    assert parity["rtol"] == 1e-5 and parity["rule"].startswith("max|ort - mxnet| <= atol + "
                                                                "rtol * scale")
    # 40 held-out samples (export.verify.samples) plus the 64 random ones every check draws.
    assert parity["batches"] == [1, 40, 64]
    assert set(parity["ort_levels"]) == {"ORT_ENABLE_ALL", "ORT_DISABLE_ALL"}
    assert {k: v["samples"] for k, v in parity["inputs"].items()} == {"held_out": 40,
                                                                      "random": 64}
    held = val_rows(built)[:40]
    np.testing.assert_allclose(parity["random_range"]["data"]["low"], held.min(axis=0))
    np.testing.assert_allclose(parity["random_range"]["data"]["high"], held.max(axis=0))
    assert parity["max_abs"] == max(d["max_abs"] for d in parity["details"])
    assert parity["max_rel"] == max(d["max_rel"] for d in parity["details"])
    assert len(parity["details"]) == 8  # 2 input sets x 2 batches x 2 ORT levels x 1 output


@pytest.mark.slow
def test_verify_passes_then_names_every_changed_missing_and_extra_file(built, tmp_path, capsys):
    folder = str(tmp_path / "copy")
    shutil.copytree(built[1], folder)
    code, stdout, err = run(["verify", folder], capsys)
    assert code == 0, err
    assert stdout.startswith(f"{folder}: ok (9 files match the manifest; srv_mlp.onnx vs "
                             "checkpoint max|diff|=")
    assert stdout.rstrip().endswith("on 64 random)")
    with open(os.path.join(folder, "triton", "srv_mlp", "config.pbtxt"), "a") as f:
        f.write("# edited\n")
    os.remove(os.path.join(folder, "train_log.jsonl"))
    open(os.path.join(folder, "notes.txt"), "w").close()
    code, stdout, err = run(["verify", folder], capsys)
    assert code == 1 and stdout == ""
    assert err.splitlines() == [
        f"{folder}: train_log.jsonl: missing",
        f"{folder}: triton/srv_mlp/config.pbtxt: changed (sha256 differs from the manifest)",
        f"{folder}: notes.txt: not in the manifest",
        f"symbuilder: failed: {folder}: 3 problem(s)"]


@pytest.mark.slow
def test_verify_catches_an_onnx_model_that_disagrees_with_the_checkpoint(built, tmp_path):
    # Re-sign the manifest after changing a weight: hashes pass, parity must not.
    folder = str(tmp_path / "copy")
    shutil.copytree(built[1], folder)
    prefix = os.path.join(folder, "srv_mlp")
    epoch = built[2].result.epoch
    sym, args, auxs = mx.model.load_checkpoint(prefix, epoch)
    bias = args["fc2_bias"].asnumpy()
    bias[0] += 0.5  # one class only: a shift of every logit would leave softmax unchanged
    args["fc2_bias"] = mx.nd.array(bias)
    mx.model.save_checkpoint(prefix, epoch, sym, args, auxs)
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    write_manifest(folder, manifest)
    report = audit.verify_export(folder)
    assert not report["passed"]
    p = report["parity"]["srv_mlp.onnx"]
    assert p["max_abs"] > 1e-3 and not p["passed"]
    worst = max(p["details"], key=lambda d: d["max_abs"])
    scale = worst["scale"]  # probabilities: the largest is in (1/K, 1]
    assert 0.5 < scale <= 1.0 and p["rtol"] == 1e-5
    assert report["problems"] == [f"srv_mlp.onnx: ONNX Runtime disagrees with the checkpoint: "
                                  f"max abs difference {p['max_abs']:.3g} > atol 1e-05 + rtol "
                                  f"1e-05 x scale {scale:.3g} (max rel {p['max_rel']:.3g} of the "
                                  f"output's scale; random: {p['max_abs']:.3g} on 64 samples; "
                                  f"worst: output 'softmax_output' at batch {worst['batch']}, "
                                  f"{worst['ort_level']}, random inputs)"]


@pytest.mark.slow
def test_verify_holds_a_manifest_without_rtol_to_the_rule_it_was_built_with(built, tmp_path):
    # An export written before rtol existed passed max|ort - mxnet| <= atol: verify applies
    # exactly that (rtol 0), not today's looser default.
    folder = str(tmp_path / "old")
    shutil.copytree(built[1], folder)
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    for key in ("rtol", "rule"):
        del manifest["parity"][key]
    write_manifest(folder, manifest)
    report = audit.verify_export(folder)
    assert report["passed"], report["problems"]
    assert {p["rtol"] for p in report["parity"].values()} == {0.0}
    assert {p["atol"] for p in report["parity"].values()} == {manifest["parity"]["atol"]}


@pytest.mark.slow
def test_verify_adds_real_samples_from_a_csv_with_the_label_column(built, tmp_path):
    (tmp_path / "rows.csv").write_text(csv_of(built, val_rows(built)[:9], with_label=True))
    report = audit.verify_export(built[1], data=str(tmp_path / "rows.csv"))
    assert report["passed"]
    assert report["parity"]["srv_mlp.onnx"]["inputs"]["held_out"]["samples"] == 9


def test_verify_of_a_folder_without_manifest_is_exit_2(tmp_path, capsys):
    code, _, err = run(["verify", str(tmp_path)], capsys)
    assert code == 2 and err.strip() == f"{tmp_path}: not an export folder: no manifest.json"
    code, _, err = run(["verify", str(tmp_path / "nope")], capsys)
    assert code == 2 and err.strip() == f"{tmp_path / 'nope'}: no such export folder"
