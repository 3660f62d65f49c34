"""Cost of the network policy and of verified downloads, against ONE's own download of the same files.

In one invocation, against the same loopback-served demo store, each into a fresh ONE cache:

- baseline: ONE's ``load_dataset(download_only=True)`` of an insertion's raw LF files (.ch, .meta, .cbin);
- ours: the same through a ONE with the policy installed, then ``verified_datasets`` (size + md5 check).

Prints wall times and the ratio ours/baseline (best of ``--repeat``).

Usage: ``uv run python bench/bench_net.py [--seconds 60] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

NAMES = ["*.lf.ch", "*.lf.meta", "*.lf.*bin"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ["HOME"] = tempfile.mkdtemp(prefix="bench-net-home-")  # ONE params never touch the real home

    from one.api import OneAlyx

    from ibl_ephys_data.demo.layout import INSERTIONS
    from ibl_ephys_data.demo.run import demo_connection, ensure_store
    from ibl_ephys_data.demo.server import LoopbackAlyx
    from ibl_ephys_data.demo.store import DEMO_PASSWORD, DEMO_USER
    from ibl_ephys_data.net import verified_datasets

    out = Path(__file__).resolve().parent / "out"
    store = ensure_store(out / f"store-net-{int(args.seconds)}s", args.seconds)
    ins = INSERTIONS[0]
    collection = f"raw_ephys_data/{ins.probe}"
    with LoopbackAlyx(store) as server, tempfile.TemporaryDirectory() as tmp:
        def baseline(cache: Path) -> None:
            one = OneAlyx(base_url=server.url, cache_dir=str(cache), username=DEMO_USER, password=DEMO_PASSWORD,
                          silent=True, mode="remote")
            one.alyx._par = one.alyx._par.set("HTTP_DATA_SERVER", server.data_url)
            for name in NAMES:
                one.load_dataset(ins.eid, name, collection=collection, download_only=True)

        def ours(cache: Path) -> None:
            one = demo_connection(server, cache).open()
            verified_datasets(one, ins.eid, NAMES, collection=collection)

        times: dict[str, float] = {}
        for label, fn in (("baseline", baseline), ("ours", ours)):
            best = float("inf")
            for i in range(args.repeat):
                cache = Path(tmp) / f"{label}-{i}"
                t0 = time.perf_counter()
                fn(cache)
                best = min(best, time.perf_counter() - t0)
            times[label] = best
        size = sum(f.stat().st_size for f in (Path(tmp) / "ours-0").rglob("*.lf.*") if f.is_file())
    print(f"raw LF files of one insertion ({args.seconds:.0f} s, {size / 1e6:.1f} MB), best of {args.repeat}:")
    print(f"  baseline ONE download: {times['baseline']:.2f} s")
    print(f"  policy + verified:     {times['ours']:.2f} s")
    print(f"  ratio ours/baseline:   {times['ours'] / times['baseline']:.2f}")


if __name__ == "__main__":
    main()
