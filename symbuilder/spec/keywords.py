"""Keyword arguments a spec passes to an MXNet class (optimizer, initializer), checked against
that class's real signature: by name with did-you-mean, by type from the default value, by
range where the meaning is plain. MXNet itself checks none of this at construction: a
string learning rate or an unknown keyword surfaces at the first update, after data loading.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .catalog_suggest import suggest
from .fields import describe

Path = Tuple[Any, ...]
Fail = Callable[[Path, str], Exception]
REQUIRED = inspect.Parameter.empty

# Plain ranges: a rate or decay below 0 means nothing, a momentum or beta of 1 or more makes
# the moving averages diverge (MXNet accepts both and trains garbage).
RANGES: Dict[str, Tuple[float, Optional[float]]] = {
    "learning_rate": (0.0, None), "wd": (0.0, None),
    "momentum": (0.0, 1.0), "beta1": (0.0, 1.0), "beta2": (0.0, 1.0),
}


def signature_defaults(cls: type) -> Dict[str, Any]:
    """Keyword name -> default of `cls.__init__` and of every base it forwards **kwargs to
    (REQUIRED when there is no default), in MRO order: an Optimizer subclass takes the base
    Optimizer's wd, clip_gradient, ... through **kwargs."""
    out: Dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                out.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return out


def check_keywords(what: str, given: Mapping[str, Any], defaults: Mapping[str, Any],
                   where: Path, fail: Fail, *, owned: Mapping[str, str] = {}) -> None:
    """Each of `given` must be a keyword of `defaults` (`what` names the owner in messages),
    of the default's type; `owned` are keywords symbuilder sets itself (name -> why)."""
    known = [k for k in defaults if k not in owned]
    for key, value in given.items():
        path = where + (key,)
        if key in owned:
            raise fail(path, f"'{key}' is set by symbuilder ({owned[key]})")
        if key not in defaults:
            guess = suggest(key, known)
            hint = f"did you mean '{guess}'?" if guess else f"it takes: {', '.join(known) or 'none'}"
            raise fail(path, f"unknown parameter of {what}; {hint}")
        check_value(value, defaults[key], path, fail, key=key)
    missing = [k for k, d in defaults.items() if d is REQUIRED and k not in given and k not in owned]
    if missing:
        raise fail(where, f"{what} needs the parameter{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)}")


def check_value(value: Any, default: Any, path: Path, fail: Fail, *, key: str) -> None:
    """`value` must have the type of `default`: a bool for a bool, a finite number for a
    number or for an unset (None) number, a string for a string."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail(path, f"expected true or false, received {describe(value)}")
        return
    if isinstance(default, str):
        if not isinstance(value, str):
            raise fail(path, f"expected a string, received {describe(value)}")
        return
    if default is REQUIRED and isinstance(value, (str, bool)):
        return  # a required argument of free type (FusedRNN's mode): MXNet's trial decides
    if default is None and value is None and key not in RANGES:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        quoted = "; write it unquoted" if isinstance(value, str) and _is_number(value) else ""
        raise fail(path, f"expected a number, received {describe(value)}{quoted}")
    if not math.isfinite(value):
        raise fail(path, f"expected a finite number, received {describe(value)}")
    low, high = RANGES.get(key, (None, None))
    if low is not None and high is not None and not low <= value < high:
        raise fail(path, f"expected a number in [{low:g}, {high:g}), received {value!r}")
    if low is not None and value < low:
        raise fail(path, f"expected a number >= {low:g}, received {value!r}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
