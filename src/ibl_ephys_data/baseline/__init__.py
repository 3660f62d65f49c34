"""A reference baseline with leakage and confound controls, run on an exported dataset (docs/baseline.md)."""

from ibl_ephys_data.baseline.stage import BaselineOptions, run_baseline

__all__ = ["BaselineOptions", "run_baseline"]
