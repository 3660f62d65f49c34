"""The static HTML report: files, degraded inputs, Markdown, and a real headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
from browser import Console, chromium
from matplotlib import image as plt_image

from ibl_ephys_data.viz.markdown import render_markdown
from ibl_ephys_data.viz.report import insertion_table, write_report
from ibl_ephys_data.workspace import Workspace
from ibl_ephys_data.workspace.lfp_store import Encoding, LfpStore

PIDS = [
    "aaaaaaaa-0000-4000-8000-000000000001",
    "bbbbbbbb-0000-4000-8000-000000000002",
    "cccccccc-0000-4000-8000-000000000003",
    "dddddddd-0000-4000-8000-000000000004",  # catalog only: every other input is missing for it
]
# (auto verdict, final verdict after review): the third was overridden from WARNING to FAIL
VERDICTS = {PIDS[0]: ("FAIL", None), PIDS[1]: ("PASS", None), PIDS[2]: ("WARNING", "FAIL")}
REGIONS = [(128, "MRN"), (218, "LP"), (10703, "DG-mo"), (382, "CA1"), (312782562, "VISa5")]
FS = 500.0


def _channels(pid: str, k: int) -> pd.DataFrame:
    n = 384
    raw_ind = np.arange(n)
    axial = (raw_ind // 2) * 20.0
    lateral = np.array([43.0, 11.0, 59.0, 27.0])[raw_ind % 4]
    ml = (8000.0 if k == 1 else 3500.0 + 150 * k) + axial * 0.1  # the PASS insertion is on the right
    ap = 7000.0 + 300 * k + np.zeros(n)
    dv = 5000.0 - axial
    region = np.minimum(raw_ind // 80, len(REGIONS) - 1)
    labels = np.zeros(n, dtype="int8")
    labels[[5, 6]] = 1
    labels[[100]] = 2
    labels[-3:] = 3
    return pd.DataFrame({
        "pid": pid, "eid": f"eid-{k}", "raw_ind": raw_ind, "axial_um": axial, "lateral_um": lateral,
        "x": (ml - 5739) / 1e6, "y": (5400 - ap) / 1e6, "z": (332 - dv) / 1e6,
        "ccf_ap_um": ap, "ccf_dv_um": dv, "ccf_ml_um": ml,
        "atlas_id": [REGIONS[r][0] for r in region], "acronym": [REGIONS[r][1] for r in region],
        "beryl_acronym": [REGIONS[r][1] for r in region],
        "bad_channel_label": pd.array(labels, dtype="Int8"),
    })


def make_workspace(root: Path) -> Workspace:
    """A small complete workspace: 4 catalogued insertions, 3 with channels/metrics/verdicts, 1 with LFP."""
    ws = Workspace(root).create()
    ws.qc_dir.mkdir()
    ws.dataset_dir.mkdir()
    labs = ["churchlandlab", "hoferlab", "mrsicflogellab", "wittenlab"]
    pd.DataFrame({
        "pid": PIDS, "eid": [f"eid-{k}" for k in range(4)],
        "subject": ["SWC_00", "SWC_01", "SWC_02", "<script>alert(1)</script>"],  # must be escaped
        "lab": labs, "date": ["2021-03-0" + str(k + 1) for k in range(4)], "session_number": 1,
        "probe_name": "probe00", "probe_model": "3B2",
        "releases": ["bwm,repro-ephys", "bwm", "repro-ephys", "bwm"],
        "qc": ["PASS", "WARNING", "FAIL", "NOT_SET"], "drift_rms_um": [0.43, 2.0, np.nan, 1.0],
        "alignment_qc": ["1.0", None, "0.5", None], "experimenter_raw_destripe": ["pass", None, "fail", None],
    }).to_parquet(ws.catalog, index=False)
    pd.concat([_channels(pid, k) for k, pid in enumerate(PIDS[:3])]).to_parquet(ws.channels, index=False)
    metrics = pd.DataFrame({
        "pid": PIDS[:3], "qc": ["PASS", "WARNING", "FAIL"], "drift_rms_um": [0.43, 2.0, np.nan],
        "alignment_qc": ["1.0", None, "0.5"], "experimenter_raw_destripe": ["pass", None, "fail"],
        "snr_db": [3.1, 10.23, 7.5], "power_cv": [1.2, 1.49, 0.8], "line_noise_pct": [0.5, 0.09, 4.0],
        "line_f0_hz": [50.0, 60.0, 50.0], "spectral_slope": [-1.9, -2.64, -2.1],
        "discontinuity_pct": [0.0, 0.0, 1.5], "n_dead": [2, 2, 2], "n_noisy": [1, 1, 1],
        "n_outside": [3, 3, 3],
    })
    metrics.to_parquet(ws.qc_metrics, index=False)
    pd.DataFrame({
        "pid": PIDS[:3],
        "verdict": [VERDICTS[p][0] for p in PIDS[:3]],
        "final_verdict": [VERDICTS[p][1] or VERDICTS[p][0] for p in PIDS[:3]],
        "fired_rules": [["snr_fail"], [], ["line_noise_warning"]],
        "reasons": [["snr_fail (FAIL): snr_db = 3.1, rule snr_db < 5"], [],
                    ["line_noise_warning (WARNING): line_noise_pct = 4, rule line_noise_pct > 2"]],
    }).to_parquet(ws.qc_verdicts, index=False)
    pd.DataFrame({"pid": PIDS[0], "raw_ind": np.arange(384), "rms_uv": np.linspace(10, 20, 384),
                  "usable": np.arange(384) > 10}).to_parquet(ws.qc_channel_metrics, index=False)
    rng = np.random.default_rng(0)
    n = int(8 * FS)
    common_mode = rng.normal(0, 2, n).astype("float32")
    common_mode[int(3 * FS):int(3.2 * FS)] += 200
    with LfpStore(ws.lfp).create(PIDS[0], 384, n, Encoding.for_probe("int16", 1)) as out:
        lfp = rng.normal(0, 10, (384, n)).astype("float32")
        for start in range(0, n, out.shard):
            out.write_lfp(start, lfp[:, start:start + out.shard])
        out.write_common_mode(0, common_mode)
        out.finish({"fs": FS, "units": "uV", "raw_ind": list(range(384)),
                    "windows": [{"start_s": 100.0, "stop_s": 108.0, "session_start_s": 100.0,
                                 "session_stop_s": 108.0, "offset": 0, "n_samples": n}]})
    (ws.dataset_dir / "splits.json").write_text("{}")
    (ws.dataset_dir / "DATA_CARD.md").write_text(
        "# Data card\n\nWindows of **destriped** LFP, see [splits](splits.json) and [gone](gone.json).\n\n"
        "## Splits\n\n| split | n |\n|---|---|\n| train | 2 |\n| test | 1 |\n\n- one\n- two `a<b`\n\n"
        "```\ncode <x>\n```\n\nExternal: [IBL](https://www.internationalbrainlab.com).\n"
    )
    pd.DataFrame({"region": ["CA1", "LP", "MRN"], "n_insertions": [3, 2, 1]}).to_parquet(ws.coverage)
    return ws


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = make_workspace(tmp_path_factory.mktemp("ws"))
    return write_report(ws)


@pytest.fixture(scope="module")
def empty_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(tmp_path_factory.mktemp("empty"))


def test_render_markdown_constructs_and_links():
    text = ("# Title\n\nA *b* **c** `<d>` [local](here.md) [lost](lost.md) [web](https://x.org/a).\n\n"
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n1. first\n2. second\n\n> quoted\n\n```\n<raw>\n```\n")
    out = render_markdown(text, lambda url: "../dataset/here.md" if url == "here.md" else None)
    out = re.sub(r">\s+<", "><", out)  # the markdown package puts newlines between block tags
    assert "<h2>Title</h2>" in out
    assert "<em>b</em>" in out and "<strong>c</strong>" in out and "<code>&lt;d&gt;</code>" in out
    assert '<a href="../dataset/here.md">local</a>' in out
    assert "lost" in out and 'href="lost.md"' not in out
    assert '<a href="https://x.org/a">web</a>' in out
    assert "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr>" in out
    assert "<ol><li>first</li><li>second</li></ol>" in out
    assert "<blockquote><p>quoted</p></blockquote>" in out
    assert "<pre><code>&lt;raw&gt;\n</code></pre>" in out


def test_insertion_table_merges_every_input(tmp_path):
    ws = make_workspace(tmp_path)
    tables = {"catalog": pd.read_parquet(ws.catalog), "channels": pd.read_parquet(ws.channels),
              "metrics": pd.read_parquet(ws.qc_metrics), "verdicts": pd.read_parquet(ws.qc_verdicts)}
    table = insertion_table(tables).set_index("pid")
    assert list(table.index) == PIDS
    assert table.loc[PIDS[2], "final"] == "FAIL"  # the review wins over the automatic WARNING
    assert table.loc[PIDS[1], "final"] == "PASS"
    assert table.loc[PIDS[3], "final"] == "NOT_SET"
    assert table.loc[PIDS[0], "n_bad"] == 2 + 1 + 3
    assert table.loc[PIDS[0], "n_channels"] == 384
    assert table.loc[PIDS[1], "snr_db"] == pytest.approx(10.23)
    assert table.loc[PIDS[0], "lab"] == "churchlandlab"


def test_report_files_and_degraded_inputs(report):
    root = report.parent
    index = report.read_text()
    for pid in PIDS:
        assert (root / "insertions" / f"{pid}.html").exists()
        assert f'data-pid="{pid}"' in index
    assert len(list(root.rglob("plotly*.js"))) == 1 and (root / "plotly.min.js").stat().st_size > 1e6
    assert '<script src="plotly.min.js"></script>' in index and "cdn" not in index.lower()
    for name in ("qc_panel", "region_strip", "lfp_snapshot", "psd_heatmap"):
        assert (root / "figures" / PIDS[0] / f"{name}.png").exists()
    assert not (root / "figures" / PIDS[1] / "lfp_snapshot.png").exists()
    page_b = (root / "insertions" / f"{PIDS[1]}.html").read_text()
    assert "lfp.zarr has no group for" in page_b
    page_d = (root / "insertions" / f"{PIDS[3]}.html").read_text()
    assert "no channels for this insertion" in page_d and "qc/verdicts.parquet" not in page_d
    page_c = (root / "insertions" / f"{PIDS[2]}.html").read_text()
    assert "automatic verdict: WARNING, overridden by review" in page_c
    for view in ("coronal", "sagittal", "top"):
        for colour in ("region", "verdict"):
            assert (root / "figures" / "overview" / f"ccf_{view}_{colour}.png").exists()
    assert "no external_channels.parquet to overlay" in index
    compact = re.sub(r">\s+<", "><", index)  # the markdown package puts newlines between table cells
    assert "<td>train</td><td>2</td>" in compact and '<a href="../dataset/splits.json">splits</a>' in index
    assert 'href="gone.json"' not in index and "gone" in index
    assert (root / "figures" / "overview" / "coverage.png").exists() and "<td>CA1</td>" in index


def test_empty_workspace_gives_a_message_page(empty_report):
    text = empty_report.read_text()
    assert 'id="empty"' in text and "No insertions in this workspace yet" in text
    assert "<table id=\"insertions\"" not in text
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not (empty_report.parent / "plotly.min.js").exists()


def test_missing_workspace_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope")


def _local_targets(page) -> list[tuple[str, str]]:
    """(attribute value, absolute URL) of every link, image and script of the page."""
    return page.eval_on_selector_all(
        "a[href], img[src], script[src], link[href]",
        "els => els.map(e => [e.getAttribute('href') || e.getAttribute('src'), e.href || e.src])",
    )


def _check_links(page, root: Path) -> int:
    checked = 0
    for raw, url in _local_targets(page):
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https", "mailto"):
            assert raw.startswith(("http://", "https://", "mailto:")), f"relative link {raw} left the disk"
            continue
        assert parsed.scheme == "file", url
        target = Path(unquote(parsed.path))
        assert target.is_file(), f"{raw} -> {target} does not exist"
        assert root in target.parents or target.parent == root.parent / "dataset", f"{raw} leaves the report"
        if parsed.fragment and target == Path(unquote(urlparse(page.url).path)):
            assert page.locator(f"[id='{parsed.fragment}']").count() == 1, f"no anchor #{parsed.fragment}"
        checked += 1
    return checked


def test_report_in_headless_chromium(report, tmp_path):
    root = report.parent
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        console = Console(page)
        page.goto(report.as_uri())
        page.wait_for_selector("#trajectories .main-svg", timeout=20000)
        rows = page.eval_on_selector_all("#insertions tbody tr", "rs => rs.map(r => r.dataset.pid)")
        assert sorted(rows) == sorted(PIDS)

        page.click("#insertions th:has-text('verdict')")
        by_verdict = page.eval_on_selector_all(
            "#insertions tbody tr .verdict-cell", "cs => cs.map(c => c.textContent.trim())")
        assert by_verdict == ["PASS", "FAIL", "FAIL", "NOT_SET"]
        page.click("#insertions th:has-text('verdict')")
        by_verdict = page.eval_on_selector_all(
            "#insertions tbody tr .verdict-cell", "cs => cs.map(c => c.textContent.trim())")
        assert by_verdict == ["NOT_SET", "FAIL", "FAIL", "PASS"]  # descending: NOT_SET is a value

        page.click("#insertions th:has-text('SNR (dB)')")
        snr = page.eval_on_selector_all("#insertions tbody tr", "rs => rs.map(r => r.dataset.pid)")
        assert snr == [PIDS[0], PIDS[2], PIDS[1], PIDS[3]]  # 3.1 < 7.5 < 10.23, missing last

        page.fill("#filter", "hoferlab")
        visible = page.eval_on_selector_all("#insertions tbody tr:not([hidden])",
                                            "rs => rs.map(r => r.dataset.pid)")
        assert visible == [PIDS[1]]
        assert page.text_content("#shown") == "1 of 4 insertions shown"
        page.fill("#filter", "snr_fail")  # fired rules are searchable too
        visible = page.eval_on_selector_all("#insertions tbody tr:not([hidden])",
                                            "rs => rs.map(r => r.dataset.pid)")
        assert visible == [PIDS[0]]
        page.fill("#filter", "")

        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 10_000
        page.wait_for_timeout(500)
        page.locator("#trajectories").screenshot(path=str(tmp_path / "3d.png"))
        image = (plt_image.imread(tmp_path / "3d.png")[..., :3] * 255).astype(int)
        fail_x = np.nonzero(np.abs(image - [214, 39, 40]).max(axis=2) < 30)[1]
        pass_x = np.nonzero(np.abs(image - [44, 160, 44]).max(axis=2) < 30)[1]
        assert fail_x.size > 100 and pass_x.size > 50
        assert np.median(fail_x) < np.median(pass_x), "3D view: left-hemisphere probes must be on the left"
        n_links = _check_links(page, root)
        images = page.eval_on_selector_all("img", "is => is.map(i => i.naturalWidth)")
        assert images and all(w > 0 for w in images)

        for pid in PIDS:
            page.goto((root / "insertions" / f"{pid}.html").as_uri())
            n_links += _check_links(page, root)
            widths = page.eval_on_selector_all("img", "is => is.map(i => i.naturalWidth)")
            assert all(w > 0 for w in widths)
        assert n_links > 30
        assert console.errors == []


def test_empty_report_in_headless_chromium(empty_report):
    with chromium() as browser:
        page = browser.new_page()
        console = Console(page)
        page.goto(empty_report.as_uri())
        assert "No insertions in this workspace yet" in page.text_content("#empty")
        _check_links(page, empty_report.parent)
        assert console.errors == []


def test_report_pages_escape_text(report):
    for page in (report, report.parent / "insertions" / f"{PIDS[3]}.html"):
        text = page.read_text()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert not re.search(r"<script>alert", text)
