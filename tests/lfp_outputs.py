"""Byte-level comparison of insertions' lfp.zarr groups, shared by the Dask tests."""

from __future__ import annotations

from ibl_ephys_data.workspace import Workspace


def assert_same_lfp_groups(expected: Workspace, ours: Workspace, pids: list[str]) -> None:
    """Every file of each insertion's group has the same bytes in both workspaces (so do the channel tables)."""
    for pid in pids:
        files = [p for p in sorted((expected.lfp / pid).rglob("*")) if p.is_file()]
        assert files, f"{expected.lfp / pid} is empty"
        for path in files:
            assert (ours.lfp / pid / path.relative_to(expected.lfp / pid)).read_bytes() == path.read_bytes(), path
    assert ours.channels.read_bytes() == expected.channels.read_bytes()
