"""`--set key.path=value` overrides, applied to the loaded YAML data before parsing."""
from __future__ import annotations

import copy
import re
from typing import Any, List, Optional, Union

from ..errors import UsageError
from .yamlload import Locations, load_yaml

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_key(key: str) -> List[Union[str, int]]:
    """'layers[2].num_hidden' or 'layers.2.num_hidden' -> ['layers', 2, 'num_hidden']."""
    parts: List[Union[str, int]] = []
    pos = 0
    for m in _PART.finditer(key):
        if m.start() != pos and key[pos:m.start()] != ".":
            raise UsageError(f"--set {key!r}: cannot read the key path")
        pos = m.end()
        if m.group(2) is not None:
            parts.append(int(m.group(2)))
        else:
            parts.append(int(m.group(1)) if m.group(1).isdigit() else m.group(1))
    if not parts or pos != len(key):
        raise UsageError(f"--set {key!r}: cannot read the key path")
    return parts


def apply_overrides(data: Any, overrides: List[str], locations: Optional[Locations] = None
                    ) -> Any:
    """A copy of `data` with each `key.path=value` set; the value is read as YAML. With
    `locations`, each overridden key path is recorded there, so that an error in that value
    names the option instead of the file's line."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected key.path=value")
        key, text = item.split("=", 1)
        parts = parse_key(key.strip())
        value = load_yaml(text, source="--set", mapping=False)[0] if text.strip() else ""
        target = data
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(part, int):
                if not isinstance(target, list) or part >= len(target):
                    raise UsageError(f"--set {key}: no item [{part}]")
                target = target[part]
            else:
                if not isinstance(target, dict):
                    raise UsageError(f"--set {key}: '{part}' is not inside a mapping")
                if part not in target or target[part] is None:
                    target[part] = [] if isinstance(nxt, int) else {}
                target = target[part]
        if locations is not None:
            locations.overridden[tuple(parts)] = item.strip()
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(target, list) or last >= len(target):
                raise UsageError(f"--set {key}: no item [{last}]")
            target[last] = value
        elif isinstance(target, dict):
            target[last] = value
        else:
            raise UsageError(f"--set {key}: '{last}' is not inside a mapping")
    return data
