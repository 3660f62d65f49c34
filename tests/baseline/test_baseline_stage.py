"""The baseline stage on the fake workspace: white-noise LFP (no spectral region signal), regions laid out
at the same depths on every probe (depth decodes them), leakage planted at the pid/session/subject levels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dataset"))

from fake_workspace import build_fake_workspace  # noqa: E402

from ibl_ephys_data.baseline import BaselineOptions, run_baseline  # noqa: E402
from ibl_ephys_data.baseline.card import HEADING  # noqa: E402
from ibl_ephys_data.dataset import export_dataset  # noqa: E402
from ibl_ephys_data.errors import InputError, MissingStageError  # noqa: E402

OPTIONS = BaselineOptions(n_bootstrap=200, n_permutations=3)


def _numbers(obj) -> list[float]:
    if isinstance(obj, dict):
        return [x for k in sorted(obj) for x in _numbers(obj[k])]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return [float(obj)] if isinstance(obj, int | float) and not isinstance(obj, bool) else []


def _shape(obj):
    """Everything but the numbers (keys, labels, pids), to compare exactly."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(v) for v in obj]
    return None if isinstance(obj, int | float) and not isinstance(obj, bool) else obj


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = build_fake_workspace(tmp_path_factory.mktemp("baseline") / "ws")
    export_dataset(ws, min_channels=2)
    return ws


@pytest.fixture(scope="module")
def results(ws):
    return run_baseline(ws, OPTIONS)


def test_outputs_and_reproducibility(ws, results):
    stored = json.loads((ws.dataset_dir / "baseline" / "baseline.json").read_text())
    assert stored == json.loads(json.dumps(results))
    assert stored["parameters"]["features"] == ["delta", "theta", "alpha", "beta", "gamma_low", "depth_um"]
    assert stored["parameters"]["welch"]["nperseg"] == 250  # 1 s at the fake store's 250 Hz
    again = run_baseline(ws, OPTIONS)
    assert _shape(again) == _shape(results)
    # same data, seeds and machine: the fits repeat; 1e-12 only absorbs a different BLAS summation order
    np.testing.assert_allclose(_numbers(again), _numbers(results), rtol=0, atol=1e-12)
    card = (ws.dataset_dir / "DATA_CARD.md").read_text()
    assert card.count(HEADING) == 1 and card.rstrip().endswith(".")  # re-run replaced, did not append


def test_numbers_against_what_the_fake_data_hold(ws, results):
    chance = results["chance"]
    test = pd.read_parquet(ws.dataset_dir / "windows.parquet").query("split == 'test'")
    assert results["counts"]["test_windows"] == len(test)
    assert results["counts"]["test_insertions"] == test["pid"].nunique()
    assert set(results["per_region_recall"]) == set(test["label"])
    ctl = results["controls"]
    # every probe crosses the same regions at the same depths: depth alone decodes them
    assert ctl["depth_only"]["balanced_accuracy"] > 0.7 > chance["stratified"] + 0.4
    # the LFP is white noise with one variance everywhere: band powers carry nothing (4 insertions, CI)
    assert ctl["bands_only"]["ci"][0] < max(chance.values()) + 0.05
    # permuted training labels fall to chance (mean of 3 permutations; a few classes ~1/6 each)
    assert abs(ctl["permuted_labels"]["balanced_accuracy"] - chance["stratified"]) < 0.1
    lo, hi = results["main"]["ci"]
    assert lo <= results["main"]["balanced_accuracy"] <= hi
    assert sum(map(sum, results["confusion"]["matrix"])) == len(test)


def test_leaky_control_adds_the_insertions_sharing_subject_or_session(ws, results):
    leaky = results["controls"]["leaky_split"]
    catalog = pd.read_parquet(ws.catalog).set_index("pid")
    splits = json.loads((ws.dataset_dir / "splits.json").read_text())["assignments"]
    test = [p for p, v in splits.items() if v["split"] == "test"]
    shared = catalog.loc[test, "subject"].tolist(), catalog.loc[test, "eid"].tolist()
    assert leaky["added_insertions"]
    for pid in leaky["added_insertions"]:
        assert splits[pid]["split"] == "excluded"
        assert catalog.at[pid, "subject"] in shared[0] or catalog.at[pid, "eid"] in shared[1]
    assert leaky["inflation"] == pytest.approx(leaky["balanced_accuracy"] - results["main"]["balanced_accuracy"])
    assert leaky["inflation_ci"][0] <= leaky["inflation"] <= leaky["inflation_ci"][1]
    windows = pd.read_parquet(ws.dataset_dir / "baseline" / "leaky_windows.parquet")
    assert set(windows["pid"]) == set(leaky["added_insertions"]) and set(windows["split"]) == {"train"}


def test_reexport_drops_the_stale_baseline(tmp_path):
    ws = build_fake_workspace(tmp_path / "ws", names=["b_free1", "b_free2", "b_free3", "r_new", "r_subj"])
    with pytest.raises(MissingStageError, match="ibl-ephys-data export"):
        run_baseline(ws, OPTIONS)
    export_dataset(ws, min_channels=2, leakage="pid")
    out = run_baseline(ws, OPTIONS)
    assert "no leakier split" in out["controls"]["leaky_split"]["note"]
    assert out["controls"]["lab"]["labs"] == ["L1", "L2", "L3"]
    export_dataset(ws, min_channels=2, mode="kfold", k=2)
    assert not (ws.dataset_dir / "baseline").exists()
    assert HEADING not in (ws.dataset_dir / "DATA_CARD.md").read_text()
    with pytest.raises(InputError, match="--mode zero-shot"):
        run_baseline(ws, OPTIONS)
    with pytest.raises(InputError, match="classifier"):
        run_baseline(ws, BaselineOptions(classifier="svm"))
