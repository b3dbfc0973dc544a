"""The registry's opset versions and the one error listing every untranslatable op of a graph."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from typing import Iterator

import mxnet as mx
import pytest

from symbuilder.errors import ExportError
from symbuilder.onnx import SUPPORTED_OPSETS, check_translatable, register, registered_ops, to_onnx
from symbuilder.defaults import OPSET_RANGE
from symbuilder.onnx import registry
from symbuilder.spec.load import loads_spec

FAKE = "_test_versioned_op"


@pytest.fixture
def fake_op() -> Iterator[str]:
    yield FAKE
    registry._REGISTRY.pop(FAKE, None)  # the registry is process-wide: leave it as found


def _one() -> None:
    pass


def _two() -> None:
    pass


def test_one_constant_is_13_to_21() -> None:
    assert OPSET_RANGE == (13, 21)
    assert SUPPORTED_OPSETS == tuple(range(13, 22))


def test_default_registration_covers_every_supported_opset() -> None:
    assert registry.opset_ranges("FullyConnected") == [OPSET_RANGE]
    for opset in SUPPORTED_OPSETS:
        assert "FullyConnected" in registered_ops(opset)


def test_versions_are_picked_by_opset(fake_op: str) -> None:
    register(fake_op, opsets=(13, 17))(_one)
    register(fake_op, opsets=(18, 21))(_two)
    assert registry.opset_ranges(fake_op) == [(13, 17), (18, 21)]
    assert [registry.lookup(fake_op, "n", o) for o in (13, 17, 18, 21)] == [_one, _one, _two, _two]
    assert registry.lookup(fake_op, "n") is _two  # no opset: the newest


def test_a_gap_between_versions_names_the_ranges(fake_op: str) -> None:
    register(fake_op, opsets=(18, 21))(_two)
    with pytest.raises(ExportError) as info:
        registry.lookup(fake_op, "node7", 13)
    assert str(info.value) == (f"no ONNX translation at opset 13 for MXNet op '{fake_op}' (node 'node7'); "
                               "it is translated at opsets 18..21")
    assert fake_op not in registered_ops(13) and fake_op in registered_ops(18)


def test_overlapping_versions_are_refused(fake_op: str) -> None:
    register(fake_op, opsets=(13, 17))(_one)
    with pytest.raises(ExportError, match=r"duplicate ONNX translation for MXNet op '_test_versioned_op' at "
                                          r"opsets 16\.\.17"):
        register(fake_op, opsets=(16, 21))(_two)
    assert registry.opset_ranges(fake_op) == [(13, 17)]


@pytest.mark.parametrize("opsets", [(12, 17), (18, 22), (19, 18)])
def test_ranges_outside_the_supported_opsets_are_refused(fake_op: str, opsets) -> None:
    with pytest.raises(ExportError, match="not a range within the supported 13..21"):
        register(fake_op, opsets=opsets)(_one)
    assert registry.opset_ranges(fake_op) == []


def _graph_with_three_untranslatable_ops() -> mx.sym.Symbol:
    d = mx.sym.Variable("data")
    a = mx.sym.sort(d, name="sort0")
    b = mx.sym.sort(mx.sym.relu(a, name="r"), name="sort1")
    c = mx.sym.khatri_rao(b, b, name="kr0")
    return mx.sym.Group([mx.sym.erfinv(c, name="ei0"), mx.sym.FullyConnected(d, num_hidden=2, name="fc")])


@pytest.mark.parametrize("call", ["check_translatable", "to_onnx"])
def test_every_untranslatable_op_in_one_error(call: str) -> None:
    sym = _graph_with_three_untranslatable_ops()
    with pytest.raises(ExportError) as info:
        if call == "check_translatable":
            check_translatable(sym, 17)
        else:
            to_onnx(sym, {}, {"data": (2, 3)}, opset=17)
    message = str(info.value)
    assert message.startswith("no ONNX translation at opset 17 for 3 ops: 'sort' (2 nodes, first 'sort0'), "
                              "'khatri_rao' (1 node, first 'kr0'), 'erfinv' (1 node, first 'ei0'); "
                              f"symbuilder translates {len(registered_ops(17))} ops at this opset "
                              "(the README's list of ONNX operators)")


def test_an_op_translated_at_other_opsets_says_where() -> None:
    # Real MXNet ops given only a late version: the error names the opsets that work.
    single = mx.sym.erfinv(mx.sym.Variable("data"), name="ei0")
    both = mx.sym.khatri_rao(single, single, name="kr0")
    try:
        register("erfinv", opsets=(18, 21))(_two)
        with pytest.raises(ExportError) as info:
            check_translatable(single, 13)
        assert str(info.value) == ("no ONNX translation at opset 13 for MXNet op 'erfinv' (node 'ei0'); "
                                   "it is translated at opsets 18..21")
        with pytest.raises(ExportError) as info:
            check_translatable(both, 13)
        assert str(info.value).startswith("no ONNX translation at opset 13 for 2 ops: 'erfinv' (1 node, first "
                                          "'ei0'; translated at opsets 18..21), 'khatri_rao' (1 node, first 'kr0')")
        check_translatable(single, 18)
    finally:
        registry._REGISTRY.pop("erfinv")


def test_one_untranslatable_op_keeps_lookups_message() -> None:
    sym = mx.sym.sort(mx.sym.sort(mx.sym.Variable("data"), name="s0"), name="s1")
    with pytest.raises(ExportError) as info:
        check_translatable(sym, 17)
    assert str(info.value).startswith("no ONNX translation for MXNet op 'sort' (node 's0'); symbuilder translates: ")


def test_check_translatable_refuses_an_unsupported_opset() -> None:
    with pytest.raises(ExportError, match="opset 22 is not supported; choose one of 13, 14, .*, 21"):
        check_translatable(mx.sym.relu(mx.sym.Variable("data")), 22)


_SPEC = """\
name: tiny
input: {shape: [4]}
layers:
  - {op: FullyConnected, name: fc1, num_hidden: 8}
output: {op: SoftmaxOutput}
export: {onnx: {opset: %d}}
"""


def test_spec_accepts_21_and_refuses_22() -> None:
    assert loads_spec(_SPEC % 21, source="s.yaml").export.onnx.opset == 21
    with pytest.raises(Exception) as info:
        loads_spec(_SPEC % 22, source="s.yaml")
    assert str(info.value) == "s.yaml:6:17: export.onnx.opset: expected an integer <= 21, received 22 (integer)"


def test_cli_opset_choices_come_from_the_constant(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "symbuilder", "export", str(tmp_path / "m"), "0",
                           "--input", "data=1,2", "--opset", "22"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "invalid choice: 22 (choose from 13, 14, 15, 16, 17, 18, 19, 20, 21)" in done.stderr
    assert done.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_the_registry_alone_sees_every_translation() -> None:
    # The registry imports no translation; a caller importing only the registry (graph/checks.py
    # does) must still find every op, in a fresh process where nothing else imported them.
    code = ("import sys; from symbuilder.onnx.registry import lookup, registered_ops; "
            "lookup('BatchNorm', 'bn'); print(len(registered_ops()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) == len(registered_ops())


def test_the_registry_is_a_leaf() -> None:
    # The translations import the registry; were it to import one back (it once imported
    # all_ops on its first query), that is a cycle. symbuilder/onnx/__init__.py loads them.
    with open(registry.__file__) as f:
        tree = ast.parse(f.read())
    own = {"." * n.level + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
           and (n.level or (n.module or "").startswith("symbuilder"))}
    own |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
            if a.name.startswith("symbuilder")}
    assert own == {"symbuilder.errors", "symbuilder.defaults"}


def test_spec_and_cli_read_the_opsets_without_mxnet() -> None:
    code = ("import sys, symbuilder.spec.model, symbuilder.cli; "
            "print('mxnet' in sys.modules, 'onnx' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr[-2000:]


def test_the_readmes_operator_list_is_the_registrys() -> None:
    from symbuilder.onnx.registry import readme_with_operators
    readme_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "README.md")
    with open(readme_path) as f:
        readme = f.read()
    assert readme_with_operators(readme) == readme, (
        "README.md's ONNX operator list is stale: run `symbuilder schema --update-readme README.md`")
