"""Feature extraction of the baseline (windows/s) against reading the same windows alone, in one run.

Builds a synthetic workspace (lfp stage layout: 1250 Hz, uncompressed chunks of 1 channel x 16384
samples), exports 3-s windows, then, on the same windows in file order:
(1) reads them through `LfpWindows` only (the floor any feature extraction pays),
(2) runs `baseline.stage.window_features` (read + batched Welch + log band powers),
(3) runs `scipy.signal.welch` window by window (the naive way), for comparison,
then times `run_baseline` end to end. Prints rates and ratios; no thresholds (issue target: seconds
per thousand windows on a CPU).

    uv run python bench/bench_baseline.py [--seconds 120] [--channels 96] [--n 5000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dataset"))

from fake_workspace import build_fake_workspace  # noqa: E402

from ibl_ephys_data.baseline import BaselineOptions, run_baseline  # noqa: E402
from ibl_ephys_data.baseline.features import usable_bands  # noqa: E402
from ibl_ephys_data.baseline.stage import window_features  # noqa: E402
from ibl_ephys_data.dataset import LfpWindows, export_dataset  # noqa: E402

NAMES = ["b_free1", "b_free3", "b_free5", "b_subj1", "both", "r_new", "r_subj"]


def best_rate(fn, n: int, rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="recorded seconds per insertion")
    ap.add_argument("--channels", type=int, default=96, help="channels per insertion (multiple of 24)")
    ap.add_argument("--fs", type=float, default=1250.0)
    ap.add_argument("--n", type=int, default=5000, help="windows per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="repeats; the best of each is kept")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = build_fake_workspace(Path(tmp) / "ws", names=NAMES, n_channels=args.channels, fs=args.fs,
                                  segments=((0, int(args.seconds * args.fs)),), chunks=(1, 16384),
                                  variants=False)
        export_dataset(ws, window_seconds=3.0, min_channels=1)
        ds = LfpWindows(ws.root)
        frame = pq.read_table(ds.windows_path, columns=["row", "row_start", "fs", "n_samples"]).to_pandas()
        rows = np.arange(min(args.n, len(ds)))
        bands = usable_bands(args.fs)

        def read_only() -> None:
            for i in rows:
                ds.read(int(i))

        def features() -> None:
            window_features(ds, frame, rows)

        def naive() -> None:
            nper = int(args.fs)
            for i in rows:
                f, p = scipy.signal.welch(ds.read(int(i))[0], fs=args.fs, nperseg=nper)
                [np.log10(p[(f >= lo) & (f < hi)].sum()) for _, lo, hi in bands]

        read_only()  # warm-up: open the stores, map the chunks
        rate = {name: best_rate(fn, len(rows), args.rounds)
                for name, fn in (("read", read_only), ("features", features), ("naive", naive))}
        print(f"{len(rows)} windows of 3 s at {args.fs:g} Hz, {len(bands)} bands, best of {args.rounds}, "
              f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"  read only (LfpWindows)          : {rate['read']:8.0f} windows/s")
        print(f"  window_features (read + Welch)  : {rate['features']:8.0f} windows/s   "
              f"ratio {rate['features'] / rate['read']:.2f}x of read-only, "
              f"{1000 / rate['features']:.2f} s per 1000 windows")
        print(f"  per-window scipy welch (naive)  : {rate['naive']:8.0f} windows/s   "
              f"batched is {rate['features'] / rate['naive']:.2f}x faster")
        t0 = time.perf_counter()
        results = run_baseline(ws, BaselineOptions(n_bootstrap=1000))
        total = time.perf_counter() - t0
        c = results["counts"]
        print(f"run_baseline end to end: {total:.1f} s for {len(ds)} windows "
              f"({c['train_windows']} train, {c['test_windows']} test; features, 4 models, "
              f"{BaselineOptions().n_permutations} permutations, leaky control, lab CV, 1000 bootstraps)")


if __name__ == "__main__":
    main()
