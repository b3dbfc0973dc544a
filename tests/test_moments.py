"""symbuilder.moments against an independent numpy float64 two-pass computation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from symbuilder.errors import DataError
from symbuilder.moments import (
    ChannelStats,
    NonFiniteValueError,
    StreamingMoments,
    array_stats,
    channel_stats,
)

MEAN_RTOL = 1e-12
VAR_RTOL = 1e-10


def reference(x: np.ndarray):
    """numpy float64 two-pass mean and population variance per channel (axis 1)."""
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    return x64.mean(axis=axes), x64.var(axis=axes)


def assert_matches(stats: ChannelStats, x: np.ndarray) -> None:
    mean, var = reference(x)
    # Means near zero are compared on the scale of the channel's spread.
    scale = np.sqrt(var) + np.abs(mean)
    np.testing.assert_array_less(np.abs(stats.mean - mean), MEAN_RTOL * scale + 1e-300)
    np.testing.assert_allclose(stats.var, var, rtol=VAR_RTOL, atol=0)
    assert stats.count == x.size // x.shape[1]
    assert stats.mean.dtype == np.float64 and stats.var.dtype == np.float64


def split(x: np.ndarray, sizes: Sequence[int]) -> List[np.ndarray]:
    assert sum(sizes) == len(x)
    edges = np.cumsum([0] + list(sizes))
    return [x[a:b] for a, b in zip(edges[:-1], edges[1:])]


def hard_tabular(rows: int = 20_000, seed: int = 0) -> np.ndarray:
    """float32 features at very different scales, including mean 1e4 / std 0.1."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, 5))
    cols = [
        1e4 + 0.1 * z[:, 0],  # the case a float32 E[x^2] - E[x]^2 destroys
        1e3 * z[:, 1],  # mean 0, std 1e3
        z[:, 2],
        -50.0 + 1e-3 * z[:, 3],
        rng.integers(0, 7, rows),  # small integers
    ]
    return np.stack(cols, axis=1).astype(np.float32)


SPLITS = {
    "whole": lambda n: [n],
    "even": lambda n: [n // 4] * 3 + [n - 3 * (n // 4)],
    "uneven": lambda n: [1, 2, 3, 997, 5000, n - 6003],
    "size-1 head and tail": lambda n: [1] + [n - 2] + [1],
    "many size-1": lambda n: [1] * 50 + [n - 50],
}


@pytest.mark.parametrize("splitter", list(SPLITS.values()), ids=list(SPLITS))
def test_tabular_matches_numpy_for_any_batching(splitter):
    x = hard_tabular()
    stats = channel_stats(split(x, splitter(len(x))))
    assert_matches(stats, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int32])
def test_image_nchw_statistics_over_n_h_w(dtype):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(37, 3, 9, 11)).astype(dtype)
    x[:, 1] = x[:, 1] * 2 + 1000  # channels must not be mixed up
    stats = channel_stats(split(x, [1, 10, 1, 25]))
    assert_matches(stats, x)
    assert stats.count == 37 * 9 * 11


def test_image_ncl_and_array_stats_chunks():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((300, 4, 50)) * [[1], [10], [0.01], [100]] + [[0], [5], [1e4], [-3]])
    x = x.astype(np.float32)
    for chunk_rows in (None, 1, 7, 299, 1000):
        assert_matches(array_stats(x, chunk_rows=chunk_rows), x)


def test_blocks_inside_one_batch_are_merged(monkeypatch):
    # A batch larger than one internal block exercises the block loop and its merges.
    import symbuilder.moments as moments

    monkeypatch.setattr(moments, "BLOCK_VALUES", 64)
    x = hard_tabular(rows=3001, seed=3)
    assert_matches(channel_stats([x]), x)


def test_hard_case_where_naive_float32_fails():
    x = hard_tabular(rows=100_000, seed=4)
    _, var = reference(x)

    # Contrast, computed inline: the textbook one-pass formula in float32.
    naive = (x * x).mean(axis=0, dtype=np.float32) - x.mean(axis=0, dtype=np.float32) ** 2
    naive_error = abs(float(naive[0]) - var[0]) / var[0]
    assert naive_error > 1.0  # not even the right order of magnitude

    stats = array_stats(x)
    assert abs(stats.var[0] - var[0]) / var[0] < 1e-9
    assert abs(stats.var[1] - var[1]) / var[1] < 1e-9
    assert_matches(stats, x)


def test_sorted_data_in_small_batches_stays_exact():
    # Drifting data (a sorted id or timestamp column) is where running-shift schemes and
    # merges of rounded large means lose digits: mean 5e6, std 1, 32-row batches.
    rng = np.random.default_rng(5)
    x = (5e6 + np.sort(rng.standard_normal(50_000)))[:, None]
    for xs in (x, x[::-1]):
        stats = channel_stats(split(xs, [32] * (len(xs) // 32) + [len(xs) % 32]))
        assert_matches(stats, xs)
        # Tighter than VAR_RTOL: one rounded absolute mean instead of ref + rel gives ~5e-12.
        np.testing.assert_allclose(stats.var, reference(xs)[1], rtol=1e-13)


def test_far_outlier_first_then_large_batch_stays_exact():
    # The second batch is centred on the first sample (1e8 away, spread 1): without
    # re-centring the block on its own mean, s2 - s1**2/n cancels (1.6e-10 measured).
    rng = np.random.default_rng(13)
    x = np.concatenate([[1e8], rng.standard_normal(2**19)])[:, None]
    stats = channel_stats([x[:1], x[1:]])
    np.testing.assert_allclose(stats.var, reference(x)[1], rtol=1e-13)


def test_merge_equals_one_pass_over_concatenation():
    x = hard_tabular(rows=5000, seed=6)
    a, b = StreamingMoments(5), StreamingMoments(5)
    a.update(x[:1234])
    b.update(x[1234:3000])
    b.update(x[3000:])
    a.merge(b)
    whole = StreamingMoments(5)
    whole.update(x)
    np.testing.assert_allclose(a.result().var, whole.result().var, rtol=VAR_RTOL)
    np.testing.assert_allclose(a.result().mean, whole.result().mean, rtol=MEAN_RTOL)
    assert a.result().count == whole.result().count == 5000
    assert a.rows == 5000
    assert_matches(a.result(), x)


def test_merge_with_empty_either_side():
    x = hard_tabular(rows=100, seed=7)
    full, empty = StreamingMoments(5), StreamingMoments(5)
    full.update(x)
    full.merge(StreamingMoments(5))
    assert_matches(full.result(), x)
    empty.merge(full)
    assert_matches(empty.result(), x)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    rows=st.integers(min_value=2, max_value=200),
    channels=st.integers(min_value=1, max_value=4),
    offset=st.sampled_from([0.0, 1.0, 1e4, -1e6]),
    scale=st.sampled_from([1e-2, 1.0, 1e3]),
)
def test_property_any_split_and_merge_tree_matches_numpy(data, rows, channels, offset, scale):
    seed = data.draw(st.integers(0, 2**32 - 1))
    x = offset + scale * np.random.default_rng(seed).standard_normal((rows, channels))
    cuts = sorted(data.draw(st.lists(st.integers(0, rows), max_size=6)))
    parts = split(x, np.diff([0] + cuts + [rows]).tolist())
    # Half the parts streamed into one accumulator, the rest each in its own, merged in.
    acc = StreamingMoments(channels)
    for i, part in enumerate(parts):
        if i % 2 == 0:
            acc.update(part)
        else:
            other = StreamingMoments(channels)
            other.update(part)
            acc.merge(other)
    mean, var = reference(x)
    result = acc.result()
    np.testing.assert_allclose(result.var, var, rtol=1e-9, atol=1e-15 * scale**2)
    np.testing.assert_allclose(result.mean, mean, rtol=1e-12, atol=1e-12 * scale)
    assert result.count == rows


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_reports_global_row_and_channel(bad):
    x = hard_tabular(rows=40, seed=8).astype(np.float64)
    x[17, 3] = bad  # first offending sample: row 17 (batch 2, local row 5)
    x[17, 4] = np.nan  # same sample, later channel: channel 3 must win
    x[25, 0] = np.nan  # later sample, earlier channel: row 17 must win
    with pytest.raises(NonFiniteValueError) as info:
        channel_stats(split(x, [5, 7, 28]))
    err = info.value
    assert (err.row, err.channel, err.position) == (17, 3, (3,))
    assert np.isnan(err.value) if np.isnan(bad) else err.value == bad
    assert "row 17" in str(err) and "channel 3" in str(err)
    assert isinstance(err, ValueError) and isinstance(err, DataError)


def test_non_finite_in_first_row_and_in_images():
    x = np.zeros((4, 3), dtype=np.float32)
    x[0, 2] = np.nan
    with pytest.raises(NonFiniteValueError) as info:
        array_stats(x)
    assert (info.value.row, info.value.channel) == (0, 2)

    img = np.ones((6, 3, 4, 5), dtype=np.float32)
    img[4, 1, 2, 3] = np.inf
    with pytest.raises(NonFiniteValueError) as info:
        array_stats(img, chunk_rows=3)
    assert (info.value.row, info.value.channel, info.value.position) == (4, 1, (1, 2, 3))


def test_failed_update_leaves_moments_unchanged():
    x = hard_tabular(rows=50, seed=9)
    moments = StreamingMoments(5)
    moments.update(x[:20])
    bad = x[20:].copy()
    bad[10, 1] = np.nan
    with pytest.raises(NonFiniteValueError) as info:
        moments.update(bad)
    assert info.value.row == 30
    assert moments.rows == 20
    assert_matches(moments.result(), x[:20])


@pytest.mark.parametrize("value", [0.1, 1 / 3, 1e4 + 0.1, -123.456, np.pi * 1e7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_channel_has_exactly_zero_variance(value, dtype, monkeypatch):
    import symbuilder.moments as moments

    monkeypatch.setattr(moments, "BLOCK_VALUES", 40)  # many blocks, many merges
    x = np.full((1001, 1), value, dtype=dtype)
    moments = StreamingMoments(1)
    moments.update(x[:3])
    shard = StreamingMoments(1)
    shard.update(x[3:500])
    moments.merge(shard)
    moments.update(x[500:])
    stats = moments.result()
    assert stats.var[0] == 0.0 and stats.zero_variance_channels() == [0]
    assert stats.mean[0] == np.float64(x[0, 0])


def test_zero_variance_channels_reported():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((1000, 4)).astype(np.float32)
    x[:, 1] = 0.1  # not exactly representable: a naive mean is off by rounding
    x[:, 3] = 0.0
    stats = channel_stats(split(x, [333, 1, 666]))
    assert stats.zero_variance_channels() == [1, 3]
    assert stats.var[1] == 0.0 and stats.mean[1] == np.float64(np.float32(0.1))
    # A channel with a tiny but real spread is not reported.
    x[500, 1] = np.nextafter(np.float32(0.1), np.float32(1))
    assert channel_stats([x]).zero_variance_channels() == [3]


def test_channel_stats_dict_round_trip():
    stats = array_stats(hard_tabular(rows=100, seed=11))
    data = json.loads(json.dumps(stats.to_dict()))
    assert set(data) == {"mean", "var", "count"} and data["count"] == 100
    assert ChannelStats.from_dict(data) == stats
    with pytest.raises(ValueError):
        stats.mean[0] = 1.0  # read-only: the dataclass is frozen all the way down


def test_input_errors():
    moments = StreamingMoments(3)
    with pytest.raises(ValueError, match="channels"):
        moments.update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="shape"):
        moments.update(np.zeros(4))
    with pytest.raises(TypeError):
        moments.update(np.zeros((4, 3), dtype=complex))
    moments.update(np.zeros((4, 3, 2)))
    with pytest.raises(ValueError, match="sample shape"):
        moments.update(np.zeros((4, 3, 5)))
    with pytest.raises(ValueError, match="empty"):
        channel_stats([])
    with pytest.raises(ValueError, match="no values"):
        StreamingMoments(2).result()


# --- larger than it should ever be loaded whole -------------------------------------------

_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from symbuilder.moments import array_stats

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024

    array = np.load(sys.argv[1], mmap_mode="r")
    before = status("VmRSS")
    stats = array_stats(array)
    print(json.dumps({"stats": stats.to_dict(), "peak": status("VmHWM"), "before": before}))
    """
)


@pytest.mark.slow
def test_two_gigabyte_memmap_streams_in_bounded_memory(tmp_path: Path):
    channels = 64
    rows = 2 * 2**30 // (4 * channels)
    chunk = 2**18  # rows written at a time (64 MB)
    path = tmp_path / "big.npy"
    rng = np.random.default_rng(12)
    noise = rng.standard_normal((chunk, channels)).astype(np.float32)
    offsets = np.linspace(-1e3, 1e4, channels).astype(np.float32)
    scales = np.geomspace(1e-1, 1e3, channels).astype(np.float32)
    try:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, channels))
        for i, start in enumerate(range(0, rows, chunk)):
            n = min(chunk, rows - start)
            # Rotate the noise so that chunks differ, and drift slowly with i.
            block = np.roll(noise[:n], i, axis=0) * scales + offsets + np.float32(0.01 * i)
            block[:, 5] = 3.25  # a constant channel
            out[start : start + n] = block
        out.flush()
        data_offset = out.offset
        del out

        # Independent reference: plain file reads, float64 two-pass over chunks.
        def chunks():
            with open(path, "rb") as f:
                f.seek(data_offset)
                while True:
                    part = np.fromfile(f, dtype=np.float32, count=chunk * channels)
                    if part.size == 0:
                        return
                    yield part.reshape(-1, channels).astype(np.float64)

        total = sum(c.sum(axis=0) for c in chunks())
        mean = total / rows
        var = sum(((c - mean) ** 2).sum(axis=0) for c in chunks()) / rows

        proc = subprocess.run(
            [sys.executable, "-c", _PEAK_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        report = json.loads(proc.stdout)
    finally:
        path.unlink(missing_ok=True)

    stats = ChannelStats.from_dict(report["stats"])
    assert stats.count == rows
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(stats.var, var, rtol=1e-9)
    assert stats.zero_variance_channels() == [5]
    growth = report["peak"] - report["before"]
    assert growth < 400 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MB over a 2 GB memmap"
