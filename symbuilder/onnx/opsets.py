"""The ONNX opsets symbuilder exports: the one constant the exporter, the spec and the CLI share.

Kept free of heavy imports (no mxnet, no onnx) so the spec reader and the CLI parser can use it.
"""
from typing import Tuple

# Lowest and highest default-domain opset a translation may target (inclusive).
OPSET_RANGE: Tuple[int, int] = (13, 21)
SUPPORTED_OPSETS: Tuple[int, ...] = tuple(range(OPSET_RANGE[0], OPSET_RANGE[1] + 1))
