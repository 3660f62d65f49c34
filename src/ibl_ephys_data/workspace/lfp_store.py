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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ibl_ephys_data.errors import DataIntegrityError, MissingStageError
from ibl_ephys_data.workspace import atomic_path, objects
from ibl_ephys_data.workspace.shards import (  # noqa: F401  (re-exported: the store's public names)
    BLOSC,
    CHUNK_SAMPLES,
    DTYPES,
    LAYOUT,
    MAX_FILES,
    MAX_RMS_ERROR,
    MIN_SHARD_CHUNKS,
    ChunkCache,
    Encoding,
    ShardReader,
    ZarrReader,
    _array_meta,
    _problems_v2,
    _problems_v3,
    _sharding,
    _write_shard,
)

logger = logging.getLogger(__name__)
_WARNED: set[Path] = set()  # old-layout groups already announced in this process (one line each)

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


class LfpInsertion:
    """A finished insertion: its group attributes and float32 µV reads of ``lfp`` and ``common_mode``."""

    def __init__(self, store: LfpStore, pid: str, cache: ChunkCache | None = None, remote: Any = None):
        self.pid, self.path, self._store = pid, store.path(pid), store
        self._remote = remote  # shards read from the object store by range requests (not fetched)
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
            if self._remote is not None and not fast:
                self._store.fetch(self.pid)
            reader = ShardReader(path, self._cache, self._remote) if fast else ZarrReader(path)
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
        if self._remote is not None:
            self._store.fetch(self.pid)
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
        # an object-store workspace: groups are checked in the bucket and fetched before they are read
        self.mirror = objects.mirror_for(self.root)

    def __repr__(self) -> str:
        return f"LfpStore({str(self.root)!r})"

    def __getstate__(self) -> dict:  # for DataLoader workers: the mirror (a network client) is re-opened
        mirror = self.mirror
        return {"root": self.root,
                "mirror": (mirror.store.url, mirror.root, mirror.published, mirror.store.network) if mirror else None}

    def __setstate__(self, state: dict) -> None:
        self.root = state["root"]
        self.mirror = objects.open_mirror(*state["mirror"]) if state["mirror"] else None

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
        if self.mirror is not None:  # the bucket holds the data of record; the working copy may be partial
            return self.mirror.problems(self._unit(pid))
        found = []
        for name in ("lfp", "common_mode"):
            check = _problems_v3 if kind == "v3" else _problems_v2
            found += check(path / name)
        return found

    def open(self, pid: str, cache: ChunkCache | None = None, fetch: bool = True) -> LfpInsertion:
        """A finished insertion (`MissingStageError` naming the lfp command if absent or incomplete).

        In an object-store workspace the group's shards are fetched into the working copy first, or, with
        ``fetch=False``, read from the bucket by range requests (nothing kept on disk).
        """
        if self.attrs(pid).get("complete") is not True:
            raise MissingStageError(f"{self.path(pid)} is missing or incomplete", "lfp", pids=[pid])
        if self.mirror is None:
            return LfpInsertion(self, pid, cache)
        if fetch:
            self.fetch(pid)
            return LfpInsertion(self, pid, cache)
        return LfpInsertion(self, pid, cache, remote=self.mirror.open_remote)

    def fetch(self, pid: str) -> None:
        """The group's files into the working copy of an object-store workspace (kept there)."""
        self.mirror.fetch(self._unit(pid))

    def _unit(self, pid: str) -> str:
        return self.path(pid).relative_to(self.mirror.root).as_posix()

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

