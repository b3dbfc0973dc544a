"""symbuilder's own MXNet -> ONNX export: one registry of per-op translations and the graph assembly.

MXNet's bundled exporter (mx.onnx.export_model) is broken with current onnx; see docs/mxnet-traps.md.
Importing any module of this package runs this file first, and it loads every translation
(``all_ops``) here, in one place above the registry and the assembly: so a caller importing
only ``symbuilder.onnx.registry`` still sees every op, and the registry itself imports no
translation. This imports mxnet and onnx; the supported opsets, which the spec reader and the
CLI parser need without them, are in ``symbuilder.defaults``.
"""
from symbuilder.defaults import SUPPORTED_OPSETS
from symbuilder.onnx import all_ops  # noqa: F401  (importing it registers every translation)
from symbuilder.onnx.convert import check_translatable, to_onnx
from symbuilder.onnx.registry import register, registered_ops

__all__ = ["to_onnx", "check_translatable", "registered_ops", "register", "SUPPORTED_OPSETS"]
