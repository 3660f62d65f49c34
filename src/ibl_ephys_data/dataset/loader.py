"""`LfpWindows`: a map-style dataset over windows.parquet that reads the signal from lfp.zarr on demand.

It is a plain Python object (``__len__``/``__getitem__`` returning numpy arrays), so it works with
``torch.utils.data.DataLoader`` without importing torch here: torch stays an optional extra. Stores are
opened lazily and re-opened after a fork, so each worker has its own file handles and caches.

Reading through ``zarr`` costs ~100 µs of Python per call, more than reading a 3-s single-channel window
from disk. For stores on a plain directory the loader reads chunk files itself: uncompressed C-order chunks
with positioned reads of exactly the bytes of the window (like a memmap), compressed or filtered chunks
through their numcodecs codecs with a per-process LRU cache of decoded chunks. Results equal zarr's reads.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ibl_ephys_data.errors import check_option
from ibl_ephys_data.lfp.artifacts import KINDS as ARTIFACT_KINDS

logger = logging.getLogger(__name__)

LABEL_COLUMNS = {
    "label": "label", "target": "target", "allen": "allen_acronym", "beryl": "beryl_acronym",
    "cosmos": "cosmos_acronym",
}
_INDEX_COLUMNS = ["pid", "raw_ind", "row_start", "row_stop", "start", "n_samples", "fs", "split", "fold"]


class ChunkCache:
    """Per-process bounded cache of chunks (oldest out first) shared by the readers of one dataset.

    Raw chunks are memory maps (they cost address space, not memory, so they are bounded by count);
    decoded chunks are bounded by ``cache_mb``.
    """

    def __init__(self, cache_mb: float = 256.0, max_maps: int = 8192):
        self.cache_bytes = int(cache_mb * 2**20)
        self.max_maps = max_maps
        self.maps: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.decoded: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.decoded_bytes = 0

    def add(self, key: tuple, chunk: np.ndarray, mapped: bool) -> np.ndarray:
        if mapped:
            self.maps[key] = chunk
            if len(self.maps) > self.max_maps:
                self.maps.popitem(last=False)
        else:
            self.decoded[key] = chunk
            self.decoded_bytes += chunk.nbytes
            while self.decoded_bytes > self.cache_bytes and len(self.decoded) > 1:
                self.decoded_bytes -= self.decoded.popitem(last=False)[1].nbytes
        return chunk


class ChunkReader:
    """Reads boxes of a 2-D zarr v2 array from its directory, bypassing zarr's per-call machinery.

    Uncompressed C-order chunks are memory-mapped (a read is then a copy, like a memmap); others are
    decoded with their numcodecs codecs. Missing chunks read as the fill value, as in zarr.
    """

    def __init__(self, path: Path, cache: ChunkCache | None = None):
        from zarr.meta import Metadata2

        self.path = Path(path)
        meta = Metadata2.decode_array_metadata((self.path / ".zarray").read_bytes())
        self.shape = tuple(meta["shape"])
        self.chunks = tuple(meta["chunks"])
        self.dtype = np.dtype(meta["dtype"])
        self.order = meta["order"]
        self.fill = 0 if meta["fill_value"] is None else meta["fill_value"]
        self.sep = meta.get("dimension_separator") or "."
        if self.sep == "." and not (self.path / "0.0").exists() and (self.path / "0" / "0").is_file():
            self.sep = "/"  # a nested store written without recording its separator
        self.compressor = _codec(meta["compressor"])
        self.filters = [_codec(f) for f in meta["filters"] or []]
        self.raw = self.compressor is None and not self.filters and self.order == "C"
        self.cache = cache if cache is not None else ChunkCache()
        self._cached = self.cache.maps if self.raw else self.cache.decoded
        self._id = str(self.path)

    def read(self, r0: int, r1: int, s0: int, s1: int) -> np.ndarray:
        """``array[r0:r1, s0:s1]`` in the store's dtype."""
        if not (0 <= r0 < r1 <= self.shape[0] and 0 <= s0 < s1 <= self.shape[1]):
            raise IndexError(f"box [{r0}:{r1}, {s0}:{s1}] outside {self.path} of shape {self.shape}")
        cr, cs = self.chunks
        ci0, ci1, cj0, cj1 = r0 // cr, (r1 - 1) // cr, s0 // cs, (s1 - 1) // cs
        if ci0 == ci1 and cj0 == cj1:
            return self._chunk(ci0, cj0)[r0 - ci0 * cr:r1 - ci0 * cr, s0 - cj0 * cs:s1 - cj0 * cs].copy()
        out = np.empty((r1 - r0, s1 - s0), dtype=self.dtype)
        for ci in range(ci0, ci1 + 1):
            a0, a1 = max(r0, ci * cr), min(r1, (ci + 1) * cr)
            for cj in range(cj0, cj1 + 1):
                b0, b1 = max(s0, cj * cs), min(s1, (cj + 1) * cs)
                out[a0 - r0:a1 - r0, b0 - s0:b1 - s0] = self._chunk(ci, cj)[
                    a0 - ci * cr:a1 - ci * cr, b0 - cj * cs:b1 - cj * cs]
        return out

    def _chunk(self, ci: int, cj: int) -> np.ndarray:
        key = (self._id, ci, cj)
        chunk = self._cached.get(key)
        if chunk is None:
            chunk = self._load(ci, cj)
        return chunk

    def _load(self, ci: int, cj: int) -> np.ndarray:
        path = os.path.join(self.path, f"{ci}{self.sep}{cj}")
        key = (self._id, ci, cj)
        n_bytes = self.chunks[0] * self.chunks[1] * self.dtype.itemsize
        try:
            with open(path, "rb") as f:
                if self.raw:
                    if os.fstat(f.fileno()).st_size != n_bytes:
                        raise OSError(f"chunk {path} is not {n_bytes} bytes: re-run `ibl-ephys-data lfp`")
                    buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                    return self.cache.add(key, np.frombuffer(buf, self.dtype).reshape(self.chunks), True)
                data: Any = f.read()
        except FileNotFoundError:
            return self.cache.add(key, np.full(self.chunks, self.fill, dtype=self.dtype), False)
        if self.compressor is not None:
            data = self.compressor.decode(data)
        for codec in reversed(self.filters):
            data = codec.decode(data)
        chunk = np.frombuffer(data, dtype=self.dtype).reshape(self.chunks, order=self.order)
        return self.cache.add(key, chunk, False)


class _ZarrReader:
    """Fallback for stores that are not plain directories: slice through zarr itself."""

    def __init__(self, path: Path):
        import zarr

        self.array = zarr.open_array(str(path), mode="r")

    def read(self, r0: int, r1: int, s0: int, s1: int) -> np.ndarray:
        return self.array[r0:r1, s0:s1]



def _codec(config: dict | None) -> Any:
    if config is None:
        return None
    import numcodecs

    return numcodecs.get_codec(dict(config))


def open_reader(path: Path, cache: ChunkCache | None = None) -> ChunkReader | _ZarrReader:
    """The fastest exact reader for the 2-D array at ``path`` (the ``lfp`` array of one pid)."""
    path = Path(path)
    if (path / ".zarray").is_file():
        return ChunkReader(path, cache)
    return _ZarrReader(path)


def _locate(path: str | os.PathLike) -> tuple[Path, Path]:
    """(dataset dir, windows.parquet) from a windows file, a dataset dir or a workspace root."""
    p = Path(path).expanduser()
    for candidate in (p, p / "windows.parquet", p / "dataset" / "windows.parquet"):
        if candidate.is_file():
            return candidate.parent, candidate
    raise FileNotFoundError(f"no windows.parquet at {p}: run `ibl-ephys-data export` on that workspace first")


class LfpWindows:
    """Map-style dataset of LFP windows: ``ds[i]`` -> dict(x=float32 (channels, samples), y=int, metadata).

    ``path`` is a workspace, its dataset/ folder or windows.parquet. ``split`` selects rows of the
    ``split`` column (``train``/``val``/``test``; for k-fold exports ``fold<i>``/``val``, or ``train`` /
    ``test`` together with ``fold=i``). ``level`` picks the label: ``label`` (the export's classes),
    ``target``, ``allen``, ``beryl`` or ``cosmos``; ``y`` indexes ``self.classes``, which are the same for
    every split. ``zscore`` normalises each channel of a window; ``spectrogram`` (True or a dict of
    `scipy.signal.spectrogram` arguments) returns 10·log10 power (channels, freqs, times) instead; then
    ``transform(x)`` runs last. Metadata: ``pid``, ``raw_ind``, ``start``, ``index`` (row of the selection;
    `location` and `frame` give the rest). ``exclude_flags`` drops windows flagged by per-window QC (all
    flags if True, or the named kinds of ``lfp.artifacts.KINDS``) from a dataset exported with
    ``--keep-flagged``.

    With DataLoader workers every batch crosses processes; for raw windows that transfer, not reading,
    bounds the rate, and torch's ``file_system`` sharing strategy
    (``torch.multiprocessing.set_sharing_strategy("file_system")``) measured ~40 % cheaper here.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str | None = None,
        level: str = "label",
        transform: Callable[[np.ndarray], Any] | None = None,
        zscore: bool = False,
        spectrogram: bool | dict | None = None,
        fold: int | None = None,
        lfp_path: str | os.PathLike | None = None,
        cache_mb: float = 256.0,
        exclude_flags: bool | Sequence[str] = False,
    ):
        self.dataset_dir, self.windows_path = _locate(path)
        self.lfp_root = Path(lfp_path) if lfp_path else self.dataset_dir.parent / "lfp.zarr"
        if not self.lfp_root.exists():
            raise FileNotFoundError(
                f"{self.lfp_root} does not exist: pass lfp_path= or run `ibl-ephys-data lfp`"
            )
        if level not in LABEL_COLUMNS:
            raise ValueError(f"unknown level {level!r}: use one of {', '.join(LABEL_COLUMNS)}")
        self.level, self.split, self.fold, self.exclude_flags = level, split, fold, exclude_flags
        self.transform, self.zscore, self.cache_mb = transform, zscore, cache_mb
        self.spectrogram = ({} if spectrogram is True else dict(spectrogram)) if spectrogram else None
        label_col = LABEL_COLUMNS[level]
        flag_columns = [f"flag_{k}" for k in _flag_kinds(exclude_flags)]
        table = pq.read_table(self.windows_path, columns=[*_INDEX_COLUMNS, label_col, *flag_columns])
        labels_all = table.column(label_col)
        if labels_all.null_count:
            raise ValueError(
                f"{self.windows_path} has no {level!r} label for some windows: pick another level"
            )
        self.classes = self._classes(labels_all)
        table = table.filter(self._selection(table)) if split is not None else table
        table = _flag_filter(table, exclude_flags)  # per-window QC flags of a --keep-flagged export
        self.pids, self._pid_code = _encode(table.column("pid"))
        self._raw_ind = table.column("raw_ind").to_numpy()
        self._row_start = table.column("row_start").to_numpy().astype(np.int64)
        self._row_stop = table.column("row_stop").to_numpy().astype(np.int64)
        self._start = table.column("start").to_numpy().astype(np.int64)
        self._n = table.column("n_samples").to_numpy().astype(np.int64)
        self._fs = table.column("fs").to_numpy()
        names, codes = _encode(table.column(label_col))
        unknown = sorted(set(names) - set(self.classes))
        if unknown:
            raise ValueError(
                f"labels {unknown} are not in the recorded classes: re-run `ibl-ephys-data export`"
            )
        lookup = {c: i for i, c in enumerate(self.classes)}
        self._y = np.array([lookup[n] for n in names], dtype=np.int64)[codes]
        self._readers: dict[int, ChunkReader | _ZarrReader] = {}
        self._cache = ChunkCache(cache_mb)
        self._owner = os.getpid()

    def _classes(self, labels: Any) -> list[str]:
        splits_json = self.dataset_dir / "splits.json"
        if splits_json.exists():
            recorded = json.loads(splits_json.read_text()).get("classes", {}).get(self.level)
            if recorded:
                return [str(c) for c in recorded]
        return sorted(str(v) for v in pc.unique(labels).to_pylist())

    def _selection(self, table: Any) -> Any:
        split_col = table.column("split")
        available = sorted(str(s) for s in pc.unique(split_col).to_pylist() if s is not None)
        if self.fold is not None and self.split in ("train", "test"):
            is_fold = pc.starts_with(split_col, "fold")
            same = pc.equal(table.column("fold"), int(self.fold))
            if not pc.any(pc.and_(is_fold, same)).as_py():
                raise ValueError(f"fold {self.fold} is not in {self.windows_path} (splits: {available})")
            return pc.and_(is_fold, same if self.split == "test" else pc.invert(same))
        if self.split not in available:
            raise ValueError(
                f"split {self.split!r} is not in {self.windows_path}: use one of {available}"
                + (" (or train/test with fold=i)" if any(s.startswith("fold") for s in available) else "")
            )
        return pc.equal(split_col, self.split)

    def __len__(self) -> int:
        return len(self._start)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_readers"] = {}
        state["_cache"] = None
        state["_owner"] = None
        return state

    def _reader(self, code: int) -> ChunkReader | _ZarrReader:
        if self._owner != os.getpid():  # a worker (forked or unpickled): open its own maps and caches
            self._readers = {}
            self._cache = ChunkCache(self.cache_mb)
            self._owner = os.getpid()
        reader = self._readers.get(code)
        if reader is None:
            reader = open_reader(self.lfp_root / self.pids[code] / "lfp", self._cache)
            self._readers[code] = reader
        return reader

    def location(self, i: int) -> tuple[str, int, int, int, int]:
        """Where window ``i`` lives: (pid, row_start, row_stop, start, stop) in ``lfp.zarr/<pid>/lfp``."""
        start = self._start.item(i)
        return (self.pids[self._pid_code.item(i)], self._row_start.item(i), self._row_stop.item(i), start,
                start + self._n.item(i))

    def read(self, i: int) -> np.ndarray:
        """The raw window ``i`` as float32 (channels, samples), exactly as stored in lfp.zarr."""
        start = self._start.item(i)
        reader = self._reader(self._pid_code.item(i))
        box = reader.read(self._row_start.item(i), self._row_stop.item(i), start, start + self._n.item(i))
        return box.astype(np.float32, copy=False)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self._start)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range for {n} windows")
        i %= n
        x: Any = self.read(i)
        if self.zscore:
            x = _zscore(x)
        if self.spectrogram is not None:
            x = _spectrogram(x, self._fs.item(i), self.spectrogram)
        if self.transform is not None:
            x = self.transform(x)
        y = self._y.item(i)
        return {
            "x": x, "y": y, "label": self.classes[y], "pid": self.pids[self._pid_code.item(i)],
            "raw_ind": self._raw_ind.item(i), "start": self._start.item(i), "index": i,
        }

    @property
    def labels(self) -> np.ndarray:
        """Integer label of every window (e.g. for class weights or a stratified sampler)."""
        return self._y

    def frame(self) -> Any:
        """The selected rows of windows.parquet with all columns, as a pandas DataFrame."""
        table = pq.read_table(self.windows_path)
        table = table.filter(self._selection(table)) if self.split is not None else table
        return _flag_filter(table, self.exclude_flags).to_pandas()


def _flag_filter(table: Any, exclude: bool | Sequence[str]) -> Any:
    """Drop windows carrying any (``True``) or the named per-window QC flags (e.g. ``["saturation"]``).

    Only matters for datasets exported with ``--keep-flagged``: by default the export already left them
    out. Unknown (null) flags, from lfp stores written before per-window QC, do not drop a window.
    """
    kinds = _flag_kinds(exclude)
    if not kinds:
        return table
    hit = None
    for kind in kinds:
        column = pc.fill_null(table.column(f"flag_{kind}"), False)
        hit = column if hit is None else pc.or_(hit, column)
    return table.filter(pc.invert(hit))


def _flag_kinds(exclude: bool | Sequence[str] | None) -> list[str]:
    if not exclude:
        return []
    kinds = list(ARTIFACT_KINDS) if exclude is True else [str(k) for k in exclude]
    for kind in kinds:
        check_option("exclude_flags", kind, ARTIFACT_KINDS)
    return kinds


def _encode(column: Any) -> tuple[list[str], np.ndarray]:
    """(distinct values, code of every row) of a string column, without a Python object per row."""
    if len(column) == 0:
        return [], np.zeros(0, dtype=np.int64)
    enc = pc.dictionary_encode(column).combine_chunks()
    return [str(v) for v in enc.dictionary.to_pylist()], enc.indices.to_numpy().astype(np.int64)


def _zscore(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return ((x - mean) / np.where(std > 0, std, 1)).astype(np.float32, copy=False)


def _spectrogram(x: np.ndarray, fs: float, params: dict) -> np.ndarray:
    from scipy.signal import spectrogram

    kw = {"nperseg": min(256, x.shape[-1]), **params}
    _, _, sxx = spectrogram(x, fs=fs, axis=-1, **kw)
    return (10 * np.log10(sxx + np.finfo(np.float32).tiny)).astype(np.float32)
