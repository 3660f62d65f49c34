"""Which seconds of a recording to process: explicit windows or IBL-style evenly spaced snippets.

Why: the LFP stage must read and destripe only the seconds a user asked for (never the whole 3 GB file),
and every downstream table needs the same windows in both the probe clock (sample index / fs) and, where
the probe was synchronised, the session clock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ibl_ephys_data.errors import InputError

_logger = logging.getLogger(__name__)

TimeFn = Callable[[np.ndarray], np.ndarray]
DEFAULT_EDGE_S = 40.0  # IBL's raw-data QC skips the first 40 s (ibllib.ephys.ephysqc TMIN)


@dataclass(frozen=True)
class Window:
    """A stretch of recording: probe-clock seconds and, when a clock map is known, session seconds."""

    start_s: float
    stop_s: float
    session_start_s: float | None = None
    session_stop_s: float | None = None

    @property
    def seconds(self) -> float:
        return self.stop_s - self.start_s

    def samples(self, fs: float) -> tuple[int, int]:
        """First and last (excluded) sample of the window at ``fs`` (rounded to the nearest sample)."""
        return int(round(self.start_s * fs)), int(round(self.stop_s * fs))

    def to_dict(self) -> dict:
        return asdict(self)


def probe_to_session_fn(timestamps: np.ndarray, fs: float | None = None) -> TimeFn:
    """Probe-clock seconds -> session seconds from IBL's ``_spikeglx_*.timestamps.npy`` (n, 2) pairs.

    The first column is the probe clock, in samples at ``fs`` if given (IBL stores AP samples, 30 kHz),
    else in seconds; the second is session seconds. Linear between pairs and extrapolated beyond them.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.ndim != 2 or ts.shape[1] != 2 or ts.shape[0] < 2:
        raise InputError(f"timestamps must be an (n >= 2, 2) array of (probe, session) pairs, got {ts.shape}")
    probe = ts[:, 0] / fs if fs else ts[:, 0]
    session = ts[:, 1]
    if np.any(np.diff(probe) <= 0):
        raise InputError("timestamps: the probe-clock column must increase strictly")

    def fn(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        i = np.clip(np.searchsorted(probe, t) - 1, 0, probe.size - 2)
        slope = (session[i + 1] - session[i]) / (probe[i + 1] - probe[i])
        return session[i] + (t - probe[i]) * slope

    return fn


def explicit_windows(
    windows: Iterable[tuple[float, float]],
    duration_s: float,
    time_fn: TimeFn | None = None,
) -> list[Window]:
    """Windows given as ``(start_s, seconds)`` pairs, clipped to ``[0, duration_s]``.

    A window sticking out of the recording is clipped with a warning; one entirely outside it is dropped
    with a warning; if none is left, ``ValueError``. Order is kept.
    """
    _check_duration(duration_s)
    pairs = [(float(a), float(b)) for a, b in windows]
    if not pairs:
        raise InputError("no window given: pass at least one (start_s, seconds) pair")
    out = []
    for start, seconds in pairs:
        if not (math.isfinite(start) and math.isfinite(seconds)) or seconds <= 0:
            raise InputError(f"window ({start}, {seconds}): need a finite start and a positive duration")
        lo, hi = max(start, 0.0), min(start + seconds, duration_s)
        if hi <= lo:
            _logger.warning("window %g:%g s is outside the %g-s recording: dropped", start, seconds,
                            duration_s)
            continue
        if (lo, hi) != (start, start + seconds):
            _logger.warning("window %g:%g s clipped to %g-%g s (recording is %g s)", start, seconds, lo, hi,
                            duration_s)
        out.append((lo, hi))
    if not out:
        raise InputError(f"every window lies outside the {duration_s:g}-s recording: choose start times "
                         f"between 0 and {duration_s:g} s")
    return _with_session_times(out, time_fn)


def snippet_windows(
    duration_s: float,
    n_snippets: int,
    snippet_seconds: float,
    edge_s: float = DEFAULT_EDGE_S,
    time_fn: TimeFn | None = None,
) -> list[Window]:
    """IBL's snippet scheme: ``n_snippets`` windows of ``snippet_seconds``, evenly spaced, skipping edges.

    Snippets span ``[edge_s, duration_s - edge_s]`` with the first starting at the left edge and the last
    ending at the right one. If they do not fit without overlapping, the edges shrink first, then the
    number of snippets, then the snippet length (each with a warning), so windows never overlap.
    """
    _check_duration(duration_s)
    if n_snippets < 1 or not snippet_seconds > 0 or edge_s < 0:
        raise InputError(f"n_snippets={n_snippets}, snippet_seconds={snippet_seconds}, edge_s={edge_s}: "
                         "need n_snippets >= 1, snippet_seconds > 0 and edge_s >= 0")
    k, length, edge = int(n_snippets), float(snippet_seconds), float(edge_s)
    if k * length > duration_s - 2 * edge:
        edge = max(0.0, (duration_s - k * length) / 2)
        _logger.warning("%d snippets of %g s do not fit between %g-s edges of a %g-s recording: edges "
                        "reduced to %g s", k, length, edge_s, duration_s, edge)
    if k * length > duration_s:
        k = max(1, int(duration_s // length))
        _logger.warning("only %d snippet(s) of %g s fit in the %g-s recording", k, length, duration_s)
    if length > duration_s:
        _logger.warning("snippet of %g s clipped to the %g-s recording", length, duration_s)
        length = duration_s
    starts = np.linspace(edge, duration_s - edge - length, k) if k > 1 else [(duration_s - length) / 2]
    return _with_session_times([(float(s), float(s) + length) for s in starts], time_fn)


def _check_duration(duration_s: float) -> None:
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise InputError(f"recording duration {duration_s} s: the LF file is empty or its .meta is wrong")


def _with_session_times(bounds: Sequence[tuple[float, float]], time_fn: TimeFn | None) -> list[Window]:
    if time_fn is None:
        return [Window(a, b) for a, b in bounds]
    session = np.asarray(time_fn(np.asarray(bounds, dtype=np.float64).ravel()), dtype=np.float64)
    return [Window(a, b, float(session[2 * i]), float(session[2 * i + 1])) for i, (a, b) in enumerate(bounds)]
