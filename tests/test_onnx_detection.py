"""box_nms with tied scores, where MXNet's row order among equal scores is not specified
(on these inputs the two agreed when measured, but neither promises it).

The generic parity test (tests/onnx_cases.py) feeds distinct random scores, so the row order
is determined there. Here several boxes share a score; MXNet and ONNX Runtime may list them in
either order. The matching rule: per batch, both outputs are put in a canonical order (score
descending, then the rows' values lexicographically) and must then agree to 1e-6. Tied boxes lie
in separate clusters, so which boxes survive does not depend on the order ties are visited.
"""
from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest

from symbuilder.errors import ExportError
from symbuilder.onnx import to_onnx
from onnx_cases import detections
from test_onnx_translations import mxnet_reference, ort_run


def _canonical(rows: np.ndarray) -> np.ndarray:
    """(N, K) rows sorted by score (column 1) descending, then by every column ascending."""
    keys = [rows[:, k] for k in reversed(range(rows.shape[1]))] + [-rows[:, 1]]
    return rows[np.lexsort(keys)]


def _tied_detections(rng: np.random.RandomState, batch: int) -> np.ndarray:
    """4 far-apart clusters of 3 overlapping boxes; each cluster's scores come from {0.9, 0.6, 0.3},
    so equal scores occur across clusters, never inside one."""
    rows = []
    for _ in range(batch):
        boxes = []
        for c in range(4):
            origin = np.array([3.0 * c, 3.0 * (c % 2)])
            for s in (0.9, 0.6, 0.3):
                lo = origin + rng.uniform(0, 0.2, size=2)
                boxes.append([rng.randint(0, 3), s, *lo, *(lo + rng.uniform(0.9, 1.1, size=2))])
        rows.append(rng.permutation(np.array(boxes)))
    return np.asarray(rows, np.float32)


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("kwargs", [{}, {"overlap_thresh": 0.7, "topk": 9}, {"out_format": "center"},
                                    {"id_index": 0, "overlap_thresh": 0.2}])
def test_box_nms_with_tied_scores_matches_mxnet_up_to_tie_order(opset: int, kwargs: dict) -> None:
    sym = mx.sym.contrib.box_nms(mx.sym.Variable("data"), name="nms", **kwargs)
    model = to_onnx(sym, {}, {"data": (3, 12, 6)}, opset=opset)
    for batch in (1, 3):
        x = _tied_detections(np.random.RandomState(batch), batch)
        expected = mxnet_reference(sym, {}, {"data": x})[0]
        got = ort_run(model, {"data": x})[0]
        assert got.shape == expected.shape
        for g, e in zip(got, expected):
            np.testing.assert_allclose(_canonical(g), _canonical(e), rtol=0, atol=1e-6)
        assert (expected[:, :, 1] > 0).sum() >= 4 * batch  # something was kept: one per cluster at least


def test_box_nms_of_a_rank_4_tensor_matches_mxnet() -> None:
    # Once refused ("a rank-4 input is not supported"): MXNet takes every axis before (boxes,
    # width) as batch, and so does the export, with the batch axis still dynamic.
    sym = mx.sym.contrib.box_nms(mx.sym.Reshape(mx.sym.Variable("data"), shape=(0, 2, -1, 6)), name="n0")
    model = to_onnx(sym, {}, {"data": (2, 24, 6)})
    for batch in (1, 3):
        x = detections(np.random.RandomState(batch), (batch * 2, 12, 6)).reshape(batch, 24, 6)
        expected = mxnet_reference(sym, {}, {"data": x})[0]
        assert expected.shape == (batch, 2, 12, 6) and (expected[..., 1] > 0).sum() >= batch * 2
        for optimize in (True, False):
            np.testing.assert_allclose(ort_run(model, {"data": x}, optimize)[0], expected, rtol=0, atol=1e-6)


def test_roialign_aligned_needs_opset_16() -> None:
    sym = mx.sym.contrib.ROIAlign(mx.sym.Variable("data"), mx.sym.Variable("rois"), pooled_size=(2, 2),
                                  spatial_scale=1.0, aligned=True, name="ra")
    params = {"rois": np.array([[0, 0, 0, 2, 2]], np.float32)}
    with pytest.raises(ExportError, match="aligned=True needs ONNX RoiAlign's half_pixel mode: export at opset 16"):
        to_onnx(sym, params, {"data": (1, 2, 4, 4)}, opset=15)
    to_onnx(sym, params, {"data": (1, 2, 4, 4)}, opset=16)
