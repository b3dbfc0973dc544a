"""Spec checks that need MXNet's registries: ops and attributes, names and DAG references,
optimizer, metrics and initializers. Each failure is a located SpecError.

Shape inference is the builder's (it needs the graph); data files are the data module's.
"""
from __future__ import annotations

from typing import Any, Dict

from .catalog import AttrError, check_attrs, op_info
from .catalog_suggest import suggest_text
from .model import Spec

# Optimizers for which lr_mult=0 does not freeze a parameter that receives a gradient
# (FIELD-NOTES, re-measured by tests/test_freeze.py). In `dataset` mode beta/gamma get no
# gradient at all (fixed_param_names), so these are only refused in `running` mode.
LR_MULT_UNSAFE: Dict[str, str] = {
    "adadelta": "ignores the learning rate, so lr_mult=0 does not stop it",
    "test": "ignores the learning rate, so lr_mult=0 does not stop it",
    "ftml": "divides by the learning rate: lr_mult=0 turns beta/gamma into NaN",
    "ftrl": "divides by the learning rate: lr_mult=0 turns beta/gamma into NaN",
    "sgld": "draws noise with scale sqrt(learning rate): MXNet fails at lr_mult=0",
}


def check_spec(spec: Spec) -> None:
    """Every check that needs MXNet but not the data or the whole graph."""
    _check_layers(spec)
    _check_training(spec)
    check_schedule(spec)


def check_schedule(spec: Spec) -> None:
    """A poly or cosine schedule decays over the epochs after its warm-up; a warm-up as long as
    the run leaves none, and MXNet then divides by zero when the warm-up ends. Also run by
    train() after an `--epochs` override."""
    sched = spec.train.lr_scheduler
    if sched is None or sched.name not in ("poly", "cosine"):
        return
    if sched.warmup_epochs >= spec.train.epochs:
        raise spec.error(("train", "lr_scheduler", "warmup_epochs"),
                         f"a warm-up of {sched.warmup_epochs} epochs leaves none of the "
                         f"{spec.train.epochs} training epochs for the {sched.name} decay; use "
                         f"fewer warm-up epochs than train.epochs")


def _check_layers(spec: Spec) -> None:
    from ..builder import InputLayerNames, layer_names
    reserved = {spec.output.name: "the output head"}
    for item in spec.all_inputs:
        reserved[item.name] = f"the input '{item.name}'"
        if item.normalize is not None:
            reserved[InputLayerNames.for_input(item.name).node] = f"the input layer of '{item.name}'"
    names = layer_names(spec)
    seen: Dict[str, int] = {}
    for i, (layer, name) in enumerate(zip(spec.layers, names)):
        where = ("layers", i)
        if name in reserved:
            raise spec.error(where + ("name",), f"'{name}' is already the name of {reserved[name]}")
        if name in seen:
            raise spec.error(where + ("name",), f"duplicate layer name '{name}' (also layers"
                                                f"[{seen[name]}])")
        seen[name] = i
        try:
            info = op_info(layer.op)
        except AttrError as e:
            raise spec.error(where + ("op",), e.message) from None
        if layer.op in ("SoftmaxOutput", "LinearRegressionOutput", "LogisticRegressionOutput",
                        "MAERegressionOutput"):
            raise spec.error(where + ("op",), f"{layer.op} is a loss head: put it under "
                                              "`output:`, not in `layers:`")
        try:
            check_attrs(layer.op, layer.attrs)
        except AttrError as e:
            raise spec.error(where + ((e.key,) if e.key else ("op",)), e.message) from None
        param_inputs = [n for n in info.inputs if n != "data"]
        for pname, pspec in layer.params.items():
            if pname not in param_inputs:
                raise spec.error(where + ("params", pname),
                                 f"{layer.op} has no parameter '{pname}'"
                                 f"{suggest_text(pname, param_inputs)}; it has: "
                                 f"{', '.join(param_inputs) or 'none'}")
            if pspec.init is not None:
                _check_initializer(spec, pspec.init, where + ("params", pname, "init"))
        if layer.inputs is not None:
            known = set(names[:i]) | {item.name for item in spec.all_inputs}
            for j, ref in enumerate(layer.inputs):
                if ref in known:
                    continue
                if ref in names[i:]:
                    why = "names this layer or a later one; inputs must come earlier (no cycles)"
                else:
                    why = f"is not an earlier layer or input{suggest_text(ref, sorted(known))}"
                raise spec.error(where + ("inputs", j), f"'{ref}' {why}")


def _check_initializer(spec: Spec, init: Dict[str, Any], where: tuple) -> None:
    import mxnet as mx
    init = dict(init)
    name = init.pop("name", None)
    if not isinstance(name, str):
        raise spec.error(where, "an initializer needs a name: xavier, uniform, normal, zero, "
                                "one, constant, orthogonal, msraprelu, ...")
    try:
        mx.init.create(name, **init)
    except Exception as e:  # ValueError (unknown name) / TypeError (bad kwargs)
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise spec.error(where, f"invalid initializer {name!r}: {text}") from None


def _check_training(spec: Spec) -> None:
    import mxnet as mx
    train = spec.train
    registry = mx.optimizer.Optimizer.opt_registry
    name = train.optimizer.lower()
    if name not in registry:
        raise spec.error(("train", "optimizer"), f"unknown optimizer '{train.optimizer}'"
                         f"{suggest_text(name, registry)}; MXNet has: {', '.join(sorted(registry))}")
    try:
        mx.optimizer.create(name, **train.optimizer_params)
    except Exception as e:  # TypeError for an unknown keyword, ValueError for a bad value
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise spec.error(("train", "optimizer_params"),
                         f"{train.optimizer} does not accept these parameters: {text}") from None
    if name == "groupadagrad" and float(train.optimizer_params.get("wd", 0.0) or 0.0) != 0.0:
        # MXNet asserts wd == 0 inside its first update; say so before training.
        raise spec.error(("train", "optimizer_params"),
                         f"'{train.optimizer}' does not support weight decay (MXNet asserts wd "
                         "== 0); remove wd, or use adagrad")
    running = [i.normalize for i in spec.all_inputs
               if i.normalize is not None and i.normalize.freeze and i.normalize.stats == "running"]
    if running and name in LR_MULT_UNSAFE:
        raise spec.error(("train", "optimizer"),
                         f"'{train.optimizer}' cannot keep the input layer frozen in stats: "
                         f"running mode: it {LR_MULT_UNSAFE[name]}; use stats: dataset (every "
                         "optimizer works there) or sgd, nag, adam, rmsprop, adagrad")
    _check_initializer(spec, train.initializer, ("train", "initializer"))
    for i, metric in enumerate(spec.metrics):
        try:
            mx.metric.create(metric)
        except Exception:
            known = sorted(k for k in mx.metric.EvalMetric._registry  # type: ignore[attr-defined]
                           ) if hasattr(mx.metric.EvalMetric, "_registry") else []
            where = ("train", "eval_metric", i) if isinstance(train.eval_metric, list) and \
                len(train.eval_metric) > 1 else ("train", "eval_metric")
            raise spec.error(where, f"unknown metric '{metric}'{suggest_text(metric, known)}")
