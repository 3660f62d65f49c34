import numpy as np
import pytest

from ibl_ephys_data.lfp.bad_channels import batch_starts, detect_channel_labels
from ibl_ephys_data.workspace.schema import BAD_CHANNEL_COLUMNS as COLUMNS


class RecordingReader:
    """Wraps a reader and records every sample range read from it."""

    def __init__(self, reader):
        self._reader = reader
        self.reads = []

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def __getitem__(self, item):
        self.reads.append((item[0].start, item[0].stop))
        return self._reader[item]


def test_planted_channels_get_labels_1_2_3(lf_reader, planted):
    df = detect_channel_labels(lf_reader)
    assert list(df.columns) == COLUMNS
    assert df["bad_channel_label"].dtype == np.int8
    np.testing.assert_array_equal(df["raw_ind"], np.arange(384))
    np.testing.assert_array_equal(df["bad_channel_label"], planted)
    # the features behind the labels: noisy above IBL's LF threshold, outside block uncorrelated
    assert (df.loc[planted == 2, "bad_channel_psd_hf"] > 1.4).all()
    assert (df.loc[planted == 0, "bad_channel_psd_hf"] < 0.2).all()
    assert (df.loc[planted == 3, "bad_channel_xcor_lf"] < -0.75).all()
    assert (df.loc[planted == 1, "bad_channel_xcor_hf"] < -0.5).all()


def test_reads_only_the_batches(lf_reader):
    spy = RecordingReader(lf_reader)
    detect_channel_labels(spy, n_batches=10, batch_seconds=2.0)
    starts = np.linspace(0, 38, 10)
    assert spy.reads == [(int(t * 2500), int(t * 2500) + 5000) for t in starts]


def test_batches_need_enough_recording():
    np.testing.assert_allclose(batch_starts(600, 10, 4), np.linspace(0, 596, 10))
    with pytest.raises(ValueError, match="shorter than one 4-s detection batch"):
        batch_starts(3.0)
    with pytest.raises(ValueError, match="positive"):
        batch_starts(100, n_batches=0)
