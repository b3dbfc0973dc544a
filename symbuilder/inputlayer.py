"""The input layer, one module: a frozen-affine BatchNorm in front of each data input.

Everything about it lives here: its names (InputLayerNames, defined with the other names a
spec gives the graph in spec/names.py and re-exported here), its construction
(build_input), the statistics stage (calibrate: the exact statistics of the training
split), the moving statistics it starts from (initial_aux_params), the freeze
(fixed_param_names, fixed_aux_names, and pin_aux for several devices) and the
post-training proof that every promise held (input_layer_report).

The moving statistics start from the exact statistics of the training split in both
modes: `dataset` keeps them (use_global_stats, beta/gamma also in fixed_param_names so no
optimizer can touch them); `running` lets MXNet's moving averages move from there (a warm
start instead of MXNet's 0/1).

Imports spec, moments, errors and mxnet only: the graph, data and training stages import
this module, never the other way round (the Model and the SplitData arrive as arguments).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np

from .errors import RunError
from .moments import ChannelStats, array_stats
from .spec.model import InputSpec, Spec
from .spec.names import InputLayerNames  # re-exported: the input layer's names are the spec's


def cast_name(input_name: str) -> str:
    """The Cast node a non-float32 input (input.dtype: uint8) is read through."""
    return f"{input_name}_float32"


def data_variable(input_spec: InputSpec) -> mx.sym.Symbol:
    """The input's data variable as float32 values. input.dtype uint8: the variable is
    declared uint8 (Module.bind takes the declared dtype over its DataDesc's, so a Module,
    the deploy symbol and the ONNX model all take raw bytes) and cast to float32, exact for
    0..255; the input layer and everything after it compute in float32 as before."""
    if input_spec.dtype == "float32":
        return mx.sym.Variable(input_spec.name)
    data = mx.sym.Variable(input_spec.name, dtype=input_spec.dtype)
    return mx.sym.Cast(data, dtype="float32", name=cast_name(input_spec.name))


def build_input(input_spec: InputSpec) -> mx.sym.Symbol:
    """The data variable (data_variable) followed, unless normalize is none, by the input
    BatchNorm.

    beta/gamma are explicit Variables with lr_mult=0 and wd_mult=0 and explicit zero/one
    initialisers, so the freeze sits in the symbol JSON and a legacy Module.fit honours it.
    fix_gamma=False: gamma is a real stored parameter that must stay exactly 1, which the
    post-training check can prove bit for bit (fix_gamma=True would hide a drifting gamma
    from MXNet but not from an exporter that reads the stored value: docs/mxnet-traps.md).
    """
    data = data_variable(input_spec)
    norm = input_spec.normalize
    if norm is None:
        return data
    names = InputLayerNames.for_input(input_spec.name)
    frozen = dict(lr_mult=0, wd_mult=0) if norm.freeze else {}
    gamma = mx.sym.Variable(names.gamma, init=mx.init.One(), **frozen)
    beta = mx.sym.Variable(names.beta, init=mx.init.Zero(), **frozen)
    moving_mean = mx.sym.Variable(names.moving_mean, init=mx.init.Zero())
    moving_var = mx.sym.Variable(names.moving_var, init=mx.init.One())
    return mx.sym.BatchNorm(
        data, gamma=gamma, beta=beta, moving_mean=moving_mean, moving_var=moving_var,
        name=names.node, eps=norm.eps, momentum=norm.momentum, fix_gamma=False,
        use_global_stats=(norm.stats == "dataset"), axis=1)


def calibrate(model: Any, data: Any, progress: Optional[Callable[[str], None]] = None
              ) -> Dict[str, ChannelStats]:
    """The statistics stage: exact per-channel statistics of the training split (never the
    validation split) of `data` (a SplitData), for every input of `model` (a graph.Model)
    that has an input layer, by input name. A feature with zero variance is reported on
    `progress`: the input layer then divides by sqrt(eps)."""
    spec = model.spec
    stats = {item.name: array_stats(data.train.inputs[item.name])
             for item in spec.all_inputs if item.normalize is not None}
    say = progress or (lambda line: None)
    for item in spec.all_inputs:
        for c in (stats[item.name].zero_variance_channels() if item.name in stats else []):
            say(f"warning: feature '{_channel_name(item, data, c)}' has zero variance in the "
                f"training data; the input layer divides by sqrt(eps={item.normalize.eps})")
    return stats


def initial_aux_params(stats: Dict[str, Any]) -> Dict[str, mx.nd.NDArray]:
    """The input layers' moving statistics, set to the calibrated ones (float32)."""
    aux = {}
    for input_name, st in stats.items():
        names = InputLayerNames.for_input(input_name)
        aux[names.moving_mean] = mx.nd.array(st.mean, dtype="float32")
        aux[names.moving_var] = mx.nd.array(st.var, dtype="float32")
    return aux


def fixed_param_names(spec: Spec) -> List[str]:
    """beta/gamma are fixed in the Module too in dataset mode: no backward pass is needed
    there, and grad_req='null' keeps them exact under optimizers that ignore lr_mult
    (adadelta, ftml, ftrl, sgld: docs/mxnet-traps.md). Running mode needs the backward pass, which
    is what updates the moving statistics on CPU."""
    fixed = []
    for item in spec.all_inputs:
        norm = item.normalize
        if norm is not None and norm.freeze and norm.stats == "dataset":
            names = InputLayerNames.for_input(item.name)
            fixed += [names.gamma, names.beta]
    return fixed


def fixed_aux_names(spec: Spec) -> List[str]:
    """Aux states that never change: the moving statistics of dataset-mode input layers
    (use_global_stats). A dist job leaves them out of the averaging, which keeps them
    bit-exact."""
    out = []
    for item in spec.all_inputs:
        if item.normalize is not None and item.normalize.stats == "dataset":
            names = InputLayerNames.for_input(item.name)
            out += [names.moving_mean, names.moving_var]
    return out


def _channel_name(item: Any, data: Any, channel: int) -> str:
    columns = data.columns.get(item.name, [])
    if len(item.shape) == 1 and channel < len(columns):
        return columns[channel]
    return f"channel {channel} of input '{item.name}'"


def pinned_aux(spec: Spec, stats: Dict[str, Any]) -> Dict[str, mx.nd.NDArray]:
    """The aux states pin_aux keeps exact: the calibrated statistics of the input layers
    whose moving statistics never change (fixed_aux_names)."""
    fixed = set(fixed_aux_names(spec))
    return {k: v for k, v in initial_aux_params(stats).items() if k in fixed}


def pin_aux(module: Any, exact: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Several devices (context: [cpu(0), cpu(1), cpu(2)]): Module.get_params() averages
    every aux state over the devices in float32, and Module.fit writes that average back
    to the devices at every epoch end. For a state that never changes (a dataset-mode
    input layer's moving_mean/var) the sum of 3 equal copies divided by 3 is not always
    the value again (measured: 1.9e-06 off after 2 epochs, and the build failed its
    exactness check). Write the `exact` values back into the Module and every device;
    returns the Module's (arg, aux) after that."""
    arg, aux = module.get_params()
    if not exact:
        return arg, aux
    changed = [k for k, v in exact.items() if not (aux[k].asnumpy() == v.asnumpy()).all()]
    if changed:
        aux = dict(aux)
        aux.update({k: exact[k].copy() for k in changed})
        module.set_params(arg, aux, allow_missing=False, force_init=True)
    return module.get_params()


def input_layer_report(spec: Spec, arg_params: Dict[str, mx.nd.NDArray],
                       aux_params: Dict[str, mx.nd.NDArray], stats: Dict[str, Any]
                       ) -> Dict[str, Dict[str, Any]]:
    """Check every promise about every input layer; RunError if one is broken. The report
    is keyed by input name (inputs without an input layer are absent)."""
    return {item.name: _input_layer_report(spec, item, arg_params, aux_params, stats[item.name])
            for item in spec.all_inputs if item.normalize is not None}


def _input_layer_report(spec: Spec, item: Any, arg_params: Dict[str, mx.nd.NDArray],
                        aux_params: Dict[str, mx.nd.NDArray], stats: Any) -> Dict[str, Any]:
    """Frozen: beta exactly 0 and gamma exactly 1, bit for bit. dataset mode: the moving
    statistics are exactly the calibrated ones (as float32). running mode: they moved off
    their start; the report gives their deviation from the exact statistics."""
    norm = item.normalize
    names = InputLayerNames.for_input(item.name)
    gamma = arg_params[names.gamma].asnumpy()
    beta = arg_params[names.beta].asnumpy()
    moving_mean = aux_params[names.moving_mean].asnumpy().astype(np.float64)
    moving_var = aux_params[names.moving_var].asnumpy().astype(np.float64)
    report: Dict[str, Any] = {
        "stats": norm.stats, "eps": norm.eps, "frozen": norm.freeze,
        "exact_mean": stats.mean.tolist(), "exact_var": stats.var.tolist(),
        "count": int(stats.count),
    }
    if norm.freeze:
        if not (np.all(beta == 0.0) and np.all(gamma == 1.0)):
            raise RunError(
                f"the input layer of '{item.name}' was not frozen: max |beta| = {np.abs(beta).max():.3g}, "
                f"max |gamma - 1| = {np.abs(gamma - 1).max():.3g} (optimizer "
                f"'{spec.train.optimizer}' ignores lr_mult=0)")
    else:
        report["gamma"] = gamma.tolist()
        report["beta"] = beta.tolist()
    if norm.stats == "dataset":
        want_mean = stats.mean.astype(np.float32).astype(np.float64)
        want_var = stats.var.astype(np.float32).astype(np.float64)
        if not (np.array_equal(moving_mean, want_mean) and np.array_equal(moving_var, want_var)):
            raise RunError("the input layer's statistics changed during training "
                           f"(max |moving_mean - exact| = {np.abs(moving_mean - want_mean).max():.3g})")
    else:
        start_mean = stats.mean.astype(np.float32).astype(np.float64)
        start_var = stats.var.astype(np.float32).astype(np.float64)
        if np.array_equal(moving_mean, start_mean) and np.array_equal(moving_var, start_var):
            raise RunError("stats: running, but the moving statistics never moved off their "
                           "start: MXNet did not run the input layer's backward pass")
        scale = np.sqrt(stats.var) + 1e-12
        report["moving_mean"] = moving_mean.tolist()
        report["moving_var"] = moving_var.tolist()
        # mean deviation in units of the feature's std; var deviation relative to var.
        report["mean_deviation_in_std"] = (np.abs(moving_mean - stats.mean) / scale).tolist()
        report["var_relative_deviation"] = (np.abs(moving_var - stats.var)
                                            / np.maximum(stats.var, 1e-12)).tolist()
    return report
