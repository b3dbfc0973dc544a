"""Training-time augmentation of image sources: `rand_crop` and `rand_mirror` on data.train,
with mx.io.ImageRecordIter's meanings (src/io/image_aug_default.cc, iter_normalize.h):

- rand_crop: after `resize` (shorter side), a crop of input.shape's (H, W) at offsets
  y ~ U{0..h-H}, x ~ U{0..w-W} (both ends included; y drawn first), instead of the centre
  crop ((h-H)//2, (w-W)//2) that the cached samples, the statistics and validation use.
- rand_mirror: the (C, H, W) sample flipped along W with probability 0.5.

Seeding: the draws of batch b of epoch e are a function of (train.seed, e, b, the dist
worker's rank) alone, np.random.default_rng([seed, e, b, rank, 0]) for the crop offsets and
[..., 1] for the flips (so turning one on never changes the other's draws). They are made
where the batch is gathered (iterators.epoch_chunks, a pure function), so prefetching, the
number of devices (Module splits a batch after it is made) and resuming at an epoch change
nothing: a resumed run is bit-identical to an uninterrupted one.

Only the training split is augmented: data.val takes no augmentation keys, the held-out
part of val_fraction is a Dataset without an Augment, and make_iter augments only the
shuffled (training) iterator. The input layer's statistics (stats: dataset) stay those of
the resized, centre-cropped training images: the distribution the model is served. (With
stats: running the moving averages follow the batches trained on, augmented ones.)

Memory (rand_crop): the resized, uncropped images are decoded once more (MXNet's calls, as
images.start_decode) into the build's cache, `<cache>/augment/sources/<file>-<identity>/`:
one flat uint8 .npy (decoded pixels are uint8, so exact, and 4x smaller than float32), with
each image's offset and (h, w). It is memory-mapped, never loaded whole, and written once per
source version and decoding options. When every image has the same size (im2rec --resize of
square images, or a one-size dataset) the flat array is viewed as (N, h, w, C) and a batch is
cropped with one fancy index into its sliding windows; images of differing sizes are cropped
one slice each.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from .images import DECODE_ROWS, IMAGE_FORMATS, ImageReadOptions, encoded_images, start_decode
from .sources import (CACHE_VERSION, STREAM_BYTES, ReadOptions, cache_entry, npy_header,
                      release_pages, source_format, staged_entry, write_json)

if TYPE_CHECKING:  # spec.model imports nothing from here at runtime
    from ..spec.model import Spec

KEYS = ("rand_crop", "rand_mirror")
CROP_STREAM, MIRROR_STREAM = 0, 1  # the last entry of a batch's seed: one stream per draw


def check_augment_keys(spec: "Spec") -> None:
    """rand_crop / rand_mirror: on data.train only, and only for an image format; a located
    SpecError otherwise (the pipeline runs this with check_formats, before any data is
    read, so `validate` finds it)."""
    if spec.data is None:
        return
    for key in KEYS:
        if spec.data.val is not None and getattr(spec.data.val, key) is not None:
            raise spec.error(("data", "val", key), f"{key} augments the training data only "
                             "(data.train); validation samples are never augmented")
        fmt = source_format(spec.data.train)
        if getattr(spec.data.train, key) is not None and fmt not in IMAGE_FORMATS:
            raise spec.error(("data", "train", key), f"{key} needs an image format "
                             f"({', '.join(IMAGE_FORMATS)}); {spec.data.train.path} is read "
                             f"as {fmt}")


# -- the resized, uncropped images -------------------------------------------------------

@dataclasses.dataclass
class ResizedImages:
    """A source's images after resize, before any crop: image i is
    pixels[offsets[i]:offsets[i] + h*w*C] as (h, w, C) uint8, (h, w) = sizes[i]."""
    pixels: np.ndarray   # flat uint8, memory-mapped
    offsets: np.ndarray  # (N,) int64
    sizes: np.ndarray    # (N, 2) int64: (h, w)
    channels: int

    def __post_init__(self) -> None:
        same = len(self.sizes) > 0 and bool(np.all(self.sizes == self.sizes[0]))
        h, w = (int(v) for v in self.sizes[0]) if same else (0, 0)
        self.uniform = self.pixels.reshape(-1, h, w, self.channels) if same else None

    def crops(self, images: np.ndarray, tops: np.ndarray, lefts: np.ndarray, height: int,
              width: int) -> np.ndarray:
        """(len(images), C, height, width) float32: image images[k] cropped at
        (tops[k], lefts[k])."""
        if self.uniform is not None:  # one gather: windows (N, h-H+1, w-W+1, C, H, W)
            windows = np.lib.stride_tricks.sliding_window_view(
                self.uniform, (height, width), axis=(1, 2))
            out = windows[images, tops, lefts].astype(np.float32)
        else:
            out = np.empty((len(images), self.channels, height, width), np.float32)
            for k, (i, top, left) in enumerate(zip(images, tops, lefts)):
                h, w = self.sizes[i]
                image = self.pixels[self.offsets[i]:self.offsets[i] + h * w * self.channels]
                out[k] = image.reshape(h, w, self.channels)[top:top + height,
                                                             left:left + width].transpose(2, 0, 1)
        if self.pixels.nbytes > STREAM_BYTES:  # a large file: keep resident memory bounded
            release_pages(self.pixels)
        return out


def _decoded(buffers: Iterable[bytes], options: ImageReadOptions) -> Iterator[np.ndarray]:
    """Each image decoded and resized, (h, w, C) uint8, DECODE_ROWS queued at a time on
    MXNet's engine (as images._blocks). The source was read and checked before: no
    image here fails."""
    buffers = iter(buffers)
    while True:
        block = list(itertools.islice(buffers, DECODE_ROWS))
        if not block:
            return
        for img in [start_decode(buf, options) for buf in block]:
            yield img.asnumpy()


def _write_resized(folder: str, images: Iterable[np.ndarray]) -> int:
    """pixels.npy (flat uint8, written front to back, its length set at the end),
    offsets.npy and sizes.npy; returns the image count."""
    offsets: List[int] = []
    sizes: List[Tuple[int, int]] = []
    total = 0
    with open(os.path.join(folder, "pixels.npy"), "wb") as f:
        f.write(npy_header((0,), "|u1"))
        for image in images:
            offsets.append(total)
            sizes.append(image.shape[:2])
            f.write(memoryview(np.ascontiguousarray(image)).cast("B"))
            total += image.size
        f.flush()
        f.seek(0)
        f.write(npy_header((total,), "|u1"))
        f.flush()
        os.fsync(f.fileno())
    np.save(os.path.join(folder, "offsets.npy"), np.array(offsets, np.int64), allow_pickle=False)
    np.save(os.path.join(folder, "sizes.npy"), np.array(sizes, np.int64).reshape(-1, 2),
            allow_pickle=False)
    return len(offsets)


def resized_images(path: str, fmt: str, options: ImageReadOptions, identity: str,
                   cache_dir: str) -> ResizedImages:
    """The source's resized images from the cache, decoded into it first if missing."""
    entry = cache_entry(os.path.join(cache_dir, "augment"), path, identity)
    if not os.path.exists(os.path.join(entry, "meta.json")):
        with staged_entry(entry, path) as tmp:
            rows = _write_resized(tmp, _decoded(encoded_images(path, fmt, options.idx),
                                                options))
            write_json(os.path.join(tmp, "meta.json"), {
                "version": CACHE_VERSION, "source": os.path.abspath(path),
                "identity": identity, "rows": rows, "channels": options.shape[0]})
    with open(os.path.join(entry, "meta.json")) as f:
        meta = json.load(f)
    pixels, offsets, sizes = (os.path.join(entry, f"{name}.npy")
                              for name in ("pixels", "offsets", "sizes"))
    return ResizedImages(np.load(pixels, mmap_mode="r", allow_pickle=False),
                         np.load(offsets, allow_pickle=False), np.load(sizes, allow_pickle=False),
                         int(meta["channels"]))


# -- the per-batch hook ------------------------------------------------------------------

@dataclasses.dataclass
class Augment:
    """A training Dataset's augmentation. `rows[i]`: the source image of dataset row i (the
    training rows of a val_fraction split). `open_images`: the resized images, opened by
    ready() (make_iter calls it, in the caller's thread, before any batch)."""
    seed: int
    shape: Tuple[int, int, int]
    mirror: bool
    rows: np.ndarray
    open_images: Optional[Callable[[], ResizedImages]] = None  # rand_crop only
    images: Optional[ResizedImages] = None

    @property
    def crop(self) -> bool:
        return self.open_images is not None

    def ready(self) -> None:
        if self.crop and self.images is None:
            self.images = self.open_images()

    def for_epoch(self, epoch: int, batch_size: int, rank: int = 0) -> "EpochAugment":
        self.ready()
        return EpochAugment(self, epoch, batch_size, rank)


@dataclasses.dataclass
class EpochAugment:
    """The hook iterators.epoch_chunks calls once per chunk of an epoch's batches."""
    augment: Augment
    epoch: int
    batch_size: int
    rank: int

    @property
    def crops(self) -> bool:
        """The hook makes the pixels itself (the centre-cropped ones are not gathered)."""
        return self.augment.crop

    def draws(self, batch: int, images: np.ndarray) -> Tuple[Optional[np.ndarray],
                                                              Optional[np.ndarray],
                                                              Optional[np.ndarray]]:
        """Batch `batch`'s (tops, lefts, flips) for its source images (None when off)."""
        aug = self.augment
        key = [aug.seed, self.epoch, batch, self.rank]  # train.seed: 0..2**32-1
        tops = lefts = flips = None
        if aug.images is not None:
            _, height, width = aug.shape
            size = aug.images.sizes[images]
            rng = np.random.default_rng(key + [CROP_STREAM])
            tops = rng.integers(0, size[:, 0] - height + 1)
            lefts = rng.integers(0, size[:, 1] - width + 1)
        if aug.mirror:
            flips = np.random.default_rng(key + [MIRROR_STREAM]).random(len(images)) < 0.5
        return tops, lefts, flips

    def __call__(self, pixels: Optional[np.ndarray], idx: np.ndarray, first_batch: int
                 ) -> np.ndarray:
        """The chunk's samples (dataset rows `idx`, whole batches from `first_batch` on),
        augmented: cropped from the resized images (`pixels` None) or `pixels` (the gathered
        centre crops) mirrored."""
        aug = self.augment
        out = pixels if pixels is not None else \
            np.empty((len(idx),) + tuple(aug.shape), np.float32)
        for k, start in enumerate(range(0, len(idx), self.batch_size)):
            part = slice(start, start + self.batch_size)
            images = aug.rows[idx[part]]
            tops, lefts, flips = self.draws(first_batch + k, images)
            if aug.images is not None:
                out[part] = aug.images.crops(images, tops, lefts, *aug.shape[1:])
            if flips is not None:
                out[part][flips] = out[part][flips][..., ::-1]
        return out


def augmenter(spec: "Spec", options: ReadOptions, identity: Optional[str], rows: np.ndarray,
              cache_dir: str) -> Optional[Augment]:
    """The training Dataset's Augment, or None without rand_crop / rand_mirror. `options`:
    the training source's (ImageReadOptions: check_augment_keys allows image formats only);
    `identity`: its Table's, which keys the cache entry; `rows`: its training rows."""
    source = spec.data.train if spec.data is not None else None
    if source is None or not (source.rand_crop or source.rand_mirror) or \
            not isinstance(options, ImageReadOptions):
        return None
    path, fmt, image_options = spec.resolve(source.path), source_format(source), options
    opener = (lambda: resized_images(path, fmt, image_options, identity or path, cache_dir)) \
        if source.rand_crop else None
    shape = (options.shape[0], options.shape[1], options.shape[2])
    return Augment(spec.train.seed, shape, bool(source.rand_mirror), np.asarray(rows, np.int64),
                   opener)
