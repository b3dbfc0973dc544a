"""Input statistics for the frozen-affine input BatchNorm (``stats: dataset``).

This module owns the exact per-channel mean and population variance (ddof=0, as MXNet's
BatchNorm defines moving_var) of a training split, computed in one streaming pass with
float64 accumulators and memory bounded by the channel count plus one chunk.

Layout: every batch is ``(N, C)`` (tabular) or ``(N, C, *spatial)`` (images); statistics are
per channel C over N and all spatial axes.

How, and why:

* Accumulators are float64 whatever the input dtype: a float32 sum over millions of values
  loses the low digits that a variance of a large-mean feature lives in.
* Each cache-sized block is reduced with a *shifted two-pass* scheme: centre the block on a
  shift K (the mean of everything seen so far, or the block's own mean for the first block),
  then ``s1 = sum(x - K)``, ``s2 = sum((x - K)**2)`` and ``M2 = s2 - s1**2 / n``. The
  correction term ``s1**2 / n`` is exact two-pass arithmetic as long as K is within a few
  standard deviations of the block mean; when it is not (sorted or drifting data, a
  near-constant feature), the block is re-centred on its own mean and reduced again.
  Never ``E[x^2] - E[x]^2`` on raw values: for a feature with mean 1e4 and std 0.1 that
  subtracts two numbers equal in their first 10 digits.
* Blocks, batches and shards are combined with the pairwise update of Chan, Golub and
  LeVeque (count, mean, M2 per channel), which is exact up to rounding for any split.
* Blocks are ~2**19 values (a 4 MB float64 scratch buffer): measured on the 2-core EPYC
  build machine, 2**18..2**19 keeps the passes over a block in cache; 2**21 and up falls to
  numpy's own speed. The buffer is reused, so nothing scales with N.
"""
from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from symbuilder.errors import DataError

__all__ = [
    "ChannelStats",
    "NonFiniteValueError",
    "StreamingMoments",
    "array_stats",
    "channel_stats",
]

# Values (all channels and spatial positions) per block of the inner reduction; see the
# module docstring for the measurement behind it.
BLOCK_VALUES = 2**19

# Bytes of rows that array_stats hands to StreamingMoments.update at a time. For a memmap
# this is also how much of the file is resident before its pages are released. Measured
# over a 2 GB float32 memmap: 8..64 MB run at the same speed (within noise), 128 MB is
# slower; 32 MB keeps peak resident memory near 40 MB.
DEFAULT_CHUNK_BYTES = 32 * 2**20

class NonFiniteValueError(DataError, ValueError):
    """A NaN or +-inf in the data, located by sample.

    ``row`` is the 0-based index of the sample in the whole stream (across batches),
    ``channel`` its channel, ``position`` the index within the sample (``(channel,)`` for
    tabular data, ``(channel, h, w)`` for images) and ``value`` the offending value. The
    caller adds the file and column name: ``data.csv: row 17, column 'worst_area': NaN``.
    It is a DataError (a user's data mistake, exit 2) and a ValueError.
    """

    def __init__(self, row: int, position: Tuple[int, ...], value: float) -> None:
        self.row = int(row)
        self.position = tuple(int(i) for i in position)
        self.channel = self.position[0]
        self.value = float(value)
        where = f"row {self.row}, channel {self.channel}"
        if len(self.position) > 1:
            where += f" (position {self.position})"
        # An inf in float32 features is often a finite value too large for float32.
        hint = (" (a value beyond float32's range, |x| > 3.4e38, becomes inf)"
                if np.isinf(self.value) else "")
        super().__init__(f"{where}: not a finite number: {self.value!r}{hint}")


@dataclass(frozen=True, eq=False)
class ChannelStats:
    """Per-channel mean and population variance (ddof=0), and values counted per channel."""

    mean: np.ndarray
    var: np.ndarray
    count: int

    def __post_init__(self) -> None:
        mean = np.array(self.mean, dtype=np.float64)
        var = np.array(self.var, dtype=np.float64)
        if mean.ndim != 1 or var.shape != mean.shape:
            raise ValueError(
                f"mean and var must be 1-D of one length, got shapes {mean.shape} and {var.shape}"
            )
        if np.any(var < 0):
            raise ValueError("var must be non-negative")
        # Frozen means frozen: callers share these arrays, so make them read-only copies.
        mean.flags.writeable = False
        var.flags.writeable = False
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "var", var)
        object.__setattr__(self, "count", int(self.count))

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def zero_variance_channels(self) -> List[int]:
        """Channels whose variance is zero (constant features; see StreamingMoments.result)."""
        return [int(i) for i in np.flatnonzero(self.var == 0)]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able form (floats round-trip exactly through ``json``)."""
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ChannelStats":
        return cls(mean=np.asarray(data["mean"]), var=np.asarray(data["var"]), count=data["count"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChannelStats):
            return NotImplemented
        return (
            self.count == other.count
            and np.array_equal(self.mean, other.mean)
            and np.array_equal(self.var, other.var)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking arrays inside; not hashable


def _chan_merge(
    n_a: int, mean_a: np.ndarray, m2_a: np.ndarray, n_b: int, delta: np.ndarray, m2_b: np.ndarray
) -> Tuple[int, np.ndarray, np.ndarray]:
    """Chan, Golub & LeVeque pairwise update: moments of A+B from those of A and of B.

    Takes ``delta = mean_b - mean_a`` rather than mean_b: a block reduced around mean_a
    knows delta as ``s1 / n`` to full precision, while subtracting two rounded absolute
    means (say 5e6 + a fraction) would cost ~1e-9 relative in the variance per merge.
    """
    if n_b == 0:
        return n_a, mean_a, m2_a
    n = n_a + n_b
    mean = mean_a + delta * (n_b / n)
    m2 = m2_a + m2_b + delta * delta * (n_a / n * n_b)
    return n, mean, m2


class StreamingMoments:
    """Streaming per-channel count, mean and M2 in float64; memory O(C) plus one block buffer.

    ``update`` takes batches in stream order (sample rows are numbered across them for error
    messages); ``merge`` combines moments of disjoint parts, e.g. shards read by workers.
    """

    def __init__(self, channels: int) -> None:
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        self.channels = int(channels)
        self.count = 0  # values per channel (samples x spatial positions)
        self.rows = 0  # samples seen, to number rows globally in NonFiniteValueError
        self.sample_shape: Optional[Tuple[int, ...]] = None  # (C, *spatial) once known
        # The mean is kept as ref + rel: ref is the first block's mean, rel the drift since.
        # One rounded float64 mean of magnitude |mean| would make every later delta
        # (mean_b - mean) carry an error of eps*|mean|, i.e. eps*|mean|/std relative to the
        # spread (1e-8 on sorted data with mean 5e6, std 1, in 32-row batches); rel is
        # rounded relative to the drift only.
        self._ref = np.zeros(self.channels)
        self._rel = np.zeros(self.channels)
        self._m2 = np.zeros(self.channels)
        self._buffer: Optional[np.ndarray] = None  # float64 scratch, reused across blocks

    def _check(self, batch: Any) -> np.ndarray:
        arr = np.asarray(batch)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"expected a real numeric batch, got dtype {arr.dtype}")
        if arr.ndim < 2:
            raise ValueError(
                f"expected a batch of shape (N, C) or (N, C, *spatial), got shape {arr.shape}"
            )
        if arr.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels (axis 1), got shape {arr.shape}")
        if self.sample_shape is not None and arr.shape[1:] != self.sample_shape:
            raise ValueError(
                f"sample shape changed: earlier batches had {self.sample_shape}, "
                f"this one has {arr.shape[1:]}"
            )
        return arr

    def update(self, batch: np.ndarray) -> None:
        """Add one batch. On a NonFiniteValueError the moments are left unchanged."""
        arr = self._check(batch)
        n_rows = arr.shape[0]
        if n_rows == 0:
            return
        per_row = int(np.prod(arr.shape[1:]))
        rows_per_block = max(1, BLOCK_VALUES // per_row)
        if self._buffer is None or self._buffer.size < rows_per_block * per_row:
            self._buffer = np.empty(rows_per_block * per_row, dtype=np.float64)
        spatial = per_row // self.channels

        # Work on local copies so that a bad value half-way through leaves self untouched.
        count, ref, rel, m2 = self.count, self._ref, self._rel, self._m2
        for start in range(0, n_rows, rows_per_block):
            block = arr[start : start + rows_per_block]
            if count == 0:
                count, ref, rel, m2 = self._block_moments(block, spatial, None, self.rows + start)
            else:
                # Centre the block on the running mean (rounded to one float64) and turn its
                # delta from that shift into the delta from the exact ref + rel.
                shift = ref + rel
                n_b, _, delta, m2_b = self._block_moments(block, spatial, shift, self.rows + start)
                delta = delta + ((shift - ref) - rel)
                count, rel, m2 = _chan_merge(count, rel, m2, n_b, delta, m2_b)
        self.count, self._ref, self._rel, self._m2 = count, ref, rel, m2
        self.rows += n_rows
        self.sample_shape = arr.shape[1:]

    def _block_moments(
        self, block: np.ndarray, spatial: int, shift: Optional[np.ndarray], first_row: int
    ) -> Tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(n, ref, delta, M2) of one block: its mean is ``ref + delta``, where ref is
        ``shift`` when given, else a first estimate of the block's mean."""
        rows = block.shape[0]
        n = rows * spatial
        assert self._buffer is not None
        scratch = self._buffer[: rows * self.channels * spatial]
        if spatial == 1:
            # Tabular fast path: 2-D reductions along axis 0 are the cheapest numpy offers.
            buf = scratch.reshape(rows, self.channels)
            np.copyto(buf, block.reshape(rows, self.channels), casting="unsafe")
            axes: Tuple[int, ...] = (0,)
            subscripts = "ij,ij->j"
            as_shift = lambda v: v  # noqa: E731
        else:
            buf = scratch.reshape(rows, self.channels, spatial)
            np.copyto(buf, block.reshape(rows, self.channels, spatial), casting="unsafe")
            axes = (0, 2)
            subscripts = "ncs,ncs->c"
            as_shift = lambda v: v[:, None]  # noqa: E731

        with np.errstate(invalid="ignore", over="ignore"):
            if shift is None:
                shift = buf.sum(axis=axes) / n
            ref = shift
            buf -= as_shift(shift)
            s1 = buf.sum(axis=axes)
            if not np.all(np.isfinite(s1)):
                self._raise_non_finite(block, first_row)
            s2 = np.einsum(subscripts, buf, buf)
            # s2 - s1**2/n loses about log2(1/(1 - r)) bits where r = s1**2 / (n * s2), i.e.
            # when the shift sits far from this block's mean relative to its spread (an
            # outlier first sample, then a large batch: 1.6e-10 relative measured). Then
            # re-centre on the block's own mean (exact to rounding now) and reduce again.
            correction = s1 * (s1 / n)
            step = 0.0
            if np.any(correction > 0.5 * s2):
                step = s1 / n
                buf -= as_shift(step)
                s1 = buf.sum(axis=axes)
                s2 = np.einsum(subscripts, buf, buf)
                correction = s1 * (s1 / n)
            if not (np.all(np.isfinite(s2)) and np.all(np.isfinite(ref))):
                raise ValueError(
                    "variance overflowed float64: values too large (|x| > ~1e154) "
                    f"in rows {first_row}..{first_row + rows - 1}"
                )
        # Rounding can leave a tiny negative M2 for a constant channel; M2 is a sum of squares.
        m2 = np.maximum(s2 - correction, 0.0)
        return n, ref, step + s1 / n, m2

    @staticmethod
    def _raise_non_finite(block: np.ndarray, first_row: int) -> None:
        bad = ~np.isfinite(block)
        rows_bad = bad.reshape(block.shape[0], -1).any(axis=1)
        if not rows_bad.any():
            raise ValueError(
                f"float64 overflow in rows {first_row}..{first_row + block.shape[0] - 1}: "
                "values too large to sum"
            )
        r = int(np.argmax(rows_bad))
        position = tuple(int(i) for i in np.argwhere(bad[r])[0])
        raise NonFiniteValueError(first_row + r, position, block[r][position])

    def merge(self, other: "StreamingMoments") -> None:
        """Add the moments of another, disjoint part of the data (Chan pairwise merge)."""
        if not isinstance(other, StreamingMoments):
            raise TypeError(f"can only merge StreamingMoments, got {type(other).__name__}")
        if other.channels != self.channels:
            raise ValueError(f"cannot merge {other.channels} channels into {self.channels}")
        if (
            self.sample_shape is not None
            and other.sample_shape is not None
            and self.sample_shape != other.sample_shape
        ):
            raise ValueError(
                f"cannot merge sample shape {other.sample_shape} into {self.sample_shape}"
            )
        if self.count == 0:
            self.count, self._ref = other.count, other._ref.copy()
            self._rel, self._m2 = other._rel.copy(), other._m2.copy()
        elif other.count:
            delta = (other._ref - self._ref) + (other._rel - self._rel)
            self.count, self._rel, self._m2 = _chan_merge(
                self.count, self._rel, self._m2, other.count, delta, other._m2
            )
        self.rows += other.rows
        if self.sample_shape is None:
            self.sample_shape = other.sample_shape

    def result(self) -> ChannelStats:
        """The statistics so far.

        A constant channel comes out with var exactly 0: its first block is centred on
        ``fl(sum / n)``, a few ulps from the value, so every deviation has a few significant
        bits and the sums of them and of their squares are exact.
        """
        if self.count == 0:
            raise ValueError("no values seen: cannot compute statistics of an empty dataset")
        return ChannelStats(mean=self._ref + self._rel, var=self._m2 / self.count, count=self.count)


def channel_stats(batches: Iterable[np.ndarray]) -> ChannelStats:
    """Statistics of a stream of batches; the channel count comes from the first batch."""
    moments: Optional[StreamingMoments] = None
    for batch in batches:
        arr = np.asarray(batch)
        if moments is None:
            if arr.ndim < 2:
                raise ValueError(
                    f"expected batches of shape (N, C) or (N, C, *spatial), got shape {arr.shape}"
                )
            moments = StreamingMoments(arr.shape[1])
        moments.update(arr)
    if moments is None:
        raise ValueError("no batches: cannot compute statistics of an empty dataset")
    return moments.result()


def _shared_mapping(array: np.ndarray) -> Optional[mmap.mmap]:
    """The mmap behind ``array`` if it is a view of a shared (not copy-on-write) np.memmap."""
    node: Any = array
    while isinstance(node, np.ndarray):
        if isinstance(node, np.memmap):
            mapping = getattr(node, "_mmap", None)
            # mode 'c' is MAP_PRIVATE: dropping its pages would discard the caller's edits.
            if mapping is not None and getattr(node, "mode", "c") != "c":
                return mapping
            return None
        node = node.base
    return None


def _release_pages(mapping: mmap.mmap, base: int, chunk: np.ndarray) -> None:
    # Pages of a file mapping that have been read stay in this process's resident set
    # until the kernel is short of memory, so a 2 GB memmap would end with ~2 GB RSS.
    # MADV_DONTNEED on a shared file mapping unmaps them from this process only: the data
    # stays in the file and the OS page cache, so a later read costs a page fault, no I/O.
    low, high = np.byte_bounds(chunk)
    start = max(0, low - base)
    start -= start % mmap.PAGESIZE
    end = min(len(mapping), high - base)
    if end > start:
        try:
            mapping.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):  # not fatal: only memory use grows
            pass


def release_pages(chunk: np.ndarray) -> None:
    """Drop this process's mapping of the pages behind `chunk`, a view of a shared np.memmap
    (see _release_pages): resident memory stays bounded while a file larger than RAM is
    read; the data stays in the page cache. A no-op for anything else."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    mapping = _shared_mapping(chunk)
    if mapping is None:
        return
    base = np.frombuffer(mapping, dtype=np.uint8, count=1).__array_interface__["data"][0]
    _release_pages(mapping, base, chunk)


def array_stats(array: np.ndarray, *, chunk_rows: Optional[int] = None) -> ChannelStats:
    """Statistics of a whole array ``(N, C, *spatial)``, read ``chunk_rows`` rows at a time.

    ``array`` may be a ``np.memmap`` / ``np.load(..., mmap_mode='r')`` larger than RAM: it is
    never loaded whole, and the pages of each chunk are released once it is reduced. The
    default chunk is DEFAULT_CHUNK_BYTES (32 MB) of rows.
    """
    arr = array if isinstance(array, np.ndarray) else np.asarray(array)
    if arr.ndim < 2:
        raise ValueError(f"expected an array of shape (N, C) or (N, C, *spatial), got {arr.shape}")
    if chunk_rows is None:
        row_bytes = max(1, arr.itemsize * int(np.prod(arr.shape[1:])))
        chunk_rows = max(1, DEFAULT_CHUNK_BYTES // row_bytes)
    elif int(chunk_rows) != chunk_rows or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    chunk_rows = int(chunk_rows)

    mapping = _shared_mapping(arr) if hasattr(mmap, "MADV_DONTNEED") else None
    base = 0
    if mapping is not None:
        # Address of the mapping's first byte, to turn chunk addresses into mmap offsets.
        base = np.frombuffer(mapping, dtype=np.uint8, count=1).__array_interface__["data"][0]

    moments = StreamingMoments(arr.shape[1])
    for start in range(0, arr.shape[0], chunk_rows):
        chunk = arr[start : start + chunk_rows]
        moments.update(chunk)
        if mapping is not None:
            _release_pages(mapping, base, chunk)
    return moments.result()
