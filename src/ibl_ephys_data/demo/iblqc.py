"""IBL's small per-insertion LF QC datasets, computed by ibllib itself from a raw LF file.

The pre-screen reads ``_iblqc_ephysSpectralDensityLF.{power,freqs}`` and ``_iblqc_ephysTimeRmsLF.{rms,
timestamps}``. Any store that carries them (the demo store, a local copy of a session) must hold exactly
what IBL's pipeline would have produced, so this module calls ``ibllib.ephys.ephysqc.extract_rmsmap``
rather than re-implementing it: 3.28-s windows high-passed at 1 Hz, RMS per window, and Welch PSDs
(1024-sample Hann segments, V^2/Hz) *summed* over the windows.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import spikeglx
from ibllib.ephys.ephysqc import extract_rmsmap

from ibl_ephys_data.workspace.schema import IBLQC_LF_FILES as PRESCREEN_FILES

logger = logging.getLogger(__name__)

#: the four files the pre-screen reads, in its order (power, freqs, rms, timestamps)
IBLQC_LF_FILES = tuple(PRESCREEN_FILES.values())


def write_iblqc_lf(cbin_path: str | os.PathLike, out_folder: str | os.PathLike) -> list[Path]:
    """Compute the four LF QC arrays from a SpikeGLX LF file (``.cbin`` or ``.bin`` + ``.meta``).

    Overwrites existing files in ``out_folder``; returns the written paths in IBLQC_LF_FILES order.
    """
    cbin_path = Path(cbin_path)
    if not cbin_path.is_file():
        raise FileNotFoundError(f"LF file {cbin_path} does not exist: pass the .lf.cbin (or .lf.bin) path")
    if not cbin_path.with_suffix(".meta").is_file():
        raise FileNotFoundError(f"{cbin_path.with_suffix('.meta')} does not exist: the LF file needs its "
                                "SpikeGLX .meta next to it")
    if cbin_path.suffix == ".cbin" and not cbin_path.with_suffix(".ch").is_file():
        raise FileNotFoundError(f"{cbin_path.with_suffix('.ch')} does not exist: an mtscomp .cbin needs "
                                "its .ch file")
    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    sr = spikeglx.Reader(cbin_path)
    try:
        if sr.type != "lf":
            raise ValueError(f"{cbin_path} is a '{sr.type}' file, not LF: pass the .lf.cbin of the probe")
        logger.info("computing IBL LF QC arrays of %s (%.0f s) into %s", cbin_path.name, sr.rl, out_folder)
        # ibllib draws a tqdm progress bar on stderr; a library must not print, so it goes to a buffer
        with contextlib.redirect_stderr(io.StringIO()):
            written = extract_rmsmap(sr, out_folder=out_folder, overwrite=True, spectra=True)
    finally:
        sr.close()
    by_name = {Path(p).name: Path(p) for p in written}
    missing = [name for name in IBLQC_LF_FILES if name not in by_name]
    if missing:
        raise RuntimeError(f"ibllib extract_rmsmap did not write {missing} into {out_folder}")
    return [by_name[name] for name in IBLQC_LF_FILES]
