"""The network policy on its own: validation, pickling, backoff bounds; the command line's defaults are its own."""

from __future__ import annotations

import pickle

import pytest
import typer

from ibl_ephys_data.cli import app
from ibl_ephys_data.errors import InputError
from ibl_ephys_data.network_policy import NetworkPolicy
from ibl_ephys_data.run import ConnectionOptions


def test_policy_is_validated_and_picklable():
    policy = NetworkPolicy(connect_timeout=1, read_timeout=2, retries=3, backoff=0.1, max_backoff=1)
    assert pickle.loads(pickle.dumps(policy)) == policy and policy.tries == 4 and policy.timeout == (1, 2)
    with pytest.raises(InputError, match="read_timeout=0"):
        NetworkPolicy(read_timeout=0)
    with pytest.raises(InputError, match="must be >= 0"):
        NetworkPolicy(retries=-1)


def test_backoff_grows_is_capped_and_jittered():
    policy = NetworkPolicy(backoff=0.5, max_backoff=3)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (10, 3.0)]:
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered
    assert policy.delay(0, retry_after="2") == 2 and policy.delay(0, retry_after="999") == 3


def test_command_line_and_run_config_defaults_are_the_policy():
    assert ConnectionOptions().network == NetworkPolicy()
    assert ConnectionOptions(read_timeout=5, retries=1).connection().network == NetworkPolicy(read_timeout=5,
                                                                                              retries=1)
    commands = typer.main.get_command(app).commands
    for name in ("channels", "lfp"):
        options = {p.name: p.default for p in commands[name].params}
        assert (options["timeout"], options["retries"]) == (NetworkPolicy.read_timeout, NetworkPolicy.retries)
