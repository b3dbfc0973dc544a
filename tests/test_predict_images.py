"""`symbuilder predict` on image files, folders of them and a .rec: decoded as the build
decoded its images (the manifest's image_decoding), the predictions equal MXNet's forward on
pixels the test decodes itself with mx.image; mistakes are one located line, exit 2, nothing
written."""
import csv
import io
import os

import mxnet as mx
import numpy as np
import pytest

import image_data
from helpers import write_spec
from serving_cases import run
from symbuilder.pipeline import build
from symbuilder.spec.load import load_spec

RESIZE, INTER, SHAPE = 20, 2, (3, 16, 16)  # 24x24 renders: resized, then centre-cropped
SPEC = f"""\
    name: digits_px
    input: {{shape: {list(SHAPE)}, dtype: %s}}
    layers:
      - {{op: Convolution, name: conv, num_filter: 4, kernel: [3, 3]}}
      - {{op: Activation, name: relu, act_type: relu}}
      - {{op: Flatten, name: flat}}
      - {{op: FullyConnected, name: fc, num_hidden: 10}}
    output: {{op: SoftmaxOutput, name: softmax}}
    data:
      train: {{path: train.rec, resize: {RESIZE}, inter_method: {INTER}}}
    train: {{epochs: 1, batch_size: 32, optimizer: adam}}
    """


@pytest.fixture(scope="module", params=["uint8", "float32"])
def export(request, tmp_path_factory):
    """An export built on 200 rendered digits, and 30 other digits as PNGs and as a .rec."""
    folder = tmp_path_factory.mktemp("px_" + request.param)
    x, y = image_data.digits()
    images = image_data.render(x)
    image_data.write_recordio(str(folder / "train"), images[:200], y[:200])
    image_data.write_image_folder(str(folder / "new"), images[200:230], y[200:230])
    image_data.write_recordio(str(folder / "new"), images[200:230], y[200:230])
    spec = load_spec(write_spec(folder, SPEC % request.param))
    result = build(spec, out_dir=str(folder / "export"))
    return folder, result.manifest


def reference(folder, manifest, encoded):
    """MXNet's forward (the checkpoint through Module) on images decoded here with mx.image:
    imdecode, resize_short, center_crop; fed in the export's input dtype."""
    pixels = []
    for buf in encoded:
        img = mx.image.imdecode(buf, flag=1)
        img = mx.image.resize_short(img, RESIZE, interp=INTER)
        img, _ = mx.image.center_crop(img, (SHAPE[2], SHAPE[1]))
        pixels.append(img.asnumpy().transpose(2, 0, 1))
    dtype = manifest["inputs"][0]["dtype"]
    x = np.stack(pixels).astype(dtype)
    symbol, arg, aux = mx.model.load_checkpoint(str(folder / "export" / "digits_px-deploy"),
                                                manifest["epoch"])
    mod = mx.mod.Module(symbol, data_names=["data"], label_names=[], context=mx.cpu())
    mod.bind(data_shapes=[mx.io.DataDesc("data", x.shape, dtype)], for_training=False)
    mod.set_params(arg, aux)
    mod.forward(mx.io.DataBatch([mx.nd.array(x, dtype=dtype)]), is_train=False)
    return mod.get_outputs()[0].asnumpy()


def table(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], [r[0] for r in rows[1:]], np.array([[float(v) for v in r[2:]]
                                                         for r in rows[1:]])


def png_files(folder):
    root = folder / "new"
    return sorted(str(root / c / f) for c in os.listdir(root) for f in os.listdir(root / c))


def test_the_manifest_records_how_the_build_decoded(export):
    _, manifest = export
    assert manifest["image_decoding"] == {"shape": list(SHAPE), "resize": RESIZE,
                                          "inter_method": INTER, "label_width": 1,
                                          "convert_channels": False}


@pytest.mark.parametrize("checkpoint", [False, True])
def test_predictions_on_png_files_are_mxnets_on_the_same_decoded_pixels(export, capsys,
                                                                         checkpoint):
    folder, manifest = export
    files = png_files(folder)
    code, out, err = run(["predict", str(folder / "export")] + files +
                         (["--checkpoint"] if checkpoint else []), capsys)
    assert code == 0, err
    header, ids, probs = table(out)
    assert header[:2] == ["path", "class"] and ids == files
    want = reference(folder, manifest, [open(f, "rb").read() for f in files])
    np.testing.assert_allclose(probs, want, atol=1e-5, rtol=1e-5)


def test_a_folder_is_its_images_sorted(export, capsys):
    folder, _ = export
    code, out, err = run(["predict", str(folder / "export"), str(folder / "new" / "3"),
                          str(folder / "new" / "0")], capsys)
    assert code == 0, err
    ids = table(out)[1]
    three = sorted(os.listdir(folder / "new" / "3"))
    zero = sorted(os.listdir(folder / "new" / "0"))
    assert ids == [str(folder / "new" / "3" / f) for f in three] + \
        [str(folder / "new" / "0" / f) for f in zero]
    # A folder of class folders (an image_folder source) is every class's images, in order.
    code, out, err = run(["predict", str(folder / "export"), str(folder / "new")], capsys)
    assert code == 0, err
    assert table(out)[1] == png_files(folder)


def test_a_rec_is_predicted_record_by_record(export, capsys):
    folder, manifest = export
    code, out, err = run(["predict", str(folder / "export"), str(folder / "new.rec")], capsys)
    assert code == 0, err
    header, ids, probs = table(out)
    assert header[0] == "record" and ids == [str(i) for i in range(30)]
    record = mx.recordio.MXIndexedRecordIO(str(folder / "new.idx"), str(folder / "new.rec"),
                                           "r")
    encoded = [mx.recordio.unpack(record.read_idx(i))[1] for i in range(30)]
    record.close()
    np.testing.assert_allclose(probs, reference(folder, manifest, encoded), atol=1e-5,
                               rtol=1e-5)


def refused(capsys, argv, out_file):
    """Exit 2, one stderr line, no traceback, --out not written; the line."""
    code, out, err = run(argv + ["--out", str(out_file)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not os.path.lexists(out_file) and out == ""
    return err.strip()


def test_an_undecodable_image_is_one_located_line_and_nothing_is_written(export, capsys):
    folder, _ = export
    bad = folder / "bad.png"
    bad.write_bytes(b"not an image at all")
    line = refused(capsys, ["predict", str(folder / "export")] + png_files(folder)[:5] +
                   [str(bad)], folder / "p.csv")
    assert line == f"{bad}: not a decodable image (!res.empty(): Decoding failed. Invalid " \
                   "image file.)"


def test_a_grey_image_for_an_rgb_model_is_named(export, capsys):
    """The build refused other channel counts (no convert_channels): predict does too."""
    folder, _ = export
    grey = folder / "grey.png"
    grey.write_bytes(image_data.png_bytes(np.zeros((24, 24), np.uint8)))
    line = refused(capsys, ["predict", str(folder / "export"), str(grey)], folder / "p.csv")
    assert line.startswith(f"{grey}: the image has 1 channels (grey), but input.shape asks "
                           "for 3; convert the image, change input.shape[0], or set "
                           "convert_channels: true")


def test_with_convert_channels_grey_and_rgba_images_decode_as_imagerecorditer_does(tmp_path):
    """An export built with convert_channels: true (its image_decoding says so) decodes a
    grey and an RGBA PNG as ImageRecordIter does: mx.image.imdecode with flag 1."""
    from symbuilder.serving.samples import image_samples
    rng = np.random.RandomState(5)
    grey = tmp_path / "grey.png"
    grey.write_bytes(image_data.png_bytes(rng.randint(0, 256, (24, 24)).astype(np.uint8)))
    rgba = tmp_path / "rgba.png"
    rgba.write_bytes(image_data.png_bytes(rng.randint(0, 256, (24, 24, 4)).astype(np.uint8)))
    decoding = {"shape": list(SHAPE), "resize": RESIZE, "inter_method": INTER,
                "convert_channels": True}
    _, ids, pixels = image_samples([str(grey), str(rgba)], decoding)
    for k, path in enumerate((grey, rgba)):
        img = mx.image.imdecode(open(path, "rb").read(), flag=1)
        img = mx.image.resize_short(img, RESIZE, interp=INTER)
        img, _ = mx.image.center_crop(img, (SHAPE[2], SHAPE[1]))
        np.testing.assert_array_equal(pixels[k], img.asnumpy().transpose(2, 0, 1))


def test_other_inputs_are_refused(export, capsys):
    folder, _ = export
    export_dir = str(folder / "export")
    assert refused(capsys, ["predict", export_dir, str(folder / "nope.png")],
                   folder / "p.csv") == f"{folder / 'nope.png'}: no such file"
    (folder / "notes.txt").write_text("x")
    assert refused(capsys, ["predict", export_dir, str(folder / "nope.rec")],
                   folder / "p.csv") == f"{folder / 'nope.rec'}: no such file"
    (folder / "lone.rec").write_bytes((folder / "new.rec").read_bytes())
    assert refused(capsys, ["predict", export_dir, str(folder / "lone.rec")],
                   folder / "p.csv").startswith(f"{folder / 'lone.rec'}: no index file "
                                                f"'{folder / 'lone.idx'}' (im2rec writes it")
    (folder / "empty").mkdir()
    assert refused(capsys, ["predict", export_dir, str(folder / "empty")], folder / "p.csv") \
        == f"{folder / 'empty'}: no images (.jpg, .jpeg, .png) in this folder"
    assert refused(capsys, ["predict", export_dir, str(folder / "new" / "3"),
                            str(folder / "notes.txt")],
                   folder / "p.csv") == (f"{folder / 'notes.txt'}: expected an image (.jpg, "
                                         ".jpeg, .png), a folder of them or one .rec file")
    assert refused(capsys, ["predict", export_dir, str(folder / "new.rec"),
                            png_files(folder)[0]], folder / "p.csv") == \
        f"{folder / 'new.rec'}: a .rec file is predicted on its own, not with other inputs"
    assert refused(capsys, ["predict", export_dir, png_files(folder)[0], "--keep", "id"],
                   folder / "p.csv") == (f"{png_files(folder)[0]}: --keep names CSV columns; "
                                         "images have none (the first column is each "
                                         "image's path, or record index)")


def test_an_export_not_built_on_images_refuses_them(tmp_path, capsys):
    from helpers import mlp_spec
    result = build(load_spec(write_spec(tmp_path, mlp_spec("bc", epochs=1))),
                   out_dir=str(tmp_path / "export"))
    assert "image_decoding" not in result.manifest
    png = tmp_path / "a.png"
    png.write_bytes(image_data.png_bytes(np.zeros((8, 8, 3), np.uint8)))
    assert refused(capsys, ["predict", str(tmp_path / "export"), str(png)],
                   tmp_path / "p.csv") == (
        f"{tmp_path / 'export'}: this export was not built on images (its manifest records "
        "no image_decoding); predict it on a CSV of its feature columns")
