"""The constants several layers share, ONE of each: the parity check's defaults (the build's
export.verify fields, `symbuilder export`, `symbuilder verify` and `symbuilder bench` read them
here) and the ONNX opsets the exporter supports (the spec, the CLI parser and symbuilder.onnx).

A leaf (no imports but typing) so the spec and the CLI parser may use them without importing
MXNet or onnx.

The tolerance, measured on every gluon model-zoo vision net at random He-init weights
(tests/benchmarks/measure_zoo_tolerance.py): max|ort - mxnet| / max|mxnet| is at most 3.2e-6
(vgg19_bn), while max|ort - mxnet| alone ranges 5e-7 .. 3.2e3; so the bound scales with the
output, and rtol = 1e-5 of the output's scale keeps 3x headroom over the worst net measured.
"""
from typing import Tuple

DEFAULT_ATOL = 1e-5  # absolute floor, for outputs whose scale is ~0
DEFAULT_RTOL = 1e-5  # relative to the output's scale, max|mxnet| over that output
DEFAULT_RANDOM_SAMPLES = 64  # random samples added to the held-out ones
DEFAULT_SEED = 0  # the random samples' seed: verify draws exactly what the build drew

# The rule, as the manifest records it beside the figures it was applied to.
TOLERANCE_RULE = ("max|ort - mxnet| <= atol + rtol * scale, per output, where scale = "
                  "max|mxnet| over that output")

# Lowest and highest default-domain ONNX opset a translation may target (inclusive).
OPSET_RANGE: Tuple[int, int] = (13, 21)
SUPPORTED_OPSETS: Tuple[int, ...] = tuple(range(OPSET_RANGE[0], OPSET_RANGE[1] + 1))
