"""The pipeline runner: subset runs merge, kill -9 at any stage + re-run == a clean run, Dask == in process."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from lfp_outputs import assert_same_lfp_groups

from ibl_ephys_data.channels import run_channels
from ibl_ephys_data.demo.layout import INSERTIONS
from ibl_ephys_data.demo.run import demo_connection
from ibl_ephys_data.errors import EmptyResultError, InputError, WorkspaceLocked
from ibl_ephys_data.lfp.stage import LfpOptions, run_lfp
from ibl_ephys_data.pipeline import InsertionStage, run_stage, validate_pids
from ibl_ephys_data.qc.stage import run_qc
from ibl_ephys_data.run import CatalogOptions, load_config, run_pipeline
from ibl_ephys_data.workspace import Workspace

# one repeated-site insertion and two brain-wide-map ones of other subjects: a zero-shot split exists
KILL_PIDS = [INSERTIONS[2].pid, INSERTIONS[4].pid, INSERTIONS[7].pid]
WINDOW = ((0.0, 6.0),)
NOT_OUTPUTS = {"manifest.json", "ibl-ephys-data.log", ".lock"}


def _config(tmp_path: Path):
    csv = tmp_path / "pids.csv"
    csv.write_text("pid\n" + "\n".join(KILL_PIDS) + "\n")
    config = load_config()
    return replace(config, stages=("catalog", "channels", "lfp", "qc", "export", "coverage"),
                   catalog=CatalogOptions(pid_csv=str(csv)), lfp=LfpOptions(windows=WINDOW),
                   export=replace(config.export, min_channels=1))


def _outputs(ws: Workspace) -> dict[str, bytes]:
    """Every output file's bytes (the manifest and the log carry times, so they are not outputs)."""
    return {str(p.relative_to(ws.root)): p.read_bytes() for p in sorted(ws.root.rglob("*"))
            if p.is_file() and p.name not in NOT_OUTPUTS and "one-cache" not in p.parts}


@pytest.fixture(scope="module")
def clean_run(alyx_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    ws = Workspace(root / "ws").create()
    result = run_pipeline(ws, _config(root), demo_connection(alyx_server, root / "one-cache"), progress=False)
    assert result.ok, result.failed
    return _outputs(ws)


def _killed_child(root: Path, url: str, data_url: str, hook: str, ready) -> None:
    """Runs in a forked child: the real pipeline, with one function wrapped to signal and then stall."""
    import importlib

    from ibl_ephys_data.demo.store import DEMO_PASSWORD, DEMO_USER
    from ibl_ephys_data.ibl import Connection

    module_name, name = hook.rsplit(".", 1)
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    calls = []

    def stall(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2 or "export" in module_name:  # the second insertion, or the export's write
            ready.set()
            time.sleep(600)
        return original(*args, **kwargs)

    setattr(module, name, stall)
    connection = Connection(alyx_url=url, http_data_server=data_url, cache_dir=root / "one-cache",
                            username=DEMO_USER, password=DEMO_PASSWORD)
    run_pipeline(Workspace(root / "ws"), _config(root), connection, progress=False)


# where the runs are killed, in this order, each in the re-run of the run killed before it
KILL_POINTS = (
    "ibl_ephys_data.lfp.store.iter_destriped",  # mid-lfp: the second insertion's group half-written
    "ibl_ephys_data.qc.stage.signal_pid",  # mid-qc: the second insertion's metrics
    "ibl_ephys_data.dataset.export.write_json",  # mid-export: windows written, splits not yet
)


@pytest.mark.timeout(900)
def test_kill_9_and_rerun_is_bit_identical(clean_run, alyx_server, tmp_path):
    """Killed (SIGKILL) mid-lfp, its re-run killed mid-qc, that re-run killed mid-export: the last re-run
    ends with outputs bit-identical to the uninterrupted run's."""
    ws = Workspace(tmp_path / "ws")
    for hook in KILL_POINTS:
        ready = multiprocessing.get_context("fork").Event()
        child = multiprocessing.get_context("fork").Process(
            target=_killed_child, args=(tmp_path, alyx_server.url, alyx_server.data_url, hook, ready))
        child.start()
        assert ready.wait(240), f"the run never reached {hook}"
        child.kill()  # SIGKILL: no cleanup of any kind runs
        child.join()
        assert ws.lock_path.exists(), hook  # the dead run's lock is left behind ... (and taken over next)
    t0 = time.monotonic()
    result = run_pipeline(ws, _config(tmp_path), demo_connection(alyx_server, tmp_path / "one-cache"), progress=False)
    assert result.ok, result.failed
    assert time.monotonic() - t0 < 240
    ours = _outputs(ws)
    assert not [p for p in ours if any(part.endswith((".tmp", ".old")) for part in Path(p).parts)], \
        "temporaries of the killed runs are visible"
    assert sorted(ours) == sorted(clean_run)
    assert [p for p in ours if ours[p] != clean_run[p]] == []


def test_subset_runs_merge_and_labels_are_never_lost(qc_workspace, alyx_server, tmp_path):
    src, one_cache = qc_workspace
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(src.root, ws.root)
    before = {name: pd.read_parquet(path) for name, path in
              (("channels", ws.channels), ("metrics", ws.qc_metrics), ("verdicts", ws.qc_verdicts))}
    pid = INSERTIONS[1].pid
    shutil.rmtree(ws.lfp / pid)  # that insertion's lfp must be recomputed, the others skipped
    with demo_connection(alyx_server, one_cache).session() as one:
        assert run_channels(ws, one, pids=[pid]).counts() == {"skipped": 1}
        lfp = run_lfp(ws, one, LfpOptions(windows=((0.0, 24.0),)), pids=[pid])
        qc = run_qc(ws, one, pids=[pid], force=False)
    assert lfp.statuses[pid]["status"] == "done" and qc.counts() == {"skipped": 1}
    pd.testing.assert_frame_equal(pd.read_parquet(ws.channels), before["channels"])
    assert len(pd.read_parquet(ws.qc_metrics)) == len(before["metrics"]) == len(INSERTIONS)
    pd.testing.assert_frame_equal(pd.read_parquet(ws.qc_verdicts), before["verdicts"])
    assert pd.read_parquet(ws.channels)["bad_channel_label"].notna().all()


def _square(one, workspace: Workspace, pid: str, options) -> None:
    if pid == INSERTIONS[1].pid:
        raise RuntimeError(f"planted failure for {pid}")
    workspace.write_part("square", pid, pd.DataFrame({"pid": [pid], "n": [len(pid) ** 2]}), "v1")


def _assemble(workspace: Workspace, options, force: bool) -> None:
    frames = workspace.read_parts("square")
    workspace.replace_table(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                            workspace.root / "square.parquet", force=force)


SQUARE = InsertionStage("square", _square, lambda ws, pid, o: ws.has_part("square", pid, "v1"), _assemble,
                        needs_one=False)


@pytest.fixture(scope="module")
def local_cluster():
    """One local Dask cluster (``--scheduler local``) for this module's Dask tests: its workers import the
    stages once instead of once per test."""
    from ibl_ephys_data.pipeline import dask_client

    with dask_client("local") as client:
        yield client


@pytest.mark.parametrize("on_dask", [False, True], ids=["in-process", "dask"])
def test_failures_are_isolated_and_reported(demo_workspace, on_dask, request, tmp_path):
    scheduler = request.getfixturevalue("local_cluster") if on_dask else None
    ws = Workspace(tmp_path / "ws").create()
    ws.catalog.write_bytes(demo_workspace[0].catalog.read_bytes())
    result = run_stage(SQUARE, ws, None, scheduler=scheduler, progress=False)
    assert set(result.failed) == {INSERTIONS[1].pid} and "planted failure" in result.failed[INSERTIONS[1].pid]
    assert result.counts() == {"done": len(INSERTIONS) - 1, "failed": 1}
    assert ws.failed_pids("square") == result.failed
    again = run_stage(SQUARE, ws, None, retry_failed=True, progress=False)
    assert list(again.statuses) == [INSERTIONS[1].pid] and not again.ok
    assert len(pd.read_parquet(ws.root / "square.parquet")) == len(INSERTIONS) - 1


def test_empty_results_never_replace_good_outputs(demo_workspace, tmp_path):
    ws = Workspace(tmp_path / "ws").create()
    ws.catalog.write_bytes(demo_workspace[0].catalog.read_bytes())
    run_stage(SQUARE, ws, None, progress=False)
    good = (ws.root / "square.parquet").read_bytes()
    shutil.rmtree(ws.parts_dir / "square")
    with pytest.raises(EmptyResultError, match="--force"):
        _assemble(ws, None, force=False)
    assert (ws.root / "square.parquet").read_bytes() == good


def test_workspace_lock_names_the_holder_and_stale_locks_are_taken(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.lock():
        with pytest.raises(WorkspaceLocked, match=r"in use by pid \d+ on .* since "):
            with Workspace(tmp_path / "ws").lock():
                pass
    ws.lock_path.write_text(json.dumps({"pid": 999999999, "host": socket.gethostname(), "started": "then"}))
    (ws.root / ".catalog.parquet.abc.tmp").mkdir()
    with ws.lock():
        assert not (ws.root / ".catalog.parquet.abc.tmp").exists()
    assert not ws.lock_path.exists()


def test_pids_must_be_uuids():
    assert validate_pids([INSERTIONS[0].pid.upper()]) == [INSERTIONS[0].pid]
    with pytest.raises(InputError, match="'probe00' is not an insertion UUID"):
        validate_pids(["probe00"])


@pytest.mark.parametrize("stage", ["channels", "qc"])
def test_channels_and_qc_on_dask_equal_in_process(stage, qc_workspace, alyx_server, local_cluster, tmp_path):
    src, one_cache = qc_workspace
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(src.root, ws.root)
    pids = [INSERTIONS[0].pid, INSERTIONS[4].pid]
    for pid in pids:  # forget them: they are recomputed on the workers
        for part in (ws.parts_dir / stage).glob(f"{pid}*"):
            part.unlink()
    conn = demo_connection(alyx_server, tmp_path / "one-cache")
    run = run_channels if stage == "channels" else run_qc
    result = run(ws, None, None, pids, connection=conn, scheduler=local_cluster, progress=False)
    assert result.counts() == {"done": 2}, result.statuses
    for name in ("channels.parquet", "qc/metrics.parquet", "qc/verdicts.parquet", "qc/channel_metrics.parquet"):
        assert (ws.root / name).read_bytes() == (src.root / name).read_bytes(), name


def test_lfp_on_dask_equals_in_process(lfp_workspace, alyx_server, local_cluster, tmp_path):
    src, *_ = lfp_workspace
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(src.root, ws.root)
    pids = [INSERTIONS[0].pid, INSERTIONS[4].pid]
    for pid in pids:
        shutil.rmtree(ws.lfp / pid)
    conn = demo_connection(alyx_server, tmp_path / "one-cache")
    result = run_lfp(ws, None, LfpOptions(windows=((0.0, 24.0),)), pids, connection=conn, scheduler=local_cluster,
                     progress=False)
    assert result.counts() == {"done": 2}, result.statuses
    assert_same_lfp_groups(src, ws, pids)


def test_worker_threads_open_one_together(alyx_server, tmp_path, monkeypatch):
    """A Dask worker's threads open ONE at once on a fresh machine (no ~/.one yet), sharing one ONE cache.

    ONE writes its params file and its REST cache without guarding against concurrent writers: here that
    tore ``~/.one/.<host>`` and failed a task with ``FileExistsError`` on ``<cache>/.rest``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ibl_ephys_data.pipeline import open_with_retries

    worker = demo_connection(alyx_server, tmp_path / "one-cache").for_workers()
    assert worker.password is None and worker.token and not worker.cache_rest
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def open_and_list(_):
        return len(open_with_retries(worker, attempts=1).alyx.rest("insertions", "list"))

    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(open_and_list, range(8)))
    assert counts == [len(alyx_server.store.insertions)] * 8
    assert not (tmp_path / "one-cache" / ".rest").exists()  # Alyx's answers stay in each worker's memory
