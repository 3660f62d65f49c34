"""Scale benchmark: N demo insertions through ``run`` in process and on a Dask LocalCluster, then a projection.

Both runs use the same loopback-served demo store, in this invocation, each into a fresh workspace:

- in process (the default executor);
- on Dask (``scheduler="local"``: a LocalCluster sized to this machine) — the ratio shows what Dask costs.

From the in-process run it takes seconds per insertion per stage (the manifest records each insertion's
time) and bytes served per stage (the loopback server counts them), scales them from the demo recording to a
real insertion (the default 4 x 60-s snippets; LF bytes from the demo's own mtscomp ratio) and writes the
"Runtime and downloads" section of ``docs/scale.md``: projected CPU-hours, bytes downloaded and wall time on
1, 8 and 64 workers for the 699 brain-wide-map + 88 repeated-site insertions.

Usage: ``uv run python bench/bench_scale.py [--seconds 24] [--no-docs]``
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scale.md"
BEGIN, END = "<!-- BEGIN bench_scale -->", "<!-- END bench_scale -->"
N_BWM, N_RS = 699, 88
REAL_LFP_SECONDS = 4 * 60.0 + 10 * 4.0  # 4 x 60-s snippets + 10 x 4-s bad-channel batches
REAL_DURATION_S = 5400.0
NP1_LF_BYTES_PER_S = 385 * 2500 * 2  # int16 samples before mtscomp
STAGES = ("channels", "lfp", "qc")


def run_once(store: Path, root: Path, seconds: float, scheduler: str | None) -> dict:
    from ibl_ephys_data.demo.run import demo_connection
    from ibl_ephys_data.demo.server import LoopbackAlyx
    from ibl_ephys_data.lfp.stage import LfpOptions
    from ibl_ephys_data.run import load_config, run_pipeline
    from ibl_ephys_data.workspace import Workspace

    ws = Workspace(root / "ws").create()
    config = load_config(scheduler=scheduler)
    timings, served = {}, {}
    with LoopbackAlyx(store) as server:
        connection = demo_connection(server, root / "one-cache")
        for stage in ("catalog", *STAGES):
            cfg = replace(config, stages=(stage,), lfp=LfpOptions(windows=((0.0, seconds),)))
            before, t0 = server.bytes_served, time.perf_counter()
            result = run_pipeline(ws, cfg, connection, progress=False)
            timings[stage] = time.perf_counter() - t0
            served[stage] = server.bytes_served - before
            if not result.ok:
                sys.exit(f"{stage} failed: {result.failed}")
    manifest = json.loads(ws.manifest_path.read_text())
    per_pid = {s: [p[s]["seconds"] for p in manifest["pids"].values() if p.get(s, {}).get("status") == "done"]
               for s in STAGES}
    n = len(per_pid["lfp"])
    return {"wall": timings, "served": served, "per_pid": per_pid, "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=24.0, help="length of each demo recording")
    parser.add_argument("--no-docs", action="store_true", help="print only, do not rewrite docs/scale.md")
    args = parser.parse_args()

    from ibl_ephys_data.demo.store import generate_store

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        tmp = Path(tmp)
        store = generate_store(tmp / "store", seconds=args.seconds)
        cbin = sum(p.stat().st_size for p in store.rglob("*.lf.cbin"))
        n_lf = len(list(store.rglob("*.lf.cbin")))
        mtscomp_ratio = cbin / (n_lf * args.seconds * NP1_LF_BYTES_PER_S)
        local = run_once(store, tmp / "process", args.seconds, None)
        dask = run_once(store, tmp / "dask", args.seconds, "local")

    total_local = sum(local["wall"][s] for s in STAGES)
    total_dask = sum(dask["wall"][s] for s in STAGES)
    print(f"{local['n']} insertions of {args.seconds:.0f} s, 2 cores")
    print(f"{'stage':<10}{'in process (s)':>16}{'dask (s)':>12}{'s / insertion':>16}")
    for s in STAGES:
        print(f"{s:<10}{local['wall'][s]:>16.1f}{dask['wall'][s]:>12.1f}"
              f"{statistics.median(local['per_pid'][s]):>16.2f}")
    ratio = total_dask / total_local
    print(f"dask / in process wall time: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %; target <= +10 %)")

    # projection: seconds per insertion, scaled from the demo recording to the default real snippets
    per_s = {s: statistics.median(local["per_pid"][s]) for s in STAGES}
    lfp_scale = REAL_LFP_SECONDS / (args.seconds + min(args.seconds, 40.0))
    real_s = {"channels": per_s["channels"], "lfp": per_s["lfp"] * lfp_scale, "qc": per_s["qc"]}
    lf_bytes = REAL_LFP_SECONDS * NP1_LF_BYTES_PER_S * mtscomp_ratio
    other_bytes = (local["served"]["channels"] + local["served"]["qc"]) / local["n"]
    n_total = N_BWM + N_RS
    cpu_h = n_total * sum(real_s.values()) * 2 / 3600  # each in-process insertion keeps both cores busy
    wall = {w: n_total * sum(real_s.values()) / min(w, n_total) / 3600 for w in (1, 8, 64)}
    lines = [
        BEGIN,
        "## Runtime and downloads",
        "",
        f"Measured by `uv run python bench/bench_scale.py` on {local['n']} demo insertions of {args.seconds:.0f} s "
        "(2 cores, the loopback server on the same machine, so no network latency), then projected.",
        "",
        "| stage | in process (s) | Dask LocalCluster (s) | s per insertion (demo) | s per insertion (projected) |",
        "|---|---|---|---|---|",
        *(f"| {s} | {local['wall'][s]:.1f} | {dask['wall'][s]:.1f} | {per_s[s]:.2f} | {real_s[s]:.1f} |"
          for s in STAGES),
        f"| **total** | {total_local:.1f} | {total_dask:.1f} | | {sum(real_s.values()):.1f} |",
        "",
        f"Dask costs {(ratio - 1) * 100:+.1f} % against in process on 2 cores (target: at most +10 %).",
        "",
        f"Projection for all {N_BWM} brain-wide-map + {N_RS} repeated-site insertions ({n_total}), default "
        f"4 x 60-s snippets + 10 x 4-s bad-channel batches = {REAL_LFP_SECONDS:.0f} s of raw LF each; lfp time "
        f"scales with the seconds read (x{lfp_scale:.2f} from the demo); LF bytes use the demo's mtscomp ratio "
        f"({mtscomp_ratio:.2f}) on 385 channels x 2500 Hz x int16:",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| CPU-hours (2 cores per insertion) | {cpu_h:.1f} |",
        f"| raw LF downloaded | {n_total * lf_bytes / 1e9:.1f} GB ({lf_bytes / 1e6:.0f} MB per insertion) |",
        f"| channel + QC files downloaded | {n_total * other_bytes / 1e9:.2f} GB |",
        *(f"| wall time on {w} worker(s) of 2 cores | {h:.1f} h |" for w, h in wall.items()),
        "",
        "Wall times assume the network keeps up (one insertion reads ~"
        f"{lf_bytes / 1e6:.0f} MB; 64 workers at ~{64 * lf_bytes / max(real_s['lfp'], 1e-9) / 1e6:.0f} MB/s "
        "in total) and no failures; stored bytes and files are in the Storage section.",
        END,
    ]
    block = "\n".join(lines)
    print(block)
    if not args.no_docs:
        text = DOC.read_text() if DOC.exists() else "# Scale\n"
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        text = pattern.sub(block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
        DOC.write_text(text)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
