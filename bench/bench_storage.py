"""lfp.zarr storage, old layout vs new, side by side: bytes, files, error, write and random-read rates.

For each recording (the benchmark recording: a synthetic 384-channel NP1 LF .cbin from
``demo.signals.write_demo_lf``; with ``--demo-store`` also the demo store's recordings) it destripes the
whole recording once to float32 (the reference), then writes it

- in the old layout: zarr v2, float32, uncompressed chunks of 1 x 16384 samples (what the lfp stage wrote);
- in the new layout (`LfpStore`): zarr v3 shards, scaled int16, Blosc; with ``--sweep`` also for other inner
  chunk lengths and codecs, which is how ``CHUNK_SAMPLES`` and ``BLOSC`` were chosen;

and prints bytes per insertion-second, files per insertion, RMS error against float32, write throughput and
random 3-s single-channel windows/s (float32 µV out) against a float16 memmap of the same data (the
loader's baseline). Last, the projection for the 699 brain-wide-map + 88 repeated-site insertions at the
default 4 x 60-s snippets. Ratios are taken within this run; no thresholds.

    uv run python bench/bench_storage.py [--seconds 60] [--demo-store DIR] [--sweep]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import spikeglx
import zarr

from ibl_ephys_data.demo.signals import write_demo_lf
from ibl_ephys_data.lfp.bad_channels import detect_channel_labels
from ibl_ephys_data.lfp.destripe import preprocess_window
from ibl_ephys_data.workspace.lfp_store import BLOSC, CHUNK_SAMPLES, ChunkCache, Encoding, LfpStore, ZarrReader

OLD_CHUNK = 16384
N_INSERTIONS = {"bwm": 699, "repro-ephys": 88}
INSERTION_SECONDS = 4 * 60.0  # default snippets


def tree(path: Path) -> tuple[int, int]:
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return sum(f.stat().st_size for f in files), len(files)


def write_old(path: Path, x: np.ndarray, cm: np.ndarray) -> float:
    t0 = time.perf_counter()
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    lfp = group.create_array("lfp", shape=x.shape, chunks=(1, OLD_CHUNK), dtype="float32", compressors=None,
                             fill_value=0.0)
    for start in range(0, x.shape[1], OLD_CHUNK):
        lfp[:, start:start + OLD_CHUNK] = x[:, start:start + OLD_CHUNK]
    group.create_array("common_mode", data=cm, chunks=(OLD_CHUNK,), compressors=None)
    group.attrs.update({"fs": 1250.0, "raw_ind": list(range(x.shape[0])), "complete": True})
    return time.perf_counter() - t0


def write_new(root: Path, x: np.ndarray, cm: np.ndarray, encoding: Encoding, chunk: int, blosc: dict
              ) -> tuple[float, dict]:
    t0 = time.perf_counter()
    store = LfpStore(root)
    with store.create("p", x.shape[0], x.shape[1], encoding, chunk_samples=chunk, blosc=blosc) as out:
        for start in range(0, x.shape[1], out.shard):
            out.write_lfp(start, x[:, start:start + out.shard])
        out.write_common_mode(0, cm)
        out.finish({"fs": 1250.0, "raw_ind": list(range(x.shape[0]))})
    return time.perf_counter() - t0, store.open("p").encoding()


def read_rate(read, shape: tuple[int, int], n: int, window: int, seed: int = 0, rounds: int = 3) -> float:
    """Best windows/s over ``rounds`` of ``n`` random single-channel windows."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, shape[0], n)
    starts = rng.integers(0, shape[1] - window, n)
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for r, s in zip(rows.tolist(), starts.tolist(), strict=True):
            read(r, r + 1, s, s + window)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def destriped(cbin: Path) -> tuple[np.ndarray, np.ndarray, Encoding, float]:
    reader = spikeglx.Reader(cbin)
    try:
        labels = detect_channel_labels(reader)
        seconds = reader.ns / reader.fs
        x, cm = preprocess_window(reader, 0.0, seconds, labels)
        return x, cm, Encoding.for_reader(reader, "int16"), seconds
    finally:
        reader.close()


def bench_one(name: str, cbin: Path, tmp: Path, args) -> dict:
    x, cm, encoding, seconds = destriped(cbin)
    window = int(3.0 * 1250)
    print(f"\n{name}: {x.shape[0]} channels x {x.shape[1]} samples ({seconds:.0f} s at 1250 Hz), "
          f"signal RMS {float(np.sqrt(np.mean(x.astype(np.float64) ** 2))):.1f} µV, int16 unit {encoding.scale:.4f} µV")
    old = tmp / f"{name}-old.zarr" / "p"
    t_old = write_old(old, x, cm)
    old_bytes, old_files = tree(old)
    mm_path = tmp / f"{name}.f16"
    mm = np.memmap(mm_path, dtype=np.float16, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    mm = np.memmap(mm_path, dtype=np.float16, mode="r", shape=x.shape)
    base = read_rate(lambda r0, r1, s0, s1: mm[r0:r1, s0:s1].astype(np.float32), x.shape, args.n, window)
    old_reader = ZarrReader(old / "lfp")
    old_rate = read_rate(old_reader.read, x.shape, args.n // 10, window)
    mb = x.nbytes / 1e6
    print(f"{'layout':<34} {'bytes/ins-s':>11} {'x smaller':>9} {'files':>6} {'RMS err':>8} "
          f"{'write MB/s':>10} {'windows/s':>9} {'vs f16 mm':>9}")
    print(f"{'old: v2 float32 raw 1x16384':<34} {old_bytes / seconds:11.0f} {1.0:9.2f} {old_files:6d} "
          f"{0.0:8.3%} {mb / t_old:10.0f} {old_rate:9.0f} {old_rate / base:9.2f}")
    print(f"{'float16 memmap (loader baseline)':<34} {x.size * 2 / seconds:11.0f} {old_bytes / (x.size * 2):9.2f} "
          f"{1:6d} {'':>8} {'':>10} {base:9.0f} {1.0:9.2f}")
    configs = [(CHUNK_SAMPLES, BLOSC)]
    if args.sweep:
        configs += [(c, BLOSC) for c in (2048, 8192, 16384) if c != CHUNK_SAMPLES]
        configs += [(CHUNK_SAMPLES, {"cname": c, "clevel": lvl, "shuffle": sh})
                    for c, lvl, sh in (("lz4", 5, "shuffle"), ("lz4", 5, "bitshuffle"), ("zstd", 1, "shuffle"),
                                       ("zstd", 5, "bitshuffle"))]
    result = {}
    for chunk, blosc in configs:
        root = tmp / f"{name}-{chunk}-{blosc['cname']}-{blosc['shuffle']}.zarr"
        t_new, enc = write_new(root, x, cm, encoding, chunk, blosc)
        n_bytes, n_files = tree(root / "p")
        reader = LfpStore(root).open("p", ChunkCache(0)).reader()  # no decoded-chunk cache: every read decodes
        rate = read_rate(reader.read, x.shape, args.n, window)
        label = f"new: int16 1x{chunk} {blosc['cname']}/{blosc['shuffle']}"
        print(f"{label:<34} {n_bytes / seconds:11.0f} {old_bytes / n_bytes:9.2f} {n_files:6d} "
              f"{enc['rms_error_rel']:8.3%} {mb / t_new:10.0f} {rate:9.0f} {rate / base:9.2f}")
        if (chunk, blosc) == (CHUNK_SAMPLES, BLOSC):
            result = {"old_bytes_s": old_bytes / seconds, "new_bytes_s": n_bytes / seconds, "old_files": old_files,
                      "new_files": n_files, "seconds": seconds}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the synthetic benchmark recording")
    ap.add_argument("--demo-store", type=Path, help="also bench the .lf.cbin files of this demo store")
    ap.add_argument("--max-demo", type=int, default=2, help="demo recordings to bench")
    ap.add_argument("--n", type=int, default=3000, help="random windows per read measurement")
    ap.add_argument("--sweep", action="store_true", help="also try other chunk lengths and codecs")
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; zarr {zarr.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {"benchmark": bench_one("benchmark", write_demo_lf(tmp / "raw", n_seconds=args.seconds, seed=1),
                                          tmp, args)}
        if args.demo_store:
            for i, cbin in enumerate(sorted(args.demo_store.rglob("*.lf.cbin"))[:args.max_demo]):
                results[f"demo{i}"] = bench_one(f"demo{i}", cbin, tmp, args)
    r = results["benchmark"]
    n = sum(N_INSERTIONS.values())
    per_old, per_new = r["old_bytes_s"] * INSERTION_SECONDS, r["new_bytes_s"] * INSERTION_SECONDS
    files_old = r["old_files"] * INSERTION_SECONDS / r["seconds"]  # one file per 1 x 16384 chunk
    print(f"\nprojection, {n} insertions ({' + '.join(f'{v} {k}' for k, v in N_INSERTIONS.items())}) x "
          f"{INSERTION_SECONDS:.0f} s, benchmark-recording rates:")
    print(f"  old layout: {per_old / 1e6:7.0f} MB and ~{files_old:6.0f} files per insertion -> "
          f"{per_old * n / 1e9:6.0f} GB, {files_old * n / 1e6:.1f} M files")
    print(f"  new layout: {per_new / 1e6:7.0f} MB and <= 50 files per insertion -> "
          f"{per_new * n / 1e9:6.0f} GB, <= {50 * n / 1e3:.1f} k files  ({per_old / per_new:.2f}x smaller)")


if __name__ == "__main__":
    main()
