"""The demo store's cast: labs, subjects, sessions and insertions, shaped like the real releases.

Two releases overlap as the real ones do: some reproducible-ephys insertions are also brain-wide-map
insertions (pid overlap), one shares a session with a brain-wide-map probe (session overlap) and one shares
only its subject (subject overlap). A few insertions carry planted problems so QC has something to find.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

from ibl_ephys_data.ibl import RELEASES as RELEASE_TAGS


def demo_uuid(*parts: object) -> str:
    """Deterministic version-4 UUIDs (ONE only accepts v4 ids, as Alyx issues) for a stable demo store."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:16]
    return str(uuid.UUID(bytes=digest, version=4))


@dataclass(frozen=True)
class DemoInsertion:
    lab: str
    subject: str
    date: str
    number: int
    probe: str
    tags: tuple[str, ...]
    # trajectory: entry point on the brain surface (IBL xyz, µm), direction angles, regions top -> bottom
    entry_um: tuple[float, float, float]
    theta_deg: float
    phi_deg: float
    regions: tuple[tuple[str, float], ...]  # (acronym, thickness µm) below the brain surface
    alyx_json: dict = field(default_factory=dict)
    artifact: str | None = None  # "line_noise" | "burst" | "saturation" | None
    defects: tuple[str, ...] = ()  # extra seeded events (demo.artifacts.EVENT_KINDS), anywhere in the recording

    @property
    def eid(self) -> str:
        return demo_uuid("session", self.lab, self.subject, self.date, self.number)

    @property
    def pid(self) -> str:
        return demo_uuid("insertion", self.eid, self.probe)

    @property
    def session_rel(self) -> str:
        return f"{self.lab}/Subjects/{self.subject}/{self.date}/{self.number:03d}"


def _qc(qc: str, resolved: bool | None, drift: float | None, **extra) -> dict:
    extended = {
        "tracing_exists": True,
        "alignment_count": 2 if resolved else 1,
        "alignment_stored": "2023-01-15T10:00:00_demo",
        "alignment_qc": "high" if resolved else "medium",
        "experimenter_raw_destripe": "PASS",
        "apRms_p10_raw": 9.5,
        "apRms_p90_raw": 18.2,
    }
    if resolved is not None:
        extended["alignment_resolved"] = resolved
        if resolved:
            extended["alignment_resolved_by"] = "qc"
    extended.update(extra)
    out = {"qc": qc, "n_units": 412, "extended_qc": extended, "xyz_picks": []}
    if drift is not None:
        out["drift_rms_um"] = drift
    return out


RS = RELEASE_TAGS["repro-ephys"]
BWM = RELEASE_TAGS["bwm"]
# Repeated site: ~ML -2243 µm, AP -2000 µm from bregma, through VISa, CA1, DG, LP/PO (left hemisphere).
_RS_REGIONS = (("VISa2/3", 250.0), ("VISa5", 300.0), ("VISa6a", 250.0), ("CA1", 350.0), ("DG-mo", 300.0),
               ("LP", 700.0), ("PO", 1500.0))
_SS_REGIONS = (("SSp-bfd2/3", 300.0), ("SSp-bfd4", 200.0), ("SSp-bfd5", 300.0), ("SSp-bfd6a", 300.0),
               ("CP", 1200.0), ("GPe", 1200.0))
_MO_REGIONS = (("MOs2/3", 400.0), ("MOs5", 500.0), ("MOs6a", 400.0), ("ACB", 1200.0), ("LSr", 1500.0))

INSERTIONS: tuple[DemoInsertion, ...] = (
    DemoInsertion("angelakilab", "NYU-DEMO-1", "2021-03-10", 1, "probe00", (RS[0], BWM[0]),
                  (-2243.0, -2000.0, -350.0), 15.0, 180.0, _RS_REGIONS, _qc("PASS", True, 12.1)),
    DemoInsertion("angelakilab", "NYU-DEMO-1", "2021-03-10", 1, "probe01", (BWM[0],),
                  (1800.0, 1200.0, -250.0), 10.0, 0.0, _SS_REGIONS, _qc("WARNING", True, 15.3),
                  artifact="line_noise", defects=("flat",)),
    DemoInsertion("angelakilab", "NYU-DEMO-1", "2021-03-12", 1, "probe00", (RS[1],),
                  (-2243.0, -2000.0, -350.0), 15.0, 180.0, _RS_REGIONS, _qc("PASS", True, 9.8)),
    DemoInsertion("churchlandlab", "CSHL-DEMO-2", "2021-05-04", 1, "probe00", (RS[0], BWM[0]),
                  (-2243.0, -2000.0, -350.0), 15.0, 180.0, _RS_REGIONS,
                  _qc("FAIL", False, 31.0), artifact="burst", defects=("flat", "step")),
    DemoInsertion("hoferlab", "SWC-DEMO-3", "2022-02-21", 1, "probe00", (BWM[1],),
                  (-1500.0, 2500.0, -200.0), 5.0, 90.0, _MO_REGIONS, _qc("PASS", True, 10.4)),
    DemoInsertion("steinmetzlab", "UW-DEMO-4", "2022-07-08", 2, "probe00", (BWM[1],),
                  (2000.0, -1800.0, -300.0), 12.0, 0.0, _RS_REGIONS,
                  {"qc": "PASS", "n_units": 250, "extended_qc": {"tracing_exists": True}},
                  artifact="saturation", defects=("flat", "line_noise", "step")),
    DemoInsertion("steinmetzlab", "UW-DEMO-4", "2022-07-08", 2, "probe01", (BWM[1],),
                  (-1200.0, -900.0, -250.0), 8.0, 180.0, _SS_REGIONS, _qc("CRITICAL", True, 11.0),
                  defects=("flat", "cm_burst", "saturation", "line_noise")),
    DemoInsertion("churchlandlab", "CSHL-DEMO-5", "2021-09-15", 1, "probe00", (BWM[0],),
                  (2400.0, -2200.0, -400.0), 15.0, 0.0, _RS_REGIONS, _qc("PASS", True, 8.7)),
)


def releases_of(ins: DemoInsertion) -> list[str]:
    return sorted(name for name, tags in RELEASE_TAGS.items() if set(tags) & set(ins.tags))
