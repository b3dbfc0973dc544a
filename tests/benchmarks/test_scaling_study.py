"""The scaling study's generated specs and its table/verdict (moved with the study from
symbuilder/bench.py; assertions unchanged). Collected by pytest: fast, no timing."""
import json

import pytest

from helpers import DATA
from scaling_study import SCALING_PHASES, ScalingFigures, scaling_spec_text, scaling_table, \
    scaling_verdict
from symbuilder.graph import build_symbol
from symbuilder.spec.load import loads_spec


@pytest.mark.parametrize("layers", [1, 2, 10, 101])
def test_scaling_specs_have_exactly_n_layers(layers):
    spec = loads_spec(scaling_spec_text(layers, DATA))
    assert len(spec.layers) == layers
    nodes = json.loads(build_symbol(spec).tojson())["nodes"]
    ops = [n["op"] for n in nodes if n["op"] not in ("null", "BatchNorm", "SoftmaxOutput")]
    assert len(ops) == layers  # counted in the built graph, not the spec
    assert ops[-1] == "FullyConnected"
    assert ops.count("Activation") == (layers - 1) // 2


def test_scaling_table_and_verdict_from_known_times():
    figures = [ScalingFigures(n, {p: 0.0 for p in SCALING_PHASES + ("init params",)},
                              0.01 + 0.002 * n) for n in (10, 100, 1000)]
    assert "ratio 1.00 (linear" in scaling_verdict(figures)
    quadratic = [ScalingFigures(f.layers, f.phases, 1e-5 * f.layers ** 2) for f in figures]
    assert "NOT linear" in scaling_verdict(quadratic)
    table = scaling_table(figures)
    assert "| 1000 |" in table and "| 2.01 |" in table  # 2.01 ms per layer at 1000
