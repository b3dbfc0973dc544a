"""Benchmark: image decoding and a whole image build (issue 15).

Run: python tests/benchmarks/bench_images.py [--images 1000] [--rounds 5] [--format jpeg]
     python tests/benchmarks/bench_images.py --train [--pairs 3] [--epochs 3]

Decode (default): decode + resize + centre crop, samples/s, on one .rec: symbuilder's
recordio source (read_table, in memory), its image_folder source on the same images as
files (packed into a temporary .rec first), against mx.io.ImageRecordIter on the same
records with the same resize and data_shape, no shuffle, no augmentation, with its default
preprocess_threads (4; 1.9.1 decodes with max(cores / 2 - 1, 1) of them, 1 here) and
with 1, each batch waited for, and once more reading each batch into numpy (asnumpy), the
form symbuilder's table holds them in. Interleaved: every round runs each contender once, the
order rotated each round; the table gives medians and the median of each round's ratio to
ImageRecordIter with its default threads. The images are smooth random RGB pictures (noise
blurred by block averaging, so JPEG sizes are like photographs', ~0.3 bits a pixel at
quality 90), 160x120, resized to shorter side 128 and cropped to 112x112.

Train (--train): samples/s (training images x epochs / wall time, fresh processes, imports
included) of `symbuilder build` of a small CNN spec on the digits rendered as 24x24 RGB PNGs
in a .rec (twice over: as drawn and mirrored, 3,594 training records; 500 validation
records), resize 32 to 3x32x32, against a hand-written script doing the same job the legacy
way: mx.io.ImageRecordIter with mean_r/g/b and std_r/g/b flags (the training images'
statistics, computed once beforehand and pasted in, as such scripts do) + Module.fit of the
same network, same epochs, batch size, optimizer and initializer, checkpoint saved each
epoch. Interleaved pairs after one warm-up pair; medians and the median per-pair ratio.

Not collected by pytest (bench_*.py). Prints markdown tables.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

import image_data  # noqa: E402
from bench_build import timed  # noqa: E402
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


def folder_run(folder: str) -> int:
    table = read_table(folder, "image_folder", label=None,
                       options=ImageReadOptions(shape=SHAPE, resize=RESIZE))
    return len(table)


def record_iter_run(rec: str, threads: Optional[int], to_numpy: bool = False) -> int:
    """ImageRecordIter's samples, each batch waited for (or read back into numpy, as
    symbuilder's table holds them)."""
    more = {} if threads is None else {"preprocess_threads": threads}
    it = mx.io.ImageRecordIter(path_imgrec=rec, path_imgidx=rec[:-4] + ".idx",
                               data_shape=SHAPE, batch_size=BATCH, resize=RESIZE,
                               shuffle=False, round_batch=False, **more)
    count = 0
    for batch in it:
        if to_numpy:
            batch.data[0].asnumpy()
        else:
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


def decode_bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        images = pictures(args.images)
        encode = encoder(args.format)
        rec = image_data.write_recordio(os.path.join(folder, "b"), images,
                                        np.zeros(args.images), encode=encode)
        tree = os.path.join(folder, "tree", "0")
        os.makedirs(tree)
        for i, image in enumerate(images):
            with open(os.path.join(tree, f"{i:05d}.{args.format}"), "wb") as f:
                f.write(encode(image))
        size = os.path.getsize(rec)
        base = "ImageRecordIter, default preprocess_threads"
        contenders = {"symbuilder recordio": lambda: symbuilder_run(rec),
                      "symbuilder image_folder": lambda: folder_run(os.path.dirname(tree)),
                      base: lambda: record_iter_run(rec, None),
                      "ImageRecordIter, default threads, batches read into numpy":
                          lambda: record_iter_run(rec, None, to_numpy=True),
                      "ImageRecordIter, preprocess_threads=1": lambda: record_iter_run(rec, 1)}
        for run in contenders.values():  # warm-up: page cache, MXNet's first-call costs
            run()
        rates = measure(contenders, args.rounds)
    print(f"{args.images} {args.format.upper()} images 160x120 ({size / args.images / 1024:.1f} "
          f"KiB each), resize {RESIZE}, crop {SHAPE[1]}x{SHAPE[2]}; {args.rounds} interleaved "
          f"rounds; mxnet {mx.__version__}, {os.cpu_count()} cores, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.1f}\n")
    print("| contender | median samples/s | min .. max | ratio to ImageRecordIter (default) |")
    print("|---|---:|---:|---:|")
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, rates[base]))
        print(f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} .. "
              f"{max(values):,.0f} | {ratio:.2f} |")


TRAIN_SPEC = """\
name: bench_images
input: {{shape: [3, 32, 32]}}
layers:
  - {{op: Convolution, name: conv1, num_filter: 16, kernel: [3, 3], pad: [1, 1]}}
  - {{op: Activation, name: relu1, act_type: relu}}
  - {{op: Pooling, name: pool1, pool_type: max, kernel: [2, 2], stride: [2, 2]}}
  - {{op: Convolution, name: conv2, num_filter: 32, kernel: [3, 3], pad: [1, 1]}}
  - {{op: Activation, name: relu2, act_type: relu}}
  - {{op: Pooling, name: pool2, pool_type: max, kernel: [2, 2], stride: [2, 2]}}
  - {{op: Flatten, name: flat}}
  - {{op: FullyConnected, name: fc, num_hidden: 10}}
output: {{op: SoftmaxOutput, name: softmax}}
data:
  train: {{path: train.rec, resize: 32}}
  val: {{path: val.rec, resize: 32}}
train: {{epochs: {epochs}, batch_size: 64, optimizer: adam,
        optimizer_params: {{learning_rate: 0.003}},
        initializer: {{name: xavier, rnd_type: gaussian, magnitude: 2.0}},
        eval_metric: [acc], seed: 0}}
export: {{formats: [checkpoint]}}
"""

HAND_WRITTEN = """\
import logging, sys
import mxnet as mx

mean = [float(v) for v in sys.argv[3].split(",")]
std = [float(v) for v in sys.argv[4].split(",")]
flags = dict(mean_r=mean[0], mean_g=mean[1], mean_b=mean[2],
             std_r=std[0], std_g=std[1], std_b=std[2])
train = mx.io.ImageRecordIter(path_imgrec="train.rec", data_shape=(3, 32, 32), resize=32,
                              batch_size=64, shuffle=True, **flags)
val = mx.io.ImageRecordIter(path_imgrec="val.rec", data_shape=(3, 32, 32), resize=32,
                            batch_size=64, **flags)
net = mx.sym.Variable("data")
for i, filters in ((1, 16), (2, 32)):
    net = mx.sym.Convolution(net, num_filter=filters, kernel=(3, 3), pad=(1, 1), name=f"conv{i}")
    net = mx.sym.Activation(net, act_type="relu", name=f"relu{i}")
    net = mx.sym.Pooling(net, pool_type="max", kernel=(2, 2), stride=(2, 2), name=f"pool{i}")
net = mx.sym.FullyConnected(mx.sym.Flatten(net), num_hidden=10, name="fc")
net = mx.sym.SoftmaxOutput(net, name="softmax")
mod = mx.mod.Module(net, logger=logging.getLogger("quiet"))
mod.fit(train, eval_data=val, eval_metric="acc", optimizer="adam",
        optimizer_params={"learning_rate": 0.003},
        initializer=mx.init.Xavier(rnd_type="gaussian", magnitude=2.0),
        num_epoch=int(sys.argv[1]), epoch_end_callback=mx.callback.do_checkpoint(sys.argv[2]))
"""


def train_bench(args: argparse.Namespace) -> None:
    x, y = image_data.digits()
    drawn = image_data.render(x)
    train_images = np.concatenate([drawn, drawn[:, :, ::-1]])  # as drawn, and mirrored
    train_labels = np.concatenate([y, y])
    with tempfile.TemporaryDirectory() as folder:
        image_data.write_recordio(os.path.join(folder, "train"), train_images, train_labels)
        image_data.write_recordio(os.path.join(folder, "val"), drawn[:500], y[:500])
        with open(os.path.join(folder, "spec.yaml"), "w") as f:
            f.write(TRAIN_SPEC.format(epochs=args.epochs))
        with open(os.path.join(folder, "hand.py"), "w") as f:
            f.write(HAND_WRITTEN)
        # The flags a legacy script carries: the training images' statistics after resize.
        pixels = read_table(os.path.join(folder, "train.rec"), "recordio", label=None,
                            options=ImageReadOptions(shape=(3, 32, 32), resize=32)).features
        mean = ",".join(f"{v:.4f}" for v in pixels.mean(axis=(0, 2, 3), dtype=np.float64))
        std = ",".join(f"{v:.4f}" for v in pixels.std(axis=(0, 2, 3), dtype=np.float64))
        decode = decode_ratio(os.path.join(folder, "train.rec"), args.pairs * 2 + 1)
        build = [sys.executable, "-m", "symbuilder", "build", "spec.yaml", "-q"]
        hand = [sys.executable, "hand.py", str(args.epochs), "hand", mean, std]
        runs = []
        for pair in range(args.pairs + 1):  # the first pair warms the page cache up
            first, second = (build, hand) if pair % 2 == 0 else (hand, build)
            seconds = {id(first): timed(first, folder), id(second): timed(second, folder)}
            if pair:
                runs.append((seconds[id(build)], seconds[id(hand)]))
    samples = len(train_images) * args.epochs
    ours, theirs = [samples / b for b, _ in runs], [samples / h for _, h in runs]
    print(f"## A whole image build vs hand-written ImageRecordIter + Module.fit "
          f"({len(train_images):,} training + 500 validation PNG records, 3x32x32, "
          f"{args.epochs} epochs, batch 64, adam)\n")
    print("| contender | median samples/s | median wall time |")
    print("| --- | ---: | ---: |")
    print(f"| `symbuilder build` | {statistics.median(ours):,.0f} | "
          f"{statistics.median(b for b, _ in runs):.2f} s |")
    print(f"| hand-written script | {statistics.median(theirs):,.0f} | "
          f"{statistics.median(h for _, h in runs):.2f} s |")
    print(f"\nmedian of per-pair ratios (symbuilder samples/s / hand-written): "
          f"{statistics.median(o / t for o, t in zip(ours, theirs)):.2f} over {args.pairs} "
          f"interleaved pairs; load {os.getloadavg()[0]:.1f}")
    print(f"\ndecode only, the training .rec to 3x32x32 in one process: symbuilder recordio / "
          f"ImageRecordIter (default threads), median of {args.pairs * 2 + 1} interleaved "
          f"rounds: {decode:.2f}")


def decode_ratio(rec: str, rounds: int) -> float:
    """symbuilder's recordio read of `rec` against ImageRecordIter's, 3x32x32, resize 32."""
    def ours() -> int:  # 1 each: the ratio of the rates is that of the times
        read_table(rec, "recordio", label=None,
                   options=ImageReadOptions(shape=(3, 32, 32), resize=32))
        return 1

    def theirs() -> int:
        it = mx.io.ImageRecordIter(path_imgrec=rec, path_imgidx=rec[:-4] + ".idx",
                                   data_shape=(3, 32, 32), batch_size=BATCH, resize=32,
                                   shuffle=False, round_batch=False)
        for batch in it:
            batch.data[0].wait_to_read()
        return 1
    ours(), theirs()  # warm-up
    rates = measure({"ours": ours, "theirs": theirs}, rounds)
    return statistics.median(a / b for a, b in zip(rates["ours"], rates["theirs"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    parser.add_argument("--train", action="store_true", help="the whole-build benchmark")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    (train_bench if args.train else decode_bench)(args)


if __name__ == "__main__":
    main()
