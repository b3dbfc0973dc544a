"""An export checks itself: `verify` and `predict` hold manifest.json to its schema and to the
files (ONNX graph, checkpoint epoch, hashes); --manifest-sha256 pins the rest; every malformed
file given to predict, verify or export is one line with exit 1 or 2, never a traceback; MXNet's
own chatter stays off the terminal.

Each expectation is pinned exactly (message, exit code, nothing written) or computed
independently (hashlib for the manifest's sha256, numpy for float32's range).
"""
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ROOT, mlp_spec, write_spec
from symbuilder.export import folder as exporting
from symbuilder.cli import main

SPEC = mlp_spec("trust", hidden=8, epochs=1, batch_size=64, export="verify: {samples: 16}")


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """(export folder, stdout of the build, a CSV of 5 rows with every feature column)."""
    folder = tmp_path_factory.mktemp("trust")
    spec = write_spec(folder, SPEC)
    out = str(folder / "export" / "trust")
    stdout = io.StringIO()
    from contextlib import redirect_stdout
    with redirect_stdout(stdout):
        assert main(["build", spec, "--out", out, "-q"]) == 0
    rows = folder / "rows.csv"
    with open(folder / "bc.csv") as f:
        rows.write_text("".join(f.readlines()[:6]))
    return out, stdout.getvalue(), str(rows)


def copy_export(export, tmp_path):
    folder = str(tmp_path / "copy")
    shutil.copytree(export[0], folder, symlinks=True)
    return folder


def manifest_of(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        return json.load(f)


def rewrite(folder, manifest, resign=False):
    """Write `manifest` as is (a hand edit), or re-signed: the file table recomputed, as an
    attacker who edits files and the manifest together would."""
    if resign:
        exporting.write_manifest(folder, {k: v for k, v in manifest.items() if k != "files"})
        return
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder):
    """Every file under `folder` with its bytes: what a read-only command must leave alone."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------
# The manifest's sha256: printed by the build, pinned by verify and predict


def test_build_prints_the_manifests_sha256_and_verify_pins_it(export, tmp_path, capsys):
    out, stdout, rows = export
    digest = hashlib.sha256(open(os.path.join(out, "manifest.json"), "rb").read()).hexdigest()
    assert stdout.rstrip().endswith(f"  manifest sha256={digest}"), stdout
    code, stdout, err = run(["verify", out, "--manifest-sha256", digest.upper()], capsys)
    assert code == 0 and stdout.startswith(f"{out}: ok ("), err
    # Swapped classes are a valid manifest (nothing else could tell): the pin catches them.
    folder = copy_export(export, tmp_path)
    manifest = manifest_of(folder)
    manifest["classes"] = manifest["classes"][::-1]
    rewrite(folder, manifest)
    changed = hashlib.sha256(open(os.path.join(folder, "manifest.json"), "rb").read()).hexdigest()
    for argv in (["verify", folder], ["predict", folder, rows]):
        code, _, err = run(argv + ["--manifest-sha256", digest], capsys)
        assert code == 1
        assert one_line(err) == (f"symbuilder: failed: {folder}/manifest.json: sha256 is "
                                 f"{changed}, but --manifest-sha256 pins {digest}")


def test_a_malformed_pin_is_a_usage_error(export, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["verify", export[0], "--manifest-sha256", "abc"])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == ""
    assert one_line(captured.err) == ("symbuilder verify: error: argument --manifest-sha256: "
                                      "expected 64 hex digits (as the build printed), received "
                                      "'abc' (see symbuilder verify --help)")


# ------------------------------------------------------------------------------------------
# The manifest against its schema and against the files


def _set(manifest, path, value):
    node = manifest
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@pytest.mark.parametrize("path, value, message", [
    (("classes",), [0, 1, 2], "classes: 3 classes, but the model outputs 2 values per sample"),
    (("classes",), [1, 1], "classes: 1 appears twice"),
    (("classes",), None, "classes: a classifier's export needs its class list"),
    (("parity", "atol"), 1e5, "parity.atol: expected a number in [0, 0.01], received 100000.0 "
                              "(number)"),
    (("parity", "atol"), 0.0101, "parity.atol: expected a number in [0, 0.01], received 0.0101"),
    (("parity", "atol"), -1e-6, "parity.atol: expected a number in [0, 0.01], received -1e-06"),
    (("inputs", 0, "shape"), ["batch", 31], "inputs[0].columns: 30 columns for samples of shape "
                                            "[31]"),
    (("inputs", 0, "name"), "x", "parity.random_range.x: missing"),
    (("inputs", 0, "name"), "data2", "manifest.json: inputs: trust.onnx takes data [30], the "
                                     "manifest says data2 [30]"),
    (("outputs", 0, "shape"), ["batch", 3], "manifest.json: outputs[0].shape: trust.onnx outputs "
                                            "samples of shape [2], the manifest says [3]"),
    (("epoch",), 2, "checkpoint.params: expected 'trust-0002.params' (epoch 2), received "
                    "'trust-0001.params'"),
    (("epoch",), "1", "epoch: expected an integer >= 0, received \"1\" (string)"),
    (("checkpoint", "symbol"), "../trust-symbol.json",
     "checkpoint.symbol: expected a plain file name <prefix>-symbol.json"),
    (("onnx", "file"), "/etc/passwd", "onnx.file: expected a plain file name inside the export"),
    (("inputs",), 5, "inputs: expected a list of at least 1 item(s), received 5 (integer)"),
])
def test_a_manifest_field_that_is_wrong_fails_verify_and_predict(export, tmp_path, capsys, path,
                                                                 value, message):
    folder = copy_export(export, tmp_path)
    manifest = manifest_of(folder)
    _set(manifest, path, value)
    if value == "data2":  # renamed everywhere the manifest names it: only the graph disagrees
        ranges = manifest["parity"]["random_range"]
        ranges["data2"] = ranges.pop("data")
    rewrite(folder, manifest)
    for argv in (["verify", folder], ["predict", folder, export[2]]):
        code, stdout, err = run(argv, capsys)
        assert code == 1 and stdout == "", err
        line = one_line(err)
        assert line.startswith(f"symbuilder: failed: {folder}") and message in line, line


def test_a_symlink_in_the_export_is_never_followed(export, tmp_path, capsys):
    folder = copy_export(export, tmp_path)
    params = os.path.join(folder, "trust-0001.params")
    outside = str(tmp_path / "elsewhere.params")
    shutil.move(params, outside)
    os.symlink(outside, params)  # same bytes, so the sha256 alone would pass
    for argv in (["verify", folder], ["predict", folder, export[2], "--checkpoint"]):
        code, stdout, err = run(argv, capsys)
        assert code == 1 and stdout == ""
        assert "trust-0001.params: is a symlink (an export holds regular files only)" in err


@pytest.mark.parametrize("damage", ["garble", "truncate", "empty"])
@pytest.mark.parametrize("name", ["trust.onnx", "trust-0001.params", "trust-symbol.json"])
def test_a_resigned_malformed_file_is_one_line_and_exit_1(export, tmp_path, capsys, name,
                                                          damage):
    folder = copy_export(export, tmp_path)
    path = os.path.join(folder, name)
    data = open(path, "rb").read()
    bad = {"garble": bytes(np.random.RandomState(0).randint(0, 256, len(data), np.uint8)),
           "truncate": data[: len(data) // 2], "empty": b""}[damage]
    open(path, "wb").write(bad)
    rewrite(folder, manifest_of(folder), resign=True)  # the hashes pass; the files do not
    extra = ["--checkpoint"] if name != "trust.onnx" else []
    for argv in (["verify", folder], ["predict", folder, export[2]] + extra):
        code, stdout, err = run(argv, capsys)
        assert code == 1 and stdout == "", err
        assert one_line(err).startswith("symbuilder: failed: ") and name in err, err


def test_a_bare_onnx_file_that_is_not_a_model_is_exit_2(export, tmp_path, capsys):
    path = tmp_path / "bare.onnx"
    path.write_bytes(b"\x08\x07garbage")
    code, stdout, err = run(["predict", str(path), export[2]], capsys)
    assert code == 2 and stdout == ""
    assert one_line(err).startswith(f"{path}: not a model ONNX Runtime can load: ")


def test_a_manifest_that_is_not_json_fails_the_check(export, tmp_path, capsys):
    folder = copy_export(export, tmp_path)
    open(os.path.join(folder, "manifest.json"), "wb").write(b"\xff\xfe{")
    code, _, err = run(["verify", folder], capsys)
    assert code == 1
    assert one_line(err).startswith(f"symbuilder: failed: {folder}/manifest.json: not a "
                                    "readable manifest: ")


# ------------------------------------------------------------------------------------------
# predict's input rows


def _rows_with(export, tmp_path, edit):
    with open(export[2]) as f:
        rows = list(csv.reader(f))
    edit(rows)
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r[2].__setitem__(3, "1e39"),
     ":3: column 'mean_area': 1e39 is outside float32's range (largest 3.402823e+38)"),
    (lambda r: r[1].__setitem__(0, "-3.5e38"),
     ":2: column 'mean_radius': -3.5e38 is outside float32's range"),
    (lambda r: r[0].__setitem__(4, r[0][2]),
     ":1: column name 'mean_perimeter' appears twice (fields 3 and 5); columns are matched by "
     "name, so each must be unique"),
    (lambda r: r[3].__setitem__(1, "nan"), ":4: column 'mean_texture': not a finite number: nan"),
    (lambda r: r[3].__setitem__(1, "twelve"), ":4: column 'mean_texture': not a number: 'twelve'"),
])
def test_predict_input_mistakes_are_located_and_exit_2(export, tmp_path, capsys, edit, message):
    path = _rows_with(export, tmp_path, edit)
    code, stdout, err = run(["predict", export[0], path, "--out", str(tmp_path / "p.csv")],
                            capsys)
    assert code == 2 and stdout == "" and not (tmp_path / "p.csv").exists()
    assert one_line(err).startswith(path + message), err


def test_predict_never_overwrites_an_existing_out_file(export, tmp_path, capsys):
    path = _rows_with(export, tmp_path, lambda r: None)
    target = tmp_path / "p.csv"
    target.write_text("someone's file\n")
    code, stdout, err = run(["predict", export[0], path, "--out", str(target)], capsys)
    assert code == 2 and stdout == "" and target.read_text() == "someone's file\n"
    assert one_line(err) == (f"{target}: already exists; predict never overwrites a file "
                             "(choose another --out, or remove it yourself)")
    target.unlink()
    assert run(["predict", export[0], path, "--out", str(target)], capsys)[0] == 0
    assert target.read_text().startswith("class,")


def test_the_largest_float32_is_still_accepted(export, tmp_path, capsys):
    # The bound is float32's own: its largest finite value passes (and saturates the model).
    largest = repr(float(np.finfo(np.float32).max))
    path = _rows_with(export, tmp_path, lambda r: r[1].__setitem__(3, largest))
    code, stdout, err = run(["predict", export[0], path], capsys)
    assert code == 0, err
    assert len(stdout.strip().splitlines()) == 6


# ------------------------------------------------------------------------------------------
# export of a checkpoint given by the user: malformed files are exit 2, one line, nothing written


def _checkpoint_with(export, tmp_path, symbol_text=None, params_bytes=None):
    prefix = str(tmp_path / "user")
    src = os.path.join(export[0], "trust")
    with open(f"{prefix}-symbol.json", "wb") as f:
        f.write(symbol_text if symbol_text is not None else open(f"{src}-symbol.json",
                                                                 "rb").read())
    with open(f"{prefix}-0001.params", "wb") as f:
        f.write(params_bytes if params_bytes is not None else open(f"{src}-0001.params",
                                                                   "rb").read())
    return prefix


def _graph_edit(export, edit):
    graph = json.load(open(os.path.join(export[0], "trust-symbol.json")))
    edit(graph)
    return json.dumps(graph).encode()


@pytest.mark.parametrize("make, message", [
    (lambda e: dict(symbol_text=os.urandom(300) + b"\xff"), "-symbol.json: not a readable MXNet "
     "symbol file: not UTF-8 JSON ("),
    (lambda e: dict(symbol_text=b""), "-symbol.json: not a readable MXNet symbol file: not UTF-8 "
     "JSON (Expecting value"),
    (lambda e: dict(symbol_text=_graph_edit(e, lambda g: g["nodes"][9]["inputs"][0].__setitem__(
        0, 9))), "-symbol.json: not a readable MXNet symbol file: nodes[9] ('relu1'): input "
     "[9, 0, 0] is not an earlier node (a cycle or a missing node)"),
    (lambda e: dict(symbol_text=_graph_edit(e, lambda g: g["nodes"][9]["inputs"][0].__setitem__(
        0, 99))), "-symbol.json: not a readable MXNet symbol file: nodes[9] ('relu1'): input "
     "[99, 0, 0] is not an earlier node"),
    (lambda e: dict(symbol_text=_graph_edit(e, lambda g: g.__setitem__("heads", [[40, 0, 0]]))),
     "-symbol.json: not a readable MXNet symbol file: heads: expected references to the 15 "
     "nodes"),
    (lambda e: dict(params_bytes=b"\x12\x01" + os.urandom(64)),
     "-0001.params: not a readable MXNet params file: "),
])
def test_export_of_a_malformed_checkpoint_is_one_line_exit_2(export, tmp_path, capsys, make,
                                                            message):
    prefix = _checkpoint_with(export, tmp_path, **make(export))
    out = str(tmp_path / "out.onnx")
    code, stdout, err = run(["export", prefix, "1", "--input", "data=1,30", "--out", out], capsys)
    assert code == 2 and stdout == "" and not os.path.exists(out)
    assert one_line(err).startswith(prefix + message), err


def test_export_random_0_without_data_is_a_usage_error(export, tmp_path, capsys):
    prefix = _checkpoint_with(export, tmp_path)
    out = str(tmp_path / "out.onnx")
    code, _, err = run(["export", prefix, "1", "--input", "data=1,30", "--out", out,
                        "--random", "0"], capsys)
    assert code == 2 and not os.path.exists(out)
    assert one_line(err) == ("symbuilder: error: --random 0 needs --data: the check needs "
                             "samples to compare on")


# The messages are the data sources' own (the same reader as a spec's data).
@pytest.mark.parametrize("name, save, message", [
    ("obj.npz", lambda p: np.savez(p, X=np.array([[1.0], ["a"]], dtype=object)),
     "array 'X' holds Python objects (dtype object), which only pickle can load"),
    ("obj.npy", lambda p: np.save(p, np.array([[{"a": 1}]], dtype=object), allow_pickle=True),
     "the array holds Python objects (dtype object), which only pickle can load"),
    ("text.npy", lambda p: open(p, "w").write("not numpy"), "not a .npy array (a bad header"),
])
def test_export_data_with_pickles_or_garbage_is_refused_unread(export, tmp_path, capsys, name,
                                                                save, message):
    prefix = _checkpoint_with(export, tmp_path)
    data = str(tmp_path / name)
    save(data)
    out = str(tmp_path / "out.onnx")
    code, _, err = run(["export", prefix, "1", "--input", "data=1,30", "--out", out,
                        "--data", data], capsys)
    assert code == 2 and not os.path.exists(out)
    assert one_line(err).startswith(f"{data}: {message}"), err


# ------------------------------------------------------------------------------------------
# MXNet's own chatter


def test_mxnet_chatter_never_reaches_the_terminal(tmp_path):
    """A spec whose shapes fail (Convolution on a 1-D input): MXNet's Python prints
    'infer_shape error. Arguments:' to stdout before raising; only the located line remains."""
    body = SPEC.replace("- {op: Activation, name: relu1, act_type: relu}",
                        "- {op: Convolution, name: conv1, num_filter: 4, kernel: [3, 3]}")
    spec = write_spec(tmp_path, body)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    env.pop("MXNET_SUBGRAPH_VERBOSE", None)  # the CLI sets it itself
    for command in ("validate", "summary", "build"):
        proc = subprocess.run([sys.executable, "-m", "symbuilder", command, spec],
                              capture_output=True, text=True, env=env, cwd=str(tmp_path),
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr == (f"{spec}:5:5: layers[1]: Convolution 'conv1' cannot take input "
                               "shape (1, 8): Input data should be 4D in batch-num_filter-y-x "
                               "(2 vs. 4)\n")


def test_an_old_symbol_file_is_upgraded_without_mxnets_log_lines(export, tmp_path):
    graph = json.load(open(os.path.join(export[0], "trust-symbol.json")))
    del graph["attrs"]  # no mxnet_version: MXNet logs "Loading symbol saved by previous ..."
    prefix = _checkpoint_with(export, tmp_path, symbol_text=json.dumps(graph).encode())
    out = str(tmp_path / "old.onnx")
    proc = subprocess.run([sys.executable, "-m", "symbuilder", "export", prefix, "1", "--input",
                           "data=1,30", "--out", out], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"),
                          timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"{out}: verified against MXNet")


# ------------------------------------------------------------------------------------------
# Property: whatever is mutated, verify and predict end with a code, never an exception, and
# touch nothing; a mutation of the files, or of the manifest under a pin, is never exit 0


RELIED_ON = [("name",), ("epoch",), ("inputs",), ("inputs", 0), ("inputs", 0, "name"),
             ("inputs", 0, "shape"), ("inputs", 0, "columns"), ("inputs", 0, "dtype"),
             ("outputs",), ("outputs", 0, "shape"), ("classes",), ("feature_names",),
             ("files",), ("files", "trust.onnx"), ("files", "trust.onnx", "sha256"),
             ("files", "trust-0001.params", "bytes"), ("checkpoint",),
             ("checkpoint", "symbol"), ("checkpoint", "params"), ("onnx",), ("onnx", "file"),
             ("parity",), ("parity", "atol"), ("parity", "inputs"), ("parity", "random_range")]
OTHER_TYPES = [None, "x", 7, 1.5, True, [], {}, [None]]
FILES = ["trust.onnx", "trust-0001.params", "trust-symbol.json", "train_log.jsonl",
         "curves.svg"]


def _kind(value):
    return type(value).__name__


def _get(manifest, path):
    for key in path:
        manifest = manifest[key]
    return manifest


def _changed_value(value, rng):
    """The same type, another value."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * rng.choice([10, -1, 2]) + rng.choice([1, 0.5])
    if isinstance(value, str):
        return value + rng.choice(["x", "/..", "-"])
    if isinstance(value, list):
        return value[1:] if value and rng.random() < 0.5 else value + (value[:1] or ["x"])
    return dict(value, extra=1) if value else {"x": 1}


mutations = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(RELIED_ON), st.integers(0, 10**6)),
    st.tuples(st.just("retype"), st.sampled_from(RELIED_ON), st.integers(0, 10**6)),
    st.tuples(st.just("revalue"), st.sampled_from(RELIED_ON), st.integers(0, 10**6)),
    st.tuples(st.sampled_from(["truncate", "garble", "append"]), st.sampled_from(FILES),
              st.integers(0, 10**6), st.booleans()),
    st.tuples(st.just("extra"), st.sampled_from(["notes.txt", "sub/x.bin"]), st.integers(0, 1)),
)


def _mutate(folder, mutation):
    """Apply one mutation; returns whether the manifest itself changed."""
    import random
    kind, target, seed = mutation[:3]
    rng = random.Random(seed)
    manifest = manifest_of(folder)
    if kind in ("delete", "retype", "revalue"):
        parent, key = _get(manifest, target[:-1]), target[-1]
        if kind == "delete":
            parent.pop(key)
        elif kind == "retype":
            parent[key] = rng.choice([v for v in OTHER_TYPES if _kind(v) != _kind(parent[key])])
        else:
            parent[key] = _changed_value(parent[key], rng)
        rewrite(folder, manifest)
        return True
    if kind == "extra":
        path = os.path.join(folder, target)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").write(b"extra")
        return False
    path = os.path.join(folder, target)
    data = open(path, "rb").read()
    if kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "garble":
        data = bytearray(data)
        for i in rng.sample(range(len(data)), rng.randint(1, 8)):
            data[i] = (data[i] + rng.randint(1, 255)) % 256  # never the same byte
        data = bytes(data)
    else:
        data += os.urandom(rng.randint(1, 64))
    open(path, "wb").write(data)
    if mutation[3]:  # re-signed: the hashes pass, the deeper checks must hold
        rewrite(folder, manifest, resign=True)
    return False


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=mutations)
def test_any_mutation_of_an_export_is_refused_or_harmless(export, capsys, mutation):
    pin = hashlib.sha256(open(os.path.join(export[0], "manifest.json"), "rb").read()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "copy")
        shutil.copytree(export[0], folder)
        rows = os.path.join(tmp, "rows.csv")
        shutil.copy(export[2], rows)
        manifest_changed = _mutate(folder, mutation)
        before = snapshot(tmp)
        resigned = len(mutation) == 4 and mutation[3]
        codes = {}
        for name, argv in (("verify", ["verify", folder]),
                           ("predict", ["predict", folder, rows]),
                           ("predict-checkpoint", ["predict", folder, rows, "--checkpoint"]),
                           ("pinned", ["verify", folder, "--manifest-sha256", pin])):
            codes[name] = main(argv)  # an uncaught exception fails the test here
            err = capsys.readouterr().err
            assert codes[name] in (0, 1, 2), (name, codes[name], err)
            assert "Traceback" not in err
        assert snapshot(tmp) == before  # nothing written, in the export or beside it
    if manifest_changed or resigned:
        assert codes["pinned"] == 1, mutation
    if not manifest_changed and not resigned:  # a file changed, or an extra one: no command runs
        assert codes["verify"] == codes["predict"] == codes["pinned"] == 1, (mutation, codes)
    # A field verify or predict relies on, deleted or of another type: refused. (Deleting an
    # optional section, checkpoint or onnx, only claims less: predict then says what is missing.)
    optional = {("checkpoint",), ("onnx",), ("parity", "random_range")}
    if (mutation[0] == "delete" and mutation[1] not in optional) or \
            (mutation[0] == "retype" and mutation[1] != ("parity", "random_range")):
        assert codes["verify"] == 1 and codes["predict"] == 1, (mutation, codes)
