"""rand_crop and rand_mirror (symbuilder.data.augment): every training batch against crops
computed here from a plain MXNet decode (mx.image.imdecode + mx.image.resize_short) at the
offsets and flips the documented seeding gives, for same-size and mixed-size images; the
mirror rate; validation never augmented; seeds, prefetching and resume; the refusals; and
the example spec trained end to end with both."""
import json
import os

import mxnet as mx
import numpy as np
import pytest

import image_data
from helpers import write_spec
from symbuilder.cli import main
from symbuilder.data import load_data, split_indices
from symbuilder.data import iterators
from symbuilder.data.iterators import make_iter
from symbuilder.spec.load import load_spec
from symbuilder.training import train
from test_data_errors import refused
from test_images import exact_moments, synthetic

SEED = 5
SPEC = """\
    name: aug
    input: {shape: [%(c)d, %(h)d, %(w)d]}
    layers:
      - {op: Flatten, name: flat}
      - {op: FullyConnected, name: fc, num_hidden: 10}
    output: {op: SoftmaxOutput}
    data:
      train: {path: %(train)s, resize: %(resize)d, inter_method: 1%(keys)s}
      %(val)s
    train: {epochs: 2, batch_size: %(batch)d, optimizer: adam, seed: %(seed)d}
    """


def spec_file(folder, *, train, c=3, h=16, w=16, resize=20, keys=", rand_crop: true, "
              "rand_mirror: true", val="val_fraction: 0.2", batch=8, seed=SEED):
    return write_spec(folder, SPEC % dict(c=c, h=h, w=w, train=train, resize=resize, keys=keys,
                                          val=val, batch=batch, seed=seed))


@pytest.fixture
def digits(tmp_path):
    """tmp_path with d.rec: 60 rendered digits (24x24 RGB PNGs, one size) and their bytes."""
    x, y = image_data.digits()
    images = image_data.render(x[:60])
    image_data.write_recordio(str(tmp_path / "d"), images, y[:60])
    return tmp_path, [image_data.png_bytes(im) for im in images], y[:60]


def resized(buf, channels, resize, interp=1):
    """The plain decode the crops must come from: (h, w, C) uint8."""
    img = mx.image.imdecode(buf, flag=0 if channels == 1 else 1)
    return mx.image.resize_short(img, resize, interp=interp).asnumpy()


def batches(it):
    return [(b.data[0].asnumpy(), b.label[0].asnumpy(), b.pad) for b in it]


def expected_epoch(encoded, rows, shape, resize, *, epoch, batch, crop=True, mirror=True,
                   seed=SEED, rank=0):
    """An epoch's training batches computed here: ArrayIter's order (a RandomState
    permutation of (seed, epoch), each batch sorted, the last padded from the start of the
    order), then per batch b offsets from default_rng([seed, epoch, b, rank, 0]) (tops, then
    lefts, one per sample, uniform over every offset that fits) and flips from
    default_rng([..., 1]) with probability 0.5."""
    c, height, width = shape
    n = len(rows)
    order = np.random.RandomState((seed * 1_000_003 + epoch) % 2 ** 32).permutation(n)
    out = []
    for b, start in enumerate(range(0, n, batch)):
        idx = np.sort(order[start:start + batch])
        idx = np.concatenate([idx, np.resize(order, batch - len(idx))])
        images = [resized(encoded[rows[i]], c, resize) for i in idx]
        sizes = np.array([im.shape[:2] for im in images])
        key = [seed, epoch, b, rank]
        if crop:
            rng = np.random.default_rng(key + [0])
            tops = rng.integers(0, sizes[:, 0] - height + 1)
            lefts = rng.integers(0, sizes[:, 1] - width + 1)
        else:  # the centre crop, ImageRecordIter's integer offsets
            tops, lefts = (sizes[:, 0] - height) // 2, (sizes[:, 1] - width) // 2
        flips = np.random.default_rng(key + [1]).random(batch) < 0.5 if mirror else \
            np.zeros(batch, bool)
        crops = [im[t:t + height, l:l + width] for im, t, l in zip(images, tops, lefts)]
        crops = [cr[:, ::-1] if f else cr for cr, f in zip(crops, flips)]
        out.append(np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32))
    return out


@pytest.mark.parametrize("chunk_batches", [None, 3])
def test_same_size_crops_and_flips_are_the_seeds_over_two_epochs(digits, monkeypatch,
                                                                 chunk_batches):
    """`chunk_batches` 3: ArrayIter gathers 3 batches per chunk, so a chunk's batches must
    know their index in the epoch (None: the whole epoch is one chunk)."""
    folder, encoded, y = digits
    if chunk_batches:
        monkeypatch.setattr(iterators, "CHUNK_BYTES", chunk_batches * 8 * 3 * 16 * 16 * 4)
    spec = load_spec(spec_file(folder, train="d.rec"))
    data = load_data(spec, cache_dir=str(folder / "cache"))
    rows = split_indices(y, 0.2, SEED, stratify=True)[0]  # the training rows of the source
    it = make_iter(spec, data.train, batch_size=8, shuffle=True)
    for epoch in (0, 1):
        got = batches(it)
        want = expected_epoch(encoded, rows, (3, 16, 16), 20, epoch=epoch, batch=8)
        assert len(got) == len(want) == -(-len(rows) // 8) and got[-1][2] == -len(rows) % 8 > 0
        for (pixels, _, _), expected in zip(got, want):
            np.testing.assert_array_equal(pixels, expected)
        it.reset()
    # Not the centre crop: 5 offsets per axis, so a crop-free epoch cannot pass the above.
    centre = expected_epoch(encoded, rows, (3, 16, 16), 20, epoch=0, batch=8, crop=False)
    assert not all(np.array_equal(a, b) for a, b in zip(centre, want))
    cached = os.listdir(folder / "cache" / "augment" / "sources")
    assert len(cached) == 1 and np.load(folder / "cache" / "augment" / "sources" / cached[0] /
                                        "pixels.npy", mmap_mode="r").dtype == np.uint8


@pytest.mark.parametrize("channels", [1, 3])
def test_mixed_size_crops_are_the_seeds_on_each_images_own_size(tmp_path, channels):
    encoded = synthetic(20, channels)  # 30..49 x 37: after resize 30, sizes differ
    labels = np.arange(20) % 3
    image_data.write_recordio(str(tmp_path / "t"), encoded, labels, encode=lambda b: b)
    image_data.write_recordio(str(tmp_path / "v"), encoded[:4], labels[:4], encode=lambda b: b)
    spec = load_spec(spec_file(tmp_path, train="t.rec", c=channels, h=24, w=26, resize=30,
                               val="val: {path: v.rec, resize: 30}", batch=6))
    assert len({resized(b, channels, 30).shape for b in encoded}) > 5
    data = load_data(spec, cache_dir=str(tmp_path / "cache"))
    got = batches(make_iter(spec, data.train, batch_size=6, shuffle=True))
    want = expected_epoch(encoded, np.arange(20), (channels, 24, 26), 30, epoch=0, batch=6)
    assert len(got) == len(want) == 4
    for (pixels, _, _), expected in zip(got, want):
        np.testing.assert_array_equal(pixels, expected)


def test_mirror_flips_half_the_samples(tmp_path):
    """rand_mirror alone on all 1797 digits, 3 epochs: each sample is either its centre crop
    or that crop flipped left-right. The flip rate of 4311 Bernoulli(0.5) draws is within
    0.04 of 0.5 (5.3 standard deviations: a false alarm below 1e-7)."""
    x, y = image_data.digits()
    image_data.write_recordio(str(tmp_path / "d"), image_data.render(x), y)
    spec = load_spec(spec_file(tmp_path, train="d.rec", keys=", rand_mirror: true", batch=64))
    data = load_data(spec, cache_dir=str(tmp_path / "cache"))
    assert not os.path.exists(tmp_path / "cache")  # no uncropped copy without rand_crop
    it = make_iter(spec, data.train, batch_size=64, shuffle=True)
    plain = data.train.features
    flips = []
    for _ in range(3):
        for b, batch in enumerate(it):
            start = b * 64
            idx = np.sort(it._order[start:start + 64])
            pixels = batch.data[0].asnumpy()[:len(idx)]
            same = (pixels == plain[idx]).all(axis=(1, 2, 3))
            mirrored = (pixels == plain[idx][..., ::-1]).all(axis=(1, 2, 3))
            assert (same | mirrored).all()
            symmetric = same & mirrored  # a flip would not show: left out
            flips += mirrored[~symmetric].tolist()
        it.reset()
    assert len(flips) > 4200 and abs(np.mean(flips) - 0.5) < 0.04, (len(flips), np.mean(flips))


def test_validation_is_never_augmented(digits):
    """The held-out part of val_fraction: the centre crops of its source images, through the
    iterator evaluation uses; a training iterator not shuffled (evaluation on the training
    split) is not augmented either."""
    folder, encoded, y = digits
    spec = load_spec(spec_file(folder, train="d.rec"))
    data = load_data(spec, cache_dir=str(folder / "cache"))
    assert data.val.augment is None
    held_out = split_indices(y, 0.2, SEED, stratify=True)[1]
    want = np.stack([resized(encoded[i], 3, 20)[2:18, 2:18] for i in held_out])
    want = want.transpose(0, 3, 1, 2).astype(np.float32)
    for dataset, expected in ((data.val, want), (data.train, None)):
        got = np.concatenate([b.data[0].asnumpy()[:8 - b.pad] for b in
                              make_iter(spec, dataset, batch_size=8, shuffle=False)])
        np.testing.assert_array_equal(got, dataset.features if expected is None else expected)


def test_same_seed_same_batches_other_seed_or_epoch_or_rank_other_draws(digits):
    folder, _, _ = digits
    spec = load_spec(spec_file(folder, train="d.rec"))
    data = load_data(spec, cache_dir=str(folder / "cache"))

    def first_epoch(**kwargs):
        return [b[0] for b in batches(make_iter(spec, data.train, batch_size=8, shuffle=True,
                                                **kwargs))]

    plain = first_epoch(prefetch=0)
    for again in (first_epoch(prefetch=0), first_epoch(prefetch=2)):  # prefetched: the same
        assert all(np.array_equal(a, b) for a, b in zip(plain, again))
    aug = data.train.augment
    base = aug.for_epoch(0, 8).draws(0, np.arange(8))
    for other in (aug.for_epoch(1, 8).draws(0, np.arange(8)),    # next epoch
                  aug.for_epoch(0, 8).draws(1, np.arange(8)),    # next batch
                  aug.for_epoch(0, 8, rank=1).draws(0, np.arange(8))):  # another dist worker
        assert not all(np.array_equal(a, b) for a, b in zip(base, other))
    other_seed = load_spec(spec_file(folder / "s", train="../d.rec", seed=SEED + 1))
    other = load_data(other_seed, cache_dir=str(folder / "cache")).train.augment
    assert not all(np.array_equal(a, b) for a, b in
                   zip(base, other.for_epoch(0, 8).draws(0, np.arange(8))))


def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(digits):
    folder, _, _ = digits
    spec = load_spec(spec_file(folder, train="d.rec"))
    data = load_data(spec, cache_dir=str(folder / "cache"))
    for name in ("whole", "cut"):
        os.makedirs(folder / name)  # pipeline.build makes the run folder, train() does not
    whole = train(spec, data, run_dir=str(folder / "whole"))
    train(spec, data, epochs=1, run_dir=str(folder / "cut"))
    said = []
    resumed = train(spec, data, run_dir=str(folder / "cut"), resume=True, progress=said.append)
    assert [line.split()[1] for line in said if line.startswith("epoch ")] == ["2/2"], said
    assert [h["train"] for h in resumed.history] == [h["train"] for h in whole.history]
    for key, value in whole.arg_params.items():
        assert np.array_equal(value.asnumpy(), resumed.arg_params[key].asnumpy()), key


@pytest.mark.parametrize("where, line, message", [
    ("val", 'val: {path: d.rec, rand_mirror: false}',
     "data.val.rand_mirror: rand_mirror augments the training data only (data.train); "
     "validation samples are never augmented"),
    ("csv", None,
     "data.train.rand_crop: rand_crop needs an image format (recordio, image_folder); bc.csv "
     "is read as csv"),
])
@pytest.mark.parametrize("command", ["validate", "build"])
def test_augmentation_keys_elsewhere_are_refused(digits, monkeypatch, capsys, where, line,
                                                 message, command):
    folder, _, _ = digits
    if where == "val":
        spec_file(folder, train="d.rec", val=line)
    else:
        write_spec(folder, SPEC.replace("path: %(train)s, resize: %(resize)d, inter_method: 1",
                                        "path: bc.csv, label: benign") % dict(
            c=1, h=30, w=1, keys=", rand_crop: true", val="", batch=8, seed=SEED))
    monkeypatch.chdir(folder)
    got = refused(folder, capsys, command)
    assert got.startswith("spec.yaml:") and got.endswith(message), got


def test_the_example_spec_trains_with_both_and_keeps_centre_crop_statistics(tmp_path):
    """specs/digits_images.yaml with resize 20 (so a 16x16 crop has 25 offsets), rand_crop
    and rand_mirror: it builds, and the input layer's statistics are the exact moments of
    the training images' centre crops, decoded here (not of the augmented batches)."""
    image_data.render_example(str(tmp_path))
    body = open(os.path.join(os.path.dirname(__file__), "..", "specs",
                             "digits_images.yaml")).read()
    old = "resize: 16, inter_method: 3}"
    assert old in body
    body = body.replace("data/", "").replace(old, "resize: 20, inter_method: 3, "
                                                  "rand_crop: true, rand_mirror: true}")
    spec = write_spec(tmp_path, body, "digits_images.yaml")
    assert main(["build", spec, "--out", str(tmp_path / "out"), "-q"]) == 0
    manifest = json.load(open(tmp_path / "out" / "manifest.json"))
    x, y = image_data.digits()
    rows = split_indices(y, 0.2, 42, stratify=True)[0]
    centre = [resized(image_data.png_bytes(im), 3, 20, interp=3)[2:18, 2:18]
              for im in image_data.render(x[rows])]
    mean, var = exact_moments(np.stack(centre), channel_axis=3)
    norm = manifest["input_normalization"]["data"]
    np.testing.assert_allclose(norm["exact_mean"], mean, rtol=1e-15)
    np.testing.assert_allclose(norm["exact_var"], var, rtol=1e-15)
    assert manifest["metrics"]["val"]["accuracy"] >= 0.85  # mirrored digits: a hard task
