"""The channels of a 3D scene, in display coordinates, grouped into what the backends draw and list.

Drawing hundreds of objects is slow in VTK and k3d, so channels are drawn in batches: one per legend entry
and one for every category beyond the legend. Both backends (:mod:`ibl_ephys_data.viz.scene_render`) draw
the same batches, so a PNG and an HTML page of one scene agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

LEGEND_ENTRIES = 16


def hex_rgb(color: str) -> np.ndarray:
    """``#rrggbb`` -> uint8 (r, g, b)."""
    return np.array([int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)], dtype=np.uint8)


def rgb_to_int(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB rows -> 0xRRGGBB integers (k3d's colours)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def hex_to_int(color: str) -> int:
    """``#rrggbb`` -> 0xRRGGBB."""
    return int(color.lstrip("#"), 16)


def rgb_hex(rgb: Sequence[float]) -> str:
    """(r, g, b) in 0-255 -> ``#rrggbb``."""
    return "#" + "".join(f"{int(round(c)):02x}" for c in rgb)


@dataclass
class SceneChannels:
    """Channels to draw, in display µm (brainglobe asr), with their colour category."""

    points: np.ndarray
    pids: np.ndarray
    depth: np.ndarray  # position along the probe, to join channels into a line
    labels: np.ndarray
    colors: dict[str, str]

    def groups(self) -> list[tuple[str, str, np.ndarray]]:
        """(label, colour, row indices) per category: the legend entries, biggest first, ties by name."""
        names, codes, counts = np.unique(self.labels.astype(str), return_inverse=True, return_counts=True)
        rows = np.split(np.argsort(codes, kind="stable"), np.cumsum(counts)[:-1])
        order = sorted(range(len(names)), key=lambda k: (-counts[k], names[k]))
        return [(str(names[k]), self.colors[names[k]], rows[k]) for k in order]

    def batches(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """What to draw as one object: (name, rows, n x 3 uint8 colours), one per legend entry and one for
        all the categories beyond the legend (drawing hundreds of objects is slow in VTK and k3d)."""
        groups = self.groups()
        batches = [(label, rows, np.tile(hex_rgb(color), (len(rows), 1))) for label, color, rows in
                   groups[:LEGEND_ENTRIES]]
        if len(groups) > LEGEND_ENTRIES:
            rest = groups[LEGEND_ENTRIES:]
            rows = np.concatenate([r for *_, r in rest])
            colors = np.concatenate([np.tile(hex_rgb(color), (len(r), 1)) for _, color, r in rest])
            batches.append((f"+ {len(rest)} more", rows, colors))
        return batches

    def _probes(self) -> list[np.ndarray]:
        """Row indices of each probe's channels, in depth order."""
        codes, _ = pd.factorize(self.pids, sort=True)
        order = np.lexsort((self.depth, codes))
        return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)

    def next_down(self) -> np.ndarray:
        """Row index of the next channel along the same probe (-1 for a probe's last channel)."""
        nxt = np.full(len(self.pids), -1)
        for idx in self._probes():
            nxt[idx[:-1]] = idx[1:]
        return nxt

    def subsample(self, max_points: int) -> SceneChannels:
        """Every k-th channel of each probe, the smallest k keeping at most ``max_points`` channels.

        Deterministic and shape-preserving; every probe keeps at least its first channel.
        """
        probes = self._probes()
        step = max(1, int(np.ceil(len(self.pids) / max_points)))
        while sum(-(-len(idx) // step) for idx in probes) > max_points and step < max(map(len, probes)):
            step += 1
        if step == 1:
            return self
        keep = np.concatenate([idx[::step] for idx in probes])
        keep.sort()
        return SceneChannels(self.points[keep], self.pids[keep], self.depth[keep], self.labels[keep], self.colors)
