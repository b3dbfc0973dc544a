"""`validate` and `summary`: everything that can be checked or shown without training."""
from __future__ import annotations

from typing import List

from .builder import build_symbol, layer_shapes
from .spec.model import Spec


def validate(spec: Spec, *, check_data: bool = True) -> str:
    """Build the symbol with shape inference, check devices, ONNX support and (unless
    `check_data` is false) the data files, labels and shapes. Returns a one-line summary."""
    from .train import contexts
    symbol = build_symbol(spec)
    contexts(spec)
    if "onnx" in spec.export.formats:
        from .onnx import check_translatable
        try:
            check_translatable(symbol)
        except Exception as e:
            raise spec.error(("export", "formats"), str(e)) from None
    parts = [f"{len(spec.layers)} layers",
             f"{sum(r['params'] for r in layer_shapes(spec, symbol)):,} parameters"]
    if check_data:
        from .data import load_data
        data = load_data(spec)
        parts.append(f"{len(data.train)} training and {len(data.val)} validation samples")
        if data.classes is not None:
            parts.append(f"{len(data.classes)} classes")
    return ", ".join(parts)


def summary_table(spec: Spec) -> str:
    """The layers with their output shapes (batch 1) and parameter counts, as text."""
    symbol = build_symbol(spec)
    rows = layer_shapes(spec, symbol)
    header = ("layer", "op", "output shape", "params")
    table: List[tuple] = [header] + [
        (r["name"], r["op"], "x".join(map(str, r["shape"][1:])) or "-", f"{r['params']:,}")
        for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in table]
    total = sum(r["params"] for r in rows)
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"total parameters: {total:,} (input statistics included)")
    return "\n".join(lines)
