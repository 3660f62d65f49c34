"""Loader: exact reads against zarr, labels, transforms, pickling and a real torch DataLoader."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import zarr
from fake_workspace import build_fake_workspace, pid_of
from scipy.signal import spectrogram

from ibl_ephys_data.dataset import LfpWindows, export_dataset
from ibl_ephys_data.errors import DataIntegrityError
from ibl_ephys_data.workspace.lfp_store import Encoding, LfpStore, ShardReader, ZarrReader


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = build_fake_workspace(tmp_path_factory.mktemp("dataset_loader") / "ws")
    export_dataset(ws, window_seconds=1.0, neighbours=1, min_channels=3, leakage="session", val_fraction=0.3)
    return ws


def test_every_window_equals_the_zarr_slice_and_its_channel_label(ws):
    frame = pd.read_parquet(ws.dataset_dir / "windows.parquet")
    channels = ws.read_channels().set_index(["pid", "raw_ind"])
    stores = {pid: _decoded(ws, pid) for pid in frame["pid"].unique()}
    for level, column in (("label", "beryl_acronym"), ("cosmos", "cosmos_acronym"), ("allen", "acronym")):
        ds = LfpWindows(ws.root, level=level)
        assert len(ds) == len(frame)
        for i in range(0, len(ds), 7 if level == "label" else 97):
            item = ds[i]
            row = frame.iloc[i]
            expected = stores[row["pid"]][row["row_start"]:row["row_stop"],
                                          row["start"]:row["start"] + row["n_samples"]].astype(np.float32)
            assert item["x"].dtype == np.float32 and item["x"].shape == (3, 250)
            np.testing.assert_array_equal(item["x"], expected)
            assert (item["pid"], item["raw_ind"], item["start"]) == (row["pid"], row["raw_ind"], row["start"])
            assert ds.location(i) == (row["pid"], row["row_start"], row["row_stop"], row["start"],
                                      row["start"] + 250)
            expected_label = channels.loc[(row["pid"], row["raw_ind"]), column]
            assert ds.classes[item["y"]] == item["label"] == expected_label
    # the three store flavours were all read: int16, float16, the old zarr v2 layout (Blosc, odd chunks)
    assert {pid_of("b_free2"), pid_of("both"), pid_of("r_new")} <= set(frame["pid"])


def test_splits_and_classes_are_shared(ws):
    train, test = LfpWindows(ws.root, split="train"), LfpWindows(ws.root, split="test")
    frame = pd.read_parquet(ws.dataset_dir / "windows.parquet")
    assert len(train) == (frame["split"] == "train").sum() and len(test) == (frame["split"] == "test").sum()
    assert train.classes == test.classes == sorted(frame["label"].unique())
    train_pids = set(frame.loc[frame["split"] == "train", "pid"])
    assert {train[i]["pid"] for i in range(0, len(train), 50)} <= train_pids
    with pytest.raises(ValueError, match=r"split 'tset' is not in .*\['test', 'train', 'val'\]"):
        LfpWindows(ws.root, split="tset")
    with pytest.raises(IndexError):
        test[len(test)]
    assert test[-1]["index"] == len(test) - 1


def test_zscore_spectrogram_and_transform(ws):
    raw = LfpWindows(ws.root, split="test")
    z = LfpWindows(ws.root, split="test", zscore=True, transform=lambda x: x * 2)
    x, xz = raw[3]["x"], z[3]["x"]
    expected = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True) * 2
    np.testing.assert_allclose(xz, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xz.std(axis=1), 2, rtol=1e-5)
    sp = LfpWindows(ws.root, split="test", spectrogram={"nperseg": 64})
    f, _, sxx = spectrogram(x, fs=250.0, nperseg=64, axis=-1)
    out = sp[3]["x"]
    assert out.shape == (3, len(f), sxx.shape[-1]) and out.dtype == np.float32
    np.testing.assert_allclose(out, 10 * np.log10(sxx + np.finfo(np.float32).tiny), rtol=1e-5)


def test_kfold_selection(tmp_path):
    ws = build_fake_workspace(tmp_path / "ws", names=["b_free1", "b_free3", "b_free5", "b_subj1", "b_subj3"])
    export_dataset(ws, window_seconds=2.0, min_channels=1, mode="kfold", k=2, val_fraction=0)
    frame = pd.read_parquet(ws.dataset_dir / "windows.parquet")
    for fold in (0, 1):
        tr = LfpWindows(ws.root, split="train", fold=fold)
        te = LfpWindows(ws.root, split="test", fold=fold)
        assert len(te) == (frame["fold"] == fold).sum() and len(tr) + len(te) == len(frame)
        assert not {tr[i]["pid"] for i in range(len(tr))} & {te[i]["pid"] for i in range(len(te))}
    with pytest.raises(ValueError, match="fold 5 is not in"):
        LfpWindows(ws.root, split="test", fold=5)


def test_pickle_and_torch_dataloader_with_two_workers(ws):
    torch = pytest.importorskip("torch")
    ds = LfpWindows(ws.root, split="train", zscore=False)
    ds[0]  # open readers in the parent: workers must not reuse them
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[5]["x"], ds[5]["x"])
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False, num_workers=2)
    seen = 0
    for batch in loader:
        idx = batch["index"].tolist()
        assert batch["x"].dtype == torch.float32 and tuple(batch["x"].shape[1:]) == (3, 250)
        expected = np.stack([ds[i]["x"] for i in idx])
        np.testing.assert_array_equal(batch["x"].numpy(), expected)
        assert batch["y"].tolist() == [int(ds.labels[i]) for i in idx]
        assert list(batch["pid"]) == [ds[i]["pid"] for i in idx]
        seen += len(idx)
    assert seen == len(ds)


def test_torch_is_not_imported_with_the_package():
    code = "import sys, ibl_ephys_data.dataset as d; d.LfpWindows; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _decoded(ws, pid):
    """The whole lfp array of ``pid`` in float32 µV, decoded through zarr itself and the stored scale."""
    arr = zarr.open_group(str(ws.lfp / pid), mode="r")["lfp"]
    return Encoding.from_attrs(dict(arr.attrs), arr.dtype).decode(arr[:])


def _store(tmp_path, data, dtype="int16", chunk_samples=128):
    store = LfpStore(tmp_path / "lfp.zarr")
    encoding = Encoding.for_probe(dtype, 1)
    with store.create("p", data.shape[0], data.shape[1], encoding, chunk_samples=chunk_samples) as out:
        for start in range(0, data.shape[1], out.shard):
            out.write_lfp(start, data[:, start:start + out.shard])
        out.finish({"fs": 250.0, "raw_ind": list(range(data.shape[0]))})
    return store


@pytest.mark.parametrize("dtype", ["int16", "float32", "float16"])
def test_shard_reader_equals_zarr(tmp_path, dtype):
    data = (np.random.default_rng(1).standard_normal((13, 2001)) * 80).astype(np.float32)
    store = _store(tmp_path, data, dtype)
    arr = zarr.open_array(str(store.path("p") / "lfp"), mode="r")
    assert arr.shards == (13, 128 * 8) and arr.chunks == (1, 128)  # 2 shards, the last one partial
    reader = store.open("p").reader()
    assert isinstance(reader, ShardReader)
    rng = np.random.default_rng(2)
    for _ in range(200):
        r0, s0 = rng.integers(0, 13), rng.integers(0, 2001)
        r1, s1 = rng.integers(r0 + 1, 14), rng.integers(s0 + 1, 2002)
        np.testing.assert_array_equal(reader.read_stored(r0, r1, s0, s1), arr[r0:r1, s0:s1])
    decoded = reader.read(0, 13, 0, 2001)
    np.testing.assert_array_equal(decoded, Encoding.from_attrs(dict(arr.attrs), arr.dtype).decode(arr[:]))
    # int16 rounds to the grid (half a unit at most); float16 keeps 11 significant bits (relative 2**-11)
    tol = {"int16": arr.attrs["scale"] / 2 * (1 + 1e-6), "float32": 0.0, "float16": 2.0**-11 * 400}[dtype]
    assert np.abs(decoded - data).max() <= tol
    with pytest.raises(IndexError, match="outside"):
        reader.read(0, 14, 0, 10)


@pytest.mark.parametrize("damage", ["deleted", "truncated", "index"])
def test_damaged_shards_are_named_never_zeros(tmp_path, damage):
    data = (np.random.default_rng(3).standard_normal((4, 3000)) * 80).astype(np.float32)
    store = _store(tmp_path, data)
    shard = store.path("p") / "lfp" / "c" / "0" / "1"  # samples 1024:2048
    assert store.problems("p") == []
    if damage == "deleted":
        shard.unlink()
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    else:
        raw = bytearray(shard.read_bytes())
        raw[-10] ^= 0xFF  # one byte of the chunk index
        shard.write_bytes(bytes(raw))
    (problem,) = store.problems("p")
    assert str(shard) in problem
    assert not store.is_done("p", {})
    reader = store.open("p").reader()
    np.testing.assert_allclose(reader.read(0, 4, 0, 1000), data[:, :1000], atol=store.open("p").encoding()["scale"])
    with pytest.raises(DataIntegrityError, match=str(shard)):
        reader.read(0, 1, 1000, 1100)


def test_old_layout_is_read_as_it_is_and_missing_chunks_raise(tmp_path):
    data = np.random.default_rng(1).standard_normal((13, 1001)).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "lfp.zarr" / "p"), mode="w", zarr_format=2)
    group.create_array("lfp", data=data, chunks=(4, 128), compressors=None)
    group.create_array("common_mode", data=data[0], chunks=(128,), compressors=None)
    group.attrs.update({"fs": 250.0, "raw_ind": list(range(13)), "complete": True})
    store = LfpStore(tmp_path / "lfp.zarr")
    assert store.kind("p") == "v2" and store.pids() == ["p"] and store.problems("p") == []
    reader = store.open("p").reader()
    assert isinstance(reader, ZarrReader)
    np.testing.assert_array_equal(reader.read(2, 9, 100, 900), data[2:9, 100:900])
    (tmp_path / "lfp.zarr" / "p" / "lfp" / "1.2").unlink()
    assert store.problems("p") == [f"{tmp_path / 'lfp.zarr' / 'p' / 'lfp' / '1.2'} is missing"]
    with pytest.raises(DataIntegrityError, match="1.2 is missing"):
        reader.read(4, 5, 300, 310)
    np.testing.assert_array_equal(reader.read(0, 4, 300, 310), data[0:4, 300:310])


def test_a_deleted_shard_raises_in_the_loader_and_is_reported_by_verify(tmp_path):
    from ibl_ephys_data.dataset import verify

    names = ["b_free1", "b_free3", "b_subj1", "both", "r_new"]
    ws = build_fake_workspace(tmp_path / "ws", names=names, variants=False)
    export_dataset(ws, window_seconds=1.0, min_channels=1, val_fraction=0.0)
    assert verify(ws) == []
    ds = LfpWindows(ws.root)
    victim = ds.pids[0]
    i = next(i for i in range(len(ds)) if ds.location(i)[0] == victim)
    before = ds[i]["x"]
    shard = ws.lfp / victim / "lfp" / "c" / "0" / "0"
    shard.unlink()
    with pytest.raises(DataIntegrityError, match=str(shard)):
        LfpWindows(ws.root)[i]
    assert np.abs(before).max() > 0  # it was real data, not fill zeros
    assert verify(ws) == [f"{shard} is missing"]
