"""`LfpStore`: the one reader and writer of ``lfp.zarr/<pid>/`` (see docs/workspace.md, "lfp.zarr").

Why one class: the lfp stage writes the store, and QC figures, the windows index, the PyTorch loader and
``dataset verify`` read it. Each of them used to open the zarr files its own way, so each had its own idea of
"finished" and a deleted chunk read silently as zeros. Here there is one layout, one "finished" test
(`LfpStore.is_done`), one integrity check (`LfpStore.problems`) and one fast reader (`ShardReader`).

Layout (``LAYOUT``): a zarr v3 group per insertion holding ``lfp`` (n_channels, n_samples) and
``common_mode`` (n_samples,), both stored as scaled int16 (``µV = stored * scale + offset``; ``scale`` and
``offset`` are in each array's attributes) in shards of all channels x ``shard_samples`` samples, inner
chunks of one channel x ``CHUNK_SAMPLES`` samples, Blosc lz4 with bit shuffle (see docs/scale.md,
"Storage", for the measurements behind these choices). An insertion is at most ``MAX_FILES`` files.

The int16 step is a fixed fraction of the probe's ADC step (``UNITS_PER_ADC_STEP``): the stored signal is
then as exact as the recording allows, and the error against the float32 result (measured while writing,
recorded as ``rms_error_rel``) stays below ``MAX_RMS_ERROR``. ``dtype="float32"``/``"float16"`` keep floats
(scale 1, offset 0) in the same sharded layout.

Old workspaces (zarr v2, float32, one file per chunk) are read as they are with one warning line per store;
`migrate` converts them in place, atomically, insertion by insertion.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import blosc

from ibl_ephys_data.errors import DataIntegrityError, MissingStageError, check_option
from ibl_ephys_data.workspace import atomic_path

logger = logging.getLogger(__name__)

LAYOUT = "ibl-ephys-data.lfp/2"  # group attribute "layout"; absent in the zarr v2 stores (layout 1)
DTYPES = ("int16", "float32", "float16")
CHUNK_SAMPLES = 4096  # inner chunk: 1 channel x 3.3 s at 1250 Hz; a 3-s window decodes 1-2 of them
MIN_SHARD_CHUNKS = 8  # a shard holds all channels x >= 8 chunks (25 MB of int16 at 384 channels)
MAX_FILES = 50  # per insertion: 3 zarr.json + 1 common_mode shard + lfp shards
# lz4 + bit shuffle: 3.4x smaller than float32 on the demo and the benchmark recording; zstd gains another
# ~15 % but decodes ~1.6x slower, and decoding is most of the loader's time (bench/bench_storage.py --sweep)
BLOSC = {"cname": "lz4", "clevel": 5, "shuffle": "bitshuffle"}
# stored units per ADC step of the LF signal, per probe major version. NP1: 10-bit LF at gain 250 -> 4.69 µV
# steps, /20 -> 0.23 µV units and +-7.7 mV of range (3x the input range). NP2: 14-bit at gain 80 -> 0.95 µV
# steps, /10 -> 0.095 µV units and +-3.1 mV of range; samples beyond are clipped and counted (n_clipped).
UNITS_PER_ADC_STEP = {1: 20, 2: 10}
NOMINAL_STEP_UV = {1: 0.6 / 512 / 250 * 1e6, 2: 0.62 / 8192 / 80 * 1e6}  # range / max int / gain
MAX_RMS_ERROR = 0.002  # stored vs float32 result, RMS of the error / RMS of the signal
_INT16_MAX = 32767
_EMPTY = 2**64 - 1  # shard index entry of a chunk that was never written
_INDEX_ENTRY = 16  # bytes per chunk in a shard index: offset and length, uint64 little-endian
_CRC = 4  # crc32c of the index, after it
_WARNED: set[Path] = set()  # old-layout groups already announced in this process (one line each)


@dataclass(frozen=True)
class Encoding:
    """How float µV are stored: ``stored = round((µV - offset) / scale)`` in ``dtype``."""

    dtype: str = "int16"
    scale: float = 1.0
    offset: float = 0.0

    @classmethod
    def for_probe(cls, dtype: str, major_version: Any = None, step_uv: float | None = None) -> Encoding:
        """The encoding of a probe: int16 at ``1 / UNITS_PER_ADC_STEP`` of its ADC step; floats unscaled.

        ``step_uv`` is the recording's ADC step (from its meta file); without it the nominal step of the
        probe's major version is used (NP1 when the version is unknown).
        """
        check_option("dtype", dtype, DTYPES)
        if dtype != "int16":
            return cls(dtype)
        major = 2 if str(major_version).startswith("2") else 1
        step = float(step_uv) if step_uv and np.isfinite(step_uv) and step_uv > 0 else NOMINAL_STEP_UV[major]
        return cls("int16", step / UNITS_PER_ADC_STEP[major], 0.0)

    @classmethod
    def for_reader(cls, reader: Any, dtype: str) -> Encoding:
        """From a ``spikeglx.Reader``-like object: its largest data-channel step and its major version."""
        s2v = getattr(reader, "sample2volts", None)
        step = None
        if s2v is not None and np.size(s2v):
            nc = getattr(reader, "nc", np.size(s2v)) - getattr(reader, "nsync", 0)
            step = float(np.max(np.asarray(s2v, dtype=np.float64)[:max(nc, 1)])) * 1e6
        return cls.for_probe(dtype, getattr(reader, "major_version", None), step)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """(stored array, number of clipped samples) of float µV ``x``."""
        if self.dtype != "int16":
            return np.asarray(x).astype(self.dtype), 0
        q = np.rint((np.asarray(x, dtype=np.float32) - self.offset) / self.scale)
        clipped = int(np.count_nonzero(np.abs(q) > _INT16_MAX))
        return np.clip(q, -_INT16_MAX, _INT16_MAX).astype(np.int16), clipped

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """Float32 µV of stored values."""
        out = stored.astype(np.float32)
        if self.dtype == "int16":
            out *= np.float32(self.scale)
            if self.offset:
                out += np.float32(self.offset)
        return out

    def attrs(self) -> dict:
        return {"dtype": self.dtype, "scale": self.scale, "offset": self.offset, "units": "uV"}

    @classmethod
    def from_attrs(cls, attrs: dict, dtype: Any) -> Encoding:
        return cls(str(np.dtype(dtype)), float(attrs.get("scale", 1.0)), float(attrs.get("offset", 0.0)))


class ErrorMeter:
    """Running RMS of (stored - float32) and of the signal, so the error is measured on every sample."""

    def __init__(self) -> None:
        self.err2 = self.sig2 = 0.0
        self.clipped = 0

    def add(self, x: np.ndarray, stored: np.ndarray, encoding: Encoding, clipped: int = 0) -> None:
        x = np.asarray(x, dtype=np.float32)
        self.err2 += float(np.square(encoding.decode(stored) - x, dtype=np.float64).sum())
        self.sig2 += float(np.square(x, dtype=np.float64).sum())
        self.clipped += clipped

    def attrs(self, n: int) -> dict:
        rms_sig = math.sqrt(self.sig2 / n) if n else 0.0
        rms_err = math.sqrt(self.err2 / n) if n else 0.0
        return {"rms_error_uv": rms_err, "rms_error_rel": rms_err / rms_sig if rms_sig else 0.0,
                "rms_signal_uv": rms_sig, "n_clipped": self.clipped}


def shard_samples(n_samples: int, chunk_samples: int = CHUNK_SAMPLES) -> int:
    """Samples per shard: >= ``MIN_SHARD_CHUNKS`` chunks, and long enough that an insertion stays within
    ``MAX_FILES`` files however long its windows are."""
    max_shards = MAX_FILES - 4
    n_chunks = math.ceil(max(n_samples, 1) / chunk_samples)
    return chunk_samples * max(MIN_SHARD_CHUNKS, math.ceil(n_chunks / max_shards))


class InsertionWriter:
    """Writes one insertion's arrays into a new zarr v3 group (the caller makes the directory atomic).

    ``write_lfp(start, block)`` must be called with blocks whose ends fall on shard boundaries (or the end of
    the array), so no shard is ever read back; ``shard`` gives that length. The common-mode trace is one
    shard, kept in memory (4 bytes per sample) and written by `finish`.
    """

    def __init__(self, path: Path, n_channels: int, n_samples: int, encoding: Encoding,
                 chunk_samples: int = CHUNK_SAMPLES, blosc: dict | None = None):
        import zarr
        from zarr.codecs import BloscCodec

        self.encoding, self.n_samples = encoding, n_samples
        self.shard = shard_samples(n_samples, chunk_samples)
        self.blosc = dict(blosc or BLOSC)
        codec = BloscCodec(**self.blosc)
        self.group = zarr.open_group(str(path), mode="w", zarr_format=3)
        # zarr writes the metadata; `_write_shard` the shards (zarr's per-chunk pipeline is ~10x slower)
        self.lfp = self.group.create_array(
            "lfp", shape=(n_channels, n_samples), chunks=(1, chunk_samples), shards=(n_channels, self.shard),
            dtype=encoding.dtype, compressors=codec, fill_value=0)
        cm_chunk = chunk_samples * MIN_SHARD_CHUNKS
        self.common = self.group.create_array(
            "common_mode", shape=(n_samples,), chunks=(cm_chunk,),
            shards=(cm_chunk * math.ceil(max(n_samples, 1) / cm_chunk),), dtype=encoding.dtype,
            compressors=codec, fill_value=0)
        self.path = Path(path)
        self.cm = np.zeros(n_samples, dtype=np.float32)
        self.meters = {"lfp": ErrorMeter(), "common_mode": ErrorMeter()}

    def write_lfp(self, start: int, block: np.ndarray) -> None:
        stop = start + block.shape[1]
        if start % self.shard or (stop % self.shard and stop != self.n_samples):
            raise ValueError(f"lfp block {start}:{stop} is not aligned on shards of {self.shard} samples")
        stored, clipped = self.encoding.encode(block)
        self.meters["lfp"].add(block, stored, self.encoding, clipped)
        for s0 in range(0, stop - start, self.shard):
            key = (0, (start + s0) // self.shard)
            _write_shard(self.path / "lfp", key, stored[:, s0:s0 + self.shard], self.lfp.chunks, self.blosc,
                         self.lfp.shards)

    def write_common_mode(self, start: int, values: np.ndarray) -> None:
        self.cm[start:start + values.size] = values

    def finish(self, attrs: dict) -> None:
        """Write the common-mode shard, each array's encoding and measured error, then the group attrs."""
        stored, clipped = self.encoding.encode(self.cm)
        self.meters["common_mode"].add(self.cm, stored, self.encoding, clipped)
        _write_shard(self.path / "common_mode", (0,), stored, self.common.chunks, self.blosc,
                     self.common.shards)
        for name, arr in (("lfp", self.lfp), ("common_mode", self.common)):
            enc = {**self.encoding.attrs(), **self.meters[name].attrs(arr.size)}
            arr.attrs.update(enc)
            if enc["n_clipped"]:
                logger.warning("%s: %d samples beyond the int16 range were clipped", name, enc["n_clipped"])
        self.group.attrs.update({**attrs, "layout": LAYOUT})
        self.group.attrs["complete"] = True


_SHUFFLES = {"noshuffle": blosc.NOSHUFFLE, "shuffle": blosc.SHUFFLE, "bitshuffle": blosc.BITSHUFFLE}


def _write_shard(path: Path, key: tuple[int, ...], data: np.ndarray, chunks: tuple[int, ...], codec: dict,
                 shard_shape: tuple[int, ...]) -> None:
    """One shard file of the zarr v3 ``sharding_indexed`` codec: Blosc-compressed inner chunks in C order,
    then their (offset, nbytes) index and its crc32c. ``data`` is the shard's part of the array (shorter at
    the array's end: partial chunks are padded with the fill value 0, chunks beyond the end not written)."""
    from crc32c import crc32c

    per_shard = tuple(s // c for s, c in zip(shard_shape, chunks, strict=True))
    index = np.full((*per_shard, 2), _EMPTY, dtype="<u8")
    parts, offset = [], 0
    cname, shuffle = codec["cname"].encode(), _SHUFFLES[codec["shuffle"]]
    for ij in np.ndindex(*per_shard):
        box = tuple(slice(i * c, (i + 1) * c) for i, c in zip(ij, chunks, strict=True))
        chunk = data[box]
        if 0 in chunk.shape:
            continue
        if chunk.shape != tuple(chunks):
            chunk = np.pad(chunk, [(0, c - n) for c, n in zip(chunks, chunk.shape, strict=True)])
        encoded = blosc.compress(np.ascontiguousarray(chunk, dtype=chunk.dtype.newbyteorder("<")), cname,
                                 int(codec["clevel"]), shuffle)
        index[ij] = (offset, len(encoded))
        parts.append(encoded)
        offset += len(encoded)
    raw_index = index.tobytes()
    parts += [raw_index, crc32c(raw_index).to_bytes(_CRC, "little")]
    target = path.joinpath("c", *map(str, key))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(parts))


class ChunkCache:
    """Per-process cache of decoded chunks (oldest out first), bounded by ``cache_mb``."""

    def __init__(self, cache_mb: float = 256.0):
        self.cache_bytes = int(cache_mb * 2**20)
        self.decoded: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.n_bytes = 0

    def get(self, key: tuple) -> np.ndarray | None:
        return self.decoded.get(key)

    def add(self, key: tuple, chunk: np.ndarray) -> np.ndarray:
        if self.cache_bytes <= 0:
            return chunk
        self.decoded[key] = chunk
        self.n_bytes += chunk.nbytes
        while self.n_bytes > self.cache_bytes and len(self.decoded) > 1:
            self.n_bytes -= self.decoded.popitem(last=False)[1].nbytes
        return chunk


class ShardReader:
    """Reads boxes of a 2-D sharded array written by `InsertionWriter`, as float32 µV, without zarr.

    Why not zarr: its per-call machinery costs more than reading a 3-s window. This reader reads each
    shard's index once (checked with its crc32c), then positioned reads of exactly the chunks of a box,
    Blosc-decoded. A missing shard, a short one or an absent chunk raises `DataIntegrityError` naming the
    file; results equal zarr's reads (tested).
    """

    def __init__(self, path: Path, cache: ChunkCache | None = None):
        # one thread per decode: chunks are small (8 KiB) and DataLoader workers parallelise across windows
        blosc.use_threads = False
        self.path = Path(path)
        meta = json.loads((self.path / "zarr.json").read_bytes())
        spec = _sharding(meta)
        if spec is None or len(meta["shape"]) != 2:
            raise ValueError(f"{self.path} is not a 2-D array in the {LAYOUT} layout")
        self.shape = tuple(meta["shape"])
        self.shards = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.chunks = tuple(spec["chunk_shape"])
        self.dtype = np.dtype(meta["data_type"])
        self.encoding = Encoding.from_attrs(meta.get("attributes", {}), self.dtype)
        self._scale = np.float32(self.encoding.scale)
        self.per_shard = (self.shards[0] // self.chunks[0], self.shards[1] // self.chunks[1])
        self.cache = cache if cache is not None else ChunkCache()
        self._index: dict[tuple[int, int], list] = {}
        self._fds: dict[tuple[int, int], int] = {}
        self._id = str(self.path)

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def read(self, r0: int, r1: int, s0: int, s1: int) -> np.ndarray:
        """``array[r0:r1, s0:s1]`` as float32 µV (converted while copying out of the chunks: one pass)."""
        out = self.read_stored(r0, r1, s0, s1, np.float32)
        if self.encoding.dtype == "int16":
            out *= self._scale
            if self.encoding.offset:
                out += np.float32(self.encoding.offset)
        return out

    def read_stored(self, r0: int, r1: int, s0: int, s1: int, dtype: Any = None) -> np.ndarray:
        """``array[r0:r1, s0:s1]`` as stored (int16 or float), or cast to ``dtype`` (a new array)."""
        if not (0 <= r0 < r1 <= self.shape[0] and 0 <= s0 < s1 <= self.shape[1]):
            raise IndexError(f"box [{r0}:{r1}, {s0}:{s1}] outside {self.path} of shape {self.shape}")
        cr, cs = self.chunks
        ci0, ci1, cj0, cj1 = r0 // cr, (r1 - 1) // cr, s0 // cs, (s1 - 1) // cs
        if ci0 == ci1 and cj0 == cj1:
            box = self._chunk(ci0, cj0)[r0 - ci0 * cr:r1 - ci0 * cr, s0 - cj0 * cs:s1 - cj0 * cs]
            return box if dtype is None else box.astype(dtype)
        out = np.empty((r1 - r0, s1 - s0), dtype=self.dtype if dtype is None else dtype)
        if ci0 == ci1:  # one row of chunks (single-channel windows): no per-chunk row arithmetic
            rows, pos = slice(r0 - ci0 * cr, r1 - ci0 * cr), 0
            for cj in range(cj0, cj1 + 1):
                a = s0 - cj * cs if cj == cj0 else 0
                b = s1 - cj * cs if cj == cj1 else cs
                out[:, pos:pos + b - a] = self._chunk(ci0, cj)[rows, a:b]
                pos += b - a
            return out
        for ci in range(ci0, ci1 + 1):
            a0, a1 = max(r0, ci * cr), min(r1, (ci + 1) * cr)
            for cj in range(cj0, cj1 + 1):
                b0, b1 = max(s0, cj * cs), min(s1, (cj + 1) * cs)
                out[a0 - r0:a1 - r0, b0 - s0:b1 - s0] = self._chunk(ci, cj)[
                    a0 - ci * cr:a1 - ci * cr, b0 - cj * cs:b1 - cj * cs]
        return out

    def _chunk(self, ci: int, cj: int) -> np.ndarray:
        key = (self._id, ci, cj)
        chunk = self.cache.get(key)
        if chunk is not None:
            return chunk
        si, sj = ci // self.per_shard[0], cj // self.per_shard[1]
        index = self._index.get((si, sj)) or self._shard_index((si, sj))
        offset, n = index[ci % self.per_shard[0]][cj % self.per_shard[1]]
        if offset == _EMPTY:
            raise DataIntegrityError(f"{self._shard_path(si, sj)} has no chunk ({ci}, {cj}): "
                                     "re-run the lfp stage for this insertion")
        data = os.pread(self._fds[(si, sj)], n, offset)
        chunk = np.frombuffer(blosc.decompress(data), dtype=self.dtype).reshape(self.chunks)
        return self.cache.add(key, chunk)

    def _shard_path(self, si: int, sj: int) -> Path:
        return self.path / "c" / str(si) / str(sj)

    def _shard_index(self, shard: tuple[int, int]) -> list:
        """The (offset, nbytes) of every chunk of ``shard`` as nested lists (cheaper to index than numpy)."""
        index = self._index.get(shard)
        if index is None:
            path = self._shard_path(*shard)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise DataIntegrityError(f"{path} is missing: re-run the lfp stage for this insertion") from None
            index, why = _read_index(fd, self.per_shard, _inside(shard, self.shape, self.shards, self.chunks))
            if why:
                os.close(fd)
                raise DataIntegrityError(f"{path} {why}: re-run the lfp stage for this insertion")
            self._fds[shard], self._index[shard] = fd, index.tolist()
        return self._index[shard]


class ZarrReader:
    """Reads a 2-D array not written by `InsertionWriter` (the old zarr v2 layout, or a foreign zarr v3
    array) through zarr, as float32 µV, refusing boxes whose chunk files are absent (zarr would fill them)."""

    def __init__(self, path: Path):
        import zarr

        self.path = Path(path)
        self.array = zarr.open_array(str(path), mode="r")
        self.chunks = self.array.chunks
        self.encoding = Encoding.from_attrs(dict(self.array.attrs), self.array.dtype)
        meta = _array_meta(self.path)
        if meta.get("zarr_format") == 3:
            sep = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
            prefix = "c" + sep if meta["chunk_key_encoding"]["name"] == "default" else ""
            self._key = lambda ci, cj: f"{prefix}{ci}{sep}{cj}"
        else:
            sep = meta.get("dimension_separator") or "."
            self._key = lambda ci, cj: f"{ci}{sep}{cj}"

    def read(self, r0: int, r1: int, s0: int, s1: int) -> np.ndarray:
        cr, cs = self.chunks
        for ci in range(r0 // cr, (r1 - 1) // cr + 1):
            for cj in range(s0 // cs, (s1 - 1) // cs + 1):
                chunk = self.path / self._key(ci, cj)
                if not chunk.is_file():
                    raise DataIntegrityError(f"{chunk} is missing: re-run the lfp stage for this insertion")
        return self.encoding.decode(np.asarray(self.array[r0:r1, s0:s1]))


class LfpInsertion:
    """A finished insertion: its group attributes and float32 µV reads of ``lfp`` and ``common_mode``."""

    def __init__(self, store: LfpStore, pid: str, cache: ChunkCache | None = None):
        self.pid, self.path = pid, store.path(pid)
        self.legacy = store.kind(pid) == "v2"
        self.attrs = store.attrs(pid)
        self._cache = cache if cache is not None else ChunkCache()
        self._readers: dict[str, Any] = {}

    @property
    def fs(self) -> float:
        return float(self.attrs["fs"])

    @property
    def raw_ind(self) -> list[int]:
        return [int(r) for r in self.attrs["raw_ind"]]

    @property
    def windows(self) -> list[dict]:
        return list(self.attrs.get("windows") or [])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(_array_meta(self.path / "lfp")["shape"])

    def reader(self, name: str = "lfp") -> ShardReader | ZarrReader:
        reader = self._readers.get(name)
        if reader is None:
            path = self.path / name
            fast = not self.legacy and _sharding(_array_meta(path)) is not None
            reader = ShardReader(path, self._cache) if fast else ZarrReader(path)
            self._readers[name] = reader
        return reader

    def lfp(self, rows: slice = slice(None), samples: slice = slice(None)) -> np.ndarray:
        """``lfp[rows, samples]`` in float32 µV (contiguous slices)."""
        n_rows, n_samples = self.shape
        r0, r1, _ = rows.indices(n_rows)
        s0, s1, _ = samples.indices(n_samples)
        if r1 <= r0 or s1 <= s0:
            return np.zeros((max(r1 - r0, 0), max(s1 - s0, 0)), dtype=np.float32)
        return self.reader("lfp").read(r0, r1, s0, s1)

    def common_mode(self, samples: slice = slice(None)) -> np.ndarray:
        """``common_mode[samples]`` in float32 µV."""
        s0, s1, _ = samples.indices(self.shape[1])
        if s1 <= s0:
            return np.zeros(0, dtype=np.float32)
        import zarr

        arr = zarr.open_array(str(self.path / "common_mode"), mode="r")
        return Encoding.from_attrs(dict(arr.attrs), arr.dtype).decode(np.asarray(arr[s0:s1]))

    def encoding(self) -> dict:
        """The lfp array's encoding and measured error (``{}`` for the old layout: float32, exact)."""
        return {} if self.legacy else dict(_array_meta(self.path / "lfp").get("attributes", {}))


class LfpStore:
    """``lfp.zarr``: every read and write of the per-insertion groups goes through here."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LfpStore({str(self.root)!r})"

    def path(self, pid: str) -> Path:
        return self.root / pid

    def kind(self, pid: str) -> str | None:
        """``"v3"`` (current layout), ``"v2"`` (old layout, read as it is) or None (no group)."""
        path = self.path(pid)
        if (path / "zarr.json").is_file():
            return "v3"
        if (path / ".zattrs").is_file() or (path / ".zgroup").is_file():
            if path not in _WARNED:
                _WARNED.add(path)
                logger.warning("%s is in the old layout (zarr v2, float32, a file per chunk): read as it is; "
                               "`ibl-ephys-data migrate` converts it (%s)", path, "about 3x smaller, <50 files")
            return "v2"
        return None

    def attrs(self, pid: str) -> dict:
        """The group attributes of ``pid`` ({} if there is no group)."""
        kind = self.kind(pid)
        path = self.path(pid)
        if kind == "v3":
            return dict(json.loads((path / "zarr.json").read_text()).get("attributes", {}))
        if kind == "v2" and (path / ".zattrs").is_file():
            return dict(json.loads((path / ".zattrs").read_text()))
        return {}

    def pids(self) -> list[str]:
        """Pids whose group is complete (in either layout), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and self.attrs(p.name).get("complete") is True)

    def is_done(self, pid: str, spec: dict) -> bool:
        """Finished with the options ``spec`` and intact? Missing or short files -> False (recompute).

        ``spec`` is compared with the stored ``params["spec"]`` (what the lfp stage records), or with the
        whole ``params`` of a group written without one (`process_insertion` called directly).
        An old-layout store whose spec differs only in ``dtype`` counts as done: it is read as it is and
        `migrate` converts it, never a silent recomputation.
        """
        attrs = self.attrs(pid)
        if attrs.get("complete") is not True:
            return False
        params = attrs.get("params", {})
        stored = params.get("spec", params)
        if stored != spec and not (self.kind(pid) == "v2" and _without_dtype(stored) == _without_dtype(spec)):
            return False
        problems = self.problems(pid)
        for p in problems:
            logger.warning("%s: %s -> recomputed", pid, p)
        return not problems

    def problems(self, pid: str) -> list[str]:
        """Every missing or damaged file of a finished insertion (empty list: intact)."""
        kind = self.kind(pid)
        path = self.path(pid)
        if kind is None:
            return [f"{path} is missing"]
        if self.attrs(pid).get("complete") is not True:
            return [f"{path} is incomplete (no complete=true attribute)"]
        found = []
        for name in ("lfp", "common_mode"):
            check = _problems_v3 if kind == "v3" else _problems_v2
            found += check(path / name)
        return found

    def open(self, pid: str, cache: ChunkCache | None = None) -> LfpInsertion:
        """A finished insertion (`MissingStageError` naming the lfp command if absent or incomplete)."""
        if self.attrs(pid).get("complete") is not True:
            raise MissingStageError(f"{self.path(pid)} is missing or incomplete", "lfp", pids=[pid])
        return LfpInsertion(self, pid, cache)

    @contextlib.contextmanager
    def create(self, pid: str, n_channels: int, n_samples: int, encoding: Encoding,
               chunk_samples: int = CHUNK_SAMPLES, blosc: dict | None = None) -> Iterator[InsertionWriter]:
        """An `InsertionWriter` on a hidden temporary group renamed onto ``<root>/<pid>`` if the block succeeds.

        A killed run leaves no ``<pid>`` group (its temporary is removed by the next `create` of that pid).
        """
        self._ensure_root()
        for stale in self.root.glob(f".{pid}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        with atomic_path(self.path(pid)) as tmp:
            yield InsertionWriter(tmp, n_channels, n_samples, encoding, chunk_samples, blosc)

    def _ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "zarr.json").exists():
            meta = {"zarr_format": 3, "node_type": "group", "attributes": {}}
            with atomic_path(self.root / "zarr.json") as tmp:
                tmp.write_text(json.dumps(meta, indent=2))
        (self.root / ".zgroup").unlink(missing_ok=True)  # an old-layout root; its groups are read directly


def migrate(root: str | os.PathLike, pids: Sequence[str] | None = None, dtype: str = "int16",
            step_uv: float | None = None) -> dict[str, dict]:
    """Convert old-layout (zarr v2) insertions of ``root`` to the current layout, one atomic swap each.

    The new group keeps every attribute, records ``migrated_from`` and the measured error; its
    ``params.dtype`` (and ``params.spec.dtype``) become ``dtype`` so the lfp stage sees it as done. An
    insertion whose error would exceed ``MAX_RMS_ERROR`` or whose files are damaged is left untouched and
    reported. The probe's major version comes from the stored ``processing.adc_shift`` (NP1) unless
    ``step_uv`` is given. Returns {pid: {"status": "done"|"skipped"|"failed", ...}}.
    """
    store = LfpStore(root)
    chosen = store.pids() if pids is None else list(pids)
    out: dict[str, dict] = {}
    for pid in chosen:
        if store.kind(pid) != "v2":
            out[pid] = {"status": "skipped", "reason": "already in the current layout"
                        if store.kind(pid) == "v3" else "no group"}
            continue
        problems = store.problems(pid)
        if problems:
            out[pid] = {"status": "failed", "reason": "; ".join(problems)}
            continue
        try:
            out[pid] = _migrate_one(store, pid, dtype, step_uv)
        except DataIntegrityError as ex:
            out[pid] = {"status": "failed", "reason": str(ex)}
        logger.info("migrate %s: %s", pid, out[pid])
    return out


def _migrate_one(store: LfpStore, pid: str, dtype: str, step_uv: float | None) -> dict:
    import zarr

    old = zarr.open_group(str(store.path(pid)), mode="r")
    attrs = dict(old.attrs)
    major = 1 if attrs.get("processing", {}).get("adc_shift", True) else 2
    encoding = Encoding.for_probe(dtype, major, step_uv)
    lfp, cm = old["lfp"], old["common_mode"]
    nc, n = lfp.shape
    params = dict(attrs.get("params", {}))
    params["dtype"] = dtype
    if isinstance(params.get("spec"), dict):
        params["spec"] = {**params["spec"], "dtype": dtype}
    attrs.update({"params": params, "migrated_from": "zarr v2 " + str(lfp.dtype)})
    attrs.pop("complete", None)
    with store.create(pid, nc, n, encoding) as writer:
        for start in range(0, n, writer.shard):
            writer.write_lfp(start, np.asarray(lfp[:, start:start + writer.shard], dtype=np.float32))
        writer.write_common_mode(0, np.asarray(cm[:], dtype=np.float32))
        rel = writer.meters["lfp"].attrs(nc * n)["rms_error_rel"]
        if rel > MAX_RMS_ERROR:
            raise DataIntegrityError(f"{store.path(pid)}: int16 would cost {rel:.3%} RMS error (> "
                                     f"{MAX_RMS_ERROR:.1%}): pass a smaller step_uv or dtype='float32'")
        writer.finish(attrs)
    return {"status": "done", "rms_error_rel": rel, "dtype": dtype}


def _without_dtype(spec: Any) -> Any:
    return {k: v for k, v in spec.items() if k != "dtype"} if isinstance(spec, dict) else spec


def _array_meta(path: Path) -> dict:
    if (path / "zarr.json").is_file():
        return json.loads((path / "zarr.json").read_text())
    return json.loads((path / ".zarray").read_text())


def _sharding(meta: dict) -> dict | None:
    """The sharding configuration if ``meta`` is exactly what `InsertionWriter` writes, else None."""
    codecs = meta.get("codecs") or []
    if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
        return None
    cfg = codecs[0]["configuration"]
    inner = [c["name"] for c in cfg["codecs"]]
    index = [c["name"] for c in cfg["index_codecs"]]
    little = all(c.get("configuration", {}).get("endian", "little") == "little"
                 for c in (*cfg["codecs"], *cfg["index_codecs"]) if c["name"] == "bytes")
    if inner != ["bytes", "blosc"] or index != ["bytes", "crc32c"] or cfg["index_location"] != "end" or not little:
        return None
    return cfg


def _read_index(fd: int, per_shard: tuple[int, ...], inside: np.ndarray | None = None
                ) -> tuple[np.ndarray | None, str]:
    """(index of (offset, nbytes) per chunk, "") or (None, what is wrong) for an open shard file.

    ``inside`` marks the chunks of the shard that intersect the array (the others are never written).
    """
    from crc32c import crc32c

    n_index = math.prod(per_shard) * _INDEX_ENTRY
    size = os.fstat(fd).st_size
    if size < n_index + _CRC:
        return None, f"is {size} bytes, shorter than its index"
    raw = os.pread(fd, n_index + _CRC, size - n_index - _CRC)
    if crc32c(raw[:n_index]) != int.from_bytes(raw[n_index:], "little"):
        return None, "has a damaged index (crc32c mismatch: truncated or overwritten)"
    index = np.frombuffer(raw[:n_index], dtype="<u8").reshape(*per_shard, 2)
    written = index[..., 0] != _EMPTY
    expected = np.ones(per_shard, dtype=bool) if inside is None else inside
    if (expected & ~written).any():
        return None, f"lacks {int((expected & ~written).sum())} chunks"
    ends = index[..., 0][written] + index[..., 1][written]
    if ends.size and int(ends.max()) > size - n_index - _CRC:
        return None, "has chunks beyond its end (truncated)"
    return index, ""


def _inside(key: tuple[int, ...], shape: Sequence[int], shards: Sequence[int], chunks: Sequence[int]) -> np.ndarray:
    """Which chunks of shard ``key`` intersect the array."""
    per_shard = [s // c for s, c in zip(shards, chunks, strict=True)]
    grids = np.meshgrid(*[k * s + np.arange(p) * c < n for k, s, p, c, n
                          in zip(key, shards, per_shard, chunks, shape, strict=True)], indexing="ij")
    return np.logical_and.reduce(grids)


def _problems_v3(path: Path) -> list[str]:
    if not (path / "zarr.json").is_file():
        return [f"{path / 'zarr.json'} is missing"]
    meta = json.loads((path / "zarr.json").read_text())
    spec = _sharding(meta)
    if spec is None:
        return [f"{path} is not in the {LAYOUT} layout (unexpected codecs)"]
    shape = meta["shape"]
    shards = meta["chunk_grid"]["configuration"]["chunk_shape"]
    chunks = spec["chunk_shape"]
    per_shard = tuple(s // c for s, c in zip(shards, chunks, strict=True))
    found = []
    for key in np.ndindex(*(math.ceil(n / s) for n, s in zip(shape, shards, strict=True))):
        shard = path.joinpath("c", *map(str, key))
        try:
            fd = os.open(shard, os.O_RDONLY)
        except FileNotFoundError:
            found.append(f"{shard} is missing")
            continue
        try:
            _, why = _read_index(fd, per_shard, _inside(key, shape, shards, chunks))
        finally:
            os.close(fd)
        if why:
            found.append(f"{shard} {why}")
    return found


def _problems_v2(path: Path) -> list[str]:
    if not (path / ".zarray").is_file():
        return [f"{path / '.zarray'} is missing"]
    meta = json.loads((path / ".zarray").read_text())
    sep = meta.get("dimension_separator") or "."
    raw = meta.get("compressor") is None and not meta.get("filters")
    n_bytes = int(np.prod(meta["chunks"])) * np.dtype(meta["dtype"]).itemsize
    found = []
    for key in np.ndindex(*(math.ceil(n / c) for n, c in zip(meta["shape"], meta["chunks"], strict=True))):
        chunk = path / sep.join(map(str, key))
        if not chunk.is_file():
            found.append(f"{chunk} is missing")
        elif raw and chunk.stat().st_size != n_bytes:
            found.append(f"{chunk} is {chunk.stat().st_size} bytes, not {n_bytes}")
    return found
