"""The GLUE metrics (Wang et al. 2019, Table 1): accuracy; F1 of the positive class (MRPC, QQP);
Matthews correlation (CoLA); Pearson and Spearman correlation (STS-B), from scikit-learn and scipy.
Every value is a fraction (not a percentage).

A constant prediction (or label set) has no defined correlation; like scikit-learn's
matthews_corrcoef we give it 0 rather than scipy's NaN and warning (this is what the majority-class
baseline scores on the correlation metrics)."""
from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn import metrics as sk


def accuracy(predictions, labels) -> float:
    return float(sk.accuracy_score(labels, predictions))


def f1(predictions, labels, positive: int = 1) -> float:
    """F1 of class `positive` (any number of classes; 0 when the class is never predicted nor present)."""
    return float(sk.f1_score(labels, predictions, labels=[positive], average=None, zero_division=0)[0])


def mcc(predictions, labels) -> float:
    return float(sk.matthews_corrcoef(labels, predictions))


def _defined(x, y) -> bool:
    return len(x) > 1 and np.ptp(np.asarray(x, dtype=np.float64)) > 0 and np.ptp(np.asarray(y, dtype=np.float64)) > 0


def pearson(predictions, labels) -> float:
    return float(stats.pearsonr(predictions, labels)[0]) if _defined(predictions, labels) else 0.0


def spearman(predictions, labels) -> float:
    return float(stats.spearmanr(predictions, labels)[0]) if _defined(predictions, labels) else 0.0


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def compute(names, predictions, labels, positive: int = 1) -> dict[str, float]:
    """Each named metric of `predictions` (class ids, or floats for regression) against `labels`."""
    return {name: (f1(predictions, labels, positive) if name == "f1" else METRICS[name](predictions, labels))
            for name in names}
