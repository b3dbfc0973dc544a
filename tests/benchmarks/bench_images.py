"""Benchmark: image decoding (issue 15, item 7).

Run: python tests/benchmarks/bench_images.py [--images 1000] [--rounds 5] [--format jpeg]
(and again with MXNET_CPU_WORKER_NTHREADS=2: MXNet runs its image ops on its engine's CPU
workers, one by default, whatever the calling threads)

Measured (2026-12, the 2-core machine shared with other jobs, load ~2; 1000 JPEGs, 7
rounds): symbuilder 3,078 samples/s, ImageRecordIter 5,128 (x1) and 5,006 (x2) threads:
0.58x. With MXNET_CPU_WORKER_NTHREADS=2: 0.52x. Decoding one image at a time: 0.41x.

Decode + resize + centre crop, samples/s, on one .rec: symbuilder's recordio source
(read_table, in memory: MXNet's decoder, a block at a time queued on MXNet's engine) against
mx.io.ImageRecordIter on the same records with the same resize and data_shape, no shuffle,
no augmentation, with preprocess_threads 1 and 2 (the machine's cores). Interleaved: every round runs each
contender once, the order rotated each round; the table gives medians and the median of
each round's ratio to ImageRecordIter with one thread.

The images are smooth random RGB pictures (noise blurred by block averaging, so JPEG sizes
are like photographs', ~0.3 bits a pixel at quality 90), 160x120, resized to shorter side
128 and cropped to 112x112. Not collected by pytest (bench_*.py). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

import image_data  # noqa: E402
from symbuilder.data.images import ImageReadOptions  # noqa: E402
from symbuilder.data.sources import read_table  # noqa: E402

SHAPE = (3, 112, 112)
RESIZE = 128
BATCH = 50


def pictures(n: int, seed: int = 0) -> np.ndarray:
    """(n, 120, 160, 3) uint8: 8x8-pixel blocks of random colour, upsampled and averaged."""
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, (n, 15, 20, 3)).astype(np.float32)
    fine = coarse.repeat(8, axis=1).repeat(8, axis=2)
    smooth = (fine + np.roll(fine, 4, axis=1) + np.roll(fine, 4, axis=2)) / 3
    return smooth.astype(np.uint8)


def encoder(fmt: str) -> Callable[[np.ndarray], bytes]:
    from PIL import Image

    def encode(image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=fmt.upper(), quality=90)
        return buf.getvalue()
    return encode


def symbuilder_run(rec: str) -> int:
    table = read_table(rec, "recordio", label=None,
                       options=ImageReadOptions(shape=SHAPE, resize=RESIZE))
    return len(table)


def record_iter_run(rec: str, threads: int) -> int:
    it = mx.io.ImageRecordIter(path_imgrec=rec, path_imgidx=rec[:-4] + ".idx",
                               data_shape=SHAPE, batch_size=BATCH, resize=RESIZE,
                               shuffle=False, preprocess_threads=threads, round_batch=False)
    count = 0
    for batch in it:
        batch.data[0].wait_to_read()
        count += BATCH - batch.pad
    return count


def measure(contenders: Dict[str, Callable[[], int]], rounds: int) -> Dict[str, List[float]]:
    rates: Dict[str, List[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            count = contenders[name]()
            rates[name].append(count / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        images = pictures(args.images)
        encode = encoder(args.format)
        rec = image_data.write_recordio(os.path.join(folder, "b"), images,
                                        np.zeros(args.images), encode=encode)
        size = os.path.getsize(rec)
        contenders = {"symbuilder recordio": lambda: symbuilder_run(rec),
                      "ImageRecordIter, preprocess_threads=1": lambda: record_iter_run(rec, 1),
                      "ImageRecordIter, preprocess_threads=2": lambda: record_iter_run(rec, 2)}
        for run in contenders.values():  # warm-up: page cache, MXNet's first-call costs
            run()
        rates = measure(contenders, args.rounds)
    base = rates["ImageRecordIter, preprocess_threads=1"]
    print(f"{args.images} {args.format.upper()} images 160x120 ({size / args.images / 1024:.1f} "
          f"KiB each), resize {RESIZE}, crop {SHAPE[1]}x{SHAPE[2]}; {args.rounds} interleaved "
          f"rounds; mxnet {mx.__version__}, {os.cpu_count()} cores, MXNET_CPU_WORKER_NTHREADS="
          f"{os.environ.get('MXNET_CPU_WORKER_NTHREADS', 'unset (1)')}\n")
    print("| contender | median samples/s | min .. max | ratio to ImageRecordIter x1 |")
    print("|---|---:|---:|---:|")
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, base))
        print(f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} .. "
              f"{max(values):,.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
