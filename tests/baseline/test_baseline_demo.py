"""The baseline on the demo: the planted regional spectral signatures (demo/signals.py) are learnt from
band powers alone, permuted labels fall to chance, and a re-run gives the same numbers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ibl_ephys_data.baseline import BaselineOptions, run_baseline
from ibl_ephys_data.dataset import export_dataset
from ibl_ephys_data.workspace import Workspace

OPTIONS = BaselineOptions(n_bootstrap=200, n_permutations=5)


@pytest.fixture(scope="module")
def demo_results(qc_workspace, tmp_path_factory):
    src, _ = qc_workspace
    ws = Workspace(tmp_path_factory.mktemp("baseline-demo") / "ws")
    shutil.copytree(src.root, ws.root)
    export_dataset(ws, min_channels=5)  # as `ibl-ephys-data demo` does
    return ws, run_baseline(ws, OPTIONS)


@pytest.mark.timeout(1800)  # the first test to ask for the session's qc workspace builds it (minutes)
def test_planted_signatures_beat_chance(demo_results):
    _, results = demo_results
    chance = max(results["chance"].values())
    assert results["counts"]["test_insertions"] >= 2 and len(results["counts"]["test_classes"]) >= 3
    # signatures differ in theta power and 1/f slope by region: band powers alone decode them
    assert results["controls"]["bands_only"]["ci"][0] > chance + 0.3
    assert results["main"]["ci"][0] > chance + 0.3
    assert min(results["per_region_recall"].values()) > chance
    # permuted training labels: mean of 5 permutations inside the two chance levels (+- 0.05)
    permuted = results["controls"]["permuted_labels"]["balanced_accuracy"]
    assert min(results["chance"].values()) - 0.05 <= permuted <= chance + 0.05


@pytest.mark.timeout(1800)
def test_rerun_gives_identical_numbers(demo_results):
    ws, results = demo_results
    again = run_baseline(ws, OPTIONS)
    for key in ("main", "chance", "per_region_recall", "confusion"):
        assert again[key].keys() == results[key].keys()
    # same data, seeds and machine: 1e-12 only absorbs a different BLAS summation order
    for name in ("main", "bands_only", "depth_only", "permuted_labels"):
        ctl = results["controls"].get(name, results.get(name))
        new = again["controls"].get(name, again.get(name))
        np.testing.assert_allclose(new["balanced_accuracy"], ctl["balanced_accuracy"], rtol=0, atol=1e-12)
    assert again["confusion"] == results["confusion"]
