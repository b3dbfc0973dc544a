"""Property-based fuzzing of the spec path: whatever a user (or a corrupted file) feeds in,
only SpecError (and subclasses) comes out, every error is one located line, and a good share
of the mutated specs get past YAML into the semantic checks and the builder.

The mutations start from every spec in specs/ and the contract example, and do what hand
editing does wrong: delete keys, change value types, typo keys, add unknown keys, shuffle
layers, point `inputs:` at unknown, later or self layers, duplicate and path-like names,
huge shapes, negative numbers, unknown ops and attributes, real MXNet ops with random
attributes.
"""
import collections
import copy
import glob
import os
import re
import tempfile

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symbuilder.pipeline import validate
from symbuilder.errors import SpecError
from symbuilder.spec.load import load_spec, loads_spec
from symbuilder.spec.model import parse_spec
from symbuilder.spec.overrides import apply_overrides
from symbuilder.spec.semantics import check_spec
from symbuilder.spec.yamlload import load_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASES = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml"))) + [
    os.path.join(ROOT, "tests", "contract", "spec-example.yaml")]
BASE_DATA = [load_yaml(open(p, "rb").read(), source=p)[0] for p in BASES]

_FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)


def fuzz(n: int) -> settings:
    """n examples, no deadline (MXNet's first import is slow), no saved database."""
    return settings(_FUZZ, max_examples=n)

# Errors about the whole file, which has no line to point at.
WHOLE_FILE = ("spec is ",)
# What YAML counts as a line break (so does the error's line number).
YAML_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def assert_located(error: SpecError, text: str, *, stage: str) -> None:
    """One line; a file; a line inside the document (unless the whole file is at fault);
    a key path once the YAML has parsed (unless the whole document lacks a key)."""
    message = str(error)
    assert "\n" not in message and "\r" not in message, repr(message)
    assert error.file, repr(message)
    if error.message.startswith(WHOLE_FILE):
        return
    assert error.line is not None and error.column is not None, repr(message)
    n_lines = len(YAML_BREAKS.findall(text)) + 1
    assert 1 <= error.line <= n_lines + 1 and error.column >= 1, (repr(message), n_lines)
    if stage != "yaml":
        assert error.path or error.message.startswith("missing required key"), repr(message)


# --- random bytes and text ---------------------------------------------------------------

def _check_text(text, source="fuzz.yaml"):
    try:
        spec = loads_spec(text, source=source)
    except SpecError as e:
        assert_located(e, text if isinstance(text, str) else text.decode("utf-8", "replace"),
                       stage="yaml")
        return
    try:
        validate(spec, check_data=False)
    except SpecError as e:
        assert_located(e, text if isinstance(text, str) else text.decode("utf-8", "replace"),
                       stage="spec")


@fuzz(300)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_located_spec_errors(raw):
    _check_text(raw)


YAMLISH = st.text(alphabet=st.sampled_from(list("abnmeolp0123456789 :-[]{},'\"!&*#|>%@`\n\t.e+/\\?")
                                          + ["\x00", "\x85", "\ufeff", "é", "\u2028"]),
                  max_size=300)


@fuzz(300)
@given(st.one_of(st.text(max_size=300), YAMLISH))
def test_random_text_only_raises_located_spec_errors(text):
    _check_text(text)


_TMP = tempfile.mkdtemp(prefix="symbuilder-fuzz-")


@fuzz(150)
@given(st.binary(max_size=300), st.sampled_from(["a.yaml", "b c.yaml", "é.yml"]))
def test_random_files_only_raise_located_spec_errors(raw, name):
    path = os.path.join(_TMP, name)
    with open(path, "wb") as f:
        f.write(raw)
    try:
        spec = load_spec(path)
        validate(spec, check_data=False)
    except SpecError as e:
        assert e.file == path
        assert_located(e, raw.decode("utf-8", "replace"), stage="yaml")


@fuzz(150)
@given(st.lists(st.text(max_size=40), max_size=3), st.sampled_from(BASE_DATA))
def test_random_set_overrides_only_raise_spec_errors(items, data):
    try:
        apply_overrides(data, items)
    except SpecError as e:
        assert "\n" not in str(e)


# --- structure-aware mutations of valid specs ----------------------------------------------

def _ops():
    from symbuilder.spec.catalog import list_ops
    return list_ops()


def _attrs_of(op):
    from symbuilder.spec.catalog import op_info
    return list(op_info(op).attributes)


WEIRD = [
    None, True, False, 0, 1, -1, -3, 7, 2 ** 31, 2 ** 63, 10 ** 30, -(10 ** 30), 0.5, -0.5,
    1e308, -1e-308, float("nan"), float("inf"), float("-inf"), "", "x", "relu", "1e-3",
    "none", "../x", "a/b", "a\\b", "..", "x\x00y", "tab\there", "\u202e", "é", "x" * 500,
    [], [1], [0], [-1], [1, 2, 3], [100_000_000, 100_000_000], [2 ** 40, 2 ** 40],
    [2 ** 64], ["a", "b"], [None], [[1, 2], [3]], {}, {"a": 1}, {"name": "x"},
    {"lr_mult": -1}, [[[[[[[[1]]]]]]]],
]
HUGE_SHAPES = [[100_000_000, 100_000_000], [2 ** 31], [2 ** 62, 2], [1] * 40, [3, 10 ** 6, 10 ** 6],
               [2 ** 63 + 5], [1, 2 ** 20, 2 ** 20], [65536, 65536, 65536]]
BAD_NAMES = ["../x", "../../evil", "a/b", "/abs", "a\\b", "..", ".", "x\x00", "x\ny", "tab\t",
             "", " ", "-x", "1abc", "a..b", "\u00e9", "CON", "x" * 300, "a b"]


def _paths(node, path=()):
    """Every (path, value) inside node, the root included."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _get(node, path):
    for p in path:
        node = node[p]
    return node


def _typo(draw, key):
    key = str(key)
    kind = draw(st.integers(0, 4))
    i = draw(st.integers(0, max(len(key) - 1, 0)))
    if kind == 0 and len(key) > 1:
        return key[:i] + key[i + 1:]
    if kind == 1 and len(key) > 1:
        j = min(i + 1, len(key) - 1)
        chars = list(key)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    if kind == 2:
        return key[:i] + draw(st.sampled_from("aeisx_")) + key[i:]
    if kind == 3:
        return key.upper() if key.islower() else key.lower()
    return key + "s"


def _mutate(draw, data):
    """Apply one random mutation to `data` in place (data is a dict: the whole spec)."""
    layers = data.get("layers") if isinstance(data.get("layers"), list) else None
    dict_layers = [i for i, l in enumerate(layers or []) if isinstance(l, dict)]
    kind = draw(st.sampled_from([
        "delete", "retype", "retype", "typo_key", "unknown_key", "shuffle", "inputs", "dup_name",
        "bad_name", "huge_shape", "negate", "unknown_op", "real_op", "real_op", "attr",
        "attr", "unknown_attr", "params", "nest", "text"]))
    everything = list(_paths(data))
    mappings = [(p, v) for p, v in everything if isinstance(v, dict)]
    if kind == "delete":
        p, m = draw(st.sampled_from(mappings))
        if m:
            del m[draw(st.sampled_from(sorted(m, key=str)))]
    elif kind == "retype":
        p, _ = draw(st.sampled_from(everything[1:]))
        parent = _get(data, p[:-1])
        parent[p[-1]] = copy.deepcopy(draw(st.sampled_from(WEIRD)))
    elif kind == "typo_key":
        p, m = draw(st.sampled_from(mappings))
        if m:
            key = draw(st.sampled_from(sorted(m, key=str)))
            new = _typo(draw, key)
            if new not in m:
                m[new] = m.pop(key)
    elif kind == "unknown_key":
        p, m = draw(st.sampled_from(mappings))
        m[draw(st.sampled_from(["extra", "nmae", "lr", "inputs", "params", "shape", "op",
                                "__class__", "0", "x" * 100]))] = draw(st.sampled_from(WEIRD))
    elif kind == "shuffle" and layers:
        layers[:] = draw(st.permutations(layers))
    elif kind == "inputs" and dict_layers:
        i = draw(st.sampled_from(dict_layers))
        names = [l.get("name") for l in layers if isinstance(l, dict) and l.get("name")]
        target = draw(st.sampled_from(
            ["nope", "fc", "data", "data_norm", "softmax", "softmax_label"] + names
            + [layers[i].get("name") or "self"]))
        layers[i]["inputs"] = draw(st.sampled_from([target, [target], [target, target], []]))
    elif kind == "dup_name" and dict_layers:
        i = draw(st.sampled_from(dict_layers))
        others = [l.get("name") for l in layers if isinstance(l, dict) and l.get("name")]
        layers[i]["name"] = draw(st.sampled_from(
            others + ["data", "data_norm", "softmax", "fullyconnected0", "dropout0"]))
    elif kind == "bad_name":
        where = draw(st.sampled_from(["top", "input", "output", "layer"]))
        bad = draw(st.sampled_from(BAD_NAMES))
        if where == "top":
            data["name"] = bad
        elif where == "input" and isinstance(data.get("input"), dict):
            data["input"]["name"] = bad
        elif where == "output" and isinstance(data.get("output"), dict):
            data["output"]["name"] = bad
        elif dict_layers:
            layers[draw(st.sampled_from(dict_layers))]["name"] = bad
    elif kind == "huge_shape":
        if isinstance(data.get("input"), dict) and draw(st.booleans()):
            data["input"]["shape"] = draw(st.sampled_from(HUGE_SHAPES))
        elif dict_layers:
            layer = layers[draw(st.sampled_from(dict_layers))]
            key = draw(st.sampled_from(["num_hidden", "num_filter", "kernel", "shape", "p",
                                        "stride", "pad"]))
            layer[key] = draw(st.sampled_from([10 ** 9, 2 ** 31 - 1, 2 ** 31, 2 ** 40, 2 ** 63,
                                               [10 ** 6, 10 ** 6], [2 ** 31, 1], [0, 0]]))
    elif kind == "negate":
        numeric = [p for p, v in everything[1:]
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numeric:
            p = draw(st.sampled_from(numeric))
            parent = _get(data, p[:-1])
            parent[p[-1]] = -parent[p[-1]] if parent[p[-1]] else -1
    elif kind == "unknown_op" and dict_layers:
        layer = layers[draw(st.sampled_from(dict_layers))]
        layer["op"] = draw(st.sampled_from(
            ["FullyConected", "fullyconnected", "Conv", "__add__", "_copy", "Custom",
             "SoftmaxOutput", "LinearRegressionOutput", "Variable", "Group", "load", "var",
             "zeros", "contrib.foo", "linalg_gemm", "", "x" * 200, "None"]))
    elif kind == "real_op" and dict_layers:
        layer = layers[draw(st.sampled_from(dict_layers))]
        op = draw(st.sampled_from(_ops()))
        for k in [k for k in layer if k not in ("op", "name", "inputs", "params")]:
            del layer[k]
        layer["op"] = op
        attrs = _attrs_of(op)
        for key in draw(st.lists(st.sampled_from(attrs), max_size=3, unique=True)) if attrs else []:
            layer[key] = copy.deepcopy(draw(st.sampled_from(WEIRD + [2, 3, "float32", "relu"])))
    elif kind in ("attr", "unknown_attr") and dict_layers:
        layer = layers[draw(st.sampled_from(dict_layers))]
        op = layer.get("op")
        try:
            attrs = _attrs_of(op)
        except Exception:
            attrs = []
        if kind == "attr" and attrs:
            key = draw(st.sampled_from(attrs))
        else:
            key = draw(st.sampled_from(["num_hiden", "kernal", "act", "foo", "weight", "data",
                                        "lr_mult", "attr", "__init__", "name_", "num_args"]))
        layer[key] = copy.deepcopy(draw(st.sampled_from(WEIRD + [2, 3, [2, 2], "max", "relu"])))
    elif kind == "params" and dict_layers:
        layer = layers[draw(st.sampled_from(dict_layers))]
        pname = draw(st.sampled_from(["weight", "bias", "gamma", "wieght", "data", "x"]))
        layer["params"] = {pname: draw(st.sampled_from([
            {"lr_mult": -1}, {"lr_mult": float("nan")}, {"init": {"name": "nope"}},
            {"init": {"name": "normal", "sigma": -1}}, {"init": {"name": "normal", "bogus": 1}},
            {"init": "xavier"}, {"init": {}}, {"wd_mult": "x"}, None, [], {"lr_mult": 1,
                                                                            "extra": 1}]))}
    elif kind == "nest":
        p, _ = draw(st.sampled_from(everything[1:]))
        parent = _get(data, p[:-1])
        # Spliced into the text after dumping: a recursive dumper could not write it.
        parent[p[-1]] = draw(st.sampled_from(["__NEST_30__", "__NEST_200__", "__NEST_3000__",
                                              "__MAP_3000__"]))
    elif kind == "text":
        section = draw(st.sampled_from(["train", "export", "input", "output", "data"]))
        if isinstance(data.get(section), dict) and data[section]:
            key = draw(st.sampled_from(sorted(data[section], key=str)))
            data[section][key] = draw(st.sampled_from(
                ["adamw", "sgd", "cpu(0)", "gpu(0)", "gpu(99)", "tpu", "nccl", "triton",
                 "acc", "f1", "perplexity", "nope", "xavier", "1e-3", "running"]))


def _dump(data):
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100,
                          allow_unicode=False)
    for n in (30, 200, 3000):
        text = text.replace(f"__NEST_{n}__", "[" * n + "1" + "]" * n)
    return text.replace("__MAP_3000__", "{a: " * 3000 + "1" + "}" * 3000)


STAGES = ("yaml", "structure", "semantics", "build", "ok")


def _run_stages(text, stats):
    """The stages `loads_spec` + `validate` go through, one by one, so the share of cases
    that reach each is measured. Only SpecError may escape any of them."""
    stage = "yaml"
    try:
        data, locations = load_yaml(text, source="mut.yaml")
        stage = "structure"
        spec = parse_spec(data, locations)
        stage = "semantics"
        check_spec(spec)
        stage = "build"
        validate(spec, check_data=False)
        stage = "ok"
    except SpecError as e:
        assert_located(e, text, stage=stage)
    stats[stage] += 1
    return stage


def test_mutated_specs_only_raise_located_spec_errors():
    stats = collections.Counter()

    @fuzz(1200)
    @given(st.data())
    def run(data):
        base = copy.deepcopy(data.draw(st.sampled_from(BASE_DATA)))
        for _ in range(data.draw(st.integers(1, 3))):
            _mutate(data.draw, base)
        text = _dump(base)
        _run_stages(text, stats)

    run()
    total = sum(stats.values())
    shares = {s: stats[s] / total for s in STAGES}
    print("mutated specs, the stage each stopped at:", {s: f"{v:.0%}" for s, v in shares.items()})
    # The fuzzer must exercise the deep layers, not just the YAML and the key reader.
    reached_semantics = shares["semantics"] + shares["build"] + shares["ok"]
    reached_build = shares["build"] + shares["ok"]
    # Measured over runs: 35-42% reach the semantic checks and 9-12% shape inference (most
    # mutations are meant to break the structure); the bounds leave room for hypothesis' variance.
    assert reached_semantics >= 0.25, shares
    assert reached_build >= 0.04, shares


@fuzz(300)
@given(st.data())
def test_text_mutations_of_valid_specs_only_raise_located_spec_errors(data):
    """Edits of the real files, comments and layout kept: a deleted or inserted character,
    a line dropped or duplicated, a tab, a stray colon."""
    path = data.draw(st.sampled_from(BASES))
    text = open(path, encoding="utf-8").read()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.integers(0, 4))
        if kind == 0:
            text = text[:i] + text[i + 1:]
        elif kind == 1:
            text = text[:i] + data.draw(st.sampled_from(list(":-[]{},'\"&*!#|> \t\n0a"))) + text[i:]
        else:
            lines = text.split("\n")
            j = data.draw(st.integers(0, len(lines) - 1))
            if kind == 2:
                del lines[j]
            elif kind == 3:
                lines.insert(j, lines[j])
            else:
                lines[j] = " " + lines[j]
            text = "\n".join(lines)
    _run_stages(text, collections.Counter())
