"""Loading a spec: the file (read, size-capped), the YAML (safe, located), `--set` overrides,
the typed Spec (model.parse_spec) and the semantic checks that need MXNet's registries
(semantics.check_spec). Every problem is a located SpecError."""
from __future__ import annotations

from typing import List, Optional

from ..errors import SpecError
from .model import Spec, parse_spec
from .overrides import apply_overrides
from .semantics import check_spec
from .yamlload import load_yaml


def load_spec(path: str, *, overrides: Optional[List[str]] = None, check: bool = True) -> Spec:
    """Read, parse and validate a spec file. Every problem is a located SpecError.

    `overrides` are ``key.path=value`` strings (the CLI's --set), applied before parsing.
    `check=False` skips the MXNet-backed semantic checks (op attributes, optimizer, ...).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(4 << 20)
    except FileNotFoundError:
        raise SpecError("no such spec file", file=path) from None
    except IsADirectoryError:
        raise SpecError("is a folder, not a spec file", file=path) from None
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror}", file=path) from None
    data, locations = load_yaml(raw, source=path)
    if overrides:
        data = apply_overrides(data, overrides, locations)
    spec = parse_spec(data, locations)
    if check:
        check_spec(spec)
    return spec


def loads_spec(text: str, *, source: str = "<spec>", check: bool = True) -> Spec:
    """Like load_spec, from text (relative data paths resolve against the working folder)."""
    data, locations = load_yaml(text, source=source)
    spec = parse_spec(data, locations)
    if check:
        check_spec(spec)
    return spec
