"""Hostile or careless inputs found by an adversarial pass: an empty or blank-lined .idx
(data/images.py) and constant rois with a non-finite batch index (serving/legacy.py's ROI
guard). Each test pins the located line, the exit code and that nothing was written."""
import os

import image_data
import numpy as np
import pytest
from helpers import write_spec
from serving_cases import run
from test_export_roi_guard import _save, _stage

IMAGE_SPEC = """\
    name: px
    input: {shape: [3, 16, 16]}
    layers:
      - {op: Flatten, name: flat}
      - {op: FullyConnected, name: fc, num_hidden: 10}
    output: {op: SoftmaxOutput, name: softmax}
    data:
      train: {path: train.rec, resize: 20}
    train: {epochs: 1, batch_size: 8, optimizer: adam}
    """


def rec_spec(folder, count=4):
    """The image spec beside a train.rec/.idx of `count` rendered digits."""
    x, y = image_data.digits()
    image_data.write_recordio(str(folder / "train"), image_data.render(x[:count]), y[:count])
    return write_spec(folder, IMAGE_SPEC)


def listing(folder):
    return sorted(os.path.relpath(os.path.join(r, n), folder)
                  for r, ds, ns in os.walk(folder) for n in ds + ns)


def test_a_rec_whose_idx_lists_no_record_is_one_located_line(tmp_path, capsys):
    """An .idx with no line (a packing run that wrote the .rec and died, or `: > x.idx`):
    was a ValueError traceback from reshaping zero labels, in validate, build and predict."""
    spec = rec_spec(tmp_path)
    (tmp_path / "train.idx").write_text("")
    before = listing(tmp_path)
    code, out, err = run(["validate", spec], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{tmp_path}/train.idx: no records listed (an empty .idx file); index the .rec again with im2rec"]
    assert listing(tmp_path) == before


def test_a_blank_line_in_the_idx_is_located(tmp_path, capsys):
    """A blank line after im2rec's lines (an editor's, or two .idx files joined with echo):
    our index check skipped it, then MXNet's MXIndexedRecordIO raised int('') as a
    traceback. Refused at its line (a build's own check and predict read the same .idx)."""
    spec = rec_spec(tmp_path)
    with open(tmp_path / "train.idx", "a") as f:
        f.write("\n")
    before = listing(tmp_path)
    code, out, err = run(["validate", spec], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{tmp_path}/train.idx:5: a blank line (MXNet's .idx reader fails on it); remove it"]
    assert listing(tmp_path) == before


@pytest.mark.parametrize("index", [np.nan, np.inf])
def test_constant_rois_with_a_non_finite_batch_index_are_refused(tmp_path, capsys, index):
    """The ROI guard took int() of the largest batch index: a NaN or inf in a checkpoint's
    constant proposals was a ValueError or OverflowError traceback, exit 1."""
    rois = np.array([[0, 1, 1, 9, 9], [index, 2, 2, 12, 12]], np.float32)
    prefix = _save(tmp_path, _stage(), {"data": (2, 3, 16, 16), "rois": rois.shape},
                   {"rois": rois})
    before = listing(tmp_path)
    code, out, err = run(["export", prefix, "0", "--input", "data=2,3,16,16"], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"symbuilder: error: _contrib_ROIAlign 'roi_align': its rois (parameter 'rois') give "
        f"{index:g} as a batch index; MXNet casts it to an image of the batch unchecked (a "
        "finite index is needed)"]
    assert listing(tmp_path) == before
