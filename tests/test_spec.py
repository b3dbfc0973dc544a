"""Spec loading: safe YAML, located errors pinned to the exact text a user sees, round trips."""
import glob
import os
import textwrap

import pytest
import yaml

from symbuilder.errors import SpecError, UsageError
from symbuilder.spec.load import load_spec, loads_spec
from symbuilder.spec.overrides import apply_overrides, parse_key
from symbuilder.spec.yamlload import MAX_NODES, load_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))
# The contract, copied verbatim from ../shared/ (CI runs a clone without it); the copy is
# checked against the original whenever the original is there.
CONTRACT = os.path.join(ROOT, "tests", "contract", "spec-example.yaml")
SHARED_CONTRACT = os.path.join(ROOT, "..", "shared", "spec-example.yaml")

MINIMAL = textwrap.dedent("""\
    name: tiny
    input: {shape: [4]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 8}
      - {op: Activation, act_type: relu}
      - {op: FullyConnected, name: fc2, num_hidden: 3}
    output: {op: SoftmaxOutput}
    """)


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        loads_spec(text, source="s.yaml")
    return str(info.value)


# --- the YAML layer ---------------------------------------------------------------------

def test_yaml_1_2_floats_are_floats():
    data, _ = load_yaml("a: 1e-3\nb: -2E+4\nc: .5e1\nd: 1.0e-3\ne: '1e-3'\n", source="x")
    assert data == {"a": 0.001, "b": -20000.0, "c": 5.0, "d": 0.001, "e": "1e-3"}


def test_duplicate_keys_are_located_errors():
    assert error_of("name: a\nname: b\n") == "s.yaml:2:1: duplicate key 'name' (first at line 1)"


def test_python_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    text = f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    message = error_of(text)
    assert message.startswith("s.yaml:1:7: tag not allowed in a spec:")
    assert not marker.exists()


def test_billion_laughs_fails_fast():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        lines.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [" + ", ".join([f"*{prev}"] * 10) + "]")
    message = error_of("\n".join(lines) + "\n")
    assert f"expands to more than {MAX_NODES} nodes" in message


def test_oversized_spec_is_refused():
    assert "the limit is" in error_of("# " + "x" * (1 << 20) + "\n")


def test_invalid_yaml_is_located():
    assert error_of("name: [a, b\n") == "s.yaml:1:7: this '[' is never closed"


# --- the document -----------------------------------------------------------------------

def test_the_contract_example_loads_with_its_meaning():
    spec = load_spec(CONTRACT)
    assert spec.name == "breast_cancer_mlp"
    assert spec.input.normalize.stats == "dataset" and spec.input.normalize.momentum == 0.99
    assert spec.input.normalize.eps == 0.001
    assert [layer.op for layer in spec.layers] == ["FullyConnected", "Activation", "Dropout",
                                                   "FullyConnected"]
    assert spec.layers[2].name is None and spec.layers[2].attrs == {"p": 0.2}
    assert spec.layers[3].params["bias"].lr_mult == 2.0
    assert spec.layers[3].params["weight"].init == {"name": "normal", "sigma": 0.01}
    assert spec.output.label_name == "softmax_label"
    assert spec.data.train.label == "benign" and spec.data.val_fraction == 0.2
    assert spec.train.optimizer_params == {"learning_rate": 0.05, "momentum": 0.9, "wd": 1e-4}
    assert spec.export.onnx.opset == 17 and spec.export.verify.atol == 1e-5


@pytest.mark.parametrize("path", SPECS + [CONTRACT], ids=os.path.basename)
def test_every_spec_round_trips(path):
    spec = load_spec(path)
    again = loads_spec(yaml.safe_dump(spec.to_dict(), sort_keys=False), source=path)
    assert again == spec
    assert again.to_dict() == spec.to_dict()


@pytest.mark.parametrize("text, expected", [
    (MINIMAL.replace("num_hidden: 8", "num_hidden: -3"),
     "s.yaml:4:37: layers[0].num_hidden: expected a value >= 1, received -3"),
    (MINIMAL.replace("shape: [4]", "shape: [4, 0]"),
     "s.yaml:2:9: input.shape: expected a list of positive integers (one sample, no batch "
     "axis), received [4, 0] (list)"),
    (MINIMAL + "train: {epochs: 0}\n",
     "s.yaml:8:9: train.epochs: expected an integer >= 1, received 0 (integer)"),
    (MINIMAL + "train: {epoch: 3}\n",
     "s.yaml:8:9: train.epoch: unknown key 'epoch' (did you mean 'epochs'?); known keys: "
     "epochs, batch_size, optimizer, optimizer_params, initializer, eval_metric, seed, "
     "context, kvstore"),
    (MINIMAL.replace("op: SoftmaxOutput", "op: SoftmaxOutptu"),
     "s.yaml:7:10: output.op: expected one of SoftmaxOutput, LinearRegressionOutput, "
     "LogisticRegressionOutput, MAERegressionOutput, received 'SoftmaxOutptu' (string) "
     "(did you mean 'SoftmaxOutput'?)"),
    (MINIMAL.replace("name: tiny", "name: ../evil"),
     "s.yaml:1:1: name: expected a name of letters, digits, '_', '-' or '.' starting with a "
     "letter or '_' (it names files), received '../evil' (string)"),
    (MINIMAL + "train: {context: [tpu(0)]}\n",
     "s.yaml:8:19: train.context[0]: expected cpu(N) or gpu(N), received 'tpu(0)' (string)"),
    (MINIMAL.replace("input: {shape: [4]}\n", ""),
     "s.yaml:1:1: missing required key 'input' (the data input and its normalization layer)"),
    (MINIMAL + "data: {train: {path: a.csv, label: y}, val: {path: b.csv, label: y}, "
               "val_fraction: 0.1}\n",
     "s.yaml:8:70: data.val_fraction: give either val or val_fraction, not both"),
])
def test_spec_errors_are_one_located_line(text, expected):
    message = error_of(text)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_normalize_none_removes_the_input_layer():
    spec = loads_spec(MINIMAL.replace("input: {shape: [4]}", "input: {shape: [4], normalize: none}"))
    assert spec.input.normalize is None


def test_missing_spec_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(str(tmp_path / "nope.yaml"))


# --- --set overrides ----------------------------------------------------------------------

def test_overrides_set_nested_and_indexed_values():
    data = yaml.safe_load(MINIMAL)
    out = apply_overrides(data, ["train.epochs=5", "layers[0].num_hidden=16",
                                 "train.optimizer_params.learning_rate=1e-3"])
    assert out["train"]["epochs"] == 5
    assert out["layers"][0]["num_hidden"] == 16
    assert out["train"]["optimizer_params"]["learning_rate"] == 0.001
    assert data["layers"][0]["num_hidden"] == 8  # the original is untouched


def test_override_errors_are_usage_errors():
    assert parse_key("layers.2.num_hidden") == ["layers", 2, "num_hidden"]
    with pytest.raises(UsageError, match="expected key.path=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(UsageError, match=r"no item \[9\]"):
        apply_overrides(yaml.safe_load(MINIMAL), ["layers[9].num_hidden=3"])


# --- schema and README reference ------------------------------------------------------------

def test_readme_key_reference_is_generated_from_the_schema():
    from symbuilder.schema import readme_with_reference
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert readme_with_reference(readme) == readme, (
        "README's key table is stale: run `symbuilder schema --update-readme README.md`")


def test_json_schema_accepts_the_specs_and_names_every_parser_key():
    import dataclasses
    from symbuilder.spec.model import Spec
    from symbuilder.schema import json_schema
    schema = json_schema()
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(Spec) if f.metadata}
    assert schema["required"] == ["name", "layers", "output"]
    assert schema["oneOf"] == [{"required": ["input"]}, {"required": ["inputs"]}]
    train = schema["properties"]["train"]["properties"]
    assert train["epochs"] == {"type": "integer", "minimum": 1, "description": "training epochs",
                               "default": 10}
    # Every key the contract example uses is declared somewhere in the schema.
    contract = yaml.safe_load(open(CONTRACT))
    for section, body in contract.items():
        assert section in schema["properties"]
        props = schema["properties"][section].get("properties")
        if isinstance(body, dict) and props is not None:
            assert set(body) <= set(props), section


GRAPH = textwrap.dedent("""\
    name: tiny
    input: {shape: [4]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 8}
      - {op: FullyConnected, name: fc2, num_hidden: 2}
    output: {op: SoftmaxOutput}
    """)


@pytest.mark.parametrize("edit, expected", [
    (("name: fc1,", "name: fc1, inputs: [fc2],"),  # a forward reference
     "s.yaml:4:46: layers[0].inputs[0]: 'fc2' names this layer or a later one; inputs must "
     "come earlier (no cycles)"),
    (("name: fc2,", "name: fc2, inputs: [fc2],"),  # a self loop
     "s.yaml:5:46: layers[1].inputs[0]: 'fc2' names this layer or a later one; inputs must "
     "come earlier (no cycles)"),
    (("name: fc1,", "name: 'a/b',"),  # would become a file name outside the folder
     "s.yaml:4:26: layers[0].name: expected a name of letters, digits, '_', '-' or '.' "
     "starting with a letter or '_' (it names files), received 'a/b' (string)"),
    (("name: fc1,", 'name: "fc\\x01",'),  # a control character
     "s.yaml:4:26: layers[0].name: expected a name of letters, digits, '_', '-' or '.' "
     "starting with a letter or '_' (it names files), received 'fc\\x01' (string)"),
    (("num_hidden: 8}", "num_hidden: 8, params: {wieght: {lr_mult: 0}}}"),
     "s.yaml:4:61: layers[0].params.wieght: FullyConnected has no parameter 'wieght' (did you "
     "mean 'weight'?); it has: weight, bias"),
    (("num_hidden: 8}", "num_hidden: 8, params: {weight: {lr_mult: -1}}}"),
     "s.yaml:4:70: layers[0].params.weight.lr_mult: expected a number >= 0.0, received -1 "
     "(integer)"),
    (("num_hidden: 8}", "num_hidden: '8x'}"),
     "s.yaml:4:37: layers[0].num_hidden: expected int, received '8x' (str)"),
])
def test_graph_errors_are_pinned_to_the_exact_message(edit, expected):
    from symbuilder.graph import build_symbol
    with pytest.raises(SpecError) as info:
        build_symbol(loads_spec(GRAPH.replace(*edit), source="s.yaml"))
    assert str(info.value) == expected


@pytest.mark.skipif(not os.path.exists(SHARED_CONTRACT), reason="../shared/ is not beside this clone")
def test_the_contract_copy_is_verbatim():
    assert open(CONTRACT, "rb").read() == open(SHARED_CONTRACT, "rb").read()
