"""Spec checks that need MXNet's registries: ops and attributes, names and DAG references,
optimizer, metrics and initializers. Each failure is a located SpecError.

Shape inference is the builder's (it needs the graph); data files are the data module's.
"""
from __future__ import annotations

from typing import Any, Dict

from .catalog import AttrError, check_attrs, op_info
from ..errors import mxnet_message
from .catalog_suggest import suggest_text
from .keywords import check_keywords, signature_defaults
from .metrics import check_metric, metric_name, reported_name, top_k, watched
from .names import InputLayerNames, layer_names
from .model import DERIVED_FILE_NAMES, HEADS, NAME_MAX, Spec

# Optimizers for which lr_mult=0 does not freeze a parameter that receives a gradient
# (docs/mxnet-traps.md, re-measured by tests/test_freeze.py). In `dataset` mode beta/gamma get no
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
    check_name(spec)
    _check_layers(spec)
    _check_embedding_inputs(spec)
    _check_training(spec)
    check_schedule(spec)


def check_schedule(spec: Spec) -> None:
    """A poly or cosine schedule decays over the epochs after its warm-up; a warm-up as long as
    the run leaves none, and MXNet then divides by zero when the warm-up ends. Also run by
    train() after an `--epochs` override."""
    sched = spec.train.lr_scheduler
    if sched is None:
        return
    base_lr = spec.train.optimizer_params.get("learning_rate", 0.01)  # as train.lr_scheduler
    if isinstance(base_lr, (int, float)) and sched.warmup_begin_lr > base_lr:
        # MXNet's LRScheduler raises this when training starts
        raise spec.error(("train", "lr_scheduler", "warmup_begin_lr"),
                         f"a warm-up must rise to the learning rate: warmup_begin_lr "
                         f"{sched.warmup_begin_lr:g} is above learning_rate {base_lr:g}")
    if sched.name not in ("poly", "cosine"):
        return
    if sched.warmup_epochs >= spec.train.epochs:
        raise spec.error(("train", "lr_scheduler", "warmup_epochs"),
                         f"a warm-up of {sched.warmup_epochs} epochs leaves none of the "
                         f"{spec.train.epochs} training epochs for the {sched.name} decay; use "
                         f"fewer warm-up epochs than train.epochs")


def _check_layers(spec: Spec) -> None:
    # The output head's names are checked where the graph is built (builder.GraphNames),
    # after every layer's, so a clash is reported at the second name.
    reserved: Dict[str, str] = {}
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
        _check_not_a_loss(spec, i, info)
        _check_counts(spec, i)
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




def _check_not_a_loss(spec: Spec, index: int, info: Any) -> None:
    """A layer with a label input is a loss: the network has one label, the head's."""
    op = spec.layers[index].op
    where = ("layers", index, "op")
    if op == "Softmax":
        raise spec.error(where, "'Softmax' is MXNet's deprecated name of SoftmaxOutput, a loss "
                                "head with its own label input; use softmax (the activation) as "
                                "a layer, or SoftmaxOutput under output:")
    if op in HEADS:
        raise spec.error(where, f"{op} is a loss head: put it under `output:`, not in `layers:`")
    if "label" in info.inputs:
        raise spec.error(where, f"{op} is a loss with its own label input; the network's one "
                                f"label is the output head's ({', '.join(HEADS)})")


# More outputs than this make MXNet's graph calls quadratic: 30,000 split outputs take 6 s
# to list, a million hang `validate` (measured); 4,096 take 0.1 s.
MAX_OUTPUTS = 4096


def _check_counts(spec: Spec, index: int) -> None:
    """Counts that size MXNet's graph itself, capped before MXNet is asked to build it."""
    value = spec.layers[index].attrs.get("num_outputs")
    if isinstance(value, int) and value > MAX_OUTPUTS:
        raise spec.error(("layers", index, "num_outputs"),
                         f"expected at most {MAX_OUTPUTS} outputs, received {value}")


def _check_embedding_inputs(spec: Spec) -> None:
    """Embedding looks its input up as integer ids: it must read raw inputs (normalize:
    none), never what an input layer made of them (normalized floats, truncated to ids)."""
    names = layer_names(spec)
    normalized = {i.name: i.normalize is not None for i in spec.all_inputs}
    reads: Dict[str, set] = {name: {name} for name in normalized}  # node -> inputs it depends on
    previous = spec.all_inputs[0].name
    for i, (layer, name) in enumerate(zip(spec.layers, names)):
        refs = layer.inputs if layer.inputs is not None else [previous]
        reads[name] = set().union(*(reads.get(r, set()) for r in refs))
        previous = name
        through = sorted(n for n in reads[name] if normalized[n])
        if layer.op == "Embedding" and through:
            raise spec.error(("layers", i, "inputs") if layer.inputs else ("layers", i, "op"),
                             f"Embedding looks its input up as integer ids, but it reads the "
                             f"input layer of '{through[0]}' (normalized floats); read an input "
                             "with normalize: none")


def initializer_defaults(name: str) -> Dict[str, Any]:
    """The keyword arguments of MXNet's initializer `name` (KeyError if there is none)."""
    import mxnet as mx
    return signature_defaults(mx.registry.get_registry(mx.init.Initializer)[name.lower()])


def make_initializer(spec: Spec, init: Dict[str, Any], where: tuple) -> Any:
    """The mx.init.Initializer a spec's `{name: ..., **kwargs}` means; a located error at the
    name (unknown, with did-you-mean) or at the keyword (unknown, or of the wrong type)."""
    import mxnet as mx
    registry = mx.registry.get_registry(mx.init.Initializer)
    name = init.get("name")
    if not isinstance(name, str):
        raise spec.error(where + ("name",) if "name" in init else where,
                         "an initializer needs a name: "
                         f"{', '.join(sorted(registry))}")
    if name.lower() not in registry:
        raise spec.error(where + ("name",), f"unknown initializer '{name}'"
                         f"{suggest_text(name, registry)}; MXNet has: {', '.join(sorted(registry))}")
    kwargs = {k: v for k, v in init.items() if k != "name"}
    check_keywords(f"initializer {name}", kwargs, initializer_defaults(name), where, spec.error)
    try:
        return mx.init.create(name, **kwargs)
    except Exception as e:  # a value MXNet's constructor refuses (e.g. FusedRNN's mode)
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise spec.error(where, f"invalid initializer {name!r}: {text}") from None


def _check_initializer(spec: Spec, init: Dict[str, Any], where: tuple) -> None:
    make_initializer(spec, init, where)


# Optimizer keywords that symbuilder (or Module.init_optimizer) sets itself.
OPTIMIZER_OWNED = {
    "sym": "Module passes the symbol, which carries every lr_mult and wd_mult",
    "param_idx2name": "Module maps the parameters itself",
    "param_dict": "Module maps the parameters itself",
    "lr_scheduler": "use train.lr_scheduler",
    "begin_num_update": "a --resume restores the update count",
}


def optimizer_defaults(name: str) -> Dict[str, Any]:
    import mxnet as mx
    return signature_defaults(mx.optimizer.Optimizer.opt_registry[name])


def _check_optimizer(spec: Spec) -> None:
    """The optimizer's name, its parameters against its real signature, and one trial update
    on a small weight: whatever MXNet would refuse at the first batch is refused here."""
    import warnings

    import mxnet as mx
    train = spec.train
    registry = mx.optimizer.Optimizer.opt_registry
    name = train.optimizer.lower()
    if name not in registry:
        raise spec.error(("train", "optimizer"), f"unknown optimizer '{train.optimizer}'"
                         f"{suggest_text(name, registry)}; MXNet has: {', '.join(sorted(registry))}")
    check_keywords(name, train.optimizer_params, optimizer_defaults(name),
                   ("train", "optimizer_params"), spec.error, owned=OPTIMIZER_OWNED)
    if name == "groupadagrad" and float(train.optimizer_params.get("wd", 0.0) or 0.0) != 0.0:
        # MXNet asserts wd == 0 inside its first update; say why, and what to do.
        raise spec.error(("train", "optimizer_params"),
                         f"'{train.optimizer}' does not support weight decay (MXNet asserts wd "
                         "== 0); remove wd, or use adagrad")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notes (ccsgd) are not the user's error
            updater = mx.optimizer.get_updater(mx.optimizer.create(name, **train.optimizer_params))
            weight = mx.nd.ones((2, 2))
            updater(0, mx.nd.full((2, 2), 0.5), weight)
            weight.wait_to_read()
    except Exception as e:  # ValueError/AssertionError/MXNetError from the optimizer's code
        text = mxnet_message(e) if str(e) else type(e).__name__
        raise spec.error(("train", "optimizer_params"),
                         f"{train.optimizer} fails with these parameters: {text}") from None


def _check_training(spec: Spec) -> None:
    train = spec.train
    _check_optimizer(spec)
    name = train.optimizer.lower()
    running = [i.normalize for i in spec.all_inputs
               if i.normalize is not None and i.normalize.freeze and i.normalize.stats == "running"]
    if running and name in LR_MULT_UNSAFE:
        raise spec.error(("train", "optimizer"),
                         f"'{train.optimizer}' cannot keep the input layer frozen in stats: "
                         f"running mode: it {LR_MULT_UNSAFE[name]}; use stats: dataset (every "
                         "optimizer works there) or sgd, nag, adam, rmsprop, adagrad")
    _check_initializer(spec, train.initializer, ("train", "initializer"))
    _check_metrics(spec)


def metric_path(spec: Spec, index: int) -> tuple:
    """Where entry `index` of train.eval_metric sits: at its item when the spec wrote a list,
    at the key when it wrote one name or mapping (or nothing: the head's defaults)."""
    listed = spec.train.eval_metric
    if listed is None:
        return ("train",)
    base = ("train", "eval_metric")
    item = spec.locations.of(base + (index,))
    return base + (index,) if len(listed) > 1 or item != spec.locations.of(base) else base


def _check_metrics(spec: Spec) -> None:
    """Each metric exists, its parameters fit its constructor, MXNet creates it, and it reads
    the head's outputs (a classification metric needs SoftmaxOutput, a regression metric a
    regression head); early stopping watches exactly one of them."""
    for i, entry in enumerate(spec.metrics):
        check_metric(entry, spec.output.op, metric_path(spec, i), spec.error)
    es = spec.train.early_stopping
    if es is None:
        return
    found = watched(spec.metrics, es.metric)
    where = ("train", "early_stopping", "metric")
    if not found:
        listed = ", ".join(f"{metric_name(m)} ({reported_name(m)})" for m in spec.metrics)
        raise spec.error(where, f"'{es.metric}' is not among train.eval_metric; it watches "
                                f"one of: {listed}")
    if len(found) > 1:
        raise spec.error(where, f"'{es.metric}' names several of train.eval_metric "
                                f"({', '.join(found)}); give one of these reported names")


def check_metric_outputs(spec: Spec, num_outputs: int) -> None:
    """A top_k must leave some of the head's outputs out, or every row counts as a hit
    (MXNet's TopKAccuracy fails outright beyond the outputs). Run by the graph checks: the
    head's output count needs the Model."""
    for i, entry in enumerate(spec.metrics):
        k = top_k(entry)
        if k is not None and k >= num_outputs:
            raise spec.error(metric_path(spec, i) + ("top_k",),
                             f"expected a top_k below the head's {num_outputs} outputs (the "
                             f"top {k} would hold every class), received {k}")


def check_name(spec: Spec) -> None:
    """The spec's name becomes file names; the longest one derived from it must fit a file
    system's NAME_MAX of 255 bytes."""
    longest = max(len(t.format(name=spec.name, epoch="9" * max(4, len(str(spec.train.epochs))))
                      .encode()) for t in DERIVED_FILE_NAMES)
    if longest > NAME_MAX:
        room = NAME_MAX - (longest - len(spec.name.encode()))
        raise spec.error(("name",), f"a name of {len(spec.name.encode())} bytes is too long: the "
                                    f"longest file named after it would have {longest} bytes, "
                                    f"beyond the file system's {NAME_MAX}; use at most {room}")
