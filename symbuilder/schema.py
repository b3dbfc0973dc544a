"""The spec format as JSON Schema and as the README's key reference, both generated from the
field declarations in spec.model, so the parser, the schema and the docs cannot drift."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Tuple

from .data import sources
from .spec.fields import NAME_RE, REQUIRED
from .spec.model import LayerSpec, OutputSpec, SourceSpec, Spec

# Choices that live in a registry rather than in the spec's field declarations: the data
# formats are the data stage's (one registered reader each), so the spec does not list them.
_REGISTERED_CHOICES = {(SourceSpec, "format"): lambda: sorted(sources.SOURCES)}


def _choices(cls: type, f: dataclasses.Field) -> Any:
    found = _REGISTERED_CHOICES.get((cls, f.name))
    return found() if found else f.metadata.get("choices")

# A train.eval_metric entry: a name, or a name with the metric constructor's parameters.
_METRIC = {"anyOf": [{"type": "string", "minLength": 1},
                     {"type": "object", "required": ["name"],
                      "properties": {"name": {"type": "string", "minLength": 1}}}]}
_JSON_TYPES = {
    "str": {"type": "string", "minLength": 1},
    "name": {"type": "string", "pattern": f"^{NAME_RE.pattern}$"},  # the parser's own rule
    "bool": {"type": "boolean"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
    "str_list": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "name_list": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "mapping": {"type": "object"},
    "metric_list": {"anyOf": [_METRIC, {"type": "array", "items": _METRIC}]},
    "int_list": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1},
}
_TYPE_TEXT = {"str": "string", "name": "name", "bool": "boolean", "int": "integer",
              "float": "number", "shape": "list of integers", "str_list": "string or list",
              "name_list": "name or list", "mapping": "mapping",
              "metric_list": "name, mapping or list",
              "int_list": "list of integers"}


def _declared(cls: type) -> List[dataclasses.Field]:
    fields = [f for f in dataclasses.fields(cls) if f.metadata]
    order = getattr(cls, "KEY_ORDER", None)
    return sorted(fields, key=lambda f: order.index(f.name)) if order else fields


def _default(f: dataclasses.Field) -> Any:
    if f.default is not REQUIRED:
        value = f.default
    elif f.default_factory is not REQUIRED:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return REQUIRED
    if dataclasses.is_dataclass(value):
        return None  # a section: its own keys carry the defaults
    return value


def _field_schema(cls: type, f: dataclasses.Field) -> Dict[str, Any]:
    meta = f.metadata
    choices = _choices(cls, f)
    kind = meta["kind"]
    if dataclasses.is_dataclass(kind):
        schema = section_schema(kind)
    elif isinstance(kind, tuple):
        schema = {"type": "array", "items": section_schema(kind[1])}
    else:
        schema = dict(_JSON_TYPES[kind])
    if choices:
        if kind == "str_list":
            schema = {"anyOf": [{"enum": list(choices)},
                                {"type": "array", "items": {"enum": list(choices)}}]}
        else:
            schema["enum"] = list(choices)
    for key, json_key, flag in (("minimum", "minimum", "exclusive_minimum"),
                                ("maximum", "maximum", "exclusive_maximum")):
        if meta.get(key) is not None:
            schema["exclusiveMinimum" if json_key == "minimum" and meta.get(flag) else
                   "exclusiveMaximum" if json_key == "maximum" and meta.get(flag) else
                   json_key] = meta[key]
    schema["description"] = meta["doc"]
    default = _default(f)
    if default is not REQUIRED and default is not None:
        schema["default"] = list(default) if isinstance(default, tuple) else default
    return schema


def section_schema(cls: type) -> Dict[str, Any]:
    fields = _declared(cls)
    schema: Dict[str, Any] = {
        "type": "object",
        "description": (cls.__doc__ or "").strip(),
        "properties": {f.name: _field_schema(cls, f) for f in fields},
        "required": [f.name for f in fields if _default(f) is REQUIRED],
        **({"oneOf": [{"required": ["input"]}, {"required": ["inputs"]}]} if cls is Spec else {}),
    }
    if cls is LayerSpec or cls is OutputSpec:
        schema["additionalProperties"] = True  # MXNet attributes, validated against MXNet
    else:
        schema["additionalProperties"] = False
    if cls.__name__ == "NormalizeSpec":
        schema = {"anyOf": [{"enum": ["none", "dataset", "running", None, False]}, schema],
                  "description": schema["description"]}
    return schema


def json_schema() -> Dict[str, Any]:
    """JSON Schema (draft 2020-12) of the spec format."""
    schema = section_schema(Spec)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "symbuilder spec"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def _rows(cls: type, prefix: str) -> List[Tuple[str, str, str, str]]:
    rows = []
    for f in _declared(cls):
        kind = f.metadata["kind"]
        key = f"{prefix}{f.name}"
        default = _default(f)
        default_text = "required" if default is REQUIRED else (
            "" if default is None else f"`{json.dumps(list(default) if isinstance(default, tuple) else default)}`")
        if dataclasses.is_dataclass(kind):
            rows.append((key, "section", default_text, f.metadata["doc"]))
            rows.extend(_rows(kind, key + "."))
        elif isinstance(kind, tuple):
            rows.append((key, "list", default_text, f.metadata["doc"]))
            rows.extend(_rows(kind[1], key + "[]."))
        else:
            doc = f.metadata["doc"]
            choices = _choices(cls, f)
            if choices:
                doc += " (one of: " + ", ".join(f"`{c}`" for c in choices) + ")"
            rows.append((key, _TYPE_TEXT[kind], default_text, doc))
    if cls is LayerSpec:
        rows.append((prefix + "<attribute>", "any", "", "every other key is an MXNet attribute "
                     "of `op`, validated against MXNet's operator registry"))
    if cls is OutputSpec:
        rows.append((prefix + "<attribute>", "any", "", "every other key is an MXNet attribute "
                     "of the head op (e.g. `grad_scale`, `normalization`)"))
    return rows


def markdown_reference() -> str:
    """The README's spec key table."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, kind, default, doc in _rows(Spec, ""):
        lines.append(f"| `{key}` | {kind} | {default} | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"



README_BEGIN = "<!-- spec-reference:begin (generated by `symbuilder schema --markdown`) -->"
README_END = "<!-- spec-reference:end -->"


def readme_with_reference(readme: str) -> str:
    """`readme` with the text between the reference markers replaced by the current table."""
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{markdown_reference()}{README_END}{tail}"
