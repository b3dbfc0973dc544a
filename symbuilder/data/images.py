"""Image sources: `format: recordio` (im2rec's .rec + .idx) and `format: image_folder` (one
sub-folder per class), decoded and resized exactly as mx.io.ImageRecordIter does.

The decoder is mx.io.ImageRecordIter itself (resize, centre crop, no mean or std, no
shuffle) on a .rec whose every record frame and image header were checked first: the
source's own .rec, or a folder's file bytes packed into temporary ones. What the check
does not vouch for (another format, a damaged or too small image, an MXNetError, a batch
whose labels are not the expected ones) goes down the per-image path from the first row
not delivered: `mx.image.imdecode` (flag 0 for one channel, 1 for three: ImageRecordIter's
choice), `mx.image.resize_short` with ImageRecordIter's `resize`
(shorter side) and `inter_method`, a centre crop at ImageRecordIter's integer offsets; it
locates what is wrong. Either way the pixels are bit-identical to ImageRecordIter's output
without augmentation (tests/test_images.py: every inter_method, grey, RGB, RGBA, palette,
CMYK, both paths). A sample is (C, H, W) float32 in pixel units 0..255, RGB.

Channels: an image whose channel count is not input.shape's C is refused, named, unless the
source says `convert_channels: true`; then it is decoded to C as ImageRecordIter decodes
every image, silently (grey replicated, alpha dropped, CMYK converted). Refused by default
because a grey image in an RGB set is more often a mistake than a choice, and a silent
conversion changes what the statistics and the model see; the key exists because real
sets (ImageNet's train set holds a few grey and CMYK JPEGs) train through ImageRecordIter.

Speed (tests/benchmarks/bench_images.py, 1000 160x120 JPEGs to 3x112x112, interleaved,
the 2-core machine under load ~1.5..2.7): recordio 0.87..1.04x ImageRecordIter's own
samples/s (median of 7 rounds, seven runs; 1.01x the last), image_folder 0.72..0.85x (it
packs the files first). The per-image path ran at 0.53..0.58x.

Memory: images are decoded DECODE_ROWS at a time. When the decoded pixels would exceed
sources.STREAM_BYTES (or `stream: true`), the blocks go into a float32 .npy in the build's
cache (sources' staged entries, keyed by every file's path, size and mtime and the decoding
options) and are memory-mapped from there, so a second build decodes nothing and resident
memory stays one block. The input layer's statistics (normalize.array_stats over the
training split) are therefore over the resized, centre-cropped pixels: the distribution the
model is served.
Random augmentation (rand_crop, rand_mirror, training split only) is data.augment's, per
batch; rand_crop crops from an uncropped uint8 copy of the resized images (encoded_images).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import mmap
import os
import struct
import tempfile
import zlib
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..cxxlog import cxx_log_silenced  # ImageRecordIter's "use N threads" INFO line
from ..errors import DataError, mxnet_message
from .sources import (CACHE_VERSION, STREAM_BYTES, NpyWriter, ReadOptions, SourceKeyError, Table,
                      load_entry, staged_entry, write_json, cache_entry, display_path,
                      file_identity, register_source, source_format)

if TYPE_CHECKING:  # spec.model imports sources, which imports this module
    from ..spec.model import SourceSpec, Spec

IMAGE_FORMATS = ("recordio", "image_folder")
# What im2rec --list and gluon's ImageFolderDataset take as images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
INTER_METHODS = (0, 1, 2, 3, 4, 9)  # ImageRecordIter's: nearest, bilinear, cubic, area,
#                                     lanczos4, auto (10, random, is an augmentation)
# Images decoded per block: bounds transient memory on any data size. On the per-image
# path a block is queued on MXNet's engine whole before any is read back (1000 160x120
# JPEGs to 3x112x112, loaded 2-core machine: one image at a time ran at 0.41x
# ImageRecordIter's samples/s, a queued block at 0.53..0.58x: MXNet's Python per image;
# Python threads gave 1.2x, MXNET_CPU_WORKER_NTHREADS=2 0.52x).
DECODE_ROWS = 256
# ImageRecordIter's batch when it decodes: about RECORD_ITER_BYTES of uint8 pixels, a power
# of two from 32 to DECODE_ROWS rows. 1000 JPEGs to 3x112x112, interleaved: 32 rows ran at
# 0.98..1.03x the speed of 50, 256 at 0.80..0.85x; 3,594 PNGs to 3x32x32: 32 rows spent a
# third of the time in Python per batch. It decodes a folder's part (DECODE_ROWS) ahead.
RECORD_ITER_BYTES = 32 * 3 * 112 * 112
RECORD_ITER_DTYPE = "uint8"  # widened by numpy: a quarter of the bytes written and copied


@dataclasses.dataclass
class ImageReadOptions(ReadOptions):
    """ReadOptions plus what an image source needs from the spec (input.shape and the
    SourceSpec's image keys)."""
    shape: Tuple[int, int, int] = (3, 224, 224)  # (C, H, W): C 1 (grey) or 3 (RGB)
    resize: Optional[int] = None     # shorter side resized to this first (ImageRecordIter)
    inter_method: int = 1            # OpenCV interpolation, ImageRecordIter's codes
    idx: Optional[str] = None        # recordio: the .idx file (default: beside the .rec)
    label_width: int = 1             # recordio: labels per record header
    convert_channels: bool = False   # another channel count: decoded to C (ImageRecordIter's
    #                                  silent conversion) instead of refused


def image_read_options(spec: "Spec", source: "SourceSpec", options: ReadOptions) -> ReadOptions:
    """`options` extended for an image format (unchanged for any other): what data.py's
    reader options need from the spec. A located SpecError when input.shape is no image."""
    if source_format(source) not in IMAGE_FORMATS:
        return options
    items = spec.all_inputs
    shape = tuple(items[0].shape) if len(items) == 1 else ()
    if len(shape) != 3 or shape[0] not in (1, 3):
        where = spec.input_path(0) + (("shape",) if len(items) == 1 else ())
        raise spec.error(where, f"format: {source_format(source)} needs one input with shape "
                         f"[C, H, W], C 1 (grey) or 3 (RGB); received "
                         f"{list(shape) if len(items) == 1 else f'{len(items)} inputs'}",
                         DataError)
    return ImageReadOptions(**dataclasses.asdict(options), shape=shape,  # type: ignore[arg-type]
                            resize=source.resize,
                            inter_method=1 if source.inter_method is None else source.inter_method,
                            idx=source.idx, label_width=source.label_width or 1,
                            convert_channels=bool(source.convert_channels))


# -- decoding ------------------------------------------------------------------------------

def image_header(buf: bytes) -> Optional[Tuple[int, int, int]]:
    """(channels, height, width) from a PNG's or JPEG's header, None for other formats;
    ValueError for a damaged PNG (a chunk's CRC) or a size MXNet cannot hold. Read before
    decoding: the decoder converts channels silently (grey to RGB, RGBA to RGB), and a
    corrupt header's size makes MXNet try to allocate it (seen: 8e18 elements, a failed
    allocation that breaks the engine until exit)."""
    found = _png_header(buf) if buf[:8] == b"\x89PNG\r\n\x1a\n" else \
        _jpeg_header(buf) if buf[:2] == b"\xff\xd8" else None
    if found is not None and found[1] * found[2] * 4 >= MAX_PIXELS:
        raise ValueError(f"not a decodable image (its header says {found[1]}x{found[2]} "
                         "pixels: damaged, or too large for MXNet's 32-bit tensors)")
    return found


MAX_PIXELS = 2 ** 31  # values in one MXNet tensor (the wheel's 32-bit indexing)


def _png_header(buf: bytes) -> Tuple[int, int, int]:
    """A PNG's (channels, height, width), after checking every chunk's CRC: libpng decodes
    some damaged files anyway (a damaged IDAT name gave an image, with a libpng line on
    stderr), and a damaged size is an allocation that breaks MXNet."""
    pos, header = 8, None
    while True:
        if pos + 12 > len(buf):
            raise ValueError("not a decodable image (a truncated PNG file)")
        size, kind = struct.unpack(">I4s", buf[pos:pos + 8])
        body = buf[pos + 4:pos + 8 + size]
        if pos + 12 + size > len(buf) or \
                zlib.crc32(body) != struct.unpack(">I", buf[pos + 8 + size:pos + 12 + size])[0]:
            raise ValueError(f"not a decodable image (a damaged PNG chunk at byte {pos})")
        if kind == b"IHDR" and size == 13:
            width, height = struct.unpack(">II", body[4:12])
            header = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(body[13], 0), height, width
        if kind == b"IEND":
            break
        pos += 12 + size
    if header is None:
        raise ValueError("not a decodable image (a PNG file without its IHDR header)")
    return header


def _jpeg_header(buf: bytes) -> Optional[Tuple[int, int, int]]:
    pos = 2
    while pos + 9 < len(buf) and buf[pos] == 0xFF:
        marker = buf[pos + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack(">HH", buf[pos + 5:pos + 9])
            return buf[pos + 9], height, width
        pos += 2 + struct.unpack(">H", buf[pos + 2:pos + 4])[0]
    return None  # no frame header found: the decoder says what is wrong


def decode_image(buf: bytes, options: ImageReadOptions) -> np.ndarray:
    """One encoded image -> (C, H, W) float32 pixels, as ImageRecordIter makes them without
    augmentation. ValueError says why an image cannot be (the caller locates it)."""
    return finish_decode(start_decode(buf, options), options)


def start_decode(buf: bytes, options: ImageReadOptions, array: Any = None) -> Any:
    """Check the header (damage, size), then queue the decode and resize on MXNet's engine
    (an NDArray still being computed): a block of images queued before any is read keeps
    the engine's workers busy while Python queues the next. `array`: `buf` as an NDArray
    already. Another channel count than options.shape[0] is a ValueError, or with
    options.convert_channels decoded to it, as ImageRecordIter does."""
    import mxnet as mx
    channels = options.shape[0]
    header = image_header(buf)
    if header is not None and header[0] != channels and not options.convert_channels:
        raise ValueError(channel_mismatch(header[0], channels))
    try:
        img = mx.image.imdecode(buf if array is None else array,
                                flag=0 if channels == 1 else 1)
        if options.resize:
            img = mx.image.resize_short(img, options.resize, interp=options.inter_method)
    except mx.base.MXNetError as e:
        raise ValueError(f"not a decodable image ({_mx_reason(e)})") from None
    return img


_CHANNEL_NAMES = {1: " (grey)", 2: " (grey + alpha)", 3: " (RGB)", 4: " (RGBA or CMYK)"}


def channel_mismatch(found: int, wanted: int) -> str:
    return (f"the image has {found} channels{_CHANNEL_NAMES.get(found, '')}, but input.shape "
            f"asks for {wanted}; convert the image, change input.shape[0], or set "
            "convert_channels: true on the data source (ImageRecordIter's silent conversion)")


def finish_decode(img: Any, options: ImageReadOptions) -> np.ndarray:
    """Wait for a start_decode result; its centre crop as (C, H, W) float32."""
    import mxnet as mx
    try:
        pixels = img.asnumpy()
    except mx.base.MXNetError as e:
        raise ValueError(f"not a decodable image ({_mx_reason(e)})") from None
    _, height, width = options.shape
    return center_crop(pixels, height, width, options.resize).transpose(2, 0, 1) \
        .astype(np.float32)


def _mx_reason(error: BaseException) -> str:
    return mxnet_message(error)


def center_crop(pixels: np.ndarray, height: int, width: int, resize: Optional[int]) -> np.ndarray:
    """The (height, width) centre of an (h, w, c) image, at ImageRecordIter's offsets
    ((h - height) // 2, (w - width) // 2)."""
    h, w = pixels.shape[:2]
    if h < height or w < width:
        hint = (f"resize: {max(height, width)} scales the shorter side up first" if not resize
                else f"resize: {resize} is smaller than that")
        raise ValueError(f"the image is {h}x{w} (HxW){' after resize' if resize else ''}, "
                         f"smaller than input.shape's {height}x{width}; {hint}")
    top, left = (h - height) // 2, (w - width) // 2
    return pixels[top:top + height, left:left + width]


# -- the two sources -----------------------------------------------------------------------

@dataclasses.dataclass
class _Listing:
    """What an image source holds, before decoding: one `fetch(i) -> bytes` per image,
    `where(i)` locating image i in an error (file, message prefix), and the labels."""
    count: int
    fetch: Callable[[int], bytes]
    where: Callable[[int], Tuple[str, str]]
    labels: np.ndarray
    identity: str  # every file's path, size and mtime, hashed with the decoding options
    record_file: Optional[str] = None  # a .rec framing exactly these images, in this order,
    #                                    each of them _fits
    record_index: Optional[str] = None  # its .idx, when its lines are in that order too


def _blocks(listing: _Listing, options: ImageReadOptions,
            into: Optional[np.ndarray] = None) -> Iterator[np.ndarray]:
    """The images decoded DECODE_ROWS at a time, in file order. Where every image's header
    is sound (a PNG or JPEG, undamaged, large enough for the crop), ImageRecordIter itself
    decodes them from a .rec (the source's own, or the folder's files packed into one per
    DECODE_ROWS images); its batches are checked against the expected labels. From the
    first row it did not deliver, the per-image path decodes and locates what is wrong.
    `into`: the (count, C, H, W) array the blocks are views of (decoded in place), if any."""
    done = 0
    with _record_parts(listing, options) as parts:
        for block in _record_iter_blocks(parts, listing, options, into):
            done += len(block)
            yield block
    yield from _image_blocks(listing, options, done, into)


def _image_blocks(listing: _Listing, options: ImageReadOptions, first: int = 0,
                  into: Optional[np.ndarray] = None) -> Iterator[np.ndarray]:
    """Images `first`.. decoded one by one, DECODE_ROWS at a time, in file order: a block is
    queued on MXNet's engine whole, then read back. The first bad image in file order is the
    one reported, located."""
    for start in range(first, listing.count, DECODE_ROWS):
        stop = min(listing.count, start + DECODE_ROWS)
        block = _block(into, start, stop, options)
        # The bytes become NDArrays before anything is queued: copying into one waits for
        # the engine's queue, which would serialise every copy behind the decodes before it.
        encoded = [listing.fetch(i) for i in range(start, stop)]
        arrays = [_as_ndarray(buf) for buf in encoded]
        queued, refused = [], None
        for i, (buf, array) in enumerate(zip(encoded, arrays), start):
            try:
                queued.append(start_decode(buf, options, array))
            except ValueError as e:  # raised once the images queued before it are read
                refused = _located(listing, i, e)
                break
        for i, img in enumerate(queued):
            try:
                block[i] = finish_decode(img, options)
            except ValueError as e:
                raise _located(listing, start + i, e) from None
        if refused is not None:
            raise refused
        yield block


def _block(into: Optional[np.ndarray], start: int, stop: int,
           options: ImageReadOptions) -> np.ndarray:
    return np.empty((stop - start,) + tuple(options.shape), np.float32) if into is None \
        else into[start:stop]


def _copy_rows(array: Any, out: np.ndarray) -> None:
    """The first len(out) rows of the float32 NDArray `array` into `out`, one copy: what
    NDArray.asnumpy does into a fresh array, then a second copy to `out`, would cost."""
    import ctypes
    import mxnet as mx
    rows = array[0:len(out)] if len(out) < array.shape[0] else array
    mx.base.check_call(mx.base._LIB.MXNDArraySyncCopyToCPU(
        rows.handle, out.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(out.size)))


def _as_ndarray(buf: bytes) -> Any:
    """`buf` as the uint8 NDArray mx.image.imdecode makes of bytes (the same call)."""
    import mxnet as mx
    return mx.nd.array(np.frombuffer(buf, dtype=np.uint8), dtype=np.uint8)


def _located(listing: _Listing, index: int, error: ValueError) -> DataError:
    file, prefix = listing.where(index)
    return DataError(f"{prefix}{error}", file=file)


@dataclasses.dataclass
class _Part:
    """Rows first..stop of a listing in a .rec that holds exactly them, in order, each one
    _fits; its .idx if its lines are in that order too; the labels ImageRecordIter must
    return for them."""
    rec: str
    idx: Optional[str]
    first: int
    stop: int
    marks: np.ndarray  # (stop - first, label_width) float32
    packed: bool = False  # written here (removed once decoded), not the source's own


@contextlib.contextmanager
def _record_parts(listing: _Listing, options: ImageReadOptions) -> Iterator[Iterator[_Part]]:
    """The .rec parts ImageRecordIter may decode, made lazily, ending where an image fails
    _fits. ImageRecordIter aborts the process on a damaged record frame, pads a small image
    silently and decodes a 30000x30000 JPEG into 2.7 GB: nothing unchecked reaches it. The
    source's own .rec is one part (read_recordio checked it); a folder's file bytes are
    packed, not re-encoded, DECODE_ROWS images a part, labelled with their row number
    (the order check), into a temporary folder: the next part is packed while
    ImageRecordIter decodes the one before (no faster than one .rec on the loaded 2-core
    machine, 0.22 against 0.21..0.25 s for 1000 JPEGs, but the folder holds two parts at
    most, not a copy of the data set, and a bad image sends only its part and those after
    it down the per-image path)."""
    if listing.record_file is not None or listing.count == 0:
        marks = np.asarray(listing.labels, np.float32).reshape(listing.count, -1)
        yield iter([_Part(listing.record_file, listing.record_index, 0, listing.count, marks)]
                   if listing.record_file is not None else [])
        return
    # In the build's cache if it is there already (a refusal must leave nothing behind).
    cache = options.cache_dir if options.cache_dir and os.path.isdir(options.cache_dir) \
        else None
    with tempfile.TemporaryDirectory(prefix=".images-", dir=cache) as folder:
        yield (part for part in (_packed(listing, options, folder, start) for start in
                                 range(0, listing.count, DECODE_ROWS)))


def _packed(listing: _Listing, options: ImageReadOptions, folder: str,
            first: int) -> Optional[_Part]:
    """Images first.. (DECODE_ROWS of them) packed into a .rec + .idx in `folder`, or None
    at the first that does not _fit (the part before it is dropped with it)."""
    import mxnet as mx
    stop = min(listing.count, first + DECODE_ROWS)
    name = os.path.join(folder, f"{first}")
    marks = (np.arange(first, stop) % 2 ** 24).astype(np.float32)  # exact in float32
    writer = mx.recordio.MXIndexedRecordIO(name + ".idx", name + ".rec", "w")
    try:
        for i in range(first, stop):
            buf = listing.fetch(i)
            if not _fits(buf, options):
                return None
            writer.write_idx(i, mx.recordio.pack(
                mx.recordio.IRHeader(0, float(marks[i - first]), i, 0), buf))
    finally:
        writer.close()
    return _Part(name + ".rec", name + ".idx", first, stop, marks[:, None], packed=True)


def _fits(buf: bytes, options: ImageReadOptions) -> bool:
    """Whether ImageRecordIter may decode `buf`: a PNG or JPEG whose header is undamaged and
    large enough for the centre crop after resize, either way round (a JPEG's EXIF
    orientation may turn it; ImageRecordIter would pad a small image with 255s silently).
    Everything else goes to the per-image path, which says what is wrong."""
    try:
        header = image_header(buf)
    except ValueError:
        return False
    if header is None or min(header[1:]) == 0:
        return False
    if header[0] != options.shape[0] and not options.convert_channels:
        return False  # the per-image path names it
    _, height, width = options.shape
    for h, w in (header[1:], header[:0:-1]):
        if options.resize:  # ImageRecordIter's and mx.image.resize_short's integer sizes
            h, w = (options.resize * h // w, options.resize) if h > w else \
                (options.resize, options.resize * w // h)
        if h < height or w < width:
            return False
    return True


def _record_iter_blocks(parts: Iterator[Optional[_Part]], listing: _Listing,
                        options: ImageReadOptions,
                        into: Optional[np.ndarray]) -> Iterator[np.ndarray]:
    """mx.io.ImageRecordIter's output for each part in turn (resize, centre crop, no mean
    or std, in order) in blocks of DECODE_ROWS rows; the next part is made while the
    iterator decodes. It stops at a missing part, an MXNetError or a batch whose labels are
    not the expected ones (the caller goes on image by image from there)."""
    import mxnet as mx
    part = next(parts, None)
    size = _record_iter_batch(options)
    staging = np.empty((size,) + tuple(options.shape), RECORD_ITER_DTYPE)
    try:
        while part is not None:
            batches = _record_iter(part, options)
            following = next(parts, None)  # made while `batches` decodes in its thread
            for start in range(part.first, part.stop, DECODE_ROWS):
                block = _block(into, start, min(part.stop, start + DECODE_ROWS), options)
                for at in range(0, len(block), size):
                    batch = batches.next()
                    rows = min(size, len(block) - at)  # the last batch: garbage after its rows
                    labels = batch.label[0].asnumpy()[:rows].reshape(rows, -1)
                    first = start - part.first + at
                    if not np.array_equal(labels, part.marks[first:first + rows]):
                        return
                    _copy_rows(batch.data[0], staging[:rows])
                    block[at:at + rows] = staging[:rows]
                yield block
            del batches
            if part.packed:  # the temporary folder holds one or two parts, not the data set
                os.remove(part.rec)
                os.remove(part.idx)  # type: ignore[arg-type]
            part = following
    except (mx.base.MXNetError, StopIteration):
        return


def _record_iter_batch(options: ImageReadOptions) -> int:
    """ImageRecordIter's batch size for this shape (a divisor of DECODE_ROWS)."""
    rows = RECORD_ITER_BYTES // int(np.prod(options.shape))
    return min(DECODE_ROWS, max(32, 1 << max(rows, 1).bit_length() - 1))


def _record_iter(part: _Part, options: ImageReadOptions) -> Any:
    import mxnet as mx
    more = {} if part.idx is None else {"path_imgidx": part.idx}  # 2x faster with it
    size = _record_iter_batch(options)
    with cxx_log_silenced():  # round_batch=False: no wrap-around re-reading the start
        return mx.io.ImageRecordIter(
            path_imgrec=part.rec, data_shape=options.shape, batch_size=size,
            label_width=part.marks.shape[1], resize=options.resize or -1, shuffle=False,
            inter_method=options.inter_method, round_batch=False,
            prefetch_buffer=DECODE_ROWS // size, dtype=RECORD_ITER_DTYPE, **more)


def _image_table(listing: _Listing, path: str, shown: str, options: ImageReadOptions) -> Table:
    """Decode every image into memory, or (large, or `stream: true`) into the cache."""
    names = [f"x{i}" for i in range(int(np.prod(options.shape)))]
    nbytes = listing.count * len(names) * 4
    cache = options.cache_dir is not None and options.stream is not False and \
        (options.stream is True or nbytes > STREAM_BYTES)
    if not cache:
        features = np.empty((listing.count,) + tuple(options.shape), np.float32)
        for _ in _blocks(listing, options, into=features):
            pass
        return Table(features, listing.labels, names, shown, first_data_line=0,
                     identity=listing.identity, finite_checked=True)
    entry = cache_entry(options.cache_dir, path, listing.identity)  # type: ignore[arg-type]
    if not os.path.exists(os.path.join(entry, "meta.json")):
        with staged_entry(entry, path) as tmp:
            with NpyWriter(os.path.join(tmp, "features.npy")) as out:
                for block in _blocks(listing, options):
                    out.write(block)
                out.finish_shape(tuple(options.shape))
            labels = listing.labels
            np.save(os.path.join(tmp, "labels.npy"), labels, allow_pickle=False)
            write_json(os.path.join(tmp, "meta.json"), {
                "version": CACHE_VERSION, "source": os.path.abspath(path),
                "identity": listing.identity, "rows": listing.count, "feature_names": names,
                "first_data_line": 0, "labels": "str" if labels.dtype.kind == "U"
                else str(labels.dtype)})
    return load_entry(entry, shown, listing.identity)


def _identity(fmt: str, files: Sequence[str], options: ImageReadOptions) -> str:
    digest = hashlib.sha256(json.dumps(
        {"v": CACHE_VERSION, "fmt": fmt, "shape": list(options.shape), "resize": options.resize,
         "inter": options.inter_method, "label_width": options.label_width},
        sort_keys=True).encode())
    for name in files:
        digest.update(file_identity(name).encode() + b"\n")
    return digest.hexdigest()


def _image_options(options: Optional[ReadOptions], shown: str) -> ImageReadOptions:
    if not isinstance(options, ImageReadOptions):  # read_table called without the spec
        raise DataError("an image source needs the input shape (C, H, W): read it through "
                        "a spec", file=shown)
    return options


@register_source("recordio", extensions=("rec",))
def read_recordio(path: str, *, label: Optional[str], features: Optional[str], shown: str,
                  options: Optional[ReadOptions] = None) -> Table:
    """An im2rec .rec file through its .idx, records in file order (ImageRecordIter's
    order without shuffle); labels from the record headers."""
    import mxnet as mx
    opts = _image_options(options, shown)
    idx_path, idx_shown = _idx_file(path, shown, opts.idx)
    keys, offsets, in_order = _read_idx(idx_path, idx_shown, os.path.getsize(path))
    record = mx.recordio.MXIndexedRecordIO(idx_path, path, "r")
    with open(path, "rb") as f:  # read through a map: a tenth of read_idx's time a record
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if offsets else b""
    headers: List[Any] = []

    def where(i: int) -> Tuple[str, str]:
        return shown, f"record {i} (key {keys[i]}, offset {offsets[i]}): "

    def fetch(i: int) -> bytes:
        return _unpacked(record, keys[i], where(i), _framed(data, offsets[i]))[1]

    end, fits = 0, True  # end: where record i starts if the records are back to back
    for i in range(len(keys)):  # headers first: a label problem is found before decoding
        header, image, size = _unpacked(record, keys[i], where(i), _framed(data, offsets[i]))
        headers.append(header)
        end = end + 8 + -(-size // 4) * 4 if end == offsets[i] else -1  # magic, length, padded
        fits = fits and _fits(image, opts)
    labels = _header_labels(headers, opts.label_width, where)
    listing = _Listing(len(keys), fetch, where, labels,
                       _identity("recordio", [path, idx_path], opts),
                       record_file=path if fits and end == os.path.getsize(path) else None,
                       record_index=idx_path if in_order else None)
    try:
        return _image_table(listing, path, shown, opts)
    finally:
        record.close()
        if offsets:
            data.close()  # type: ignore[union-attr]


def _idx_file(path: str, shown: str, idx: Optional[str]) -> Tuple[str, str]:
    if idx is None:
        idx_path = os.path.splitext(path)[0] + ".idx"
        idx_shown = os.path.splitext(shown)[0] + ".idx"
    else:
        idx_path = idx if os.path.isabs(idx) else os.path.join(os.path.dirname(path), idx)
        idx_shown = idx if os.path.isabs(idx) else os.path.join(os.path.dirname(shown), idx)
    if not os.path.isfile(idx_path):
        how = "im2rec writes it beside the .rec; or name it with idx:" if idx is None else \
            "idx: names it"
        message = f"no index file '{idx_shown}' ({how})"
        raise SourceKeyError("idx", message, f"{shown}: {message}", file=shown)
    return idx_path, idx_shown


def _read_idx(idx_path: str, idx_shown: str,
              rec_size: int) -> Tuple[List[int], List[int], bool]:
    """The index's keys and offsets, sorted by offset (the .rec's own order), and whether
    its lines were in that order already."""
    pairs = []
    with open(idx_path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():  # MXIndexedRecordIO reads every line: int('') raised
                raise DataError("a blank line (MXNet's .idx reader fails on it); remove it",
                                file=idx_shown, line=number)
            parts = raw.split(b"\t")
            try:
                key, offset = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                raise DataError("expected 'key<TAB>offset' (an im2rec .idx file)",
                                file=idx_shown, line=number) from None
            if not 0 <= offset < rec_size:
                raise DataError(f"offset {offset} is outside the .rec file ({rec_size} bytes)",
                                file=idx_shown, line=number)
            pairs.append((offset, key))
    if not pairs:  # zero records: nothing to train on or predict (numpy failed on it later)
        raise DataError("no records listed (an empty .idx file); index the .rec again with "
                        "im2rec", file=idx_shown)
    in_order = all(a < b for a, b in zip(pairs, pairs[1:]))
    pairs.sort()
    return [k for _, k in pairs], [o for o, _ in pairs], in_order


RECORD_MAGIC = 0xced7230a  # dmlc RecordIO's kMagic


def _framed(data: Any, offset: int) -> Optional[bytes]:
    """The record at `offset` of the mapped .rec, as MXRecordIO reads it, when it is one
    whole part behind the magic number; None otherwise (MXRecordIO then reads it: it joins
    a multi-part record, and words what is wrong with a damaged one)."""
    if offset + 8 > len(data):
        return None
    magic, word = struct.unpack_from("<II", data, offset)
    size = word & ((1 << 29) - 1)  # the top 3 bits: the part flag
    if magic != RECORD_MAGIC or word >> 29 or offset + 8 + size > len(data):
        return None
    return data[offset + 8:offset + 8 + size]


def _unpacked(record: Any, key: int, where: Tuple[str, str],
              raw: Optional[bytes] = None) -> Tuple[Any, bytes, int]:
    """(header, image bytes, the record's size) of the record `key` (`raw`: read already)."""
    import mxnet as mx
    try:
        raw = record.read_idx(key) if raw is None else raw
        return mx.recordio.unpack(raw) + (len(raw),)
    except (mx.base.MXNetError, struct.error, ValueError) as e:
        reason = _mx_reason(e) if isinstance(e, mx.base.MXNetError) else str(e)
        raise DataError(f"{where[1]}not a readable RecordIO record ({reason}); the .rec "
                        "file is corrupt or does not match its .idx", file=where[0]) from None


def _header_labels(headers: Sequence[Any], width: int,
                   where: Callable[[int], Tuple[str, str]]) -> np.ndarray:
    """(N,) labels (width 1) or (N, width); whole numbers as int64 (class labels)."""
    if width == 1 and all(header.flag == 0 for header in headers):  # one float each: at once
        return _whole(np.array([header.label for header in headers], np.float64)[:, None],
                      where)[:, 0]
    out = np.empty((len(headers), width), np.float64)
    for i, header in enumerate(headers):
        value = np.atleast_1d(np.asarray(header.label, dtype=np.float64))
        if value.size != width:
            file, prefix = where(i)
            raise DataError(f"{prefix}the header holds {value.size} label values, but "
                            f"label_width is {width}", file=file)
        out[i] = value
    out = _whole(out, where)
    return out[:, 0] if width == 1 else out


def _whole(out: np.ndarray, where: Callable[[int], Tuple[str, str]]) -> np.ndarray:
    """(N, width) labels, refused where not finite; as int64 when all are whole numbers."""
    if not np.all(np.isfinite(out)):
        i = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        file, prefix = where(i)
        raise DataError(f"{prefix}label {out[i].tolist()} is not finite", file=file)
    return out.astype(np.int64) if np.all(out == np.round(out)) else out


@register_source("image_folder")
def read_image_folder(path: str, *, label: Optional[str], features: Optional[str], shown: str,
                      options: Optional[ReadOptions] = None) -> Table:
    """root/<class>/<image>: classes are the sub-folder names and images each folder's
    .jpg/.jpeg/.png files, both sorted as im2rec and gluon's ImageFolderDataset sort them."""
    opts = _image_options(options, shown)
    files, labels = list_image_folder(path, shown)

    def where(i: int) -> Tuple[str, str]:
        return display_path(files[i]), ""

    def fetch(i: int) -> bytes:
        with open(files[i], "rb") as f:
            return f.read()

    listing = _Listing(len(files), fetch, where, np.array(labels),
                       _identity("image_folder", files, opts))
    return _image_table(listing, path, shown, opts)


read_image_folder.reads_folder = True  # type: ignore[attr-defined]  # sources.read_table


def list_image_folder(path: str, shown: str) -> Tuple[List[str], List[str]]:
    """Every image's path and its class (folder) name, classes and files sorted."""
    if not os.path.isdir(path):
        what = "no such folder" if not os.path.exists(path) else "is a file, not a folder"
        raise SourceKeyError("path", f"{what} (image_folder: one sub-folder per class)",
                             f"{shown}: {what} (image_folder: one sub-folder per class)",
                             file=shown)
    classes = sorted(n for n in os.listdir(path)
                     if not n.startswith(".") and os.path.isdir(os.path.join(path, n)))
    if not classes:
        raise DataError("no class folders (image_folder: one sub-folder of images per class)",
                        file=shown)
    files, labels = [], []
    for name in classes:
        folder = os.path.join(path, name)
        images = sorted(f for f in os.listdir(folder) if not f.startswith(".") and
                        os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and
                        os.path.isfile(os.path.join(folder, f)))
        if not images:
            raise DataError(f"class folder '{name}' has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)})",
                            file=display_path(folder))
        files += [os.path.join(folder, f) for f in images]
        labels += [name] * len(images)
    return files, labels


def encoded_images(path: str, fmt: str, idx: Optional[str] = None) -> Iterator[bytes]:
    """Every image's encoded bytes, in the order read_recordio and read_image_folder give
    the rows: a second pass over a source they have read and checked already (augment.py's
    uncropped copy), so nothing here needs locating."""
    if fmt == "image_folder":
        for name in list_image_folder(path, path)[0]:
            with open(name, "rb") as f:
                yield f.read()
        return
    import mxnet as mx
    idx_path = _idx_file(path, path, idx)[0]
    keys = _read_idx(idx_path, idx_path, os.path.getsize(path))[0]
    record = mx.recordio.MXIndexedRecordIO(idx_path, path, "r")
    try:
        for i, key in enumerate(keys):
            yield _unpacked(record, key, (path, f"record {i}: "))[1]
    finally:
        record.close()


# -- statistics -----------------------------------------------------------

def pixel_statistics(mean: Sequence[float], var: Sequence[float]) -> Dict[str, Any]:
    """The input layer's exact statistics (a manifest's input_normalization exact_mean and
    exact_var) as image people know them: mean and std per channel in pixel units (0..255),
    RGB order, and ImageRecordIter's flag names (mean_r ... std_b) for a legacy pipeline
    that normalizes outside the model."""
    mean64 = np.asarray(mean, dtype=np.float64)
    std = np.sqrt(np.asarray(var, dtype=np.float64))
    out: Dict[str, Any] = {"order": "RGB" if len(mean64) == 3 else "grey",
                           "units": "pixel values 0..255 as decoded",
                           "mean": mean64.tolist(), "std": std.tolist()}
    if len(mean64) == 3:
        for i, c in enumerate("rgb"):
            out[f"mean_{c}"], out[f"std_{c}"] = float(mean64[i]), float(std[i])
    return out
