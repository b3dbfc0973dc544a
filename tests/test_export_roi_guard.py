"""MXNet's ROIAlign and ROIPooling read rois[:, 0] as an image of the batch without checking
it: an index past the batch makes MXNet read outside it (a segfault of the process, seen
when `symbuilder export` proved a Faster R-CNN stage at batch 1). The export keeps its own
MXNet forward inside the batch: constant proposals naming image 1 are refused at a dynamic
batch (one located line, exit 2, nothing written), and a rois input's random samples keep
their batch column at 0 (and need a coordinates range)."""
import os

import mxnet as mx
import numpy as np
import pytest

from serving_cases import run


def _stage(rois_value=None):
    data = mx.sym.Variable("data")
    feat = mx.sym.Convolution(data, kernel=(3, 3), pad=(1, 1), num_filter=4, name="conv")
    rois = mx.sym.Variable("rois")
    pooled = mx.sym.contrib.ROIAlign(feat, rois, pooled_size=(2, 2), spatial_scale=1.0,
                                     sample_ratio=2, name="roi_align")
    return mx.sym.FullyConnected(pooled, num_hidden=3, name="fc")


def _save(tmp_path, sym, shapes, constants=None):
    rng = np.random.RandomState(0)
    arg_shapes, _, _ = sym.infer_shape(**shapes)
    args = {n: mx.nd.array(rng.randn(*s) * 0.1) for n, s in zip(sym.list_arguments(), arg_shapes)
            if n not in ("data", "rois")}
    args.update({k: mx.nd.array(v) for k, v in (constants or {}).items()})
    prefix = str(tmp_path / "rcnn")
    mx.model.save_checkpoint(prefix, 0, sym, args, {})
    return prefix


def test_constant_proposals_past_the_smallest_batch_are_refused(tmp_path, capsys):
    rois = np.array([[0, 1, 1, 9, 9], [1, 2, 2, 12, 12]], np.float32)  # images 0 and 1
    prefix = _save(tmp_path, _stage(), {"data": (2, 3, 16, 16), "rois": rois.shape},
                   {"rois": rois})
    code, out, err = run(["export", prefix, "0", "--input", "data=2,3,16,16"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert ("_contrib_ROIAlign 'roi_align': its rois (parameter 'rois') name image 1 of the "
            "batch, but the check runs the graph at a batch of 1") in err
    assert not os.path.exists(prefix + "-0000.onnx")
    code, out, err = run(["export", prefix, "0", "--input", "data=2,3,16,16", "--fixed-batch"],
                         capsys)
    assert code == 0, err


def test_a_rois_input_needs_a_range_and_its_samples_stay_in_the_batch(tmp_path, capsys):
    prefix = _save(tmp_path, _stage(), {"data": (1, 3, 16, 16), "rois": (1, 5)})
    flags = ["export", prefix, "0", "--input", "data=1,3,16,16", "--input", "rois=1,5"]
    code, out, err = run(flags, capsys)
    assert code == 2 and err.startswith("symbuilder: error: --input-range rois: "
                                        "_contrib_ROIAlign 'roi_align' reads its boxes"), err
    code, out, err = run(flags + ["--input-range", "rois=0:15"], capsys)
    assert code == 0, err
    assert ("  input rois (float32): random samples in [0, 15] (--input-range), batch-index "
            "column kept at 0 for _contrib_ROIAlign 'roi_align'") in out
