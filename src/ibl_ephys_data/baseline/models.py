"""The plain classifier and the numbers reported about it: balanced accuracy, bootstrap CI, chance, lab AUC.

Pure functions of arrays (no workspace), so each number can be checked on a toy problem. Balanced
accuracy (mean recall over the classes present in the test set) is the headline because region classes
are very unequal in size; the classifier weighs classes inversely to their frequency for the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

CLASSIFIERS = ("logistic",)


def make_classifier(name: str = "logistic", c: float = 1.0, seed: int = 0):
    """Standardised features -> multinomial logistic regression with balanced class weights (sklearn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name not in CLASSIFIERS:
        raise ValueError(f"classifier={name!r} is not one of {', '.join(CLASSIFIERS)}")
    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed))


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, classifier: str = "logistic",
                c: float = 1.0, seed: int = 0) -> np.ndarray:
    """Labels predicted for ``x_test`` by the classifier fitted on (``x_train``, ``y_train``).

    A training set with a single class cannot be fitted; then every prediction is that class (which is
    what any classifier would answer, and scores exactly as the majority-class chance level).
    """
    classes = np.unique(y_train)
    if len(classes) == 1:
        return np.full(len(x_test), classes[0], dtype=y_train.dtype)
    model = make_classifier(classifier, c, seed).fit(x_train, y_train)
    return model.predict(x_test)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence) -> np.ndarray:
    """Counts (len(labels), len(labels)): rows true label, columns predicted label."""
    index = {lab: i for i, lab in enumerate(labels)}
    out = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(out, (np.array([index[v] for v in y_true], dtype=np.int64),
                    np.array([index[v] for v in y_pred], dtype=np.int64)), 1)
    return out


def balanced_accuracy_from(counts: np.ndarray) -> float:
    """Mean recall over the true classes that have at least one sample (rows of a confusion matrix)."""
    support = counts.sum(axis=-1)
    present = support > 0
    if not present.any():
        return float("nan")
    recall = np.diagonal(counts, axis1=-2, axis2=-1)[present] / support[present]
    return float(recall.mean())


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    labels = sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()))
    return balanced_accuracy_from(confusion(y_true, y_pred, labels))


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Recall of every class present in ``y_true``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {str(c): float(np.mean(y_pred[y_true == c] == c)) for c in sorted(set(y_true.tolist()))}


def bootstrap_ci(y_true: np.ndarray, predictions: dict[str, np.ndarray], groups: np.ndarray,
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, list[float]]:
    """Percentile CI of the balanced accuracy of each prediction, resampling whole groups (insertions).

    Windows of one insertion are not independent samples, so the unit resampled is the insertion. Every
    prediction set is scored on the same resamples (paired), which also gives the CI of a difference via
    ``difference_ci``. One confusion matrix per insertion makes a replicate a weighted sum, not a refit.
    """
    groups = np.asarray(groups)
    names = sorted(set(groups.tolist()))
    labels = sorted(set(np.asarray(y_true).tolist()).union(*(set(p.tolist()) for p in predictions.values())))
    draws = np.random.default_rng(seed).integers(0, len(names), size=(n_boot, len(names)))
    weights = np.stack([np.bincount(d, minlength=len(names)) for d in draws])  # (n_boot, n_groups)
    replicates = {}
    for key, pred in predictions.items():
        per_group = np.stack([confusion(y_true[groups == g], pred[groups == g], labels) for g in names])
        counts = np.einsum("bg,gij->bij", weights, per_group)
        replicates[key] = np.array([balanced_accuracy_from(c) for c in counts])
    tail = (1 - level) / 2 * 100
    return {"replicates": replicates,
            "ci": {k: [float(v) for v in np.nanpercentile(r, [tail, 100 - tail])] for k, r in replicates.items()},
            "level": level}


def difference_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile CI of ``a - b`` over paired bootstrap replicates."""
    tail = (1 - level) / 2 * 100
    return [float(v) for v in np.nanpercentile(np.asarray(a) - np.asarray(b), [tail, 100 - tail])]


def chance_levels(y_train: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """Balanced accuracy of two label-blind guessers, computed exactly (no sampling).

    ``majority``: always the most frequent training class (1/k if it is among the k test classes, else
    0). ``stratified``: a random class drawn with the training frequencies; its expected recall on class
    c is p_train(c), so the expectation is the mean of p_train over the test classes.
    """
    train_classes, train_counts = np.unique(y_train, return_counts=True)
    prior = dict(zip(train_classes.tolist(), (train_counts / train_counts.sum()).tolist(), strict=True))
    test_classes = sorted(set(np.asarray(y_test).tolist()))
    majority = train_classes[np.argmax(train_counts)]
    return {
        "majority": float((majority in test_classes) / len(test_classes)),
        "stratified": float(np.mean([prior.get(c, 0.0) for c in test_classes])),
    }


def permuted(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """``y`` shuffled (seeded): the labels no longer depend on the features."""
    return np.random.default_rng(seed).permutation(np.asarray(y))


def lab_auc(x: np.ndarray, lab: np.ndarray, groups: np.ndarray | None = None, n_splits: int = 5,
            seed: int = 0, classifier: str = "logistic", c: float = 1.0) -> float | None:
    """Cross-validated macro one-vs-rest ROC AUC of predicting the lab from ``x``; None with < 2 labs.

    With ``groups`` (the insertion of every window) folds hold out whole insertions, so the number says
    whether a lab's signature carries over to an insertion never seen; only labs with two or more
    insertions can be scored that way (None when fewer than two such labs). Without ``groups`` folds are
    stratified windows, which also rewards recognising the insertion itself.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    lab = np.asarray(lab).astype(str)
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        per_lab = {lb: len(set(groups[lab == lb])) for lb in set(lab.tolist())}
        keep = np.isin(lab, [lb for lb, n in per_lab.items() if n >= 2])
        x, lab, groups = x[keep], lab[keep], groups[keep]
    labs = sorted(set(lab.tolist()))
    if len(labs) < 2:
        return None
    if groups is not None:
        folds = GroupKFold(n_splits=min(n_splits, len(set(groups.tolist())))).split(x, lab, groups)
    else:
        smallest = min(int(np.sum(lab == lb)) for lb in labs)
        folds = StratifiedKFold(n_splits=max(2, min(n_splits, smallest)), shuffle=True,
                                random_state=seed).split(x, lab)
    proba = np.zeros((len(lab), len(labs)))
    for train, test in folds:
        seen = sorted(set(lab[train].tolist()))
        if len(seen) == 1:  # every other lab held out in this fold: the only possible answer
            proba[test, labs.index(seen[0])] = 1.0
            continue
        model = make_classifier(classifier, c, seed).fit(x[train], lab[train])
        cols = [labs.index(cl) for cl in model.classes_]
        proba[np.ix_(test, cols)] = model.predict_proba(x[test])
    if len(labs) == 2:
        return float(roc_auc_score(lab == labs[1], proba[:, 1]))
    return float(roc_auc_score(lab, proba, multi_class="ovr", average="macro", labels=labs))
