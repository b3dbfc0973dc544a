"""Importing this module registers every translation (each module registers its ops on import).

The package's ``__init__`` imports it, so a caller that imports only the registry (e.g. the
graph checks) still sees every op; the registry itself never imports a translation.
"""
from symbuilder.onnx import translations  # noqa: F401  (also registers ops_math)
from symbuilder.onnx import ops_attention, ops_compare, ops_detection, ops_index, ops_nn  # noqa: F401
from symbuilder.onnx import ops_random, ops_rnn, ops_sequence, ops_tensor  # noqa: F401
