"""Benchmark: the data path (issue 6, items 1 and 7).

Run: python tests/benchmarks/bench_data.py [--quick] [--repeats 3]

(a) Progress bar on vs off: symbuilder.train(..., bar=True) against bar=False on the same
    spec and data, interleaved in rounds (the order rotates every round), samples/s by the
    trainer's own clock (which waits for MXNet's engine), medians, and the median of each
    round's ratio to its own off run. A third row
    redraws the bar after every batch (BAR_INTERVAL = 0): what a per-batch metric read costs.
(b) The iterator against the training step, over a memory-mapped float32 .npy: ArrayIter
    alone (one shuffled epoch, batches/s) without and with prefetching, with the file in the
    page cache and evicted from it (MADV_DONTNEED + posix_fadvise DONTNEED: reads go to
    the disk); Module.forward_backward + update on one preloaded batch (the step alone); and
    whole epochs of train() with prefetching off and on, with the file in the page cache and
    evicted right after calibration (which reads it whole).
(c) CSV streaming: peak resident memory (VmHWM minus the RSS after imports, in a fresh
    subprocess) of reading a CSV much larger than a parse block, streamed into the cache and
    read into memory, against the file's size; and the time. Then the same for load_data
    (read, encode labels, stratified split) plus the training split's statistics, from an
    empty cache: streamed, the file is converted and the split gathered on disk.

Not collected by pytest (bench_*.py). Prints one markdown table per part.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from symbuilder.graph import build_symbol  # noqa: E402
from symbuilder.training import fit as train_mod  # noqa: E402 (make_iter is patched there)
from symbuilder.training import progress as progress_mod  # noqa: E402
from symbuilder.data import Dataset, SplitData  # noqa: E402
from symbuilder.data.iterators import ArrayIter
from symbuilder.spec.load import loads_spec  # noqa: E402


def spec_for(features: int, hidden: int, classes: int, batch: int, epochs: int) -> Any:
    return loads_spec(textwrap.dedent(f"""\
        name: bench
        input: {{shape: [{features}]}}
        layers:
          - {{op: FullyConnected, name: fc1, num_hidden: {hidden}}}
          - {{op: Activation, name: relu1, act_type: relu}}
          - {{op: FullyConnected, name: fc2, num_hidden: {classes}}}
        output: {{op: SoftmaxOutput, name: softmax}}
        train: {{epochs: {epochs}, batch_size: {batch}, optimizer: sgd,
                 optimizer_params: {{learning_rate: 0.01}}, seed: 1}}
        """))


def synthetic(rows: int, features: int, classes: int, val_rows: int = 512,
              train_x: Any = None) -> SplitData:
    rng = np.random.RandomState(0)
    x = train_x if train_x is not None else rng.rand(rows, features).astype(np.float32)
    y = rng.randint(0, classes, len(x)).astype(np.float32)
    vx = rng.rand(val_rows, features).astype(np.float32)
    vy = rng.randint(0, classes, val_rows).astype(np.float32)
    return SplitData(Dataset({"data": x}, y, "synthetic"), Dataset({"data": vx}, vy, "synthetic"),
                     [f"f{i}" for i in range(features)], list(range(classes)))


@contextlib.contextmanager
def stderr_to_devnull():
    saved = sys.stderr
    with open(os.devnull, "w") as sink:
        sys.stderr = sink
        try:
            yield
        finally:
            sys.stderr = saved


def epoch_rates(spec: Any, data: SplitData, **kw: Any) -> List[float]:
    with stderr_to_devnull():
        result = train_mod.train(spec, data, **kw)
    return [h["samples_per_sec"] for h in result.history]


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


# -- (a) --------------------------------------------------------------------------------

def bench_bar(repeats: int, rows: int, epochs: int) -> str:
    """Rounds of (off, on, every batch) in a rotating order; each mode's rate is the median
    of its epochs in the round, and a round gives one ratio per mode against its own off run
    seconds away: the median of those ratios is robust to load that drifts between rounds."""
    spec = spec_for(30, 64, 2, 32, epochs)
    data = synthetic(rows, 30, 2)
    epoch_rates(spec, data, bar=False)  # warm-up
    modes = ["off", "on", "every batch"]
    syncs = count_syncs()
    rates: Dict[str, List[float]] = {m: [] for m in modes}
    flushes: Dict[str, List[int]] = {m: [] for m in modes}
    ratios: Dict[str, List[float]] = {m: [] for m in modes}
    interval = progress_mod.BAR_INTERVAL
    for r in range(repeats):
        order = modes[r % 3:] + modes[:r % 3]
        got = {}
        for mode in order:
            progress_mod.BAR_INTERVAL = 0.0 if mode == "every batch" else interval
            before = syncs[0]
            try:
                got[mode] = statistics.median(epoch_rates(spec, data, bar=mode != "off"))
            finally:
                progress_mod.BAR_INTERVAL = interval
            flushes[mode].append(syncs[0] - before)
            rates[mode].append(got[mode])
        for mode in modes:
            ratios[mode].append(got[mode] / got["off"])
    lines = [f"(a) progress bar: MLP 30-64-2, {rows:,} rows, batch 32 "
             f"({-(-rows // 32)} batches/epoch), {repeats} rounds of {epochs} epochs per mode, "
             f"order rotating; samples/s (the trainer's clock)",
             "",
             "| bar | median samples/s | min | max | median ratio to off (same round) | "
             "ratio range | engine syncs per epoch (metric reads) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode, label in (("off", "off (bar=False)"),
                        ("on", f"on (bar=True, redraw every {interval} s)"),
                        ("every batch", "on, redraw every batch (BAR_INTERVAL=0)")):
        lines.append(f"| {label} | {fmt(statistics.median(rates[mode]))} | "
                     f"{fmt(min(rates[mode]))} | {fmt(max(rates[mode]))} | "
                     f"{statistics.median(ratios[mode]):.3f} | "
                     f"{min(ratios[mode]):.2f}..{max(ratios[mode]):.2f} | "
                     f"{statistics.median(flushes[mode]) / epochs:,.1f} |")
    return "\n".join(lines)


def count_syncs() -> List[int]:
    """Count TrainingMetrics flushes that wait for the engine (asnumpy of held outputs):
    the bar's metric reads, the per-epoch read, and flushes by volume."""
    from symbuilder.training.metrics import TrainingMetrics
    counter = [0]
    plain = TrainingMetrics.flush
    if getattr(plain, "counted", False):
        return plain.counter  # type: ignore[attr-defined]

    def flush(self: Any) -> None:
        if self._preds:
            counter[0] += 1
        plain(self)
    flush.counted = True  # type: ignore[attr-defined]
    flush.counter = counter  # type: ignore[attr-defined]
    TrainingMetrics.flush = flush  # type: ignore[method-assign]
    return counter


# -- (b) --------------------------------------------------------------------------------

def evict(path: str, mapped: Any = None) -> None:
    """Drop the file's pages: this process's mapping of them (MADV_DONTNEED), then the page
    cache (POSIX_FADV_DONTNEED; pages still mapped anywhere would stay)."""
    if mapped is not None:
        from symbuilder.data.sources import release_pages
        release_pages(mapped)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def iterate_epoch(array: np.ndarray, labels: np.ndarray, batch: int, prefetch: int) -> float:
    it = ArrayIter({"data": array}, labels, label_name="softmax_label", batch_size=batch,
                   shuffle=True, seed=3, prefetch=prefetch)
    start = time.perf_counter()
    n = 0
    for b in it:
        n += 1
    b.data[0].wait_to_read()
    seconds = time.perf_counter() - start
    it.close()
    return n / seconds


def step_rate(features: int, hidden: int, classes: int, batch: int, steps: int) -> float:
    spec = spec_for(features, hidden, classes, batch, 1)
    symbol = build_symbol(spec)
    mod = mx.mod.Module(symbol, data_names=["data"], label_names=["softmax_label"],
                        context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch, features))], label_shapes=[("softmax_label", (batch,))])
    mod.init_params(initializer=mx.init.Xavier())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01})
    rng = np.random.RandomState(0)
    batch_data = mx.io.DataBatch([mx.nd.array(rng.rand(batch, features), dtype=np.float32)],
                                 [mx.nd.array(rng.randint(0, classes, batch),
                                              dtype=np.float32)])
    for _ in range(20):
        mod.forward_backward(batch_data)
        mod.update()
    mx.nd.waitall()
    start = time.perf_counter()
    for _ in range(steps):
        mod.forward_backward(batch_data)
        mod.update()
    mx.nd.waitall()
    return steps / (time.perf_counter() - start)


def bench_iterator(repeats: int, rows: int, features: int, batch: int, folder: str) -> str:
    path = os.path.join(folder, "x.npy")
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, features))
    rng = np.random.RandomState(0)
    for start in range(0, rows, 50_000):
        out[start:start + 50_000] = rng.rand(min(50_000, rows - start), features)
    out.flush()
    del out
    x = np.load(path, mmap_mode="r")
    labels = rng.randint(0, 10, rows).astype(np.float32)
    results: Dict[str, List[float]] = {}
    iterate_epoch(x, labels, batch, 2)  # warm-up, and the file into the page cache
    for r in range(repeats):
        for prefetch in ((0, 2) if r % 2 == 0 else (2, 0)):
            results.setdefault(f"warm {prefetch}", []).append(
                iterate_epoch(x, labels, batch, prefetch))
    for r in range(max(1, repeats // 2)):
        for prefetch in ((0, 2) if r % 2 == 0 else (2, 0)):
            evict(path, x)
            results.setdefault(f"cold {prefetch}", []).append(
                iterate_epoch(x, labels, batch, prefetch))
    hidden = 256
    steps: List[float] = []
    spec = spec_for(features, hidden, 10, batch, 1)
    data = synthetic(rows, features, 10, train_x=x)
    plain_make_iter = train_mod.make_iter
    fit: Dict[Any, List[float]] = {}

    def make_iter(*a: Any, prefetch: int, cold: bool, **kw: Any) -> Any:
        if cold and kw.get("shuffle"):  # the training iterator, made after calibration
            evict(path, x)
        return plain_make_iter(*a, prefetch=prefetch, **kw)
    try:
        for r in range(repeats):
            steps.append(step_rate(features, hidden, 10, batch, 300))  # in the same rounds
            for cold in (False, True):
                for prefetch in ((0, 2) if r % 2 == 0 else (2, 0)):
                    train_mod.make_iter = functools.partial(make_iter, prefetch=prefetch,
                                                            cold=cold)
                    fit.setdefault((cold, prefetch), []).extend(
                        v / batch for v in epoch_rates(spec, data, bar=False))
    finally:
        train_mod.make_iter = plain_make_iter
    step = statistics.median(steps)
    size = rows * features * 4
    med = {k: statistics.median(v) for k, v in results.items()}
    lines = [f"(b) iterator vs training step: memory-mapped float32 .npy, {rows:,} x {features} "
             f"({size / 2**20:,.0f} MB), batch {batch}, shuffled; MLP {features}-{hidden}-10; "
             f"medians of {repeats} (cold: {max(1, repeats // 2)})",
             "",
             "| what | batches/s | vs training step |",
             "| --- | ---: | ---: |"]
    rows_out = [
        ("ArrayIter alone, no prefetch, file in page cache", med["warm 0"]),
        ("ArrayIter alone, prefetch 2 chunks, file in page cache", med["warm 2"]),
        ("ArrayIter alone, no prefetch, file evicted (disk reads)", med["cold 0"]),
        ("ArrayIter alone, prefetch 2 chunks, file evicted (disk reads)", med["cold 2"]),
        ("training step alone (forward_backward + update, one preloaded batch)", step),
        ("train() epoch, file in page cache, prefetch off", statistics.median(fit[False, 0])),
        ("train() epoch, file in page cache, prefetch on (default for memmaps)",
         statistics.median(fit[False, 2])),
        ("train() epoch, file evicted after calibration, prefetch off",
         statistics.median(fit[True, 0])),
        ("train() epoch, file evicted after calibration, prefetch on",
         statistics.median(fit[True, 2])),
    ]
    for label, value in rows_out:
        lines.append(f"| {label} | {fmt(value)} | {value / step:.2f}x |")
    return "\n".join(lines)


# -- (c) --------------------------------------------------------------------------------

_MEASURE = """
import sys, time
sys.path.insert(0, {root!r})
from symbuilder.data.sources import ReadOptions, read_table
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
import numpy, csv, json
base = status("VmRSS:")
start = time.perf_counter()
table = read_table({path!r}, "csv", label="y",
                   options=ReadOptions(cache_dir={cache!r}, stream={stream!r}))
seconds = time.perf_counter() - start
print(status("VmHWM:") - base, seconds, table.features.shape[0], table.features.nbytes)
"""


_LOAD = """
import sys, time
sys.path.insert(0, {root!r})
import mxnet, numpy, csv, json
from symbuilder.data import load_data
from symbuilder.moments import array_stats
from symbuilder.spec.load import load_spec
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
spec = load_spec({spec!r})
base = status("VmRSS:")
start = time.perf_counter()
data = load_data(spec, cache_dir={cache!r})
array_stats(data.train.inputs["data"])
seconds = time.perf_counter() - start
print(status("VmHWM:") - base, seconds, len(data.train) + len(data.val),
      data.train.inputs["data"].nbytes + data.val.inputs["data"].nbytes)
"""


def bench_csv(rows: int, cols: int, folder: str) -> str:
    from symbuilder.data import sources
    path = os.path.join(folder, "big.csv")
    rng = np.random.RandomState(0)
    with open(path, "w") as f:
        f.write(",".join([f"f{i}" for i in range(cols)] + ["y"]) + "\n")
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            np.savetxt(f, np.column_stack([rng.rand(n, cols), rng.randint(0, 3, n)]),
                       fmt=["%.6f"] * cols + ["%d"], delimiter=",")
    size = os.path.getsize(path)
    lines = [f"(c) CSV reading: {rows:,} rows x {cols} features + label, "
             f"{size / 2**20:,.0f} MB; a parse block is {sources.BLOCK_CELLS:,} cells "
             f"({sources.BLOCK_CELLS // (cols + 1):,} rows); peak RSS growth of a fresh process",
             "",
             "| reader | peak RSS growth | vs file size | float32 rows | seconds | MB/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for stream, label in ((True, "streamed into the cache (stream: true)"),
                          (False, "into memory (stream: false)")):
        cache = os.path.join(folder, f"cache-{stream}")
        code = _MEASURE.format(root=ROOT, path=path, cache=cache, stream=stream)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        growth, seconds, nbytes = int(out[0]), float(out[1]), int(out[3])
        lines.append(f"| {label} | {growth / 2**20:,.1f} MB | {growth / size:.3f} | "
                     f"{nbytes / 2**20:,.0f} MB | {seconds:.1f} | {size / 2**20 / seconds:,.0f} |")
    for stream, label in ((True, "load_data + array_stats, stream: true (convert, split on "
                                 "disk, statistics)"),
                          (False, "load_data + array_stats, stream: false")):
        spec = os.path.join(folder, f"spec-{stream}.yaml")
        with open(spec, "w") as f:
            f.write(textwrap.dedent(f"""\
                name: big
                input: {{shape: [{cols}]}}
                layers: [{{op: FullyConnected, num_hidden: 3}}]
                output: {{op: SoftmaxOutput}}
                data: {{train: {{path: {path}, label: y, stream: {str(stream).lower()}}}}}
                """))
        code = _LOAD.format(root=ROOT, spec=spec, cache=os.path.join(folder, f"load-{stream}"))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        growth, seconds, nbytes = int(out[0]), float(out[1]), int(out[3])
        lines.append(f"| {label} | {growth / 2**20:,.1f} MB | {growth / size:.3f} | "
                     f"{nbytes / 2**20:,.0f} MB | {seconds:.1f} | {size / 2**20 / seconds:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args()
    q = args.quick
    with tempfile.TemporaryDirectory() as folder:
        parts = [
            bench_bar(args.repeats + 2, 10_000 if q else 160_000, 1),
            bench_iterator(args.repeats, 20_000 if q else 200_000, 256, 128, folder),
            bench_csv(100_000 if q else 1_000_000, 20, folder),
        ]
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"bench_data.py: mxnet {mx.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, "
          f"load average at the end {load} (other processes share the CPUs)\n")
    print("\n\n".join(parts))
    print(f"\n(`python tests/benchmarks/bench_data.py {' '.join(sys.argv[1:])}`)".rstrip())


if __name__ == "__main__":
    main()
