"""The GLUE metrics (Wang et al. 2019, Table 1): accuracy; F1 of the positive class (MRPC, QQP);
Matthews correlation (CoLA); Pearson and Spearman correlation (STS-B). Plain numpy, checked
against scikit-learn and scipy in the tests. Every value is a fraction (not a percentage).

A constant prediction has no defined correlation; like scikit-learn's matthews_corrcoef we give it 0
(this is what the majority-class baseline scores on the correlation metrics)."""
from __future__ import annotations

import numpy as np


def accuracy(predictions, labels) -> float:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float((predictions == labels).mean())


def f1(predictions, labels, positive: int = 1) -> float:
    predictions, labels = np.asarray(predictions) == positive, np.asarray(labels) == positive
    true_positives = float((predictions & labels).sum())
    predicted, actual = float(predictions.sum()), float(labels.sum())
    if predicted + actual == 0:
        return 0.0
    return 2 * true_positives / (predicted + actual)


def mcc(predictions, labels) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K, as scikit-learn)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    classes = np.union1d(predictions, labels)
    confusion = np.zeros((len(classes), len(classes)))
    np.add.at(confusion, (np.searchsorted(classes, labels), np.searchsorted(classes, predictions)), 1)
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    samples, correct = confusion.sum(), np.trace(confusion)
    covariance_yp = correct * samples - true_counts @ predicted_counts
    covariance_pp = samples**2 - predicted_counts @ predicted_counts
    covariance_yy = samples**2 - true_counts @ true_counts
    if covariance_pp * covariance_yy == 0:
        return 0.0
    return float(covariance_yp / np.sqrt(covariance_pp * covariance_yy))


def pearson(predictions, labels) -> float:
    x, y = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return 0.0 if denominator == 0 else float((x * y).sum() / denominator)


def _average_ranks(values) -> np.ndarray:
    """Ranks 1..n with ties sharing their mean rank (scipy.stats.rankdata's 'average')."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values, and each element's run.
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    run = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(values)] - 1
    ranks = np.empty(len(values))
    ranks[order] = (first[run] + last[run]) / 2 + 1
    return ranks


def spearman(predictions, labels) -> float:
    return pearson(_average_ranks(predictions), _average_ranks(labels))


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def compute(names, predictions, labels, positive: int = 1) -> dict[str, float]:
    """Each named metric of `predictions` (class ids, or floats for regression) against `labels`."""
    return {name: (f1(predictions, labels, positive) if name == "f1" else METRICS[name](predictions, labels))
            for name in names}
