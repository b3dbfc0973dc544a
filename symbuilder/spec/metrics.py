"""The metric catalogue: which metrics a spec may list (MXNet's, and symbuilder's macro-F1),
with which parameters, what each one reads (class indices against probabilities, or values
against values), the name it is reported under, and which way is better. The spec's checks,
the training stage and `evaluate` all read it here.

A train.eval_metric entry is a name (`acc`) or a mapping `{name: top_k_accuracy, top_k: 5}`
whose other keys are the metric constructor's keyword arguments.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .catalog_suggest import suggest_text
from .fields import describe
from .keywords import check_keywords, signature_defaults

Entry = Union[str, Dict[str, Any]]
Path = Tuple[Any, ...]
Fail = Callable[[Path, str], Exception]

# What each metric class reads (by class name, so aliases share an entry): class indices
# against SoftmaxOutput's probabilities, or values against a regression head's outputs. F1
# and MCC raise on a batch with more than two classes. The Loss family sums the outputs
# whatever they are. Any other registered metric needs arguments a spec cannot carry.
METRIC_KINDS = {"Accuracy": "classification", "TopKAccuracy": "classification",
                "CrossEntropy": "classification", "NegativeLogLikelihood": "classification",
                "PCC": "classification", "Perplexity": "classification", "F1": "binary",
                "MCC": "binary", "MacroF1": "classification", "MAE": "regression",
                "MSE": "regression", "RMSE": "regression", "PearsonCorrelation": "regression",
                "Loss": "any", "Torch": "any", "Caffe": "any"}
BINARY_ONLY = "binary"
MACRO_F1 = "f1_macro"
# Constructor keywords symbuilder sets itself: the entry's `name` key names the metric, and
# every metric is handed the head's one output and label directly.
METRIC_OWNED = {"name": "the entry's name picks the metric; MXNet derives the reported name",
                "output_names": "symbuilder hands each metric the head's one output",
                "label_names": "symbuilder hands each metric the head's one label"}
# Values MXNet accepts without complaint but misreads: F1 treats any average but 'macro' as
# micro; TopKAccuracy asserts top_k > 1 (1 is plain accuracy).
METRIC_CHOICES = {"average": ("macro", "micro")}
METRIC_MINIMUM = {"top_k": (2, "top_k 1 is plain accuracy: use acc")}

_registered: List[Any] = []


def _mx():  # type: ignore[no-untyped-def]
    import mxnet as mx  # lazy: loading a spec that names no metric needs no MXNet
    if not _registered:
        _registered.append(_register_macro_f1(mx))
    return mx


def _registry() -> Dict[str, type]:
    return _mx().registry.get_registry(_mx().metric.EvalMetric)


def confusion_counts(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """counts[i, j]: rows whose true class is i and predicted class is j."""
    flat = truth.astype(np.int64) * classes + predicted.astype(np.int64)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def macro_f1(counts: Optional[np.ndarray]) -> float:
    """The mean of the per-class F1 over the classes that occur as truth or prediction
    (scikit-learn's f1_score(average='macro')); nan before any row, as MXNet's metrics."""
    if counts is None:
        return float("nan")
    tp = np.diag(counts).astype(np.float64)
    predicted, support = counts.sum(axis=0), counts.sum(axis=1)
    seen = (predicted + support) > 0
    f1 = 2 * tp[seen] / (predicted[seen] + support[seen])  # 2tp / (2tp + fp + fn)
    return float(f1.mean()) if f1.size else float("nan")


def _register_macro_f1(mx: Any) -> type:
    """Register symbuilder's multi-class macro-F1 (MXNet's F1 is binary, and its 'macro'
    averages over batches, not classes): a confusion matrix accumulated on the host."""

    @mx.metric.register
    @mx.metric.alias(MACRO_F1)
    class MacroF1(mx.metric.EvalMetric):  # type: ignore[misc, valid-type]
        """Macro-averaged F1 over the head's classes, exact over every row it is given."""

        def __init__(self, name: str = MACRO_F1, output_names: Any = None,
                     label_names: Any = None) -> None:
            super().__init__(name, output_names=output_names, label_names=label_names,
                             has_global_stats=True)

        def reset(self) -> None:
            super().reset()
            self.counts: Optional[np.ndarray] = None
            self.global_counts: Optional[np.ndarray] = None

        def reset_local(self) -> None:
            super().reset_local()
            self.counts = None

        def update(self, labels: Sequence[Any], preds: Sequence[Any]) -> None:
            for label, pred in zip(labels, preds):
                probs = pred.asnumpy()  # (N, K), or (N, K, ...) with multi_output
                truth = label.asnumpy().ravel()
                counts = confusion_counts(truth, probs.argmax(axis=1).ravel(), probs.shape[1])
                self.counts = counts if self.counts is None else self.counts + counts
                self.global_counts = (counts if self.global_counts is None
                                      else self.global_counts + counts)
                self.num_inst += len(truth)
                self.global_num_inst += len(truth)

        def get(self) -> Tuple[str, float]:
            return self.name, macro_f1(self.counts)

        def get_global(self) -> Tuple[str, float]:
            return self.name, macro_f1(self.global_counts)

    return MacroF1


def metric_name(entry: Entry) -> str:
    return entry if isinstance(entry, str) else entry["name"]


def metric_params(entry: Entry) -> Dict[str, Any]:
    return {} if isinstance(entry, str) else {k: v for k, v in entry.items() if k != "name"}


def create_metric(entry: Entry) -> Any:
    """The mx.metric.EvalMetric an entry means (checked by check_metric first)."""
    return _mx().metric.create(metric_name(entry), **metric_params(entry))


def metric_kind(name: str) -> Optional[str]:
    """classification, binary, regression, any or arguments; None for an unknown name."""
    cls = _registry().get(name.lower())
    return None if cls is None else METRIC_KINDS.get(cls.__name__, "arguments")


def top_k(entry: Entry) -> Optional[int]:
    """The top_k of a TopKAccuracy entry, else None."""
    cls = _registry().get(metric_name(entry).lower())
    return metric_params(entry).get("top_k") if cls is _mx().metric.TopKAccuracy else None


def check_metric(entry: Entry, head: str, where: Path, fail: Fail) -> None:
    """The entry names a metric, its parameters fit the constructor's real signature, MXNet
    creates it, and it reads what the head `head` outputs; else fail(path, message)."""
    name, params = metric_name(entry), metric_params(entry)
    name_path = where if isinstance(entry, str) else where + ("name",)
    kind = metric_kind(name)
    if kind is None:
        raise fail(name_path, f"unknown metric '{name}'{suggest_text(name, _registry())}")
    cls = _registry()[name.lower()]
    check_keywords(f"metric {name}", params, signature_defaults(cls), where, fail,
                   owned=METRIC_OWNED)
    for key, value in params.items():
        _check_param(key, value, signature_defaults(cls)[key], where + (key,), fail)
    try:
        create_metric(entry)
    except Exception as e:  # Perplexity's ignore_label, ...
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise fail(where, f"MXNet cannot create the metric '{name}' from these parameters "
                          f"({text})") from None
    if kind == "arguments":
        raise fail(name_path, f"MXNet's '{name}' metric needs arguments that eval_metric "
                              "cannot give")
    problem = _head_problem(name, kind, head)
    if problem:
        raise fail(name_path, problem)


def _check_param(key: str, value: Any, default: Any, path: Path, fail: Fail) -> None:
    """What check_keywords cannot know: an integer for an integer, and the values MXNet
    accepts but misreads."""
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(path, f"expected an integer, received {describe(value)}")
    if key in METRIC_CHOICES and value not in METRIC_CHOICES[key]:
        choices = METRIC_CHOICES[key]
        raise fail(path, f"expected one of {', '.join(choices)}, received "
                         f"{describe(value)}{suggest_text(str(value), choices)}")
    if key in METRIC_MINIMUM and value < METRIC_MINIMUM[key][0]:
        low, why = METRIC_MINIMUM[key]
        raise fail(path, f"expected an integer >= {low} ({why}), received {describe(value)}")


def _head_problem(name: str, kind: str, head: str) -> Optional[str]:
    classifier = head == "SoftmaxOutput"
    if kind in ("classification", BINARY_ONLY) and not classifier:
        return (f"'{name}' compares class indices with class probabilities, but {head} "
                "outputs values; use mse, mae, rmse or pearsonr")
    if kind == "regression" and classifier:
        return (f"'{name}' compares values with values, but SoftmaxOutput outputs class "
                "probabilities; use acc, ce, nll_loss, pcc, f1_macro (or f1, mcc with two "
                "classes)")
    return None


def reported_name(entry: Entry) -> str:
    """The name a metric is reported under: 'acc' -> 'accuracy', 'ce' -> 'cross-entropy',
    {name: top_k_accuracy, top_k: 5} -> 'top_k_accuracy_5'."""
    n = create_metric(entry).get()[0]
    return n[0] if isinstance(n, list) else n


def watched(entries: Sequence[Entry], text: str) -> List[str]:
    """The reported names of the entries `text` names, by spec name or reported name."""
    found: List[str] = []
    for entry in entries:
        reported = reported_name(entry)
        if text.lower() in (metric_name(entry).lower(), reported.lower()) and reported not in found:
            found.append(reported)
    return found


def higher_is_better(reported: str) -> bool:
    return reported.startswith(("accuracy", "top_k", "f1", "mcc", "pearson", "auc"))
