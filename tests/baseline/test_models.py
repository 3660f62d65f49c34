"""The reported numbers on toy problems whose answer is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from ibl_ephys_data.baseline.models import (
    balanced_accuracy,
    bootstrap_ci,
    chance_levels,
    confusion,
    difference_ci,
    fit_predict,
    lab_auc,
    per_class_recall,
    permuted,
)


def test_balanced_accuracy_and_recall():
    y = np.array(["a"] * 8 + ["b"] * 2)
    pred = np.array(["a"] * 8 + ["a", "b"])
    assert balanced_accuracy(y, pred) == pytest.approx((1.0 + 0.5) / 2)
    assert per_class_recall(y, pred) == {"a": 1.0, "b": 0.5}
    np.testing.assert_array_equal(confusion(y, pred, ["a", "b"]), [[8, 0], [1, 1]])


def test_chance_levels_are_exact():
    y_train = np.array(["a"] * 6 + ["b"] * 3 + ["c"] * 1)
    assert chance_levels(y_train, np.array(["a", "b"])) == {"majority": 0.5, "stratified": pytest.approx(0.45)}
    # the training majority is absent from the test classes: always answering it scores 0
    assert chance_levels(y_train, np.array(["b", "c"]))["majority"] == 0.0


def test_bootstrap_resamples_insertions_and_pairs_models():
    y = np.array(["a", "b"] * 50)
    groups = np.repeat(np.arange(10), 10)
    perfect, half = y.copy(), np.where(groups < 5, y, "a")
    boot = bootstrap_ci(y, {"perfect": perfect, "half": half}, groups, n_boot=300, seed=1)
    assert boot["ci"]["perfect"] == [1.0, 1.0]
    lo, hi = boot["ci"]["half"]
    assert 0.5 < lo < 0.75 < hi < 1.0  # 0.75 overall; insertions differ (1.0 or 0.5), so the CI is wide
    lo, hi = difference_ci(boot["replicates"]["perfect"], boot["replicates"]["half"])
    assert 0 < lo < 0.25 < hi
    again = bootstrap_ci(y, {"half": half}, groups, n_boot=300, seed=1)
    np.testing.assert_array_equal(again["replicates"]["half"], boot["replicates"]["half"])


def test_classifier_learns_and_permuted_labels_do_not():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 300)
    centers = {"a": 0.0, "b": 2.0, "c": 4.0}
    x = np.array([centers[v] for v in y])[:, None] + rng.normal(0, 0.5, (len(y), 1))
    train, test = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
    assert balanced_accuracy(y[test], fit_predict(x[train], y[train], x[test])) > 0.9
    # one permutation still yields some partition of x, which may happen to match the classes (0.2-0.5
    # here); averaged over 20 permutations the score sits at chance (spread of the mean ~0.03)
    shuffled = [balanced_accuracy(y[test], fit_predict(x[train], permuted(y[train], seed=k), x[test]))
                for k in range(20)]
    assert abs(np.mean(shuffled) - 1 / 3) < 0.08
    np.testing.assert_array_equal(fit_predict(x[train], np.full(len(train), "a"), x[test]), "a")


def test_lab_auc_sees_a_lab_signature_and_only_then():
    rng = np.random.default_rng(0)
    pid = np.repeat([f"p{i}" for i in range(6)], 100)
    lab = np.repeat(["L1", "L2", "L1", "L2", "L1", "L2"], 100)
    noise = rng.normal(0, 1, (600, 3))
    signature = noise + (lab == "L2")[:, None] * 3.0
    assert lab_auc(signature, lab, pid) > 0.95
    assert lab_auc(signature, lab) > 0.95
    assert abs(lab_auc(noise, lab, pid) - 0.5) < 0.1
    # a lab with a single insertion cannot be scored on unseen insertions
    assert lab_auc(signature, np.where(pid == "p0", "L3", "L9"), pid) is None
