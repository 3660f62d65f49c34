"""The public API: every name in ``__all__`` resolves, and ``--help`` does not import the heavy stack."""

import subprocess
import sys

import ibl_ephys_data


def test_every_public_name_resolves():
    for name in ibl_ephys_data.__all__:
        assert getattr(ibl_ephys_data, name) is not None, name
    assert ibl_ephys_data.__version__ != "0+unknown"


def test_help_imports_neither_one_nor_pandas():
    heavy = ('one.api', 'pandas', 'ibllib', 'zarr', 'requests', 'boto3')
    for command in ("", "'lfp', "):  # a stage's help shows the network policy's defaults
        code = ("import sys; from ibl_ephys_data.cli import app\n"
                f"try:\n    app([{command}'--help'])\nexcept SystemExit:\n    pass\n"
                f"print(sorted(m for m in {heavy} if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "[]", command
