"""The digits (specs/data/digits.csv: 8x8 images, values 0..16) as real image files: PNGs in
an image folder (one sub-folder per class) and an im2rec-style .rec + .idx.

The images are never committed. Run `python tests/image_data.py` to render the data
specs/digits_images.yaml reads (specs/data/digits_images.rec/.idx, specs/data/digits_images/);
tests/conftest.py does so before a test session when they are missing.

Pixels: v * 255 / 16 rounded, upscaled 3x (nearest) to 24x24, and made RGB with a different
map per channel (R = p, G = 255 - p, B = p // 2) so every channel has its own statistics.
Records are packed with mx.recordio.pack (header + PNG bytes): mx.recordio.pack_img would
encode them with cv2, which mxnet's wheel does not bring.
"""
import csv
import io
import os
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "specs", "data", "digits.csv")
SCALE = 3  # 8x8 -> 24x24


def digits():
    """(N, 64) pixel values 0..16 and (N,) labels, read with the csv module."""
    with open(DIGITS, newline="") as f:
        rows = list(csv.reader(f))
    label = rows[0].index("digit")
    x = np.array([[int(v) for i, v in enumerate(r) if i != label] for r in rows[1:]])
    y = np.array([int(r[label]) for r in rows[1:]])
    return x, y


def render(x):
    """(N, 64) digit rows -> (N, 24, 24, 3) uint8 RGB images."""
    grey = np.round(x.reshape(-1, 8, 8) * 255.0 / 16.0).astype(np.uint8)
    grey = grey.repeat(SCALE, axis=1).repeat(SCALE, axis=2)
    return np.stack([grey, 255 - grey, grey // 2], axis=-1)


def png_bytes(image):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_image_folder(root, images, labels, names=None):
    """root/<label>/<name>.png; names default to the row number, zero-padded (file order =
    row order within a class)."""
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(root, str(label))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{names[i] if names else f'{i:05d}'}.png"), "wb") as f:
            f.write(png_bytes(image))
    return root


def write_recordio(prefix, images, labels, encode=png_bytes):
    """prefix.rec + prefix.idx, record i keyed i, its header labelled labels[i] (a number or
    a vector)."""
    import mxnet as mx
    record = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for i, (image, label) in enumerate(zip(images, labels)):
        vector = np.ndim(label) > 0
        header = mx.recordio.IRHeader(len(label) if vector else 0,
                                      list(map(float, label)) if vector else float(label), i, 0)
        record.write_idx(i, mx.recordio.pack(header, encode(image)))
    record.close()
    return prefix + ".rec"


def render_example(data_dir):
    """The example spec's data in `data_dir`, written into a staging folder and moved into
    place, so an interrupted render leaves nothing half-made under the final names."""
    x, y = digits()
    images = render(x)
    staging = os.path.join(data_dir, f".digits_images.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    write_image_folder(os.path.join(staging, "digits_images"), images, y)
    write_recordio(os.path.join(staging, "digits_images"), images, y)
    for name in ("digits_images.idx", "digits_images.rec", "digits_images"):
        os.replace(os.path.join(staging, name), os.path.join(data_dir, name))
    os.rmdir(staging)


def example_rendered(data_dir=os.path.join(ROOT, "specs", "data")):
    """Render the example's data unless it is there (the .idx is moved in first)."""
    if not os.path.exists(os.path.join(data_dir, "digits_images")):
        render_example(data_dir)


if __name__ == "__main__":
    example_rendered(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "specs", "data"))
