"""Speed of signal QC on raw 384-channel NP1 LF, as a multiple of real time (target >= 10x on 2 cores).

Writes a synthetic 384-channel LF recording as a real mtscomp .cbin (``demo.signals.write_lf_cbin``), then
times, in this process:

1. baseline: reading the QC snippets only (spikeglx.Reader, mtscomp decompression, int16 -> volts);
2. metrics only: ``snippet_qc`` on the same recording already decompressed in memory;
3. end to end: ``snippet_qc`` (read + metrics + artifacts), what the QC stage runs per insertion.

Each is printed as seconds of LF processed per second of wall time ("x real time"), relative to the
read-only baseline, and per second of CPU time (the process's, all threads): on a machine shared with
other jobs the wall-clock ratio understates what a dedicated 2-core run achieves.
Run: ``uv run python bench/bench_qc.py [--seconds 60] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import spikeglx

from ibl_ephys_data.demo.signals import planted_labels, synthetic_lfp, write_lf_cbin
from ibl_ephys_data.qc.metrics import snippet_qc, snippet_windows

N_SNIPPETS, SNIPPET_SECONDS = 5, 10.0
PRESCREEN_WINDOWS = 1648  # 3.28-s RMS windows in a 1.5-h recording


class MemoryReader:
    """The slice of the spikeglx.Reader interface snippet_qc uses, over a decompressed array (volts)."""

    def __init__(self, reader: spikeglx.Reader):
        self.fs, self.ns, self.nc, self.nsync = reader.fs, reader.ns, reader.nc, reader.nsync
        self.range_volts = reader.range_volts
        self.data = reader[:, :]

    def __getitem__(self, item: tuple[slice, slice]) -> np.ndarray:
        return self.data[item]


def best_of(repeats: int, fn) -> tuple[float, float]:
    """Best wall-clock and best CPU time of ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def time_prescreen(cbin: Path, folder: Path, repeats: int) -> float:
    """Best wall time of ``prescreen_folder`` on IBL's LF QC arrays, the RMS series tiled to 1.5 h."""
    from ibl_ephys_data.demo.iblqc import write_iblqc_lf
    from ibl_ephys_data.qc.prescreen import FILES, prescreen_folder

    write_iblqc_lf(cbin, folder)
    rms_file, ts_file = folder / FILES["rms"], folder / FILES["timestamps"]
    rms, ts = np.load(rms_file), np.load(ts_file)
    reps = int(np.ceil(PRESCREEN_WINDOWS / rms.shape[0]))
    np.save(rms_file, np.tile(rms, (reps, 1))[:PRESCREEN_WINDOWS])
    step = float(np.median(np.diff(ts))) if ts.size > 1 else 3.28
    np.save(ts_file, np.arange(PRESCREEN_WINDOWS) * step)
    return best_of(repeats, lambda: prescreen_folder(folder))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the synthetic recording")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    args = parser.parse_args()
    labels = planted_labels()
    with tempfile.TemporaryDirectory() as tmp:
        cbin = write_lf_cbin(synthetic_lfp(args.seconds, seed=1), Path(tmp), fs=2500.0)
        with spikeglx.Reader(cbin) as reader:
            windows = snippet_windows(reader.ns, reader.fs, N_SNIPPETS, SNIPPET_SECONDS)
            lf_seconds = sum(b - a for a, b in windows) / reader.fs

            def read() -> list[np.ndarray]:
                return [np.asarray(reader[a:b, :-reader.nsync]) for a, b in windows]

            memory = MemoryReader(reader)
            t_read = best_of(args.repeats, read)
            t_metrics = best_of(args.repeats, lambda: snippet_qc(memory, labels, N_SNIPPETS, SNIPPET_SECONDS))
            t_total = best_of(args.repeats, lambda: snippet_qc(reader, labels, N_SNIPPETS, SNIPPET_SECONDS))
            summary, _ = snippet_qc(reader, labels, N_SNIPPETS, SNIPPET_SECONDS)
        t_prescreen = time_prescreen(cbin, Path(tmp), args.repeats)
    print(f"{len(windows)} snippets x {SNIPPET_SECONDS:g} s x 384 channels = {lf_seconds:g} s of raw LF "
          f"(best of {args.repeats})")
    rows = (("baseline: read snippets only", t_read), ("metrics only (in memory)", t_metrics),
            ("snippet_qc end to end", t_total))
    for name, (wall, cpu) in rows:
        print(f"  {name:30s} {wall:6.2f} s  {lf_seconds / wall:6.1f} x real time  "
              f"({wall / t_read[0]:4.2f} x baseline time)   cpu {cpu:6.2f} s = {lf_seconds / cpu:6.1f} x")
    verdict = "meets" if lf_seconds / t_total[0] >= 10 else "MISSES"
    print(f"end-to-end {lf_seconds / t_total[0]:.1f} x real time (wall clock): {verdict} the >= 10 x target")
    print(f"pre-screen of one 1.5-h insertion (IBL's LF QC arrays, {PRESCREEN_WINDOWS} RMS windows): "
          f"{t_prescreen:.3f} s ({'meets' if t_prescreen < 1 else 'MISSES'} the < 1 s target)")
    print("values on the demo's synthetic LFP:", {k: round(v, 4) for k, v in summary.items()})


if __name__ == "__main__":
    main()
