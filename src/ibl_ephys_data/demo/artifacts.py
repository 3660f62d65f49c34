"""Plant known artifacts into synthetic raw LF, so QC can be checked against ground truth.

Every array function takes volts as (n_samples, n_channels), returns a modified copy and leaves the input
untouched. Each artifact is shaped to hit one metric only: the probe-wide burst is smooth (no sample
jumps), the power bursts ramp in and out, the line is a pure sinusoid. The QC tests use them to check
each metric in isolation.

The demo store plants its defects with :func:`draw_events` and :func:`events_transform`: positions come
from the demo's own seed, never from where QC looks (this package imports nothing from ``qc``), so the
store tests QC instead of agreeing with it by construction. Every planted event is written to the
store's ground truth (kind, seconds, channels).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ibl_ephys_data.demo.signals import N_CHANNELS, NP1_AI_RANGE_MAX, NP1_LF_GAIN

logger = logging.getLogger(__name__)

#: NP1 LF full scale in volts: imAiRangeMax 0.6 V over LF gain 250
NP1_LF_RANGE_VOLTS = NP1_AI_RANGE_MAX / NP1_LF_GAIN


def _span(volts: np.ndarray, fs: float, start_s: float, duration_s: float) -> slice:
    """Sample slice of [start_s, start_s + duration_s), checked against the array."""
    a = int(round(start_s * fs))
    b = a + int(round(duration_s * fs))
    if duration_s <= 0 or a < 0 or b > volts.shape[0]:
        raise ValueError(
            f"artifact at {start_s} s for {duration_s} s does not fit a {volts.shape[0] / fs:.2f}-s array: "
            "pass a start and a positive duration inside the recording"
        )
    return slice(a, b)


def _columns(volts: np.ndarray, channels: Sequence[int] | np.ndarray | None) -> np.ndarray:
    return np.arange(volts.shape[1]) if channels is None else np.asarray(channels, dtype=int)


def _times(volts: np.ndarray, fs: float) -> np.ndarray:
    return np.arange(volts.shape[0]) / fs


def add_line_noise(
    volts: np.ndarray, fs: float, f0: float = 50.0, amplitude_v: float | Sequence[float] = 50e-6,
    phase: float = 0.0,
) -> np.ndarray:
    """Add mains pickup common to all channels: amplitude_v[k] · sin(2π (k+1) f0 t + phase).

    A scalar amplitude plants the fundamental only. Its power is amplitude²/2 per harmonic, which is
    what ``line_noise_pct`` should report over the 1-300 Hz power.
    """
    amplitudes = np.atleast_1d(np.asarray(amplitude_v, dtype=float))
    t = _times(volts, fs)
    line = sum(a * np.sin(2 * np.pi * (k + 1) * f0 * t + phase) for k, a in enumerate(amplitudes))
    return (volts + line[:, None]).astype(volts.dtype)


def add_white_noise(volts: np.ndarray, rms_v: float, seed: int = 0) -> np.ndarray:
    """Add independent white Gaussian noise of ``rms_v`` volts per sample to every channel."""
    rng = np.random.default_rng(seed)
    return (volts + rms_v * rng.standard_normal(volts.shape)).astype(volts.dtype)


def add_probe_burst(
    volts: np.ndarray, fs: float, start_s: float, duration_s: float = 0.5, amplitude_v: float = 1e-3,
    freq_hz: float = 8.0, channels: Sequence[int] | None = None,
) -> np.ndarray:
    """Add a Hann-tapered ``freq_hz`` oscillation of peak ``amplitude_v``, identical on all channels.

    Models a motion or electrical transient seen by the whole probe; smooth, so it is a burst of
    band power and common mode, not a discontinuity. Keep amplitude_v below the 2.4 mV NP1 LF range.
    """
    span = _span(volts, fs, start_s, duration_s)
    n = span.stop - span.start
    t = np.arange(n) / fs
    burst = amplitude_v * np.hanning(n) * np.sin(2 * np.pi * freq_hz * t)
    out = volts.copy()
    cols = _columns(volts, channels)
    out[span, cols] += burst[:, None].astype(volts.dtype)
    return out


def add_power_bursts(
    volts: np.ndarray, fs: float, gain: float = 4.0, block_s: float = 1.0, ramp_s: float = 0.02,
    seed: int = 0,
) -> np.ndarray:
    """Multiply the power of each channel by ``gain`` in every other ``block_s`` block.

    Each channel starts on a random block (even or odd), so half the channels are up at any time and
    the common mode stays steady: this raises ``power_cv`` without a probe-wide burst. With blocks
    aligned on 1-s windows the window-power gains are {1, gain} in equal numbers, i.e. a CV of
    (gain - 1) / (gain + 1). Gains change over ``ramp_s`` (raised cosine) so no sample jumps.
    """
    if gain <= 0 or block_s <= 0:
        raise ValueError(f"gain={gain}, block_s={block_s}: both must be positive")
    rng = np.random.default_rng(seed)
    block = int(round(block_s * fs))
    n_ramp = max(1, int(round(ramp_s * fs)))
    kernel = np.hanning(n_ramp + 2)[1:-1]
    up = (np.arange(-n_ramp, volts.shape[0] + n_ramp) // block % 2).astype(float)
    up = np.convolve(up, kernel / kernel.sum(), mode="same")[n_ramp:-n_ramp]
    # the pattern of a channel that starts "up" is the complement of one that starts "down"
    phase = rng.integers(0, 2, volts.shape[1])
    pattern = np.where(phase[None, :] == 1, 1 - up[:, None], up[:, None])
    amplitude = 1 + (np.sqrt(gain) - 1) * pattern
    return (volts * amplitude).astype(volts.dtype)


def plant_saturation(
    volts: np.ndarray, fs: float, start_s: float, duration_s: float = 0.2,
    range_volts: float = NP1_LF_RANGE_VOLTS, channels: Sequence[int] | None = None, sign: int = 1,
) -> np.ndarray:
    """Pin ``channels`` (default all) at ``sign`` × full scale (NP1 LF: ±0.6 V / gain 250 = ±2.4 mV)."""
    span = _span(volts, fs, start_s, duration_s)
    out = volts.copy()
    out[span, _columns(volts, channels)] = np.sign(sign) * range_volts
    return out


def plant_dropout(
    volts: np.ndarray, fs: float, start_s: float, duration_s: float = 0.1, value: float = 0.0,
    channels: Sequence[int] | None = None,
) -> np.ndarray:
    """Hold ``channels`` (default all) at a constant ``value`` volts: a flat data dropout."""
    span = _span(volts, fs, start_s, duration_s)
    out = volts.copy()
    out[span, _columns(volts, channels)] = value
    return out


# ---- seeded defects of the demo store ---------------------------------------------------------------------
EVENT_KINDS = ("saturation", "flat", "step", "cm_burst", "line_noise")
STEP_V = 400e-6  # DC jump of a step event, volts
BURST_V = 1e-3  # peak of a probe-wide 8 Hz burst (below the 2.4 mV range)
LINE_V = ((1, 60e-6), (2, 20e-6), (3, 10e-6))  # 60 Hz mains and 2 harmonics: (harmonic, amplitude V)
RAMP_S = 0.05  # burst and episode ramps: short, so the whole interval carries the artifact


@dataclass(frozen=True)
class DemoEvent:
    """One planted defect: kind, probe-clock seconds [start_s, stop_s), raw channel indices hit."""

    kind: str
    start_s: float
    stop_s: float
    channels: tuple[int, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}


def draw_events(headline: str | None, seconds: float, seed: int, pickup: np.ndarray,
                extras: Sequence[str] = (), n_channels: int = N_CHANNELS) -> list[DemoEvent]:
    """The defects of one insertion, at positions drawn from ``seed`` alone.

    ``headline`` is the insertion's planted problem: ``line_noise`` (60 Hz over the whole recording),
    ``burst`` (three 1-s probe-wide bursts) or ``saturation`` (two 0.5-s rails); ``extras`` adds brief or
    long events of the :data:`EVENT_KINDS`; saturation pins all ``n_channels``. The recording is cut into as
    many slots as events, one event per slot at a random place in it, so events never overlap. ``pickup``
    are the channels in tissue.
    """
    plan: list[tuple[str, float]] = []  # (kind, duration) to place
    events: list[DemoEvent] = []
    pickup = tuple(int(c) for c in pickup)
    every = tuple(range(n_channels))
    if headline == "line_noise":
        events.append(DemoEvent("line_noise", 0.0, float(seconds), pickup))
    elif headline == "burst":
        plan += [("cm_burst", 1.0)] * 3
    elif headline == "saturation":
        plan += [("saturation", 0.5)] * 2
    elif headline is not None:
        raise ValueError(f"unknown demo artifact {headline!r}: use line_noise, burst or saturation")
    rng = np.random.default_rng([seed, 14])
    durations = {"saturation": 0.3, "flat": 2.5, "step": 0.02, "cm_burst": 1.0, "line_noise": 4.0}
    plan += [(kind, durations[kind]) for kind in extras]
    if not plan:
        return events
    order = rng.permutation(len(plan))
    slot = (seconds - 1.0) / len(plan)
    for i, k in enumerate(order):
        kind, length = plan[k]
        start = 0.5 + i * slot + rng.uniform(0, max(slot - length, 0.0))
        if kind == "flat":  # a dropout of a contiguous part of the probe (a headstage section)
            first = int(rng.integers(0, max(1, len(pickup) - 96)))
            channels = pickup[first:first + 96]
        elif kind == "saturation":
            channels = every
        else:
            channels = pickup
        events.append(DemoEvent(kind, round(float(start), 3), round(float(start + length), 3), channels))
    return sorted(events, key=lambda e: e.start_s)


def events_transform(events: Sequence[DemoEvent], fs: float) -> Callable[[np.ndarray, int], np.ndarray]:
    """A ``transform(block, first_sample)`` for ``signals.write_demo_lf`` planting ``events`` (volts)."""

    def transform(block: np.ndarray, first: int) -> np.ndarray:
        out = block.copy()
        t = (first + np.arange(block.shape[0])) / fs
        for ev in events:
            inside = (t >= ev.start_s) & (t < ev.stop_s)
            if ev.kind == "step":  # the offset persists: the recording jumps once and stays there
                inside = t >= ev.start_s
            if not inside.any():
                continue
            cols = np.asarray(ev.channels, dtype=int)
            tt = t[inside] - ev.start_s
            if ev.kind == "saturation":
                out[np.ix_(inside, cols)] = NP1_LF_RANGE_VOLTS
            elif ev.kind == "flat":
                out[np.ix_(inside, cols)] = 0.0
            elif ev.kind == "step":
                out[np.ix_(inside, cols)] += STEP_V
            else:
                ramp = np.clip(np.minimum(tt, ev.stop_s - ev.start_s - tt) / RAMP_S, 0, 1)
                if ev.kind == "cm_burst":
                    wave = BURST_V * ramp * np.sin(2 * np.pi * 8.0 * tt)
                else:
                    wave = ramp * sum(a * np.sin(2 * np.pi * 60.0 * h * t[inside]) for h, a in LINE_V)
                out[np.ix_(inside, cols)] += wave[:, None].astype(out.dtype)
        return out.astype(block.dtype)

    return transform
