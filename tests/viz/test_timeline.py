"""The artifact timeline reads the workspace: RMS windows over the whole recording, QC's snippets, stored,
exported and flagged seconds, and a coverage sentence that adds them up."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from ibl_ephys_data.dataset import export_dataset
from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.demo.store import GROUND_TRUTH
from ibl_ephys_data.viz.timeline import read_timeline, timeline_figure, timeline_section
from ibl_ephys_data.workspace import Workspace


@pytest.fixture(scope="module")
def exported(qc_workspace, tmp_path_factory):
    src, _ = qc_workspace
    ws = Workspace(tmp_path_factory.mktemp("timeline") / "ws")
    shutil.copytree(src.root, ws.root)
    # k-fold over the brain-wide-map release keeps every bwm insertion (zero-shot drops some for leakage)
    export_dataset(ws, min_channels=5, exclude_verdicts=(), keep_flagged=True, mode="kfold", k=2)
    return ws


def test_timeline_of_an_insertion_with_planted_events(exported, demo_store, demo_seconds, tmp_path):
    ins = next(i for i in INSERTIONS if i.artifact == "saturation")
    tl = read_timeline(exported, ins.pid)
    rms = pd.read_parquet(exported.qc_metrics.with_name("rms_timeline.parquet"))
    assert set(rms["pid"]) == {i.pid for i in INSERTIONS}
    # ibllib's RMS windows cover the whole recording (the last one is shorter)
    assert tl.rms["t_start_s"].min() == pytest.approx(0, abs=0.01)
    assert tl.duration_s == pytest.approx(demo_seconds, abs=0.01)
    # 24 s fits two 10-s QC snippets; the lfp stage stored the whole recording; nothing exported: the
    # insertion FAILs, so its channels are not usable (qc channel_metrics) even with exclude_verdicts=()
    assert sum(b - a for a, b in tl.qc_snippets) == pytest.approx(20.0)
    assert tl.stored == [(0.0, demo_seconds)]
    assert tl.exported == []
    # every planted saturation falls inside a flagged saturation span
    events = json.loads((demo_store / GROUND_TRUTH).read_text())["events"]
    for ev in (e for e in events if e["pid"] == ins.pid and e["kind"] == "saturation"):
        assert any(a <= ev["start_s"] and ev["stop_s"] <= b for a, b in tl.flagged["saturation"])
    sentence = tl.coverage()
    assert sentence.startswith("signal QC read 20 s of 24 s; stored 24 s; exported 0 s; flagged ")
    assert float(sentence.rsplit("flagged ", 1)[1].split()[0]) > 1.0
    assert len(timeline_figure(tl).axes) == 2
    html = timeline_section(exported, ins.pid, tmp_path, "../figures/")
    assert sentence in html and (tmp_path / "timeline.png").stat().st_size > 5_000


def test_clean_insertion_is_exported_and_flags_nothing(exported, demo_seconds):
    clean = INSERTIONS[0]  # PASS, no planted defect, in both releases
    assert not (clean.artifact or clean.defects)
    tl = read_timeline(exported, clean.pid)
    assert tl.exported == [(0.0, demo_seconds)]  # eight back-to-back 3-s windows
    assert tl.flagged == {} and tl.coverage().endswith("exported 24 s; flagged 0.0 s")
