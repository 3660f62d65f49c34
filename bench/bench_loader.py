"""Random-access windows/s through `LfpWindows` vs a float16 `np.memmap` of the same data, in one run.

Builds a synthetic workspace (384 channels, 1250 Hz; by default the lfp stage's layout: `LfpStore` shards
of scaled int16, inner chunks of 1 channel x ``CHUNK_SAMPLES``; ``--legacy`` writes the old zarr v2 float32
layout instead), exports a zero-shot dataset of 3-s windows (timed per insertion), then reads the same
random windows (1) through the loader, (2) from float16 memmaps of the same arrays (the baseline of a public
audit of the LFP2Vec scripts), and (3) through `torch.utils.data.DataLoader` with 0, 1 and 2 workers.
Prints rates and ratios (issue 11 target: loader >= 0.8x the memmap in one process); no thresholds.
``--s3`` instead publishes the workspace into a local S3 server (moto, in this process) and reads the same
windows from it: by range requests, and through the local cache (first epoch fetching, then cached).

    uv run python bench/bench_loader.py [--chunk-samples 4096] [--dtype int16] [--legacy] [--seconds 240] [--s3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dataset"))

from fake_workspace import build_fake_workspace  # noqa: E402

from ibl_ephys_data.dataset import LfpWindows, export_dataset  # noqa: E402
from ibl_ephys_data.workspace.lfp_store import CHUNK_SAMPLES, LfpStore  # noqa: E402

NAMES = ["b_free1", "b_free3", "b_free5", "b_subj1", "both", "r_new"]


def interleaved(fns: dict, n: int, rounds: int = 3) -> dict:
    """Best windows/s of each function over ``rounds`` interleaved runs, so that load from other
    processes on the shared cores hits every contender alike."""
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[key] = max(best[key], n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=240.0, help="recorded seconds per insertion")
    ap.add_argument("--fs", type=float, default=1250.0)
    ap.add_argument("--chunk-samples", type=int, default=CHUNK_SAMPLES, help="samples per inner chunk")
    ap.add_argument("--dtype", choices=("int16", "float32", "float16"), default="int16", help="stored dtype")
    ap.add_argument("--legacy", action="store_true", help="old layout: zarr v2 float32, raw 1 x 16384 chunks")
    ap.add_argument("--n", type=int, default=4000, help="random windows per measurement")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats; the best of each is kept")
    ap.add_argument("--s3", action="store_true", help="read from an object-store workspace (local moto server)")
    ap.add_argument("--sharing", choices=("file_descriptor", "file_system"), default="file_descriptor",
                    help="torch.multiprocessing sharing strategy for the DataLoader runs")
    args = ap.parse_args()
    chunks = (1, 16384) if args.legacy else (1, args.chunk_samples)
    dtype = "float32" if args.legacy else args.dtype
    layout = "old v2 float32 raw" if args.legacy else f"LfpStore {dtype}"
    with tempfile.TemporaryDirectory() as tmp:
        n_samples = int(args.seconds * args.fs)
        ws = build_fake_workspace(Path(tmp) / "ws", names=NAMES, n_channels=384, fs=args.fs,
                                  segments=((0, n_samples),), chunks=chunks, compressor=None,
                                  dtype=dtype, variants=False, legacy=args.legacy)
        t0 = time.perf_counter()
        export_dataset(ws, window_seconds=3.0, min_channels=1, val_fraction=0.0)
        export_s = time.perf_counter() - t0
        print(f"export: {export_s:.2f} s for {len(NAMES)} insertions = "
              f"{export_s / len(NAMES):.3f} s/insertion ({args.seconds:.0f} s of 384-channel LFP each)")

        ds = LfpWindows(ws.root)
        rng = np.random.default_rng(0)
        idx = rng.integers(0, len(ds), args.n)
        mms = {}
        store = LfpStore(ws.lfp)
        for code, pid in enumerate(ds.pids):
            src = store.open(pid).lfp()
            mm = np.memmap(Path(tmp) / f"{pid}.f16", dtype=np.float16, mode="w+", shape=src.shape)
            mm[:] = src
            mm.flush()
            mms[code] = np.memmap(Path(tmp) / f"{pid}.f16", dtype=np.float16, mode="r", shape=src.shape)
        code_of = {pid: code for code, pid in enumerate(ds.pids)}
        where = [ds.location(i) for i in idx]
        boxes = [(code_of[p], r0, r1, s0, s1) for p, r0, r1, s0, s1 in where]
        labels = ds.labels[idx].tolist()

        def memmap_reads() -> None:
            for (code, r0, r1, s0, s1), y in zip(boxes, labels, strict=True):
                _ = {"x": mms[code][r0:r1, s0:s1].astype(np.float32), "y": y}

        def loader_reads() -> None:
            for i in idx:
                _ = ds[i]

        for i, (pid, r0, r1, s0, s1) in zip(idx[:50], where, strict=False):  # exactness spot-check
            np.testing.assert_array_equal(ds.read(i), store.open(pid).lfp(slice(r0, r1), slice(s0, s1)))
        if args.s3:
            object_store_reads(ws, idx, Path(tmp))
            return
        loader_reads()
        memmap_reads()
        rate = interleaved({"memmap": memmap_reads, "loader": loader_reads}, len(idx), args.rounds)
        print(f"one process, {len(ds)} windows of {where[0][4] - where[0][3]} samples, chunks {chunks}, "
              f"{layout}, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"  memmap float16 baseline: {rate['memmap']:9.0f} windows/s")
        print(f"  LfpWindows             : {rate['loader']:9.0f} windows/s   "
              f"ratio {rate['loader'] / rate['memmap']:.2f}x (target >= 0.8x)")

        import torch
        from torch.utils.data import DataLoader, Subset

        torch.multiprocessing.set_sharing_strategy(args.sharing)

        print(f"DataLoader (torch {torch.__version__}, batch {args.batch}, random windows, "
              f"{args.sharing} sharing, best of {args.rounds}):")
        for zscore in (False, True):
            sub = Subset(LfpWindows(ws.root, zscore=zscore), idx.tolist())
            loaders = {w: DataLoader(sub, batch_size=args.batch, num_workers=w, persistent_workers=w > 0)
                       for w in (0, 1, 2)}
            epochs = {w: (lambda dl=dl: [b["x"].shape for b in dl]) for w, dl in loaders.items()}
            for epoch in epochs.values():  # warm-up: worker start-up, first opens
                epoch()
            rates = interleaved(epochs, len(idx), args.rounds)
            print(f"  zscore={zscore!s:5}: " + "  ".join(f"workers={w}: {r:6.0f}/s" for w, r in rates.items())
                  + f"  | 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
            del loaders, epochs


def object_store_reads(ws, idx, tmp: Path) -> None:
    """Windows/s from an object-store copy of ``ws``: range reads, then the cached loader, vs the folder."""
    import shutil

    import boto3
    from moto.server import ThreadedMotoServer

    from ibl_ephys_data.workspace import Workspace, atomic_path

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      IBL_EPHYS_DATA_CACHE=str(tmp / "s3-cache"))
    boto3.client("s3").create_bucket(Bucket="bench")
    remote = Workspace("s3://bench/ws").create()
    t0 = time.perf_counter()
    for name in remote.published():
        if (ws.root / name).exists():
            with atomic_path(remote.root / name) as out:
                (shutil.copytree if (ws.root / name).is_dir() else shutil.copy)(ws.root / name, out)
    print(f"published the workspace into s3://bench/ws in {time.perf_counter() - t0:.1f} s")
    n = min(len(idx), 1000)
    shutil.rmtree(remote.root)  # a reader with an empty working copy
    readers = {"folder": LfpWindows(ws.root), "range requests": LfpWindows("s3://bench/ws", local_cache=False),
               "local cache": LfpWindows("s3://bench/ws", local_cache=True)}
    rates = {}
    for key, ds in readers.items():
        for epoch in (1, 2):  # the first epoch opens (and fetches) insertions; the second finds them ready
            t0 = time.perf_counter()
            for i in idx[:n]:
                _ = ds[i]
            rates[key, epoch] = n / (time.perf_counter() - t0)
    print(f"object store (moto in this process, {n} random windows per epoch), load {os.getloadavg()[0]:.1f}:")
    for (key, epoch), rate in rates.items():
        ratio = rate / rates["folder", epoch]
        print(f"  {key:15} epoch {epoch}: {rate:9.0f} windows/s   ratio to the folder {ratio:.3f}x")
    server.stop()


if __name__ == "__main__":
    main()
