"""ibl-ephys-data: IBL Neuropixels releases -> a quality-controlled, region-labelled, ML-ready LFP dataset.

The public API is the stage functions (each ``run_<stage>(workspace, one=None, options=<Stage>Options(),
pids=None)`` for the per-insertion stages), their options, the whole-job runner and the PyTorch-ready loader.
Names are imported lazily, so ``import ibl_ephys_data`` (and ``ibl-ephys-data --help``) stays fast.
"""

from __future__ import annotations

from importlib import import_module, metadata

try:
    __version__ = metadata.version("ibl-ephys-data")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

_EXPORTS = {
    "Workspace": "ibl_ephys_data.workspace",
    "Connection": "ibl_ephys_data.ibl",
    "run_catalog": "ibl_ephys_data.catalog",
    "ChannelsOptions": "ibl_ephys_data.channels",
    "run_channels": "ibl_ephys_data.channels",
    "LfpOptions": "ibl_ephys_data.lfp.stage",
    "run_lfp": "ibl_ephys_data.lfp.stage",
    "QcOptions": "ibl_ephys_data.qc.stage",
    "run_qc": "ibl_ephys_data.qc.stage",
    "export_dataset": "ibl_ephys_data.dataset.export",
    "BaselineOptions": "ibl_ephys_data.baseline",
    "run_baseline": "ibl_ephys_data.baseline",
    "RunConfig": "ibl_ephys_data.run",
    "load_config": "ibl_ephys_data.run",
    "run_pipeline": "ibl_ephys_data.run",
    "LfpWindows": "ibl_ephys_data.dataset.loader",
    "IblEphysDataError": "ibl_ephys_data.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ibl_ephys_data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
