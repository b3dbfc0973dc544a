"""symbuilder's own MXNet -> ONNX export: one registry of per-op translations and the graph assembly.

MXNet's bundled exporter (mx.onnx.export_model) is broken with current onnx; see FIELD-NOTES.md.
"""
from symbuilder.onnx.convert import SUPPORTED_OPSETS, check_translatable, to_onnx
from symbuilder.onnx.registry import register, registered_ops

__all__ = ["to_onnx", "check_translatable", "registered_ops", "register", "SUPPORTED_OPSETS"]
