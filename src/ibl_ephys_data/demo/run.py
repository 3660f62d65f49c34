"""The ``demo`` command: build the demo store, serve it on loopback and run every stage through ONE."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rich.console import Console

from ibl_ephys_data.demo.server import LoopbackAlyx
from ibl_ephys_data.demo.store import DEMO_PASSWORD, DEMO_USER, generate_store
from ibl_ephys_data.ibl import RELEASES, Connection
from ibl_ephys_data.workspace import Workspace

_logger = logging.getLogger(__name__)


def ensure_store(root: Path, seconds: float, seed: int = 0) -> Path:
    """Reuse a finished store with the same parameters; otherwise (re)generate it."""
    marker = root / "alyx.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta.get("seconds") == seconds and meta.get("seed") == seed:
            return root
    return generate_store(root, seconds=seconds, seed=seed)


def demo_connection(server: LoopbackAlyx, cache_dir: Path) -> Connection:
    return Connection(alyx_url=server.url, cache_dir=cache_dir, http_data_server=server.data_url,
                      username=DEMO_USER, password=DEMO_PASSWORD)


def run_demo(ws: Workspace, seconds: float = 40.0, store_only: bool = False,
             console: Console | None = None) -> list[str]:
    """Every stage, in order, against the loopback server; returns summary lines."""
    from ibl_ephys_data.baseline import run_baseline
    from ibl_ephys_data.catalog import run_catalog
    from ibl_ephys_data.channels import run_channels
    from ibl_ephys_data.dataset import export_dataset, verify
    from ibl_ephys_data.lfp.stage import LfpOptions, run_lfp
    from ibl_ephys_data.qc.stage import run_qc

    console = console or Console()
    store = ensure_store(ws.root / "demo-store", seconds)
    if store_only:
        return [f"demo store: {store}"]
    with LoopbackAlyx(store) as server:
        console.print(f"loopback Alyx at {server.url} serving {store}")
        with demo_connection(server, ws.root / "one-cache").session() as one:
            catalog = run_catalog(ws, one, releases=list(RELEASES))
            channels = run_channels(ws, one)
            lfp = run_lfp(ws, one, LfpOptions(windows=((0.0, seconds),)))
            verdicts = run_qc(ws, one)
    dataset = export_dataset(ws, min_channels=5)
    run_baseline(ws)
    problems = verify(ws)
    from ibl_ephys_data.coverage import coverage_table
    from ibl_ephys_data.viz.report import write_report

    coverage = coverage_table(ws, level="beryl")
    index = write_report(ws)
    return [
        f"catalog: {len(catalog)} insertions -> {ws.catalog}",
        f"channels: {len(channels)} channels -> {ws.channels}",
        f"lfp: {sum(s['status'] != 'failed' for s in lfp.values())}/{len(lfp)} insertions -> {ws.lfp}",
        f"qc: {verdicts['final_verdict'].value_counts().to_dict()} -> {ws.qc_verdicts}",
        f"dataset: {dataset} ({'verified, no leakage' if not problems else problems}); "
        f"card: {dataset / 'DATA_CARD.md'}",
        f"coverage: {coverage['region'].nunique()} Beryl regions over {coverage['source'].nunique()} sources "
        f"-> {ws.coverage}",
        f"report: {index}",
    ]
