"""symbuilder: YAML spec -> MXNet symbol with a frozen-affine input BatchNorm -> Module
training -> verified exports (checkpoint, ONNX).

The public API; `symbuilder build` runs exactly these functions.
"""
from typing import Any

__version__ = "0.1.0"

__all__ = ["load_spec", "build_symbol", "train", "export_model", "build", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import symbuilder` stays cheap (no MXNet import) until a function is used.
    if name == "load_spec":
        from .spec.load import load_spec  # lazy: `import symbuilder` stays cheap
        return load_spec
    if name == "build_symbol":
        from .graph import build_symbol  # lazy: `import symbuilder` stays cheap
        return build_symbol
    if name == "train":
        from .training import train  # lazy: `import symbuilder` stays cheap
        return train
    if name in ("export_model", "build"):
        from . import pipeline  # lazy: `import symbuilder` stays cheap
        return getattr(pipeline, name)
    raise AttributeError(f"module 'symbuilder' has no attribute {name!r}")
