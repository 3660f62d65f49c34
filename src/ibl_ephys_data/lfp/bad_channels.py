"""Bad-channel labels once per insertion, from a few short batches spread over the recording.

Why: ``destripe_lfp(channel_labels=True)`` re-detects bad channels on every block it is given, which costs
more than the destriping itself and gives labels that change from window to window. IBL production
(``ibldsp.voltage.detect_bad_channels_cbin``) instead runs ``detect_bad_channels`` on >= 10 batches of 4 s
spread over the file and keeps the mode; we do the same, reading only those batches from the reader (so a
streamed insertion downloads ~40 s of data for it), and keep the median features for QC.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import scipy.stats
from ibldsp.voltage import detect_bad_channels

from ibl_ephys_data.lfp.destripe import n_data_channels, raw_channel_indices, read_volts
from ibl_ephys_data.workspace.schema import BAD_CHANNEL_LABELS

_logger = logging.getLogger(__name__)

LF_PSD_HF_THRESHOLD = 1.4  # µV²/Hz, IBL's threshold for the LF band


def batch_starts(duration_s: float, n_batches: int = 10, batch_seconds: float = 4.0) -> np.ndarray:
    """Start times (s) of the detection batches: evenly spread from 0 to the end, like IBL's."""
    if n_batches < 1 or batch_seconds <= 0:
        raise ValueError(f"n_batches={n_batches}, batch_seconds={batch_seconds}: both must be positive")
    if duration_s < batch_seconds:
        raise ValueError(f"recording of {duration_s:g} s is shorter than one {batch_seconds:g}-s detection "
                         "batch: use a shorter batch_seconds or check the LF file")
    return np.linspace(0.0, duration_s - batch_seconds, n_batches)


def detect_channel_labels(
    reader,
    n_batches: int = 10,
    batch_seconds: float = 4.0,
    psd_hf_threshold: float = LF_PSD_HF_THRESHOLD,
    n_threads: int = 2,
) -> pd.DataFrame:
    """Run IBL's ``detect_bad_channels`` on ``n_batches`` batches of ``batch_seconds``; label = mode.

    ``reader`` is a ``spikeglx.Reader``-like object (also ``brainbox.io.spikeglx.Streamer``). Returns one
    row per channel, in the reader's channel order: ``raw_ind``, ``bad_channel_label`` (int8: 0 good,
    1 dead, 2 noisy, 3 outside the brain) and the median over batches of the detector's features
    ``bad_channel_xcor_hf``, ``bad_channel_xcor_lf``, ``bad_channel_psd_hf`` (µV²/Hz). Batches are read
    one after the other (readers are not thread-safe) and analysed on ``n_threads`` threads.
    """
    fs = float(reader.fs)
    starts = batch_starts(reader.ns / fs, n_batches, batch_seconds)
    n = int(round(batch_seconds * fs))

    def detect(raw: np.ndarray) -> tuple[np.ndarray, dict]:
        return detect_bad_channels(raw.T, fs=fs, psd_hf_threshold=psd_hf_threshold)

    with ThreadPoolExecutor(max(1, n_threads)) as pool:
        futures = []
        for t0 in starts:
            first = int(t0 * fs)
            futures.append(pool.submit(detect, read_volts(reader, first, first + n)))
        results = [f.result() for f in futures]
    labels = np.stack([r[0] for r in results], axis=1)
    mode = scipy.stats.mode(labels, axis=1, keepdims=False).mode.astype(np.int8)
    features = {k: np.median(np.stack([r[1][k] for r in results], axis=1), axis=1)
                for k in ("xcor_hf", "xcor_lf", "psd_hf")}
    df = pd.DataFrame({
        "raw_ind": raw_channel_indices(reader),
        "bad_channel_label": mode,
        "bad_channel_xcor_hf": features["xcor_hf"],
        "bad_channel_xcor_lf": features["xcor_lf"],
        "bad_channel_psd_hf": features["psd_hf"],
    })
    counts = df["bad_channel_label"].value_counts()
    _logger.info("bad channels over %d batches of %g s: %s", len(starts), batch_seconds,
                 ", ".join(f"{counts.get(k, 0)} {v}" for k, v in BAD_CHANNEL_LABELS.items()))
    if len(df) != n_data_channels(reader):
        raise ValueError(f"detector returned {len(df)} labels for {n_data_channels(reader)} channels")
    return df
