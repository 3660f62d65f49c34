"""The bytes of lfp.zarr: zarr v3 shards written directly, read back with their index checked.

Why apart from `lfp_store`: the store decides layout and encoding; this module only knows the sharding
codec's file format (chunks, then an index of offsets/lengths with its crc32c) and how to find a missing or
short chunk, so a damaged file is named instead of read as fill-value zeros.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import blosc

from ibl_ephys_data.errors import DataIntegrityError, check_option

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

_EMPTY = 2**64 - 1  # shard index entry of a chunk that was never written
_INDEX_ENTRY = 16  # bytes per chunk in a shard index: offset and length, uint64 little-endian
_CRC = 4  # crc32c of the index, after it


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

    def __init__(self, path: Path, cache: ChunkCache | None = None, remote: Any = None):
        # one thread per decode: chunks are small (8 KiB) and DataLoader workers parallelise across windows
        blosc.use_threads = False
        self.path = Path(path)
        # remote(path) -> a `ShardFile`-like reader of a shard in an object store (None: local files)
        self._open_remote = remote
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
        self._files: dict[tuple[int, int], Any] = {}
        self._id = str(self.path)

    def __del__(self) -> None:
        for file in getattr(self, "_files", {}).values():
            file.close()

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
        data = self._files[(si, sj)].pread(n, offset)
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
                file = ShardFile(path) if self._open_remote is None else self._open_remote(path)
            except FileNotFoundError:
                raise DataIntegrityError(f"{path} is missing: re-run the lfp stage for this insertion") from None
            index, why = _read_index(file, self.per_shard, _inside(shard, self.shape, self.shards, self.chunks))
            if why:
                file.close()
                raise DataIntegrityError(f"{path} {why}: re-run the lfp stage for this insertion")
            self._files[shard], self._index[shard] = file, index.tolist()
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


class ShardFile:
    """Positioned reads of a local shard file (`ShardReader` takes other sources with ``size``/``pread``)."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def pread(self, n: int, offset: int) -> bytes:
        return os.pread(self.fd, n, offset)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _read_index(file: Any, per_shard: tuple[int, ...], inside: np.ndarray | None = None
                ) -> tuple[np.ndarray | None, str]:
    """(index of (offset, nbytes) per chunk, "") or (None, what is wrong) for an open shard file.

    ``inside`` marks the chunks of the shard that intersect the array (the others are never written).
    """
    from crc32c import crc32c

    n_index = math.prod(per_shard) * _INDEX_ENTRY
    size = file.size
    if size < n_index + _CRC:
        return None, f"is {size} bytes, shorter than its index"
    raw = file.pread(n_index + _CRC, size - n_index - _CRC)
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
            file = ShardFile(shard)
        except FileNotFoundError:
            found.append(f"{shard} is missing")
            continue
        try:
            _, why = _read_index(file, per_shard, _inside(key, shape, shards, chunks))
        finally:
            file.close()
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
