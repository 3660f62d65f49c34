"""Readers for raw LF: range-streamed over HTTP (remote), or local mtscomp files (offline / full download).

Every reader looks like ``spikeglx.Reader`` (``reader[a:b, :-nsync]`` gives volts), so processing code
does not care where samples come from. The streamed reader fetches each 1-s mtscomp chunk at most once per
run: overlapping reads (filter padding) hit an in-memory cache of decoded chunks instead of the network.
"""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import spikeglx
from brainbox.io.spikeglx import Streamer
from one.alf.exceptions import ALFObjectNotFound
from one.api import One

from ibl_ephys_data.errors import DataIntegrityError, IblEphysDataError
from ibl_ephys_data.net import verified_datasets

logger = logging.getLogger(__name__)


class LfMissing(IblEphysDataError, LookupError):
    """The insertion has no raw LF dataset (or not in the local cache when offline)."""


class ChunkCachedStreamer:
    """A ``Streamer`` that downloads each mtscomp chunk once and keeps recent decoded chunks in memory.

    ``max_cached_chunks`` bounds memory (a 1-s NP1 LF chunk is ~1.9 MB as int16).
    """

    def __init__(self, streamer: Streamer, max_cached_chunks: int = 24):
        self.streamer = streamer
        self.bounds = np.asarray(streamer.chunks["chunk_bounds"], dtype=np.int64)
        self.max_cached_chunks = max_cached_chunks
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self.pinned: set[int] = set()
        self.chunks_fetched = 0
        # chunks are cached as the ADC's int16 samples (half the memory of float32 volts)
        self._s2v = np.asarray(streamer.channel_conversion_sample2v[streamer.type])

    def chunk_ids(self, start_s: float, stop_s: float) -> set[int]:
        """Chunks holding the samples of ``[start_s, stop_s)`` (clipped to the recording)."""
        first = max(0, int(start_s * self.streamer.fs))
        last = min(self.streamer.ns, int(np.ceil(stop_s * self.streamer.fs)))
        if last <= first:
            return set()
        a = int(np.searchsorted(self.bounds, first, side="right") - 1)
        b = int(np.searchsorted(self.bounds, last - 1, side="right") - 1)
        return set(range(a, b + 1))

    def pin(self, chunks: set[int]) -> None:
        """Keep these chunks in memory once fetched (e.g. bad-channel batches that a window reads later)."""
        self.pinned = set(chunks)

    def __getattr__(self, name):
        return getattr(self.streamer, name)

    @property
    def shape(self) -> tuple[int, int]:
        return self.streamer.ns, self.streamer.nc

    def __getitem__(self, item) -> np.ndarray:
        rows, cols = item if isinstance(item, tuple) else (item, slice(None))
        start, stop, _ = rows.indices(self.streamer.ns)
        if stop <= start:
            return np.zeros((0, self.streamer.nc), dtype=np.float32)[:, cols]
        first = int(np.searchsorted(self.bounds, start, side="right") - 1)
        last = int(np.searchsorted(self.bounds, stop - 1, side="right") - 1)
        missing = [c for c in range(first, last + 1) if c not in self._chunks]
        self._fetch(missing)
        block = np.concatenate([self._chunks[c] for c in range(first, last + 1)], axis=0)
        for c in range(first, last + 1):
            self._chunks.move_to_end(c)
            if c not in missing:  # a pinned chunk is kept until it is read a second time
                self.pinned.discard(c)
        offset = self.bounds[first]
        # the same float32 arithmetic as spikeglx.Reader.read, so values are identical to a direct read
        out = block[start - offset:stop - offset][:, cols].astype(np.float32)
        out *= self._s2v[cols]
        return out

    def _fetch(self, missing: list[int]) -> None:
        """Download contiguous runs of missing chunks in one HTTP range request each."""
        runs: list[list[int]] = []
        for c in missing:
            if runs and c == runs[-1][-1] + 1:
                runs[-1].append(c)
            else:
                runs.append([c])
        for run in runs:
            a = self.bounds[run[0]]
            data = self._fetch_run(run[0], run[-1])
            self.chunks_fetched += len(run)
            for c in run:
                lo, hi = self.bounds[c] - a, self.bounds[c + 1] - a
                self._chunks[c] = np.rint(data[lo:hi] / self._s2v).astype(np.int16)
            evictable = [c for c in self._chunks if c not in self.pinned]
            for c in evictable[:max(0, len(evictable) - self.max_cached_chunks)]:
                del self._chunks[c]

    def _fetch_run(self, first: int, last: int) -> np.ndarray:
        """Volts of chunks ``first..last``, checked: a short, undecodable or wrong-sized run is never kept.

        Why not ``Streamer._download_raw_partial``: it retries any error 5 more times (1 s apart) on top of the
        network policy's retries, and reuses a cached run without checking it. Here a run's compressed size
        must equal its ``.ch`` offsets and its decoded length its ``.ch`` bounds; otherwise its on-disk cache
        is deleted and it is fetched once more, then ``DataIntegrityError`` names the pid and the chunks.
        """
        problem = ""
        offsets = self.streamer.chunks["chunk_offsets"]
        for attempt in range(2):
            folder = self._run_folder(first, last)
            cbin = self._download_run(folder, first, last, reuse=attempt == 0)
            try:
                expected = int(offsets[last + 1] - offsets[first])
                if cbin.stat().st_size != expected:
                    raise ValueError(f"{cbin.stat().st_size} compressed bytes instead of {expected}")
                reader = spikeglx.Reader(cbin, ignore_warnings=True)
                try:
                    data = reader[:, :]
                finally:
                    reader.close()
                if data.shape[0] != self.bounds[last + 1] - self.bounds[first]:
                    raise ValueError(f"{data.shape[0]} samples decoded instead of "
                                     f"{self.bounds[last + 1] - self.bounds[first]}")
            except (ValueError, OSError, EOFError, IndexError, zlib.error) as ex:
                problem = f"{type(ex).__name__}: {ex}"
                shutil.rmtree(folder, ignore_errors=True)
                logger.warning("pid %s, LF chunks %d-%d: %s; deleted from the stream cache%s", self.streamer.pid,
                               first, last, problem, ", fetching again" if attempt == 0 else "")
                continue
            if self.streamer.remove_cached:
                shutil.rmtree(folder, ignore_errors=True)
            return data
        raise DataIntegrityError(f"pid {self.streamer.pid}, LF chunks {first}-{last}: {problem} after two downloads "
                                 "(nothing kept in the stream cache); the server's copy or the network corrupts it")

    def _run_folder(self, first: int, last: int) -> Path:
        """The same stream-cache folder ``Streamer`` uses for this run of chunks."""
        s = self.streamer
        relpath = Path(s.url_cbin.replace(s.one.alyx._par.HTTP_DATA_SERVER, ".")).parents[0]
        return Path(s.cache_folder, relpath, f"chunk_{first:06d}_to_{last:06d}")

    def _download_run(self, folder: Path, first: int, last: int, reuse: bool) -> Path:
        """Chunks ``first..last`` as a small mtscomp file (cbin + chopped .ch + .meta) in ``folder``.

        The layout is ``Streamer``'s; the range goes through ONE's web client (hence the network policy).
        """
        s = self.streamer
        ch = folder / s.file_chunks.with_suffix(".stream.ch").name
        cbin = ch.with_suffix(".cbin")
        i0, total = int(self.bounds[first]), int(self.bounds[-1])
        if reuse and cbin.exists() and ch.exists():
            cmeta = json.loads(ch.read_text())
            if cmeta.get("chopped_first_sample") == i0 and cmeta.get("chopped_total_samples") == total:
                return cbin
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        offsets = [int(o) for o in self.streamer.chunks["chunk_offsets"][first:last + 2]]
        cmeta = {**self.streamer.chunks, "chunk_bounds": [int(b - i0) for b in self.bounds[first:last + 2]],
                 "chunk_offsets": [o - offsets[0] for o in offsets], "sha1_compressed": None,
                 "sha1_uncompressed": None, "chopped": True, "chopped_first_sample": i0,
                 "chopped_samples": int(self.bounds[last + 1] - i0), "chopped_total_samples": total}
        shutil.copy(s.file_chunks.with_suffix(".meta"), ch.with_suffix(".meta"))
        downloaded = Path(s.one.alyx.download_file(s.url_cbin, chunks=(offsets[0], offsets[-1] - offsets[0]),
                                                   target_dir=folder, clobber=True, return_md5=False))
        downloaded.replace(cbin)
        ch.write_text(json.dumps(cmeta, indent=2, sort_keys=True))  # last: a run without .ch is never reused
        return cbin


def open_lf_reader(one: One, pid: str, full_download: bool = False, cache_folder: Path | None = None,
                   eid: str | None = None, probe: str | None = None):
    """The LF reader for one insertion: streamed when remote, local files when offline or asked.

    ``eid``/``probe`` save a lookup when the caller already has them. Raises ``LfMissing`` with the
    insertion named when there is no LF dataset to read.
    """
    if eid is None or probe is None:
        eid, probe = one.pid2eid(pid)
    if eid is None:
        raise LfMissing(f"pid {pid} is unknown to ONE")
    collection = f"raw_ephys_data/{probe}"
    cbins = one.list_datasets(eid, collection=collection, filename="*.lf.*bin")
    if not len(cbins):
        raise LfMissing(f"pid {pid}: no raw LF dataset (*.lf.cbin) in {collection}")
    # checked against Alyx's size and md5 (a .cbin only when downloaded whole)
    names = ["*.lf.ch", "*.lf.meta", "*.lf.*bin"] if one.offline or full_download else ["*.lf.ch", "*.lf.meta"]
    try:
        files = verified_datasets(one, eid, names, collection=collection)
        if len(files) != len(names):
            raise ALFObjectNotFound(f"{len(files)} of {names}")
    except ALFObjectNotFound as ex:
        raise LfMissing(f"pid {pid}: raw LF ({', '.join(names)}) is not in the local ONE cache; "
                        "run without --offline") from ex
    if one.offline or full_download:
        return _checked(lambda: spikeglx.Reader(files[-1]), files[1])
    streamer = _checked(lambda: Streamer(pid=pid, one=one, typ="lf", cache_folder=cache_folder),
                        f"{collection}/*.lf.meta of pid {pid}")
    return ChunkCachedStreamer(streamer)


def _checked(open_reader, meta):
    """Open a reader and check its meta data, so a broken .meta is named instead of failing later."""
    try:
        reader = open_reader()
        if not (reader.fs > 0 and reader.nc > 0 and reader.ns > 0):
            raise ValueError(f"fs={reader.fs}, nc={reader.nc}, ns={reader.ns}")
    except (TypeError, KeyError, ValueError, AttributeError) as ex:
        raise ValueError(f"{meta}: unreadable SpikeGLX meta data ({type(ex).__name__}: {ex}); "
                         "download the .meta file again") from ex
    return reader


def clear_stream_cache(one: One, cache_folder: Path | None = None) -> int:
    """Delete the on-disk chunk cache of streamed LF; returns the bytes freed."""
    folder = Path(cache_folder or Path(one.alyx._par.CACHE_DIR) / "cache" / "lf")
    if not folder.exists():
        return 0
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    shutil.rmtree(folder)
    return size
