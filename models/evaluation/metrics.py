"""Test metrics of one run (EVALUATION.md rule 5), computed from class probabilities and the validation threshold.

Binary view: the attack score is 1 − P(benign); a window is an attack when its score reaches the threshold
chosen on validation. Per class (benign, attack): precision, recall, F1 (the paper's layout); FAR (FPR on
benign); accuracy; macro-F1 of the two classes; PR-AUC (average precision of the score); the detection rate
at FPR 1 % and 0.1 % (read off the test ROC curve: a curve metric, not an operating point). Multi-class
view: macro-F1 of the argmax over the classes present in test, the confusion matrix, and per-family
detection rate (share of each attack class flagged at the threshold).

>>> import numpy as np
>>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
>>> m = run_metrics(p, np.array([0, 1, 1, 1]), ("BENIGN", "x"), 0.5)
>>> m["attack"]["recall"], m["far"], m["benign"]["precision"]
(0.666667, 0.0, 0.5)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_curve

CURVE_POINTS = 200


def _r(x: float) -> float:
    return round(float(x), 6)


def _prf(tp: float, fp: float, fn: float) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": _r(p), "recall": _r(r), "f1": _r(f)}


def detection_at_fpr(score: np.ndarray, y_binary: np.ndarray, fpr: float) -> float:
    """Highest true-positive rate of the test ROC curve with false-positive rate ≤ ``fpr``."""
    if y_binary.min(initial=1) == y_binary.max(initial=0):
        return float("nan")
    f, t, _ = roc_curve(y_binary, score)
    return _r(t[f <= fpr].max(initial=0.0))


def pr_curve(score: np.ndarray, y_binary: np.ndarray) -> dict[str, list[float]]:
    """The attack PR curve, thinned to at most :data:`CURVE_POINTS` points (for the plots)."""
    if y_binary.min(initial=1) == y_binary.max(initial=0):
        return {"precision": [], "recall": []}
    p, r, _ = precision_recall_curve(y_binary, score)
    keep = np.unique(np.linspace(0, len(p) - 1, min(CURVE_POINTS, len(p))).astype(int))
    return {"precision": [_r(v) for v in p[keep]], "recall": [_r(v) for v in r[keep]]}


def binary_metrics(score: np.ndarray, y_binary: np.ndarray, threshold: float) -> dict[str, Any]:
    """The binary metrics of EVALUATION.md rule 5 at ``threshold``."""
    pred = score >= threshold
    att, ben = y_binary == 1, y_binary == 0
    tp, fp = float((pred & att).sum()), float((pred & ben).sum())
    fn, tn = float((~pred & att).sum()), float((~pred & ben).sum())
    attack, benign = _prf(tp, fp, fn), _prf(tn, fn, fp)
    both = y_binary.min(initial=1) != y_binary.max(initial=0)
    return {
        "benign": benign,
        "attack": attack,
        "far": _r(fp / (fp + tn)) if fp + tn else float("nan"),
        "accuracy": _r((tp + tn) / max(len(score), 1)),
        "macro_f1": _r((attack["f1"] + benign["f1"]) / 2),
        "pr_auc": _r(average_precision_score(y_binary, score)) if both else float("nan"),
        "dr_at_fpr_1pct": detection_at_fpr(score, y_binary, 0.01),
        "dr_at_fpr_0.1pct": detection_at_fpr(score, y_binary, 0.001),
        "counts": {"tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn)},
        "threshold": _r(threshold),
    }


def run_metrics(probs: np.ndarray, y: np.ndarray, class_names: tuple[str, ...], threshold: float) -> dict[str, Any]:
    """Binary and multi-class metrics of one run's test probabilities (benign is class 0)."""
    y_binary = (y != 0).astype(np.int64)
    score = 1.0 - probs[:, 0]
    out = binary_metrics(score, y_binary, threshold)
    argmax = probs.argmax(axis=1)
    present = np.unique(y)
    out["multiclass_macro_f1"] = _r(f1_score(y, argmax, labels=present, average="macro", zero_division=0))
    n = len(class_names)
    out["confusion"] = np.bincount(y * n + argmax, minlength=n * n).reshape(n, n).tolist()
    flagged = score >= threshold
    out["family_detection"] = {
        class_names[c]: {"n": int((y == c).sum()), "detected": _r(flagged[y == c].mean())} for c in present if c != 0
    }
    out["pr_curve"] = pr_curve(score, y_binary)
    return out
