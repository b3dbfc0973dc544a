"""symbuilder's own MXNet -> ONNX export: one registry of per-op translations and the graph assembly.

MXNet's bundled exporter (mx.onnx.export_model) is broken with current onnx; see FIELD-NOTES.md.
The public names load lazily (PEP 562), so ``symbuilder.onnx.opsets`` (used by the spec reader and
the CLI parser) does not import mxnet and onnx.
"""
from typing import Any

from symbuilder.onnx.opsets import SUPPORTED_OPSETS

__all__ = ["to_onnx", "check_translatable", "registered_ops", "register", "SUPPORTED_OPSETS"]


def __getattr__(name: str) -> Any:
    if name in ("to_onnx", "check_translatable"):
        from symbuilder.onnx import convert
        return getattr(convert, name)
    if name in ("registered_ops", "register"):
        from symbuilder.onnx import convert  # noqa: F401  (registers the translations first)
        from symbuilder.onnx import registry
        return getattr(registry, name)
    raise AttributeError(f"module 'symbuilder.onnx' has no attribute '{name}'")
