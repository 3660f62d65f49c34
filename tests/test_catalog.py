import logging
from pathlib import Path

import pandas as pd
import pytest
import requests

from ibl_ephys_data.catalog import CatalogError, read_pid_csv, run_catalog
from ibl_ephys_data.demo.layout import INSERTIONS, releases_of
from ibl_ephys_data.demo.store import DEMO_PASSWORD, DEMO_USER
from ibl_ephys_data.ibl import Connection, ConnectionFailed, release_tags
from ibl_ephys_data.network_policy import NetworkPolicy
from ibl_ephys_data.workspace import Workspace


def test_both_releases_through_remote_one(demo_workspace):
    ws, _ = demo_workspace
    cat = ws.read_catalog()
    assert sorted(cat["pid"]) == sorted(i.pid for i in INSERTIONS)
    by_pid = cat.set_index("pid")
    for ins in INSERTIONS:
        row = by_pid.loc[ins.pid]
        assert row["releases"] == ",".join(releases_of(ins))
        assert (row["eid"], row["subject"], row["lab"], row["probe_name"]) == (ins.eid, ins.subject, ins.lab,
                                                                               ins.probe)
        assert row["date"] == ins.date and row["session_number"] == ins.number
        assert row["qc"] == ins.alyx_json["qc"]
    # both tags of a release count: the 2024 repeated-site tag alone brings one insertion in
    only_2024 = [i for i in INSERTIONS if i.tags == (release_tags("repro-ephys")[1],)]
    assert only_2024 and all("repro-ephys" in by_pid.loc[i.pid, "releases"] for i in only_2024)
    assert (cat["releases"] == "bwm,repro-ephys").sum() == 2


def test_alyx_qc_fields_are_typed_and_missing_is_null(demo_workspace):
    ws, _ = demo_workspace
    cat = ws.read_catalog().set_index("pid")
    assert str(cat["alignment_resolved"].dtype) == "boolean"
    assert str(cat["alignment_count"].dtype) == "Int64"
    sparse = next(i for i in INSERTIONS if "alignment_resolved" not in i.alyx_json.get("extended_qc", {}))
    row = cat.loc[sparse.pid]
    assert pd.isna(row["alignment_resolved"]) and pd.isna(row["drift_rms_um"]) and pd.isna(row["alignment_qc"])
    full = next(i for i in INSERTIONS if i.alyx_json.get("drift_rms_um") == 12.1)
    assert cat.loc[full.pid, "drift_rms_um"] == 12.1
    assert bool(cat.loc[full.pid, "alignment_resolved"]) is True
    assert set(cat["qc"]) == {"PASS", "WARNING", "FAIL", "CRITICAL"}


def test_offline_catalog_equals_remote(demo_workspace, tmp_path):
    ws, one_cache = demo_workspace
    offline_ws = Workspace(tmp_path / "offline").create()
    one = Connection(cache_dir=one_cache, offline=True).open()
    df = run_catalog(offline_ws, one, releases=["repro-ephys", "bwm"])
    pd.testing.assert_frame_equal(df, ws.read_catalog())


def test_pid_csv_with_an_unknown_pid(demo_connection, tmp_path):
    known = [INSERTIONS[0].pid, INSERTIONS[4].pid]
    unknown = "11111111-2222-4333-8444-555555555555"
    csv = tmp_path / "pids.csv"
    pd.DataFrame({"pid": [*known, unknown], "eid": [INSERTIONS[0].eid, "", ""]}).to_csv(csv, index=False)
    ws = Workspace(tmp_path / "ws").create()
    df = run_catalog(ws, demo_connection.open(), pid_file=csv)
    assert sorted(df["pid"]) == sorted(known)
    assert df.set_index("pid").loc[INSERTIONS[0].pid, "releases"] == "bwm,repro-ephys"
    failed = ws.failed_pids("catalog")
    assert list(failed) == [unknown] and "not found" in failed[unknown]


def test_pid_csv_errors(tmp_path):
    no_pid = tmp_path / "a.csv"
    no_pid.write_text("probe,eid\nx,y\n")
    with pytest.raises(CatalogError, match="no 'pid' column"):
        read_pid_csv(no_pid)
    bad = tmp_path / "b.csv"
    bad.write_text("pid\nnot-a-uuid\n")
    with pytest.raises(CatalogError, match="not UUIDs"):
        read_pid_csv(bad)


def test_unknown_release():
    with pytest.raises(ValueError, match="release='bwn' is not one of"):
        release_tags("bwn")


def test_wrong_credentials_and_unreachable_alyx(alyx_server, tmp_path):
    wrong = Connection(alyx_url=alyx_server.url, cache_dir=tmp_path, username="demo", password="wrong")
    with pytest.raises(ConnectionFailed, match="refused the credentials"):
        wrong.open()
    with pytest.raises(ConnectionFailed, match="cannot reach Alyx"):
        Connection(alyx_url="http://127.0.0.1:9", cache_dir=tmp_path, username="demo", password="x").open()


def test_token_alone_logs_in(alyx_server, tmp_path, monkeypatch):
    rep = requests.post(f"{alyx_server.url}/auth-token", data={"username": DEMO_USER, "password": DEMO_PASSWORD})
    monkeypatch.setenv("ALYX_TOKEN", rep.json()["token"])
    one = Connection(alyx_url=alyx_server.url, cache_dir=tmp_path).open()
    assert one.alyx.user == DEMO_USER
    assert len(one.alyx.rest("insertions", "list")) == len(alyx_server.store.insertions) > 0


def test_credentials_in_the_url_are_used_and_never_echoed(alyx_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    host = alyx_server.url.removeprefix("http://")
    conn = Connection(alyx_url=f"http://{DEMO_USER}:{DEMO_PASSWORD}@{host}", cache_dir=tmp_path / "a")
    assert DEMO_PASSWORD not in repr(conn) and conn.base_url == alyx_server.url
    one = conn.open()
    assert one.alyx.base_url == alyx_server.url and one.alyx.user == DEMO_USER
    secret = "s3cr3t-pw"
    with pytest.raises(ConnectionFailed, match="refused the credentials") as wrong:
        Connection(alyx_url=f"http://{DEMO_USER}:{secret}@{host}", cache_dir=tmp_path / "b").open()
    with pytest.raises(ConnectionFailed, match="cannot reach Alyx") as unreachable:
        Connection(alyx_url=f"http://{DEMO_USER}:{secret}@127.0.0.1:9", cache_dir=tmp_path / "c",
                   network=NetworkPolicy(connect_timeout=1, retries=0)).open()
    for text in (str(wrong.value), str(unreachable.value), caplog.text, repr(conn)):
        assert secret not in text and DEMO_PASSWORD not in text
    assert not list(tmp_path.rglob(f"*{secret}*"))  # nor in a file or folder name (ONE's params, cache dirs)
    params = "".join(p.read_text() for p in Path.home().joinpath(".one").glob("*") if p.is_file())
    assert secret not in params and DEMO_PASSWORD not in params

