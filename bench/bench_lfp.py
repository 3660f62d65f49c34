"""Raw-LFP benchmark: the usual script (baseline) against the lfp stage, on one long demo recording.

Both run in the same invocation, against the same loopback-served demo store, each in its own process so
peak RSS and bytes downloaded are measured separately:

- baseline: download the whole .cbin, read the window, ``destripe_lfp(channel_labels=True)``, decimate;
- ours: stream the needed chunks, detect bad channels once (10 x 4 s), chunked destriping into zarr;
- ours again on a 120-s window, to show memory does not grow with window length;
- ours without per-window QC (``lfp.artifacts`` scanner replaced by a no-op in the child process), so the
  cost of scanning every stored sample is printed as a throughput ratio measured in the same run.

Usage: ``uv run python bench/bench_lfp.py [--seconds 600] [--window 300]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def store_path(seconds: float) -> Path:
    return OUT / f"store-{int(seconds)}s"


def ensure_store(seconds: float) -> Path:
    from ibl_ephys_data.demo.store import generate_store

    root = store_path(seconds)
    if not (root / "alyx.json").exists():
        print(f"generating a {seconds:.0f}-s demo recording in {root} ...", flush=True)
        generate_store(root, seconds=seconds, n_insertions=1)
    return root


def worker(kind: str, store: Path, start: float, window: float) -> dict:
    """Runs in a child process: one measurement, printed as JSON."""
    os.environ["HOME"] = tempfile.mkdtemp()
    import numpy as np

    from ibl_ephys_data.demo.layout import INSERTIONS
    from ibl_ephys_data.demo.run import demo_connection
    from ibl_ephys_data.demo.server import LoopbackAlyx

    pid = INSERTIONS[0].pid
    with LoopbackAlyx(store) as server:
        one = demo_connection(server, Path(tempfile.mkdtemp())).open()
        t0 = time.perf_counter()
        if kind == "baseline":
            import scipy.signal
            from brainbox.io.one import SpikeSortingLoader
            from ibldsp.voltage import destripe_lfp

            from ibl_ephys_data.atlas import RegionsOnlyAtlas

            ssl = SpikeSortingLoader(one=one, pid=pid, atlas=RegionsOnlyAtlas())
            sr = ssl.raw_electrophysiology(stream=False, band="lf")
            first, last = int(start * sr.fs), int((start + window) * sr.fs)
            raw = sr[first:last, :-sr.nsync].T
            destriped = destripe_lfp(raw, fs=sr.fs, channel_labels=True)
            out = scipy.signal.decimate(destriped, 2, axis=-1, zero_phase=True)
            shape = out.shape
        else:
            from ibl_ephys_data.lfp import store as lfp_store
            from ibl_ephys_data.lfp.stage import LfpOptions, process_pid

            if kind == "ours-noqc":
                lfp_store.ArtifactScanner = _NoScan

            zroot = Path(tempfile.mkdtemp()) / "lfp.zarr"
            process_pid(one, zroot, pid, LfpOptions(windows=((start, window),)))
            import zarr

            shape = zarr.open_group(str(zroot / pid), mode="r")["lfp"].shape
        wall = time.perf_counter() - t0
        served = server.bytes_served
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return {"kind": kind, "window_s": window, "wall_s": wall, "x_realtime": window / wall,
            "peak_rss_gb": rss_gb, "bytes_downloaded": served, "shape": list(shape), "dtype": str(np.float32)}


class _NoScan:
    """Stands in for ``lfp.artifacts.ArtifactScanner`` to time the lfp stage without per-window QC."""

    def __init__(self, *args, **kwargs):
        pass

    def start_window(self, offset):
        pass

    feed_raw = start_window

    def feed(self, lfp, cm):
        pass

    def finish(self):
        return []


def run_child(kind: str, store: Path, start: float, window: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--store", str(store), "--start", str(start),
           "--window", str(window)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def covering_bytes(store: Path, start: float, window: float, n_batches: int = 10, batch_s: float = 4.0) -> int:
    """Compressed bytes of the chunks covering the window and the bad-channel batches, plus .ch/.meta."""
    import numpy as np

    cbin = next(store.rglob("*.lf.cbin"))
    ch = json.loads(cbin.with_suffix(".ch").read_text())
    bounds, offsets = np.array(ch["chunk_bounds"]), np.array(ch["chunk_offsets"])
    fs = ch["sample_rate"]
    duration = bounds[-1] / fs
    spans = [(start, start + window)] + [(s, s + batch_s) for s in np.linspace(0, duration - batch_s, n_batches)]
    chunks = set()
    for a, b in spans:
        first = np.searchsorted(bounds, int(a * fs), side="right") - 1
        last = np.searchsorted(bounds, int(b * fs) - 1, side="right") - 1
        chunks.update(range(first, last + 1))
    size = sum(int(offsets[c + 1] - offsets[c]) for c in chunks)
    return size + cbin.with_suffix(".ch").stat().st_size + cbin.with_suffix(".meta").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the demo recording")
    parser.add_argument("--window", type=float, default=300.0)
    parser.add_argument("--start", type=float, default=150.0)
    parser.add_argument("--worker")
    parser.add_argument("--store")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.store), args.start, args.window)))
        return
    store = ensure_store(args.seconds)
    base = run_child("baseline", store, args.start, args.window)
    ours = run_child("ours", store, args.start, args.window)
    noqc = run_child("ours-noqc", store, args.start, args.window)
    short = run_child("ours", store, args.start, 120.0)
    long_ = run_child("ours", store, 0.0, 600.0) if args.seconds >= 600 else None
    cbin_size = next(store.rglob("*.lf.cbin")).stat().st_size
    budget = covering_bytes(store, args.start, args.window)
    rows = [base, ours, noqc, short] + ([long_] if long_ else [])
    print(f"\n{'run':<11}{'window s':>9}{'wall s':>9}{'x real time':>13}{'peak RSS GB':>13}{'MB downloaded':>15}")
    for r in rows:
        print(f"{r['kind']:<11}{r['window_s']:>9.0f}{r['wall_s']:>9.1f}{r['x_realtime']:>13.2f}"
              f"{r['peak_rss_gb']:>13.2f}{r['bytes_downloaded'] / 1e6:>15.1f}")
    ratio = ours["x_realtime"] / base["x_realtime"]
    qc_ratio = ours["x_realtime"] / noqc["x_realtime"]
    print(f"\nper-window QC: throughput with / without = {qc_ratio:.3f}  (target >= 0.90)")
    print(f"\nthroughput ratio ours/baseline ({args.window:.0f}-s window): {ratio:.2f}x  (target >= 3)")
    print(f"bytes: ours {ours['bytes_downloaded'] / 1e6:.1f} MB = {ours['bytes_downloaded'] / budget:.3f} x the "
          f"chunks covering window + batches + .ch/.meta ({budget / 1e6:.1f} MB; target <= 1.05); "
          f"baseline {base['bytes_downloaded'] / 1e6:.1f} MB (whole file {cbin_size / 1e6:.1f} MB)")
    if long_:
        print(f"memory: peak RSS 600-s window {long_['peak_rss_gb']:.2f} GB vs 120-s window "
              f"{short['peak_rss_gb']:.2f} GB = {long_['peak_rss_gb'] / short['peak_rss_gb']:.2f}x "
              "(targets < 1.5 GB, <= 1.2x)")


if __name__ == "__main__":
    main()
