"""Deterministic synthetic Neuropixels 1.0 LFP, written as real SpikeGLX + mtscomp files.

Why: the demo store, the tests and the benchmarks need LF recordings whose ground truth is known (which
channels are dead, noisy or above the brain) and that IBL's own readers (``spikeglx.Reader``, the ONE
``Streamer``) and detectors (``ibldsp.voltage.detect_bad_channels``) treat exactly like real data.

Signal model (per channel, volts, NP1 geometry, channel 0 at the tip):

- a *global* brain field shared by every channel inside the brain (volume-conducted slow activity),
  with an amplitude that grows towards the surface;
- a *local* field: ``n`` latent 1/f-like sources spaced along the probe, mixed with a Gaussian spatial
  kernel, so neighbouring channels are correlated and power varies with depth;
- a *theta* oscillation (AR(2) resonator, ~7.5 Hz) confined to a band of channels;
- with ``region_ids`` (the Allen id of every channel), *regional spectral signatures* instead of the theta
  band: each Beryl region in :data:`REGION_SIGNATURES` gets its own theta strength and its own 1/f-like
  background (one latent per region, its own mix of the 1/8/60 Hz AR(1) corners, so its own slope), mixed
  onto the region's channels with 100-µm cosine edges (neighbouring channels stay correlated, as IBL's
  bad-channel detector expects). Regions missing from the table get none. This is what the ``baseline``
  stage's band-power model can learn, so the demo's baseline lands clearly above chance;
- a *common-mode* reference noise on every connected channel (also outside the brain), optional line noise;
- white amplifier noise, and a per-channel DC offset.

Planted defects: dead channels (disconnected: ~1 µV of noise only), noisy channels (+150 µV white noise,
far above ``psd_hf_threshold=1.4`` µV²/Hz) and a block of top channels outside the brain (reference noise
only). :func:`planted_labels` gives the labels IBL's detector assigns to them (1, 2 and 3).

Generation is streamed in fixed blocks whose random numbers come from per-block seeds, so the output
depends only on ``seed`` and the parameters (a shorter recording is a prefix of a longer one), and a
600-s recording never needs to sit in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mtscomp
import numpy as np
import scipy.signal

logger = logging.getLogger(__name__)

N_CHANNELS = 384
NP1_AI_RANGE_MAX = 0.6  # volts, imAiRangeMax of the NP1 meta
NP1_MAX_INT = 512  # NP1 10-bit ADC: samples in [-512, 511]
NP1_LF_GAIN = 250
NP1_LF_VOLTS_PER_BIT = NP1_AI_RANGE_MAX / NP1_MAX_INT / NP1_LF_GAIN  # 4.6875e-6 V
SYNC_BIT_VALUE = 64  # the imec 1-Hz sync square wave sits on bit 6 of the sync word
DEFAULT_STEM = "_spikeglx_ephysData_g0_t0.imec0.lf"
DEFAULT_DEAD = (37, 151)
DEFAULT_NOISY = (80, 263)
DEFAULT_N_OUTSIDE = 40
BLOCK_SAMPLES = 10_000  # generation unit: fixed so the data never depend on how they are consumed
ROW_PITCH_UM = 20.0
_BURN_IN_SAMPLES = 50_000
_LOCAL_SPACING_UM = 160.0
_LOCAL_WIDTH_UM = 100.0
_BACKGROUND_CORNERS_HZ = (1.0, 8.0, 60.0)  # AR(1) corners mixed into a 1/f-like background
_BACKGROUND_WEIGHTS = (1.0, 0.5, 0.25)
_THETA_HZ, _THETA_BANDWIDTH_HZ = 7.5, 1.5
_REGION_EDGE_CHANNELS = 10  # cosine edge of a regional signature: 5 rows = 100 µm


@dataclass(frozen=True)
class RegionSignature:
    """Spectral signature of one region: theta (µV rms), background (µV rms) and its flatness in [0, 1].

    The background mixes the AR(1) corners of :data:`_BACKGROUND_CORNERS_HZ` with weights
    ``(1 - flatness, 0.5, flatness)``: 0 is steep (most power below ~8 Hz, exponent near 2), 1 is flat
    (power spread up to ~60 Hz, a shallower slope and more beta/gamma).
    """

    theta_uv: float
    background_uv: float
    flatness: float


# Beryl acronym -> signature; made up to be distinct, loosely after real LFP (hippocampal theta, steep
# thalamus, flatter cortex). Only the demo's regions are listed.
REGION_SIGNATURES: dict[str, RegionSignature] = {
    "VISa": RegionSignature(0.0, 60.0, 0.9),
    "CA1": RegionSignature(80.0, 30.0, 0.5),
    "DG": RegionSignature(40.0, 70.0, 0.4),
    "LP": RegionSignature(0.0, 70.0, 0.0),
    "PO": RegionSignature(15.0, 25.0, 0.6),
    "SSp-bfd": RegionSignature(0.0, 60.0, 1.0),
    "CP": RegionSignature(0.0, 30.0, 0.2),
    "GPe": RegionSignature(10.0, 45.0, 0.7),
    "MOs": RegionSignature(0.0, 55.0, 0.8),
    "ACB": RegionSignature(15.0, 35.0, 0.3),
    "LSr": RegionSignature(40.0, 30.0, 0.1),
}
_MTSCOMP_CMETA = {"algorithm": "zlib", "do_time_diff": True, "do_spatial_diff": False, "chunk_order": "F"}


@dataclass(frozen=True)
class LfpModel:
    """Amplitudes (µV rms) and layout of the synthetic signal; see the module docstring."""

    dead: tuple[int, ...] = DEFAULT_DEAD
    noisy: tuple[int, ...] = DEFAULT_NOISY
    n_outside: int = DEFAULT_N_OUTSIDE
    theta_channels: tuple[int, int] = (100, 180)
    global_uv: float = 50.0
    local_uv: float = 40.0
    theta_uv: float = 60.0
    common_mode_uv: float = 10.0
    noise_uv: float = 5.0
    dead_noise_uv: float = 1.0
    noisy_uv: float = 150.0
    offset_uv: float = 50.0
    line_noise_uv: float = 0.0
    line_freq: float = 60.0
    region_ids: tuple[int, ...] = ()  # Allen id per channel: regional signatures replace the theta band

    def __post_init__(self) -> None:
        nc = N_CHANNELS
        if not 0 <= self.n_outside < nc - 12:
            raise ValueError(f"n_outside={self.n_outside}: must be in [0, {nc - 12}) so some brain remains")
        for name in ("dead", "noisy"):
            bad = [c for c in getattr(self, name) if not 0 <= int(c) < nc]
            if bad:
                raise ValueError(f"{name} channels {bad} are outside 0..{nc - 1}: pass raw channel indices")
        lo, hi = self.theta_channels
        if not 0 <= lo < hi <= nc:
            raise ValueError(f"theta_channels={self.theta_channels}: need 0 <= start < stop <= {nc}")
        if self.region_ids and len(self.region_ids) != nc:
            raise ValueError(f"region_ids has {len(self.region_ids)} entries: give one Allen id per channel ({nc})")


def planted_labels(
    dead: Sequence[int] = DEFAULT_DEAD,
    noisy: Sequence[int] = DEFAULT_NOISY,
    n_outside: int = DEFAULT_N_OUTSIDE,
) -> np.ndarray:
    """Labels IBL's detector gives the planted channels: 0 good, 1 dead, 2 noisy, 3 outside the brain.

    Same precedence as ``detect_bad_channels``: outside first, then dead, then noisy.
    """
    labels = np.zeros(N_CHANNELS, dtype=np.int8)
    if n_outside:
        labels[N_CHANNELS - n_outside:] = 3
    labels[np.asarray(dead, dtype=int)] = 1
    labels[np.asarray(noisy, dtype=int)] = 2
    return labels


def synthetic_lfp(
    n_seconds: float,
    fs: float = 2500.0,
    seed: int = 0,
    dead: Sequence[int] = DEFAULT_DEAD,
    noisy: Sequence[int] = DEFAULT_NOISY,
    n_outside: int = DEFAULT_N_OUTSIDE,
    **model_kwargs,
) -> np.ndarray:
    """Synthetic NP1 LFP as one float32 array (n_samples, 384) in volts.

    ``model_kwargs`` are the other :class:`LfpModel` fields (amplitudes in µV, ``theta_channels``,
    ``line_noise_uv``...). For long recordings prefer :func:`iter_synthetic_lfp`, which streams blocks.
    """
    blocks = list(iter_synthetic_lfp(n_seconds, fs, seed, dead, noisy, n_outside, **model_kwargs))
    return np.concatenate(blocks, axis=0)


def iter_synthetic_lfp(
    n_seconds: float,
    fs: float = 2500.0,
    seed: int = 0,
    dead: Sequence[int] = DEFAULT_DEAD,
    noisy: Sequence[int] = DEFAULT_NOISY,
    n_outside: int = DEFAULT_N_OUTSIDE,
    n_threads: int = 2,
    **model_kwargs,
) -> Iterator[np.ndarray]:
    """Yield the recording of :func:`synthetic_lfp` in blocks of :data:`BLOCK_SAMPLES` samples (volts).

    Blocks are computed ``n_threads`` at a time (numpy releases the GIL); the values do not depend on it.
    """
    n_samples = int(round(n_seconds * fs))
    if n_samples <= 0 or fs <= 0:
        raise ValueError(f"n_seconds={n_seconds}, fs={fs}: both must be positive")
    model = LfpModel(dead=tuple(int(c) for c in dead), noisy=tuple(int(c) for c in noisy),
                     n_outside=int(n_outside), **model_kwargs)
    gen = _Generator(model, fs, seed)
    n_blocks = -(-n_samples // BLOCK_SAMPLES)
    with ThreadPoolExecutor(max(1, n_threads)) as pool:
        pending: deque = deque()
        for b in range(n_blocks):
            n = min(BLOCK_SAMPLES, n_samples - b * BLOCK_SAMPLES)
            latents = gen.latents(BLOCK_SAMPLES)[:, :n]  # always advance by a full block: prefix property
            pending.append(pool.submit(gen.block, b, latents))
            if len(pending) > max(1, n_threads):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _Generator:
    """Holds the mixing matrix and the filter states of the latent processes between blocks."""

    def __init__(self, model: LfpModel, fs: float, seed: int):
        self.model, self.fs, self.seed = model, fs, seed
        nc = N_CHANNELS
        depth = ROW_PITCH_UM * (np.arange(nc) // 2)
        inside = np.arange(nc) < nc - model.n_outside
        surface = depth[inside].max() + ROW_PITCH_UM
        connected = np.ones(nc, dtype=bool)
        connected[list(model.dead)] = False
        brain = (inside & connected).astype(np.float64)
        # global field: grows from 0.7x at the tip to 1.3x at the surface
        global_w = model.global_uv * (0.7 + 0.6 * depth / surface) * brain
        # local field: Gaussian-mixed latents, normalised to unit variance, depth-varying amplitude
        centres = np.arange(-_LOCAL_SPACING_UM, surface + 2 * _LOCAL_SPACING_UM, _LOCAL_SPACING_UM)
        kernel = np.exp(-0.5 * ((depth[None, :] - centres[:, None]) / _LOCAL_WIDTH_UM) ** 2)
        kernel /= np.sqrt(np.sum(kernel**2, axis=0, keepdims=True))
        local_w = kernel * model.local_uv * (1 + 0.5 * np.sin(2 * np.pi * depth / 1600.0)) * brain
        # theta: plateau over theta_channels with 10-channel cosine edges
        lo, hi = model.theta_channels
        ch = np.arange(nc)
        edge = 10.0
        ramp = np.clip(np.minimum(ch - lo + edge, hi - ch) / edge, 0, 1)
        theta_w = model.theta_uv * np.sin(np.pi / 2 * ramp) ** 2 * brain
        cm_w = model.common_mode_uv * connected
        masks, self.region_gains = _region_masks(model.region_ids), []
        if masks:
            theta_w = np.zeros(nc)
        region_w = []
        for sig, mask in masks:
            theta_w = theta_w + sig.theta_uv * mask * brain
            region_w.append(sig.background_uv * mask * brain)
            weights = np.array([1.0 - sig.flatness, 0.5, sig.flatness])
            self.region_gains.append(weights / np.sqrt(np.sum(weights**2)))
        self.mixing = np.vstack([global_w, local_w, theta_w, cm_w, *region_w]).astype(np.float32) * 1e-6
        self.n_background = 1 + len(centres) + 1  # global, locals, common mode: 1/f-like latents
        white = np.where(connected, model.noise_uv, model.dead_noise_uv).astype(np.float64)
        white[list(model.noisy)] = np.hypot(model.noise_uv, model.noisy_uv)
        self.white_v = (white * 1e-6).astype(np.float32)
        offsets = np.random.default_rng([seed, 2]).normal(0, model.offset_uv, nc)
        self.offset_v = (offsets * connected * 1e-6).astype(np.float32)
        self.line_v = model.line_noise_uv * np.sqrt(2) * 1e-6 * connected.astype(np.float32)
        # latent filters: AR(1) sections for the background, one AR(2) resonator for theta
        self.ar1 = [np.exp(-2 * np.pi * fc / fs) for fc in _BACKGROUND_CORNERS_HZ]
        w = np.asarray(_BACKGROUND_WEIGHTS)
        self.ar1_gain = w / np.sqrt(np.sum(w**2))
        r = np.exp(-np.pi * _THETA_BANDWIDTH_HZ / fs)
        self.theta_a = np.array([1.0, -2 * r * np.cos(2 * np.pi * _THETA_HZ / fs), r**2])
        self.theta_b = np.array([1.0])
        self.rng = np.random.default_rng([seed, 0])
        nb = self.n_background
        self.zi_ar1 = [np.zeros((nb, 1)) for _ in self.ar1]
        self.zi_theta = np.zeros((1, 2))
        # regional latents draw from their own stream: without regions the output is unchanged
        self.region_rng = np.random.default_rng([seed, 3])
        self.zi_region = [np.zeros((len(self.region_gains), 1)) for _ in self.ar1]
        self.theta_norm = 1.0
        burn = self.latents(_BURN_IN_SAMPLES)
        self.theta_norm = 1.0 / float(np.std(burn[nb - 1]))

    def latents(self, n: int) -> np.ndarray:
        """Next ``n`` samples of every latent process (unit variance), shape (n_latents, n)."""
        nb = self.n_background
        white = self.rng.standard_normal((len(self.ar1) * nb + 1, n))
        background = np.zeros((nb, n))
        for k, (a, g) in enumerate(zip(self.ar1, self.ar1_gain, strict=True)):
            y, self.zi_ar1[k] = scipy.signal.lfilter(
                [np.sqrt(1 - a * a)], [1.0, -a], white[k * nb:(k + 1) * nb], axis=1, zi=self.zi_ar1[k])
            background += g * y
        theta, self.zi_theta = scipy.signal.lfilter(self.theta_b, self.theta_a, white[-1:], axis=1,
                                                    zi=self.zi_theta)
        regional = np.zeros((len(self.region_gains), n))
        if self.region_gains:
            gains = np.asarray(self.region_gains)
            white_r = self.region_rng.standard_normal((len(self.ar1), len(self.region_gains), n))
            for k, a in enumerate(self.ar1):
                y, self.zi_region[k] = scipy.signal.lfilter(
                    [np.sqrt(1 - a * a)], [1.0, -a], white_r[k], axis=1, zi=self.zi_region[k])
                regional += gains[:, k:k + 1] * y
        # order matches the mixing rows: global, locals..., theta, common mode, regions...
        return np.vstack([background[:-1], theta * self.theta_norm, background[-1:], regional])

    def block(self, index: int, latents: np.ndarray) -> np.ndarray:
        """Volts (n, 384) of block ``index`` given its latents (thread-safe: no shared state)."""
        n = latents.shape[1]
        rng = np.random.default_rng([self.seed, 1, index])
        x = rng.standard_normal((n, N_CHANNELS), dtype=np.float32)
        x *= self.white_v
        x += latents.T.astype(np.float32) @ self.mixing
        x += self.offset_v
        if self.model.line_noise_uv:
            t = (index * BLOCK_SAMPLES + np.arange(n)) / self.fs
            x += np.sin(2 * np.pi * self.model.line_freq * t).astype(np.float32)[:, None] * self.line_v
        return x


def _region_masks(region_ids: Sequence[int]) -> list[tuple[RegionSignature, np.ndarray]]:
    """(signature, channel weight in [0, 1]) of every tabulated Beryl region among ``region_ids``.

    The weight is the region's indicator smoothed with a Hann kernel of :data:`_REGION_EDGE_CHANNELS`, so a
    boundary is a 100-µm cross-fade rather than a step between two neighbouring sites.
    """
    if not region_ids:
        return []
    from ibl_ephys_data.atlas import brain_regions

    ids = np.asarray(region_ids, dtype=np.int64)
    beryl = np.asarray(brain_regions().id2acronym(np.abs(ids), mapping="Beryl")).astype(str)
    kernel = np.hanning(_REGION_EDGE_CHANNELS + 2)[1:-1]
    kernel /= kernel.sum()
    out = []
    for name in sorted(set(beryl) & set(REGION_SIGNATURES)):
        inside = (beryl == name).astype(np.float64)
        out.append((REGION_SIGNATURES[name], np.convolve(inside, kernel, mode="same")))
    return out


def quantise(volts: np.ndarray, volts_per_bit: float = NP1_LF_VOLTS_PER_BIT,
             max_int: int = NP1_MAX_INT) -> np.ndarray:
    """Volts -> int16 ADC samples at NP1 LF gain (4.6875 µV/bit), clipped to the ADC range [-512, 511]."""
    q = np.rint(np.asarray(volts, dtype=np.float32) * np.float32(1.0 / volts_per_bit))
    return np.clip(q, -max_int, max_int - 1, out=q).astype(np.int16)


def np1_lf_meta_template() -> str:
    """Text of a real NP1 (3B2) LF ``.meta`` (IBL's sample3B_g0_t0.imec1.lf.meta), shipped in the package."""
    return resources.files("ibl_ephys_data.demo").joinpath("templates/np1_lf.meta").read_text()


def write_lf_cbin(
    volts: np.ndarray | Iterable[np.ndarray],
    folder: str | os.PathLike,
    fs: float = 2500.0,
    stem: str = DEFAULT_STEM,
    *,
    meta_template: str | os.PathLike | None = None,
    sync: bool = True,
    comp_level: int = 1,
    n_threads: int = 2,
) -> Path:
    """Write ``<folder>/<stem>.{cbin,ch,meta}``: an mtscomp-compressed 385-channel SpikeGLX LF recording.

    ``volts`` is an array (n_samples, 384) or an iterable of such blocks (streamed: memory stays at a few
    1-s chunks). Samples are quantised at NP1 LF gain; channel 385 is the sync word (1-Hz square wave on
    bit 6 when ``sync``). The ``.meta`` is ``meta_template`` (a path; default: the packaged real NP1 LF
    meta) with ``fileSizeBytes``, ``fileTimeSecs``, ``fileSHA1``, ``imSampRate`` and ``fileName`` set to
    the data. Files appear atomically (written as temporaries, renamed at the end). Returns the ``.cbin``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    template = Path(meta_template).read_text() if meta_template is not None else np1_lf_meta_template()
    blocks = [volts] if isinstance(volts, np.ndarray) else volts
    chunk_size = int(np.round(fs))  # mtscomp's 1-s chunks
    paths = {ext: folder / f"{stem}.{ext}" for ext in ("cbin", "ch", "meta")}
    tmp = {ext: p.with_name(f".{p.name}.part") for ext, p in paths.items()}
    sha_raw, sha_comp = hashlib.sha1(), hashlib.sha1()
    bounds, offsets = [0], [0]
    queued = 0

    def compress(chunk: np.ndarray) -> tuple[np.ndarray, bytes]:
        diff = mtscomp.diff_along_axis(chunk, axis=0)
        return chunk, zlib.compress(diff.tobytes(order="F"), comp_level)

    def drain(fb, future) -> None:
        chunk, data = future.result()
        fb.write(data)
        sha_raw.update(chunk)
        sha_comp.update(data)
        bounds.append(bounds[-1] + chunk.shape[0])
        offsets.append(offsets[-1] + len(data))

    try:
        with open(tmp["cbin"], "wb") as fb, ThreadPoolExecutor(max(1, n_threads)) as pool:
            pending: deque = deque()
            for chunk in _rechunk(blocks, chunk_size):
                if chunk.shape[1] != N_CHANNELS:
                    raise ValueError(f"volts blocks must be (n_samples, {N_CHANNELS}) arrays (NP1 LF without "
                                     f"the sync channel), got {chunk.shape}")
                raw = np.empty((chunk.shape[0], N_CHANNELS + 1), dtype=np.int16)
                raw[:, :-1] = quantise(chunk)
                t = queued + np.arange(chunk.shape[0])
                raw[:, -1] = SYNC_BIT_VALUE * ((t % chunk_size) < chunk_size // 2) if sync else 0
                queued += chunk.shape[0]
                pending.append(pool.submit(compress, raw))
                if len(pending) > 2 * max(1, n_threads):
                    drain(fb, pending.popleft())
            while pending:
                drain(fb, pending.popleft())
        if queued == 0:
            raise ValueError("volts is empty: nothing to write")
        n_samples, n_channels = bounds[-1], N_CHANNELS + 1
        cmeta = {
            **_MTSCOMP_CMETA, "version": mtscomp.FORMAT_VERSION, "comp_level": comp_level,
            "dtype": "int16", "n_channels": n_channels, "sample_rate": float(fs),
            "chunk_bounds": bounds, "chunk_offsets": offsets, "shape": [n_samples, n_channels],
            "sha1_compressed": sha_comp.hexdigest(), "sha1_uncompressed": sha_raw.hexdigest(),
        }
        tmp["ch"].write_text(json.dumps(cmeta, indent=2, sort_keys=True))
        tmp["meta"].write_text(_meta_text(template, n_samples, n_channels, fs, sha_raw.hexdigest(), stem))
        for ext in ("cbin", "ch", "meta"):
            os.replace(tmp[ext], paths[ext])
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    logger.info("wrote %s (%d samples, %.1f s, %.1f MB)", paths["cbin"], bounds[-1], bounds[-1] / fs,
                 offsets[-1] / 1e6)
    return paths["cbin"]


def write_demo_lf(
    folder: str | os.PathLike,
    stem: str = DEFAULT_STEM,
    n_seconds: float = 60.0,
    fs: float = 2500.0,
    seed: int = 0,
    dead: Sequence[int] = DEFAULT_DEAD,
    noisy: Sequence[int] = DEFAULT_NOISY,
    n_outside: int = DEFAULT_N_OUTSIDE,
    transform: Callable[[np.ndarray, int], np.ndarray] | None = None,
    **model_kwargs,
) -> Path:
    """Generate a synthetic recording and stream it into ``<folder>/<stem>.{cbin,ch,meta}``.

    ``transform(block, first_sample) -> block`` (optional) edits each block of volts (n, 384) before it
    is quantised, e.g. to plant artifacts at absolute sample positions. Returns the ``.cbin`` path.
    """
    blocks = iter_synthetic_lfp(n_seconds, fs, seed, dead, noisy, n_outside, **model_kwargs)
    if transform is not None:
        blocks = _transformed(blocks, transform)
    return write_lf_cbin(blocks, folder, fs=fs, stem=stem)


def _transformed(blocks: Iterable[np.ndarray], transform: Callable[[np.ndarray, int], np.ndarray]
                 ) -> Iterator[np.ndarray]:
    first = 0
    for block in blocks:
        yield transform(block, first)
        first += block.shape[0]


def _rechunk(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup arbitrary blocks of rows into C-contiguous chunks of ``size`` rows (last one shorter)."""
    buffer: list[np.ndarray] = []
    held = 0
    for block in blocks:
        block = np.asarray(block)
        if block.ndim != 2:
            raise ValueError(f"volts blocks must be 2-D (n_samples, n_channels), got shape {block.shape}")
        buffer.append(block)
        held += block.shape[0]
        while held >= size:
            data = np.concatenate(buffer, axis=0) if len(buffer) > 1 else buffer[0]
            yield np.ascontiguousarray(data[:size])
            rest = data[size:]
            buffer, held = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
    if held:
        yield np.ascontiguousarray(np.concatenate(buffer, axis=0))


def _meta_text(template: str, n_samples: int, n_channels: int, fs: float, sha1: str, stem: str) -> str:
    """The template with the fields that describe the data replaced (other lines kept byte for byte)."""
    values = {
        "fileSizeBytes": str(n_samples * n_channels * 2),
        "fileTimeSecs": repr(n_samples / fs),
        "fileSHA1": sha1.upper(),
        "imSampRate": repr(float(fs)),
        "fileName": f"{stem}.bin",
        "nSavedChans": str(n_channels),
    }
    lines = []
    for line in template.splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={values[key]}" if key in values else line)
    if not any(line.startswith("~snsShankMap=") for line in lines):
        lines.append(np1_shank_map())
    return "\n".join(lines) + "\n"


NP1_REFERENCE_SITE = 191


def np1_shank_map(n_sites: int = 384) -> str:
    """SpikeGLX's NP1 ``~snsShankMap`` (shank:col:row:used), as in the AP meta of the same probe.

    Site 191 is NP1's internal reference, flagged unused as SpikeGLX does. The reference LF meta lacks
    the map; without it spikeglx warns on every open and falls back to defaults.
    """
    entries = "".join(f"(0:{i % 2}:{i // 2}:{int(i != NP1_REFERENCE_SITE)})" for i in range(n_sites))
    return f"~snsShankMap=(1,2,480){entries}"
