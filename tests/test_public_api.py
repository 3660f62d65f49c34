"""The public API: every name in ``__all__`` resolves, and ``--help`` does not import the heavy stack."""

import subprocess
import sys

import ibl_ephys_data


def test_every_public_name_resolves():
    for name in ibl_ephys_data.__all__:
        assert getattr(ibl_ephys_data, name) is not None, name
    assert ibl_ephys_data.__version__ != "0+unknown"


def test_help_imports_neither_one_nor_pandas():
    code = ("import sys; from ibl_ephys_data.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('one.api', 'pandas', 'ibllib', 'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
