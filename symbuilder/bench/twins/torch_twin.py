"""The spec's architecture as a torch.nn.Module, and the PyTorch contender that trains it.
torch is optional: nothing here imports it before a twin is asked for."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...data.iterators import labels_for
from ...graph import build_symbol
from ...inputlayer import InputLayerNames
from ..harness import (HAND_WRITTEN, TORCH, Contender, TrainingRun, contender,
                       effective_multipliers, input_layer_moments, input_names)
from . import torch_ops
from .plan import loss_kind, twin_plan
from .registry import ParamMap, TwinUnsupported, lookup_builder

TORCH_OPTIMIZERS = ("sgd", "nag", "adam")


def torch_available() -> Optional[str]:
    """torch's version, or None where it is not installed."""
    try:
        import torch
    except Exception:  # ImportError, or a broken install
        return None
    return str(torch.__version__)


def _input_norm(item: Any, pmap: ParamMap) -> Any:
    """The frozen-affine input layer (weight/bias at 1/0, frozen as the spec says; in
    dataset mode always the stored statistics), or the identity without normalize."""
    import torch
    norm = item.normalize
    if norm is None:
        return torch.nn.Identity()
    bn = torch_ops.mx_batch_norm(int(item.shape[0]), norm.eps, norm.momentum, fix_gamma=False,
                                 use_global_stats=norm.stats == "dataset", frozen=norm.freeze)
    names = InputLayerNames.for_input(item.name)
    pmap.update({names.gamma: bn.weight, names.beta: bn.bias,
                 names.moving_mean: bn.running_mean, names.moving_var: bn.running_var})
    return bn


def torch_twin(spec: Any, symbol: Any = None) -> Tuple[Any, Dict[str, Any]]:
    """The spec's architecture as a torch.nn.Module (input BatchNorms with weight/bias
    frozen at 1/0 and, in dataset mode, always the stored statistics), and a map from the
    symbol's parameter names to its tensors. Returns the head's input (logits)."""
    import torch
    symbol = symbol if symbol is not None else build_symbol(spec)
    steps, _ = twin_plan(spec, symbol, "torch")
    pmap: ParamMap = {}

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_names = input_names(spec)
            self.norms = torch.nn.ModuleList([_input_norm(item, pmap)
                                              for item in spec.all_inputs])
            self.steps = steps
            self.layers = torch.nn.ModuleList([lookup_builder("torch", step.op)(step, pmap)
                                               for step in steps])

        def forward(self, *xs: Any) -> Any:
            produced = {n: norm(x) for n, norm, x in zip(self.input_names, self.norms, xs)}
            previous = produced[self.input_names[0]] if len(xs) == 1 else None
            for step, layer in zip(self.steps, self.layers):
                ins = [produced[r] for r in step.refs] if step.refs else [previous]
                previous = produced[step.name] = layer(*ins)
            return previous

    return Twin(), pmap


def torch_head(spec: Any, out: Any) -> Any:
    import torch
    kind = loss_kind(spec)
    if kind == "softmax":
        return torch.softmax(out, dim=-1)
    if kind == "logistic":
        return torch.sigmoid(out)
    return out


def _torch_loss(kind: str) -> Any:
    """The head's loss, as a batch mean (what torch's optimizers expect)."""
    import torch.nn.functional as F

    def loss_fn(out: Any, label: Any) -> Any:
        if kind == "softmax":
            return F.cross_entropy(out, label)
        label = label.reshape(out.shape)
        if kind == "l2":
            return 0.5 * (out - label).pow(2).sum(1).mean()
        if kind == "l1":
            return (out - label).abs().sum(1).mean()
        return F.binary_cross_entropy_with_logits(out, label, reduction="none").sum(1).mean()
    return loss_fn


def _torch_optimizer(opt_name: str, params: Dict[str, Any], pmap: ParamMap,
                     multipliers: Dict[str, Tuple[float, float]]) -> Any:
    """The spec's optimizer over one group per trainable tensor, with its lr/wd multipliers."""
    import torch
    lr = float(params.get("learning_rate", 0.01))
    wd = float(params.get("wd", 0.0))
    groups = []
    for key, tensor in pmap.items():
        if isinstance(tensor, torch.nn.Parameter) and tensor.requires_grad:
            lr_mult, wd_mult = multipliers.get(key, (1.0, 1.0))
            groups.append({"params": [tensor], "lr": lr * lr_mult, "weight_decay": wd * wd_mult})
    if opt_name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(float(params.get("beta1", 0.9)),
                                                      float(params.get("beta2", 0.999))),
                                eps=float(params.get("epsilon", 1e-8)))
    return torch.optim.SGD(groups, lr=lr, momentum=float(params.get("momentum", 0.0)),
                           nesterov=opt_name == "nag")


def torch_contender(spec: Any, data: Any, *, threads: int = 1) -> Contender:
    """The spec's network in PyTorch on the CPU, trained as a PyTorch user does: eager
    forward, loss, backward, optimizer.step, accuracy/loss read per batch (.item()); the
    same batch size, input statistics, optimizer (sgd, nag or adam) and per-parameter
    lr/wd multipliers; torch's default initialisation; the last batch is short, not
    padded; no validation. One thread by default: torch's OpenMP at 2 threads collapsed on
    a shared 2-core machine whose cores were busy (an epoch of the digits CNN took 3.8 s
    instead of 0.2 s, torch alone, measured), while MXNet's small operators are
    single-threaded below OpenMP's threshold anyway."""
    import torch
    opt_name = _supported_optimizer(spec)
    symbol = build_symbol(spec)
    twin_plan(spec, symbol, "torch")
    multipliers = effective_multipliers(spec, symbol)
    names = input_names(spec)
    batch_size = min(spec.train.batch_size, len(data.train))
    kind = loss_kind(spec)
    loss_fn = _torch_loss(kind)
    c = contender(TORCH, f"torch {torch_available()}, {threads} thread(s), .item() per batch, "
                         "short last batch, no validation", twin=HAND_WRITTEN)

    def run(epochs: int) -> TrainingRun:
        torch.set_num_threads(threads)
        seed = spec.train.seed
        torch.manual_seed(seed)
        start = time.perf_counter()
        net, pmap = torch_twin(spec, symbol)
        xs = [torch.from_numpy(np.ascontiguousarray(data.train.inputs[n], dtype=np.float32))
              for n in names]
        y_np = labels_for(spec, data.train)
        y = torch.from_numpy(y_np.astype(np.int64 if kind == "softmax" else np.float32))
        with torch.no_grad():
            for key, value in input_layer_moments(spec, data.train.inputs).items():
                pmap[key].copy_(torch.from_numpy(value))
        opt = _torch_optimizer(opt_name, dict(spec.train.optimizer_params), pmap, multipliers)
        net.train()
        generator = torch.Generator().manual_seed(seed)
        seconds: List[float] = []
        for _ in range(epochs):
            t = time.perf_counter()
            correct, total_loss = _torch_epoch(net, opt, loss_fn, xs, y, kind, batch_size,
                                               torch.randperm(len(y), generator=generator))
            seconds.append(time.perf_counter() - t)
        wall = time.perf_counter() - start
        c.last["net"], c.last["pmap"] = net, pmap
        c.last["train"] = {"loss": total_loss / len(y), "accuracy": correct / len(y)}
        return TrainingRun(wall, seconds, len(y))

    c.run = run
    return c


def _supported_optimizer(spec: Any) -> str:
    """The spec's optimizer name, or TwinUnsupported for what the twin does not do."""
    opt_name = spec.train.optimizer.lower()
    if opt_name not in TORCH_OPTIMIZERS:
        raise TwinUnsupported(f"optimizer {spec.train.optimizer} (the PyTorch twin knows "
                              f"{', '.join(TORCH_OPTIMIZERS)})")
    if any(c.startswith("gpu") for c in spec.train.context):
        raise TwinUnsupported("the PyTorch twin runs on the CPU only")
    return opt_name


def _torch_epoch(net: Any, opt: Any, loss_fn: Any, xs: List[Any], y: Any, kind: str,
                 batch_size: int, order: Any) -> Tuple[int, float]:
    """One epoch over the samples in `order`, as a PyTorch user writes it (the last batch
    short); (correct predictions, summed loss), read per batch with .item()."""
    correct, total_loss = 0, 0.0
    for lo in range(0, len(y), batch_size):
        idx = order[lo:lo + batch_size]
        label = y[idx]
        out = net(*[x[idx] for x in xs])
        loss = loss_fn(out, label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total_loss += loss.item() * len(idx)
        if kind == "softmax":
            correct += int((out.argmax(1) == label).sum().item())
    return correct, total_loss
