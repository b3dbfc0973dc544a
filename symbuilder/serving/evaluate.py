"""`symbuilder evaluate`: an export judged on a labelled file, on exactly the rows given.

Classifiers: the spec's own metrics, a confusion matrix, per-class precision, recall, F1 and
support, macro and weighted averages, ROC AUC (binary, and one-vs-rest per class for more).
Regressions: the spec's metrics, MAE, RMSE, R² and a residual summary. The numbers come from
numpy here (float64), the predictions from ONNX Runtime on the export, as a server would run it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import DataError, UsageError
from .plots import plot_confusion_matrix, plot_roc
from .audit import load_export
from .predict import predict
from .samples import label_column


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """counts[i, j]: rows whose true class is i and predicted class is j."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (truth.astype(np.int64), predicted.astype(np.int64)), 1)
    return counts


def per_class(counts: np.ndarray) -> Dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where a ratio has no denominator, as
    scikit-learn reports it with zero_division=0)."""
    tp = np.diag(counts).astype(np.float64)
    predicted = counts.sum(axis=0).astype(np.float64)
    support = counts.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def roc_auc(positive: np.ndarray, score: np.ndarray) -> Optional[float]:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count half), from average ranks (Mann-Whitney U). None without both kinds."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # Average rank of each run of equal scores (1-based).
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(score)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_points(positive: np.ndarray, score: np.ndarray) -> Dict[str, List[float]]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-score, kind="mergesort")
    hits = positive.astype(bool)[order]
    distinct = np.r_[np.flatnonzero(np.diff(score[order])), len(score) - 1]
    tps = np.cumsum(hits)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(int(hits.sum()), 1)]
    fpr = np.r_[0.0, fps / max(int((~hits).sum()), 1)]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def classification_report(truth: np.ndarray, probabilities: np.ndarray,
                          classes: Sequence[Any]) -> Dict[str, Any]:
    """Every figure for a classifier, from true class indices and class probabilities."""
    k = len(classes)
    predicted = probabilities.argmax(axis=1)
    counts = confusion_matrix(truth, predicted, k)
    stats = per_class(counts)
    support = stats["support"]
    weights = support / support.sum()
    averages = {kind: {m: float(stats[m].mean() if kind == "macro" else (stats[m] * weights).sum())
                       for m in ("precision", "recall", "f1")}
                for kind in ("macro", "weighted")}
    if k == 2:
        auc: Dict[str, Optional[float]] = {"binary": roc_auc(truth == 1, probabilities[:, 1])}
    else:
        auc = {str(c): roc_auc(truth == i, probabilities[:, i]) for i, c in enumerate(classes)}
        known = [v for v in auc.values() if v is not None]
        auc["macro_ovr"] = float(np.mean(known)) if known else None
    return {
        "task": "classification", "rows": int(len(truth)),
        "accuracy": float((predicted == truth).mean()),
        "classes": [str(c) for c in classes],
        "confusion_matrix": counts.tolist(),
        "per_class": {str(c): dict({m: float(stats[m][i]) for m in ("precision", "recall", "f1")},
                                   support=int(support[i])) for i, c in enumerate(classes)},
        "macro": averages["macro"], "weighted": averages["weighted"],
        "roc_auc": auc,
    }


def regression_report(truth: np.ndarray, predicted: np.ndarray) -> Dict[str, Any]:
    """MAE, RMSE, R² and the residuals' quantiles (residual = predicted - true)."""
    truth = truth.astype(np.float64).reshape(len(truth), -1)
    predicted = predicted.astype(np.float64).reshape(truth.shape)
    residual = predicted - truth
    total = ((truth - truth.mean(axis=0)) ** 2).sum()
    r2 = float(1 - (residual ** 2).sum() / total) if total > 0 else None
    quantiles = np.quantile(residual, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {
        "task": "regression", "rows": int(len(truth)),
        "mae": float(np.abs(residual).mean()), "rmse": float(np.sqrt((residual ** 2).mean())),
        "r2": r2,
        "residuals": {"mean": float(residual.mean()), "std": float(residual.std()),
                      **dict(zip(("min", "q25", "median", "q75", "max"), map(float, quantiles)))},
    }


def _labels_of(csv_path: str, label: str, manifest: Mapping[str, Any]) -> np.ndarray:
    from ..data.sources import read_table  # lazy: only a labelled file needs the data readers
    table = read_table(csv_path, "csv", label=label)
    if table.labels is None:
        raise DataError(f"no label column '{label}' to evaluate against", file=csv_path)
    return table.labels


def class_indices(labels: np.ndarray, classes: Sequence[Any], csv_path: str) -> np.ndarray:
    """Each row's class index in the manifest's class list (compared as text, as the CSV
    holds it); a label the model never saw is a located error."""
    index = {str(c): i for i, c in enumerate(classes)}
    values = [str(v) for v in labels.tolist()]
    unknown = sorted({v for v in values if v not in index})
    if unknown:
        raise DataError(f"labels {', '.join(map(repr, unknown[:5]))} are not among the model's "
                        f"classes ({', '.join(map(str, classes))})", file=csv_path)
    return np.array([index[v] for v in values], dtype=np.int64)


def spec_metrics(manifest: Mapping[str, Any], truth: np.ndarray, outputs: np.ndarray
                 ) -> Dict[str, float]:
    """The spec's own eval_metric (names, or mappings with parameters: top_k_accuracy,
    f1_macro, ...), computed by the training stage's metrics on exactly these rows."""
    from ..training.metrics import evaluate_arrays  # lazy: imports MXNet
    import mxnet as mx  # lazy: only a spec's metrics need MXNet here
    entries = (manifest.get("spec") or {}).get("train", {}).get("eval_metric") or []
    if isinstance(entries, (str, dict)):
        entries = [entries]
    return evaluate_arrays(list(entries), truth.astype(np.float32), mx.nd.array(outputs))


def evaluate_export(folder: str, csv_path: str, *, out_dir: Optional[str] = None,
                    manifest_sha256: Optional[str] = None) -> Dict[str, Any]:
    """Run the export on a labelled CSV and judge it; write the figures (and plots) into
    `out_dir` when given."""
    manifest = load_export(folder, manifest_sha256=manifest_sha256)
    label = label_column(manifest)
    if label is None:
        raise UsageError("the manifest does not name the label column", file=folder)
    predictions = predict(folder, csv_path, manifest_sha256=manifest_sha256)
    labels = _labels_of(csv_path, label, manifest)
    outputs = np.asarray(predictions.values, dtype=np.float64)
    classes = manifest.get("classes")
    if classes:
        truth = class_indices(labels, classes, csv_path)
        report = classification_report(truth, outputs, classes)
    else:
        try:
            truth = labels.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"regression labels in column '{label}' must be numbers",
                            file=csv_path) from None
        report = regression_report(truth, outputs)
    report["metrics"] = spec_metrics(manifest, truth, outputs.astype(np.float32))
    report["export"] = folder
    report["data"] = csv_path
    if out_dir:
        write_report(report, out_dir, outputs=outputs, truth=truth)
    return report


def write_report(report: Mapping[str, Any], out_dir: str, *, outputs: np.ndarray,
                 truth: np.ndarray) -> List[str]:
    """evaluation.json and the plots, in `out_dir` (created; existing files of these names
    are refused, never overwritten)."""
    os.makedirs(out_dir, exist_ok=True)
    names = ["evaluation.json"]
    if report["task"] == "classification":
        names.append("confusion_matrix.png")
        if len(report["classes"]) == 2:
            names.append("roc.png")
    taken = [n for n in names if os.path.lexists(os.path.join(out_dir, n))]
    if taken:
        raise UsageError(f"already holds {', '.join(taken)}; evaluate never overwrites a file "
                         "(choose another --out)", file=out_dir)
    with open(os.path.join(out_dir, "evaluation.json"), "x") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    if "confusion_matrix.png" in names:
        plot_confusion_matrix(np.array(report["confusion_matrix"]), report["classes"],
                              os.path.join(out_dir, "confusion_matrix.png"))
    if "roc.png" in names:
        points = roc_points(truth == 1, outputs[:, 1])
        plot_roc(points, report["roc_auc"]["binary"], os.path.join(out_dir, "roc.png"))
    return names


def report_text(report: Mapping[str, Any]) -> str:
    """The figures as a readable table."""
    lines = [f"{report['export']} on {report['data']}: {report['rows']} rows"]
    if report.get("metrics"):
        lines.append("spec metrics: " + "  ".join(f"{k}={v:.4f}"
                                                 for k, v in report["metrics"].items()))
    if report["task"] == "regression":
        r2 = report["r2"]
        lines.append(f"MAE {report['mae']:.6g}  RMSE {report['rmse']:.6g}  "
                     f"R² {'n/a' if r2 is None else f'{r2:.4f}'}")
        res = report["residuals"]
        lines.append("residuals (predicted - true): " + "  ".join(
            f"{k} {res[k]:.4g}" for k in ("min", "q25", "median", "q75", "max", "mean", "std")))
        return "\n".join(lines)
    classes = report["classes"]
    width = max([len(c) for c in classes] + [len("weighted avg")])
    lines.append(f"accuracy {report['accuracy']:.4f}")
    lines.append("")
    lines.append(f"{'':{width}}  precision  recall      f1  support")
    for c in classes:
        row = report["per_class"][c]
        lines.append(f"{c:{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
                     f"{row['f1']:6.4f}  {row['support']:7d}")
    for kind in ("macro", "weighted"):
        row = report[kind]
        lines.append(f"{kind + ' avg':{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
                     f"{row['f1']:6.4f}  {report['rows']:7d}")
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    cells = max(len(str(v)) for row in report["confusion_matrix"] for v in row)
    cell = max(cells, max(len(c) for c in classes))
    lines.append(f"{'':{width}}  " + " ".join(f"{c:>{cell}}" for c in classes))
    for c, row in zip(classes, report["confusion_matrix"]):
        lines.append(f"{c:{width}}  " + " ".join(f"{v:>{cell}}" for v in row))
    auc = report["roc_auc"]
    lines.append("")
    lines.append("ROC AUC: " + "  ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}"
                                         for k, v in auc.items()))
    return "\n".join(lines)
