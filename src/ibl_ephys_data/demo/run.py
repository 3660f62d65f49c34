"""The ``demo`` command: build the demo store, serve it on loopback and run every stage through ONE."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from ibl_ephys_data.demo.server import LoopbackAlyx
from ibl_ephys_data.demo.store import DEMO_PASSWORD, DEMO_USER, generate_store
from ibl_ephys_data.ibl import RELEASES, Connection
from ibl_ephys_data.run import CatalogOptions, RunConfig, RunResult, load_config, run_pipeline
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


def demo_config(seconds: float, scheduler: str | None = None) -> RunConfig:
    """The demo's run config: both releases, whole recordings, small classes kept (few channels per region)."""
    from ibl_ephys_data.lfp.stage import LfpOptions

    config = load_config(scheduler=scheduler)
    return replace(config, catalog=CatalogOptions(releases=tuple(RELEASES)),
                   lfp=LfpOptions(windows=((0.0, seconds),)), export=replace(config.export, min_channels=5))


def run_demo(ws: Workspace, seconds: float = 40.0, store_only: bool = False, console: Console | None = None,
             scheduler: str | None = None) -> RunResult:
    """The whole ``run`` pipeline against the loopback server; returns its result (summary lines inside)."""
    console = console or Console()
    store = ensure_store(ws.root / "demo-store", seconds)
    if store_only:
        return RunResult(lines=[f"demo store: {store}"])
    with LoopbackAlyx(store) as server:
        console.print(f"loopback Alyx at {server.url} serving {store}")
        return run_pipeline(ws, demo_config(seconds, scheduler), demo_connection(server, ws.root / "one-cache"))
