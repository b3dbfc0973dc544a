"""The training curves of a build, `curves.svg`: one panel per metric (train solid, val
dashed), a learning-rate panel when a schedule changed the rate, the exported epoch marked.

Written as SVG text by this module, with no plotting library: a build must not pay
matplotlib's ~0.3 s import and drawing for one chart (issue 12's whole-build benchmark), and
an SVG is small, sharp at any zoom, opened by every browser and diffable in review.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..files import write_atomic

PANEL_WIDTH, PANEL_HEIGHT = 420, 340          # pixels per panel
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 14, 34, 46  # plot margins inside a panel
_TITLE_HEIGHT = 30                            # the figure's title line, above the panels
_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "learning rate": "#2ca02c"}
_DASHES = {"train": "", "val": "6,4", "learning rate": ""}
_EXPORTED = "#d62728"


def nice_ticks(low: float, high: float, count: int = 5) -> List[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) covering
    [low, high]; one tick when the range is a single value."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / count
    exponent = math.floor(math.log10(raw))
    step = next(m * 10.0 ** exponent for m in (1, 2, 5, 10) if m * 10.0 ** exponent >= raw)
    digits = max(0, 1 - exponent)  # round away float noise (0.1 * 3 = 0.30000000000000004)
    first = math.ceil(low / step - 1e-9)
    ticks = []
    while (first + len(ticks)) * step <= high + step * 1e-9:
        ticks.append(round((first + len(ticks)) * step, digits) + 0.0)
    return ticks


def _label(value: float) -> str:
    return f"{value:.4g}"


def _series(history: List[Dict[str, Any]], names: List[str],
            show_lr: bool) -> List[Tuple[str, List[Tuple[str, List[float]]]]]:
    """(panel title, [(line name, one value per epoch, NaN where missing)])."""
    panels = [(name, [(split, [float(h.get(split, {}).get(name, math.nan)) for h in history])
                      for split in ("train", "val")]) for name in names]
    if show_lr:
        rates = [math.nan if h.get("lr") is None else float(h["lr"]) for h in history]
        panels.append(("learning rate", [("learning rate", rates)]))
    return panels


def _panel(x0: float, y0: float, title: str, epochs: List[int],
           lines: List[Tuple[str, List[float]]], exported_epoch: Optional[int]) -> List[str]:
    """The SVG elements of one panel whose top-left corner is (x0, y0)."""
    finite = [v for _, values in lines for v in values if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or (abs(hi) * 0.05 or 0.5)
    lo, hi = lo - pad, hi + pad
    e_lo, e_hi = (min(epochs), max(epochs)) if epochs else (0, 1)
    e_pad = (e_hi - e_lo) * 0.03 or 0.5
    e_lo, e_hi = e_lo - e_pad, e_hi + e_pad
    left, top = x0 + _LEFT, y0 + _TOP
    width, height = PANEL_WIDTH - _LEFT - _RIGHT, PANEL_HEIGHT - _TOP - _BOTTOM

    def px(epoch: float) -> float:
        return left + (epoch - e_lo) / (e_hi - e_lo) * width

    def py(value: float) -> float:
        return top + (hi - value) / (hi - lo) * height

    out = [f'<text x="{left + width / 2:.1f}" y="{y0 + 22}" text-anchor="middle" '
           f'font-size="14">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="white" '
           'stroke="#444"/>']
    for tick in nice_ticks(lo, hi):
        out.append(f'<line x1="{left}" x2="{left + width}" y1="{py(tick):.1f}" '
                   f'y2="{py(tick):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{_label(tick)}</text>')
    epoch_ticks = [t for t in nice_ticks(min(epochs or [0]), max(epochs or [1]))
                   if float(t).is_integer()]
    for tick in epoch_ticks:
        out.append(f'<text x="{px(tick):.1f}" y="{top + height + 16}" text-anchor="middle" '
                   f'font-size="11">{int(tick)}</text>')
    out.append(f'<text x="{left + width / 2:.1f}" y="{top + height + 34}" '
               'text-anchor="middle" font-size="12">epoch</text>')
    if exported_epoch is not None:
        out.append(f'<line class="exported" x1="{px(exported_epoch):.1f}" '
                   f'x2="{px(exported_epoch):.1f}" y1="{top}" y2="{top + height}" '
                   f'stroke="{_EXPORTED}" stroke-dasharray="2,3" stroke-width="1.2"/>')
    for name, values in lines:
        out.extend(_line(name, epochs, values, px, py))
    out.extend(_legend(left + width - 8, top + 8, [n for n, _ in lines], exported_epoch))
    return out


def _line(name: str, epochs: Sequence[int], values: Sequence[float], px: Any, py: Any
          ) -> List[str]:
    """A polyline per run of finite values (NaN breaks the line), a dot per epoch."""
    colour, dash = _COLOURS[name], _DASHES[name]
    runs: List[List[str]] = [[]]
    dots = []
    for epoch, value in zip(epochs, values):
        if not math.isfinite(value):
            runs.append([])
            continue
        point = f"{px(epoch):.1f},{py(value):.1f}"
        runs[-1].append(point)
        dots.append(f'<circle cx="{px(epoch):.1f}" cy="{py(value):.1f}" r="2.5" '
                    f'fill="{colour}"/>')
    style = f' stroke-dasharray="{dash}"' if dash else ""
    out = [f'<polyline class="{escape(name)}" points="{" ".join(run)}" fill="none" '
           f'stroke="{colour}" stroke-width="1.6"{style}/>' for run in runs if run]
    return out + dots


def _legend(right: float, top: float, names: List[str], exported_epoch: Optional[int]
            ) -> List[str]:
    entries = [(n, _COLOURS[n], _DASHES[n]) for n in names]
    if exported_epoch is not None:
        entries.append((f"exported (epoch {exported_epoch})", _EXPORTED, "2,3"))
    out = []
    for i, (label, colour, dash) in enumerate(entries):
        y = top + 8 + 15 * i
        style = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{right - 150}" x2="{right - 128}" y1="{y}" y2="{y}" '
                   f'stroke="{colour}" stroke-width="1.6"{style}/>')
        out.append(f'<text x="{right - 122}" y="{y + 4}" font-size="11">{escape(label)}</text>')
    return out


def curves_svg(history: List[Dict[str, Any]], *, title: str = "",
               exported_epoch: Optional[int] = None) -> str:
    """The SVG document of the training curves of `history` (train_log.jsonl's entries)."""
    names = list(history[0]["train"]) if history else []
    epochs = [int(h["epoch"]) for h in history]
    rates = {h.get("lr") for h in history if h.get("lr") is not None}
    panels = _series(history, names, show_lr=len(rates) > 1) or [("", [])]
    width = PANEL_WIDTH * len(panels)
    height = PANEL_HEIGHT + _TITLE_HEIGHT
    body = [f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="15">'
            f'{escape(title)}</text>'] if title else []
    for i, (panel_title, lines) in enumerate(panels):
        body.extend(_panel(i * PANEL_WIDTH, _TITLE_HEIGHT, panel_title, epochs, lines,
                           exported_epoch))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif">\n'
            f'<rect width="{width}" height="{height}" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")


def write_curves(history: List[Dict[str, Any]], path: str, *, title: str = "",
                 exported_epoch: Optional[int] = None) -> None:
    """curves.svg, written atomically."""
    text = curves_svg(history, title=title, exported_epoch=exported_epoch)
    write_atomic(path, text.encode("utf-8"))
