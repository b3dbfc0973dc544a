"""The metric catalogue: which MXNet metric names a spec may list, what each one reads (class
indices against probabilities, or values against values), the name MXNet reports it under,
and which way is better. The spec's checks and the training stage both read it here."""
from __future__ import annotations

from typing import Optional

from .catalog_suggest import suggest_text


def _mx():  # type: ignore[no-untyped-def]
    import mxnet as mx  # lazy: loading a spec that names no metric needs no MXNet
    return mx


# What each MXNet metric class reads (by class name, so aliases share an entry): class
# indices against SoftmaxOutput's probabilities, or values against a regression head's
# outputs. F1 and MCC raise on a batch with more than two classes. The Loss family sums the
# outputs whatever they are. Any other registered metric needs arguments a name cannot carry.
METRIC_KINDS = {"Accuracy": "classification", "TopKAccuracy": "classification",
                "CrossEntropy": "classification", "NegativeLogLikelihood": "classification",
                "PCC": "classification", "Perplexity": "classification", "F1": "binary",
                "MCC": "binary", "MAE": "regression", "MSE": "regression",
                "RMSE": "regression", "PearsonCorrelation": "regression", "Loss": "any",
                "Torch": "any", "Caffe": "any"}
BINARY_ONLY = "binary"


def metric_kind(name: str) -> Optional[str]:
    """classification, binary, regression or any; None for a name MXNet does not know."""
    cls = _mx().registry.get_registry(_mx().metric.EvalMetric).get(name.lower())
    return None if cls is None else METRIC_KINDS.get(cls.__name__, "arguments")


def metric_problem(name: str, head: str) -> Optional[str]:
    """Why metric `name` cannot evaluate the head op `head`, or None."""
    kind = metric_kind(name)
    registry = _mx().registry.get_registry(_mx().metric.EvalMetric)
    if kind is None:
        return f"unknown metric '{name}'{suggest_text(name, registry)}"
    try:
        _mx().metric.create(name)
    except Exception as e:  # Perplexity needs ignore_label, TopKAccuracy top_k > 1, ...
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"MXNet's '{name}' metric cannot be created from its name alone ({text})"
    if kind == "arguments":
        return f"MXNet's '{name}' metric needs arguments that eval_metric cannot give"
    classifier = head == "SoftmaxOutput"
    if kind in ("classification", BINARY_ONLY) and not classifier:
        return (f"'{name}' compares class indices with class probabilities, but {head} "
                "outputs values; use mse, mae, rmse or pearsonr")
    if kind == "regression" and classifier:
        return (f"'{name}' compares values with values, but SoftmaxOutput outputs class "
                "probabilities; use acc, ce, nll_loss, pcc (or f1, mcc with two classes)")
    return None


def reported_name(name: str) -> str:
    """The name MXNet reports a metric under: 'acc' -> 'accuracy', 'ce' -> 'cross-entropy'."""
    n = _mx().metric.create(name).get()[0]
    return n[0] if isinstance(n, list) else n


def higher_is_better(reported: str) -> bool:
    return reported.startswith(("accuracy", "top_k", "f1", "mcc", "pearson", "auc"))
