"""Image sources (symbuilder.data.images): pixels against mx.io.ImageRecordIter's own, statistics
against exact integer moments of the images as rendered, the example spec built to a practitioner's
accuracy and served raw pixels through ONNX Runtime, and every image mistake one located
line with exit 2 and nothing written."""
import os

import mxnet as mx
import numpy as np
import onnxruntime as ort
import pytest

import image_data
from helpers import ROOT, write_spec
from symbuilder.data import load_data, split_indices
from symbuilder.data.images import ImageReadOptions, pixel_statistics
from symbuilder.data.sources import read_table
from symbuilder.errors import DataError
from symbuilder.spec.load import load_spec
from symbuilder.graph import build_model
from symbuilder.inputlayer import calibrate
from test_data_errors import refused


def synthetic(n, channels, seed=0):
    """`n` random images of varied sizes (30..49 x 37), grey or RGB, as (array, bytes):
    even ones PNG, odd ones JPEG (lossy: what they decode to is whatever the decoder says)."""
    from PIL import Image
    import io
    rng = np.random.RandomState(seed)
    out = []
    for i in range(n):
        shape = (30 + i, 37) + ((3,) if channels == 3 else ())
        img = rng.randint(0, 256, shape).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG" if i % 2 == 0 else "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def exact_moments(pixels, channel_axis):
    """Per-channel mean and population variance of integer pixels, exactly (Python integers
    and fractions), then rounded once to float64: an oracle numpy's float64 var over several
    axes (3e-12 off here) is not."""
    from fractions import Fraction
    flat = np.moveaxis(np.asarray(pixels).astype(np.int64), channel_axis, 0)
    flat = flat.reshape(flat.shape[0], -1)
    n = flat.shape[1]
    s1 = [int(v) for v in flat.sum(axis=1)]
    s2 = [int(v) for v in (flat * flat).sum(axis=1)]
    mean = [float(Fraction(a, n)) for a in s1]
    var = [float(Fraction(n * b - a * a, n * n)) for a, b in zip(s1, s2)]
    return np.array(mean), np.array(var)


def record_iter_pixels(rec, shape, n, **kwargs):
    """ImageRecordIter's batch of all `n` records, no shuffle, no augmentation."""
    it = mx.io.ImageRecordIter(path_imgrec=rec, path_imgidx=rec[:-4] + ".idx",
                               data_shape=shape, batch_size=n, shuffle=False,
                               preprocess_threads=1, **kwargs)
    batch = it.next()
    return batch.data[0].asnumpy(), batch.label[0].asnumpy()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("inter_method", [0, 1, 2, 3, 4, 9])
def test_pixels_are_bit_identical_to_image_record_iter(tmp_path, channels, inter_method):
    encoded = synthetic(20, channels)
    rec = image_data.write_recordio(str(tmp_path / "d"), encoded, np.arange(20) % 3,
                                    encode=lambda b: b)
    shape = (channels, 28, 28)
    want, labels = record_iter_pixels(rec, shape, 20, resize=30, inter_method=inter_method)
    table = read_table(rec, "recordio", label=None, options=ImageReadOptions(
        shape=shape, resize=30, inter_method=inter_method))
    assert table.features.dtype == np.float32 and table.features.shape == (20,) + shape
    np.testing.assert_array_equal(table.features, want)
    np.testing.assert_array_equal(table.labels, labels.astype(np.int64))


def test_without_resize_the_centre_crop_is_image_record_iters(tmp_path):
    encoded = synthetic(20, 3, seed=1)
    rec = image_data.write_recordio(str(tmp_path / "d"), encoded, np.zeros(20),
                                    encode=lambda b: b)
    want, _ = record_iter_pixels(rec, (3, 25, 31), 20)
    table = read_table(rec, "recordio", label=None,
                       options=ImageReadOptions(shape=(3, 25, 31)))
    np.testing.assert_array_equal(table.features, want)


def test_vector_labels_come_from_the_header(tmp_path):
    images = image_data.render(image_data.digits()[0][:6])
    labels = np.arange(12, dtype=np.float64).reshape(6, 2) / 4
    rec = image_data.write_recordio(str(tmp_path / "d"), images, labels)
    table = read_table(rec, "recordio", label=None,
                       options=ImageReadOptions(shape=(3, 24, 24), label_width=2))
    np.testing.assert_array_equal(table.labels, labels)


def other_channels():
    """One image of each kind ImageRecordIter converts silently: grey, grey + alpha, RGB,
    RGBA and palette PNGs, grey, RGB and CMYK JPEGs (30x37), as (bytes, extension)."""
    from PIL import Image
    import io
    rng = np.random.RandomState(2)
    rgb = Image.fromarray(rng.randint(0, 256, (30, 37, 3)).astype(np.uint8))
    kinds = [(rgb.convert("L"), "PNG"), (rgb.convert("LA"), "PNG"), (rgb, "PNG"),
             (rgb.convert("RGBA"), "PNG"), (rgb.convert("P"), "PNG"), (rgb.convert("L"), "JPEG"),
             (rgb, "JPEG"), (rgb.convert("CMYK"), "JPEG")]
    out = []
    for image, fmt in kinds:
        buf = io.BytesIO()
        image.save(buf, format=fmt, quality=90)
        out.append((buf.getvalue(), "." + fmt.lower()))
    return out


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("path", ["ImageRecordIter", "per image"])
def test_other_channels_are_converted_as_image_record_iter_does(tmp_path, channels, path):
    """Decoded with flag 0 for C 1 and 1 for C 3, whatever the file holds. A BMP among the
    images (no PNG or JPEG header to check) sends the whole set down the per-image path."""
    from PIL import Image
    import io
    from symbuilder.data.images import _fits
    encoded = other_channels()
    if path == "per image":
        buf = io.BytesIO()
        Image.fromarray(np.full((30, 37, 3), 7, np.uint8)).save(buf, format="BMP")
        encoded.append((buf.getvalue(), ".bmp"))
    shape = (channels, 28, 28)
    options = ImageReadOptions(shape=shape, resize=30, convert_channels=True)
    assert all(_fits(b, options) for b, _ in encoded) == (path == "ImageRecordIter")
    rec = image_data.write_recordio(str(tmp_path / "d"), [b for b, _ in encoded],
                                    np.arange(len(encoded)), encode=lambda b: b)
    want, _ = record_iter_pixels(rec, shape, len(encoded), resize=30)
    table = read_table(rec, "recordio", label=None, options=options)
    np.testing.assert_array_equal(table.features, want)
    if path == "ImageRecordIter":  # the folder's bytes packed into a .rec, not re-encoded
        for i, (buf, ext) in enumerate(encoded):
            os.makedirs(tmp_path / "f" / "0", exist_ok=True)
            (tmp_path / "f" / "0" / f"{i:02d}{ext}").write_bytes(buf)
        tree = read_table(str(tmp_path / "f"), "image_folder", label=None, options=options)
        np.testing.assert_array_equal(tree.features, want)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("layout", ["recordio", "image_folder"])
def test_another_channel_count_is_refused_by_default_and_named(tmp_path, channels, layout):
    """Without convert_channels the first image whose channel count is not C is named, in
    file order, from either layout."""
    encoded = [e for e in other_channels() if e[1] == ".png"]  # grey, LA, RGB, RGBA, palette
    keep = [b for b, _ in encoded if _header_channels(b) == channels]
    other = next(b for b, _ in encoded if _header_channels(b) != channels)
    images = keep * 3 + [other] + keep
    options = ImageReadOptions(shape=(channels, 28, 28), resize=30)
    if layout == "recordio":
        source = image_data.write_recordio(str(tmp_path / "d"), images, np.arange(len(images)),
                                           encode=lambda b: b)
    else:
        for i, buf in enumerate(images):
            os.makedirs(tmp_path / "f" / "0", exist_ok=True)
            (tmp_path / "f" / "0" / f"{i:02d}.png").write_bytes(buf)
        source = str(tmp_path / "f")
    with pytest.raises(DataError) as e:
        read_table(source, layout, label=None, options=options)
    at = len(keep) * 3
    where = f"record {at} " if layout == "recordio" else f"{at:02d}.png"
    assert where in str(e.value) and f"input.shape asks for {channels}" in str(e.value)
    assert "convert_channels: true" in str(e.value)


def _header_channels(buf):
    from symbuilder.data.images import image_header
    return image_header(buf)[0]


@pytest.mark.parametrize("layout", ["recordio", "image_folder"])
def test_blocks_come_back_in_file_order(tmp_path, layout):
    """600 records, three DECODE_ROWS blocks: each row is ImageRecordIter's (one thread,
    one batch) at the same place, from either layout."""
    x, _ = image_data.digits()
    images = image_data.render(x[:600])
    rec = image_data.write_recordio(str(tmp_path / "d"), images, np.arange(600))
    image_data.write_image_folder(str(tmp_path / "f"), images, np.zeros(600, int))
    want, labels = record_iter_pixels(rec, (3, 20, 20), 600)
    assert labels.tolist() == list(range(600))
    source = rec if layout == "recordio" else str(tmp_path / "f")
    table = read_table(source, layout, label=None, options=ImageReadOptions(shape=(3, 20, 20)))
    np.testing.assert_array_equal(table.features, want)


def test_the_packed_folder_leaves_only_the_cache_entry(tmp_path):
    x, y = image_data.digits()
    image_data.write_image_folder(str(tmp_path / "f"), image_data.render(x[:30]), y[:30])
    cache = tmp_path / "cache"
    os.makedirs(cache)
    options = ImageReadOptions(shape=(3, 24, 24), cache_dir=str(cache), stream=True)
    table = read_table(str(tmp_path / "f"), "image_folder", label=None, options=options)
    assert table.on_disk and os.listdir(cache) == ["sources"]
    assert len(os.listdir(cache / "sources")) == 1


# -- the digits as image files: two layouts, one set of statistics --------------------------

TRAIN_ROWS = 1500  # the rest is the explicit validation source


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """The rendered digits as a .rec and as an image folder, train and val apart."""
    folder = tmp_path_factory.mktemp("digits")
    x, y = image_data.digits()
    images = image_data.render(x)
    for part, rows in (("train", slice(0, TRAIN_ROWS)), ("val", slice(TRAIN_ROWS, None))):
        image_data.write_recordio(str(folder / part), images[rows], y[rows])
        image_data.write_image_folder(str(folder / part), images[rows], y[rows])
    return folder, images, y


SPEC = """\
    name: digits_images_t
    input: {shape: [3, 20, 20]}
    layers:
      - {op: Flatten, name: flat}
      - {op: FullyConnected, name: fc, num_hidden: 10}
    output: {op: SoftmaxOutput}
    data:
      train: {%s}
      val: {%s}
    """


@pytest.mark.parametrize("layout", ["recordio", "image_folder"])
def test_statistics_are_numpys_over_the_training_images(digit_files, layout):
    folder, images, _ = digit_files
    where = {"recordio": "path: %s.rec", "image_folder": "path: %s, format: image_folder"}
    spec = load_spec(write_spec(folder, SPEC % (where[layout] % "train",
                                                where[layout] % "val"), f"{layout}.yaml"))
    stats = calibrate(build_model(spec), load_data(spec, cache_dir=str(folder / "cache")))["data"]
    # No resize: decoding a PNG is exact, so the truth is the rendered pixels, centre 20x20.
    mean, var = exact_moments(images[:TRAIN_ROWS, 2:22, 2:22], channel_axis=3)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-15)
    np.testing.assert_allclose(stats.var, var, rtol=1e-15)
    assert stats.count == TRAIN_ROWS * 20 * 20


def test_both_layouts_give_the_same_samples(digit_files):
    folder, _, y = digit_files
    options = ImageReadOptions(shape=(3, 24, 24))
    rec = read_table(str(folder / "train.rec"), "recordio", label=None, options=options)
    tree = read_table(str(folder / "train"), "image_folder", label=None, options=options)
    # The folder lists class by class, each in file-name (= row) order.
    order = np.argsort(y[:TRAIN_ROWS], kind="stable")
    np.testing.assert_array_equal(tree.features, rec.features[order])
    assert tree.labels.tolist() == [str(v) for v in y[:TRAIN_ROWS][order]]


def test_a_large_source_is_decoded_once_into_the_cache(digit_files, tmp_path):
    folder, _, _ = digit_files
    options = ImageReadOptions(shape=(3, 24, 24), cache_dir=str(tmp_path), stream=True)
    streamed = read_table(str(folder / "val.rec"), "recordio", label=None, options=options)
    again = read_table(str(folder / "val.rec"), "recordio", label=None, options=options)
    memory = read_table(str(folder / "val.rec"), "recordio", label=None,
                        options=ImageReadOptions(shape=(3, 24, 24)))
    assert streamed.on_disk and again.on_disk and not memory.on_disk
    np.testing.assert_array_equal(streamed.features, memory.features)
    np.testing.assert_array_equal(again.labels, memory.labels)
    assert len(os.listdir(tmp_path / "sources")) == 1  # one entry, read back the 2nd time


# -- the example spec, built ---------------------------------------------------------------

@pytest.mark.slow
def test_the_example_spec_builds_to_practitioner_accuracy_on_raw_pixels(tmp_path):
    from symbuilder.pipeline import build
    image_data.render_example(str(tmp_path))
    body = open(os.path.join(ROOT, "specs", "digits_images.yaml")).read()
    spec = load_spec(write_spec(tmp_path, body.replace("data/", ""), "digits_images.yaml"))
    out = build(spec, out_dir=str(tmp_path / "export"))
    assert out.manifest["metrics"]["val"]["accuracy"] >= 0.9
    # ImageRecordIter decodes and resizes the same records: the exact statistics are numpy's
    # over its pixels of the training split.
    rec = str(tmp_path / "digits_images.rec")
    pixels, labels = record_iter_pixels(rec, (3, 16, 16), 1797, resize=16, inter_method=3)
    train, val = split_indices(labels, 0.2, spec.train.seed, stratify=True)
    norm = out.manifest["input_normalization"]["data"]
    mean, var = exact_moments(pixels[train], channel_axis=1)
    np.testing.assert_allclose(norm["exact_mean"], mean, rtol=1e-15)
    np.testing.assert_allclose(norm["exact_var"], var, rtol=1e-15)
    # As ImageRecordIter's flags would have them: numpy's std over the same pixels.
    flags = pixel_statistics(norm["exact_mean"], norm["exact_var"])
    truth_std = pixels[train].astype(np.float64).std(axis=(0, 2, 3))
    np.testing.assert_allclose([flags["std_r"], flags["std_g"], flags["std_b"]], truth_std,
                               rtol=1e-10)
    assert flags["mean"] == [flags["mean_r"], flags["mean_g"], flags["mean_b"]] == \
        norm["exact_mean"] and flags["order"] == "RGB"
    assert out.manifest["input_pixels"]["data"] == flags  # the manifest carries them
    # Served raw: the ONNX model takes the decoder's 0..255 pixels, no mean_r/std_r flags.
    session = ort.InferenceSession(str(tmp_path / "export" / "digits_images.onnx"))
    probs = session.run(None, {"data": pixels[val]})[0]
    assert np.mean(probs.argmax(axis=1) == labels[val]) >= 0.9


# -- mistakes: one located line, exit 2, nothing written -------------------------------------

ERROR_SPEC = """\
    name: t
    input: {shape: [%d, 24, 24]}
    layers:
      - {op: Flatten, name: flat}
      - {op: FullyConnected, name: fc, num_hidden: 10}
    output: {op: SoftmaxOutput}
    data:
      train: {path: %s}
    train: {epochs: 1}
    """


@pytest.fixture
def small(tmp_path, monkeypatch):
    """tmp_path (the working folder) with d.rec/d.idx and folder f/ of 40 digit images."""
    x, y = image_data.digits()
    images = image_data.render(x[:40])
    image_data.write_recordio(str(tmp_path / "d"), images, y[:40])
    image_data.write_image_folder(str(tmp_path / "f"), images, y[:40])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _record_offset(folder, index):
    return int(open(folder / "d.idx").read().splitlines()[index].split("\t")[1])


def _overwrite(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _rec_spec(folder, channels=3, train="d.rec"):
    write_spec(folder, ERROR_SPEC % (channels, train))


def test_a_missing_idx_is_located_at_the_idx_key(small, capsys):
    os.unlink(small / "d.idx")
    _rec_spec(small)
    assert refused(small, capsys) == ("spec.yaml:8:3: data.train.idx: d.rec: no index file "
                                      "'d.idx' (im2rec writes it beside the .rec; or name it "
                                      "with idx:)")


@pytest.mark.parametrize("command", ["validate", "build"])
def test_a_corrupt_record_names_its_index_and_offset(small, capsys, command):
    offset = _record_offset(small, 3)
    _overwrite(small / "d.rec", offset, b"\0\0\0\0")  # the record's magic number
    _rec_spec(small)
    assert refused(small, capsys, command) == (
        f"d.rec: record 3 (key 3, offset {offset}): not a readable RecordIO record (header[0] "
        "== RecordIOWriter: :kMagic: Invalid RecordIO File); the .rec file is corrupt or does "
        "not match its .idx")


@pytest.mark.parametrize("at", [10, 40, 200])  # the PNG's size, an IDAT name, IDAT data
def test_a_damaged_image_in_a_record_is_refused_before_mxnet_decodes_it(small, capsys, at):
    offset = _record_offset(small, 5)
    _overwrite(small / "d.rec", offset + 8 + 24 + at, b"garbagegarbage")  # past both headers
    _rec_spec(small)
    line = refused(small, capsys)
    assert line.startswith(f"d.rec: record 5 (key 5, offset {offset}): not a decodable image "
                           "(a damaged PNG chunk at byte "), line


def test_an_undecodable_image_file_names_its_path(small, capsys):
    (small / "f" / "3" / "zz.png").write_bytes(b"not an image at all")
    (small / "f" / "4" / "zz.jpg").write_bytes(b"\xff\xd8 nor this")
    _rec_spec(small, train="f, format: image_folder")
    assert refused(small, capsys) == os.path.join("f", "3", "zz.png") + \
        ": not a decodable image (!res.empty(): Decoding failed. Invalid image file.)"
    os.unlink(small / "f" / "3" / "zz.png")
    assert refused(small, capsys).startswith(os.path.join("f", "4", "zz.jpg") +
                                             ": not a decodable image (")


def test_a_class_folder_without_images_is_named(small, capsys):
    os.makedirs(small / "f" / "x")
    (small / "f" / "x" / "notes.txt").write_text("no images here")
    _rec_spec(small, train="f, format: image_folder")
    assert refused(small, capsys) == os.path.join("f", "x") + \
        ": class folder 'x' has no images (.jpg, .jpeg, .png)"


@pytest.mark.parametrize("layout", ["recordio", "image_folder"])
def test_a_decoder_failure_past_the_first_block_names_its_image(tmp_path, capsys, monkeypatch,
                                                                layout):
    """A JPEG whose header is sound but whose data is not, in the second DECODE_ROWS part:
    ImageRecordIter raises, and the per-image path from the first row it did not deliver
    names the record or the file."""
    x, y = image_data.digits()
    encoded = [image_data.png_bytes(a) for a in image_data.render(x[:300])]
    jpeg = synthetic(2, 3)[1]
    sof = jpeg.index(b"\xff\xc0")
    # Its frame header alone, no quantization table, then bytes that are no JPEG marker.
    encoded[280] = b"\xff\xd8" + jpeg[sof:sof + 2 + int.from_bytes(jpeg[sof + 2:sof + 4], "big")] \
        + b"garbage" * 4
    monkeypatch.chdir(tmp_path)
    if layout == "recordio":
        image_data.write_recordio(str(tmp_path / "d"), encoded, y[:300], encode=lambda b: b)
        _rec_spec(tmp_path)
        where = f"d.rec: record 280 (key 280, offset {_record_offset(tmp_path, 280)}): "
    else:
        os.makedirs(tmp_path / "f" / "0")
        for i, buf in enumerate(encoded):
            (tmp_path / "f" / "0" / f"{i:03d}.{'jpg' if i == 280 else 'png'}").write_bytes(buf)
        _rec_spec(tmp_path, train="f, format: image_folder")
        where = os.path.join("f", "0", "280.jpg") + ": "
    assert refused(tmp_path, capsys).startswith(where + "not a decodable image (")


def test_an_image_smaller_than_the_input_asks_for_resize(small, capsys):
    write_spec(small, (ERROR_SPEC % (3, "d.rec")).replace("24, 24", "28, 28"))
    assert refused(small, capsys) == (
        "d.rec: record 0 (key 0, offset 0): the image is 24x24 (HxW), smaller than "
        "input.shape's 28x28; resize: 28 scales the shorter side up first")


def test_an_input_that_is_no_image_is_located_at_its_shape(small, capsys):
    write_spec(small, (ERROR_SPEC % (3, "d.rec")).replace("[3, 24, 24]", "[576]"))
    assert refused(small, capsys) == (
        "spec.yaml:2:9: input.shape: format: recordio needs one input with shape [C, H, W], "
        "C 1 (grey) or 3 (RGB); received [576]")


def test_the_example_data_renders_into_place_and_is_not_committed(tmp_path):
    image_data.example_rendered(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["digits_images", "digits_images.idx",
                                            "digits_images.rec"]
    assert sorted(os.listdir(tmp_path / "digits_images")) == [str(d) for d in range(10)]
    ignored = open(os.path.join(ROOT, ".gitignore")).read().split()
    assert {"/specs/data/digits_images/", "/specs/data/digits_images.rec",
            "/specs/data/digits_images.idx"} <= set(ignored)


@pytest.mark.parametrize("first, second", [("small", "damaged"), ("garbage", "small")])
def test_the_first_bad_image_in_file_order_is_the_one_named(small, capsys, first, second):
    """A block is queued on MXNet's engine before it is read back: a refusal found while
    queueing (header, decoder) must not jump ahead of one found on reading back (the size,
    checked on the decoded pixels), nor the other way round."""
    damaged = bytearray(image_data.png_bytes(np.zeros((24, 24, 3), np.uint8)))
    damaged[40] ^= 0xFF  # in the IDAT chunk: its CRC no longer matches
    bad = {"garbage": b"neither PNG nor JPEG", "damaged": bytes(damaged),
           "small": image_data.png_bytes(np.zeros((20, 20, 3), np.uint8))}
    zero = sorted(os.listdir(small / "f" / "0"))
    (small / "f" / "0" / zero[1]).write_bytes(bad[first])
    (small / "f" / "0" / zero[3]).write_bytes(bad[second])
    _rec_spec(small, train="f, format: image_folder")
    assert refused(small, capsys).startswith(os.path.join("f", "0", zero[1]) + ": ")
