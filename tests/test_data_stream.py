"""Data beyond memory: CSV parsed in blocks and streamed into a memory-mapped cache, LibSVM,
memory-mapped npz/npy, splits gathered on disk, and the prefetching iterator.

Every comparison is against an independent computation: the whole-file CSV reader symbuilder
had before streaming (kept verbatim below), LibSVM lines written from the CSV's own cells,
the plain (non-prefetching) iterator, and the in-memory build of the same spec.
"""
import csv
import math
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import zipfile

import mxnet as mx
import numpy as np
import pytest

from symbuilder.data import sources
from symbuilder.data import encode_labels, load_data
from symbuilder.data.iterators import ArrayIter, make_iter
from symbuilder.errors import DataError
from symbuilder.moments import array_stats
from symbuilder.data.sources import ReadOptions, Table, read_table, source_format
from symbuilder.spec.load import load_spec, loads_spec
from symbuilder.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BC = os.path.join(ROOT, "specs", "data", "breast_cancer.csv")      # label column: benign
DIGITS = os.path.join(ROOT, "specs", "data", "digits.csv")         # label column: digit


# -- the whole-file reader as it was before streaming (the oracle) ------------------------

def reference_read_csv(path, label, shown):
    # Messages as they are now (an empty file, a non-UTF-8 byte and a missing label column
    # got clearer ones since); the order in which errors are found is the one kept.
    if os.path.getsize(path) == 0:
        raise DataError("is empty (0 bytes)", file=shown)
    with open(path, "r", newline="", encoding="utf-8-sig") as f:
        try:
            rows = list(csv.reader(f))
        except UnicodeDecodeError:
            raise sources.not_utf8(path, shown) from None
        except csv.Error as e:
            raise DataError(f"not a readable CSV file: {e}", file=shown) from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError("empty CSV file; expected a header row", file=shown, line=1)
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    lines = [i + 2 for i, r in enumerate(rows[1:]) if any(cell.strip() for cell in r)]
    if label is not None and label not in header:
        raise DataError(f"no label column '{label}' ({sources.closest_text(label, header)})",
                        file=shown, line=1)
    for row, line in zip(body, lines):
        if len(row) != len(header):
            raise DataError(f"expected {len(header)} fields as in the header, found {len(row)}",
                            file=shown, line=line)
    label_index = header.index(label) if label is not None else None
    feature_idx = [i for i in range(len(header)) if i != label_index]
    names = [header[i] for i in feature_idx]
    cells = np.array(body, dtype=object).reshape(len(body), len(header)) if body else \
        np.empty((0, len(header)), dtype=object)
    try:
        values = cells[:, feature_idx].astype(np.float64)
    except ValueError:
        values = None
    if values is None or not np.isfinite(values).all():
        for r, line in enumerate(lines):
            for c in feature_idx:
                text = str(cells[r, c]).strip()
                try:
                    value = float(text)
                except ValueError:
                    what = "empty value" if text == "" else f"not a number: {text!r}"
                    raise DataError(f"column '{header[c]}': {what}", file=shown,
                                    line=line) from None
                if not math.isfinite(value):
                    raise DataError(f"column '{header[c]}': not a finite number: {text}",
                                    file=shown, line=line)
    labels = None
    if label_index is not None:
        raw = [c.strip() for c in cells[:, label_index]]
        for text, line in zip(raw, lines):
            if text == "":
                raise DataError(f"column '{label}': empty label", file=shown, line=line)
        try:
            numbers = np.array([float(x) for x in raw], dtype=np.float64)
            if np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)):
                labels = numbers.astype(np.int64)
            else:
                labels = numbers
        except ValueError:
            labels = np.array(raw, dtype=object)
    return Table(values.astype(np.float32), labels, names, shown, first_data_line=2)


def same_table(a: Table, b: Table) -> None:
    assert a.features.dtype == b.features.dtype == np.float32
    assert a.features.shape == b.features.shape
    assert np.array_equal(np.asarray(a.features), np.asarray(b.features))
    assert (a.labels is None) == (b.labels is None)
    if a.labels is not None:
        assert a.labels.dtype == b.labels.dtype
        assert a.labels.tolist() == b.labels.tolist()
    assert a.feature_names == b.feature_names
    assert a.first_data_line == b.first_data_line


def streamed(path, fmt, label, cache, **kw):
    return read_table(path, fmt, label=label, options=ReadOptions(cache_dir=str(cache),
                                                                   stream=True, **kw))


def in_memory(path, fmt, label, **kw):
    return read_table(path, fmt, label=label, options=ReadOptions(**kw))


# -- CSV: identical tables, splits, statistics --------------------------------------------

@pytest.mark.parametrize("path, label", [(BC, "benign"), (DIGITS, "digit"), (BC, None)])
def test_csv_in_memory_and_streamed_equal_the_whole_file_reader(tmp_path, path, label):
    want = reference_read_csv(path, label, path)
    same_table(want, in_memory(path, "csv", label))
    first = streamed(path, "csv", label, tmp_path)
    assert isinstance(first.features, np.memmap)
    assert os.path.dirname(os.path.dirname(first.features.filename)) == str(tmp_path / "sources")
    same_table(want, first)
    same_table(want, streamed(path, "csv", label, tmp_path))  # from the cache this time


def test_csv_blocks_split_anywhere_give_the_same_table(tmp_path, monkeypatch):
    want = reference_read_csv(DIGITS, "digit", DIGITS)
    for cells in (65, 1000, 7 * 65 + 3):  # 1 row a block, and blocks ending mid-file
        monkeypatch.setattr(sources, "BLOCK_CELLS", cells)
        same_table(want, in_memory(DIGITS, "csv", "digit"))
        same_table(want, streamed(DIGITS, "csv", "digit", tmp_path / str(cells)))


def _spec(tmp_path, body, data_file=BC, name="spec.yaml"):
    folder = tmp_path
    os.makedirs(folder, exist_ok=True)
    shutil.copy(data_file, folder / os.path.basename(data_file))
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return load_spec(str(path))


MLP = """\
    name: mlp
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 16}
      - {op: Activation, name: relu1, act_type: relu}
      - {op: Dropout, name: drop, p: 0.2}
      - {op: FullyConnected, name: fc2, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data: {train: {path: breast_cancer.csv, label: benign%s}}
    train: {epochs: 2, batch_size: 16, optimizer: adam, optimizer_params: {learning_rate: 0.01}, seed: 5}
    """


def same_split(a, b, names=True) -> None:
    assert a.classes == b.classes
    if names:
        assert a.feature_names == b.feature_names and a.columns == b.columns
    for x, y in ((a.train, b.train), (a.val, b.val)):
        assert list(x.inputs) == list(y.inputs)
        for name in x.inputs:
            assert x.inputs[name].shape == y.inputs[name].shape
            assert np.array_equal(np.asarray(x.inputs[name]), np.asarray(y.inputs[name]))
        assert x.labels.dtype == y.labels.dtype and np.array_equal(x.labels, y.labels)


@pytest.mark.parametrize("which", ["bc", "digits"])
def test_streamed_split_and_statistics_equal_the_in_memory_ones(tmp_path, which):
    if which == "bc":
        body, data = MLP.replace("%s", "{stream}"), BC
    else:
        with open(os.path.join(ROOT, "specs", "digits_cnn.yaml")) as f:
            body = f.read().replace("path: data/digits.csv, format: csv, label: digit",
                                    "path: digits.csv, format: csv, label: digit{stream}")
        assert "{stream}" in body
        data = DIGITS
    plain = _spec(tmp_path / "a", body.replace("{stream}", ""), data)
    stream = _spec(tmp_path / "b", body.replace("{stream}", ", stream: true"), data)
    cache = tmp_path / "cache"
    a = load_data(plain, cache_dir=str(cache))
    assert not os.path.exists(cache)  # small data: nothing written
    b = load_data(stream, cache_dir=str(cache))
    same_split(a, b)
    for name, array in b.train.inputs.items():  # both splits are files in the cache
        assert isinstance(array, np.memmap) and array.filename.startswith(str(cache / "arrays"))
        assert isinstance(b.val.inputs[name], np.memmap)
        sa, sb = array_stats(a.train.inputs[name]), array_stats(array)
        assert np.array_equal(sa.mean, sb.mean) and np.array_equal(sa.var, sb.var)
    # A second load reuses the cache: same files, nothing rewritten.
    files = {p: os.stat(os.path.join(cache, "arrays", p)).st_mtime_ns
             for p in os.listdir(cache / "arrays")}
    again = load_data(stream, cache_dir=str(cache))
    same_split(a, again)
    assert {p: os.stat(os.path.join(cache, "arrays", p)).st_mtime_ns
            for p in os.listdir(cache / "arrays")} == files


@pytest.mark.parametrize("gather_rows", [1, 7, 64, 10_000])
def test_on_disk_gather_equals_numpy_indexing(tmp_path, monkeypatch, gather_rows):
    from symbuilder.data.cache import ArrayStore
    monkeypatch.setattr("symbuilder.data.cache.GATHER_BYTES", gather_rows * 6 * 4)  # source rows
    rng = np.random.RandomState(7)
    np.save(tmp_path / "x.npy", rng.rand(500, 6).astype(np.float32))
    flat = np.load(tmp_path / "x.npy", mmap_mode="r")
    table = Table(flat, None, [f"c{i}" for i in range(6)], "x.npy", identity="x")
    store = ArrayStore(str(tmp_path / "arrays"))
    rows = np.sort(rng.choice(500, 37, replace=False))  # sparse: many windows are empty
    rows[-1] = 499
    for r, cols, shape in ((rows, None, (6,)), (rows, [4, 0, 2], (3,)), (None, [5, 1], (2, 1)),
                           (None, None, (2, 3)), (np.arange(500), None, (6,))):
        got = store.gather(table, flat, r, cols, shape)
        want = np.asarray(flat)[r if r is not None else slice(None)]
        want = (want if cols is None else want[:, cols]).reshape((len(want),) + shape)
        assert isinstance(got, np.memmap) and np.array_equal(got, want)
    with pytest.raises(ValueError, match="sorted"):
        store.gather(table, flat, rows[::-1], None, (6,))


def test_training_on_streamed_data_is_bit_identical_to_in_memory(tmp_path):
    plain = _spec(tmp_path / "a", MLP % "")
    stream = _spec(tmp_path / "b", MLP % ", stream: true")
    ra = train(plain, load_data(plain, cache_dir=str(tmp_path / "ca")), bar=False)
    rb = train(stream, load_data(stream, cache_dir=str(tmp_path / "cb")), bar=False)
    for k in ra.arg_params:
        assert np.array_equal(ra.arg_params[k].asnumpy(), rb.arg_params[k].asnumpy()), k
    for k in ra.aux_params:
        assert np.array_equal(ra.aux_params[k].asnumpy(), rb.aux_params[k].asnumpy()), k
    assert ra.history[-1]["val"] == rb.history[-1]["val"]


def test_a_changed_file_is_converted_again_and_the_old_entry_dropped(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n1,2,0\n3,4,1\n")
    first = streamed(str(path), "csv", "y", tmp_path / "c")
    entries = os.listdir(tmp_path / "c" / "sources")
    assert len(entries) == 1 and first.features.tolist() == [[1, 2], [3, 4]]
    path.write_text("a,b,y\n1,2,0\n3,4,1\n5,6,1\n")
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    second = streamed(str(path), "csv", "y", tmp_path / "c")
    assert second.features.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert os.listdir(tmp_path / "c" / "sources") != entries
    assert len(os.listdir(tmp_path / "c" / "sources")) == 1


def test_half_written_files_of_a_killed_process_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    sources_dir = tmp_path / "c" / "sources"
    os.makedirs(sources_dir / f"bc.csv-0123456789abcdef.tmp-{dead}-aaaa")
    os.makedirs(sources_dir / f"other.csv-0123456789abcdef.tmp-{os.getppid()}-bbbb")  # alive
    streamed(BC, "csv", "benign", tmp_path / "c")
    left = sorted(os.listdir(sources_dir))
    assert len(left) == 2 and not any(f"tmp-{dead}-" in n for n in left)
    assert any(f"tmp-{os.getppid()}-" in n for n in left)


def test_streaming_is_automatic_above_the_threshold_only(tmp_path, monkeypatch):
    opts = ReadOptions(cache_dir=str(tmp_path / "c"))
    assert not isinstance(read_table(BC, "csv", label="benign", options=opts).features,
                          np.memmap)
    monkeypatch.setattr(sources, "STREAM_BYTES", 1000)
    assert isinstance(read_table(BC, "csv", label="benign", options=opts).features, np.memmap)
    never = ReadOptions(cache_dir=str(tmp_path / "c"), stream=False)
    assert not isinstance(read_table(BC, "csv", label="benign", options=never).features,
                          np.memmap)
    # Without a cache folder nothing is ever written: in memory, whatever the size.
    assert not isinstance(read_table(BC, "csv", label="benign").features, np.memmap)


# -- CSV: located errors unchanged --------------------------------------------------------

BAD_CSVS = {
    "bad value": "a,b,y\n1,2,0\n1,x,1\n",
    "empty value": "a,b,y\n1,2,0\n1, ,1\n",
    "nan": "a,b,y\n1,2,0\n\n1,nan,1\n",
    "inf": "a,b,y\n1,-inf,0\n",
    "field count": "a,b,y\n1,2,0\n1,2\n",
    "count after a bad cell": "a,b,y\n1,x,0\n1,2,0\n1,2\n",
    "bad cell after an empty label": "a,b,y\n1,2,\n1,2,0\n1,z,0\n",
    "empty label": "a,b,y\n1,2,0\n1,2, \n",
    "no label column": "a,b,z\n1,2,0\n",
    "empty file": "",
    "blank header": " , \n1,2\n",
    "no rows": "a,b,y\n\n",
    "not utf-8": "a,b,y\n1,2,0\n1,\xff,1\n",
    "nul byte": "a,b,y\n1,2,0\n1,\x00,1\n",
    "no label column, unreadable later": "a,b,z\n1,2,0\n1,\xff,1\n",
}


def _message(fn):
    try:
        fn()
    except DataError as e:
        return str(e)
    return None


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_located_csv_errors_are_those_of_the_whole_file_reader(tmp_path, case):
    path = tmp_path / "bad.csv"
    text = BAD_CSVS[case]
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    shown = "data/bad.csv"

    def reference():
        table = reference_read_csv(str(path), "y", shown)
        if len(table) == 0:
            raise DataError("no data rows", file=shown)
    want = _message(reference)
    assert want is not None and want.startswith(shown)
    got_memory = _message(lambda: read_table(str(path), "csv", label="y", shown_path=shown))
    got_stream = _message(lambda: read_table(
        str(path), "csv", label="y", shown_path=shown,
        options=ReadOptions(cache_dir=str(tmp_path / "c"), stream=True)))
    assert got_memory == want and got_stream == want
    leftovers = os.listdir(tmp_path / "c" / "sources") if os.path.exists(
        tmp_path / "c" / "sources") else []
    assert leftovers == []  # nothing half-written is kept


def test_a_bad_value_deep_in_a_streamed_csv_names_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "BLOCK_CELLS", 300)  # many blocks
    rows = [f"{i},{i * 0.5},{i % 2}" for i in range(5000)]
    rows[3210] = "7,oops,1"
    path = tmp_path / "big.csv"
    path.write_text("a,b,y\n" + "\n".join(rows) + "\n")
    message = _message(lambda: streamed(str(path), "csv", "y", tmp_path / "c"))
    assert message == f"{path}:3212: column 'b': not a number: 'oops'"
    assert message == _message(lambda: reference_read_csv(str(path), "y", str(path)))


# -- CSV: memory ---------------------------------------------------------------------------

MEASURE = """
import sys
sys.path.insert(0, {root!r})
from symbuilder.data.sources import ReadOptions, read_table
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
import numpy, csv, json  # imported before the baseline
base = status("VmRSS:")
table = read_table({path!r}, "csv", label="y", options=ReadOptions(cache_dir={cache!r}, stream=True))
print(status("VmHWM:") - base, table.features.shape[0], type(table.features).__name__)
"""


def test_a_200k_row_csv_streams_in_memory_far_below_its_size(tmp_path):
    rng = np.random.RandomState(0)
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write(",".join([f"f{i}" for i in range(20)] + ["y"]) + "\n")
        np.savetxt(f, np.column_stack([rng.rand(200_000, 20), rng.randint(0, 3, 200_000)]),
                   fmt=["%.6f"] * 20 + ["%d"], delimiter=",")
    size = os.path.getsize(path)
    code = MEASURE.format(root=ROOT, path=str(path), cache=str(tmp_path / "c"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    growth, rows, kind = int(out[0]), int(out[1]), out[2]
    assert rows == 200_000 and kind == "memmap"
    # The float32 rows alone are 16 MB; the file is ~35 MB. Streaming holds one block.
    assert growth < size / 3, f"peak RSS grew {growth / 2**20:.1f} MB for a {size / 2**20:.1f} MB CSV"


# -- LibSVM ------------------------------------------------------------------------------

def write_libsvm(csv_path, label, out, *, zero_based=False, shuffle_pairs=False, comment=True):
    """LibSVM lines from the CSV's own cells (zeros left out, as LibSVM writers do)."""
    base = 0 if zero_based else 1
    rng = np.random.RandomState(1)
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    li = header.index(label)
    lines = ["# written from " + os.path.basename(csv_path)] if comment else []
    for r, row in enumerate(body):
        pairs = [f"{j + base}:{cell.strip()}" for j, cell in
                 enumerate(c for k, c in enumerate(row) if k != li) if float(cell) != 0.0]
        if shuffle_pairs:
            rng.shuffle(pairs)
        lines.append(" ".join([row[li].strip()] + pairs) + ("  # a comment" if r % 7 == 0 else ""))
        if r % 50 == 0:
            lines.append("")
    out.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("zero_based", [False, True])
def test_libsvm_equals_the_csv(tmp_path, zero_based):
    path = tmp_path / "bc.svm"
    write_libsvm(BC, "benign", path, zero_based=zero_based, shuffle_pairs=True)
    want = reference_read_csv(BC, "benign", BC)
    for kw in ({}, {"n_features": 30}):
        for table in (in_memory(str(path), "libsvm", None, zero_based=zero_based, **kw),
                      streamed(str(path), "libsvm", None, tmp_path / f"c{len(kw)}",
                               zero_based=zero_based, **kw)):
            assert np.array_equal(np.asarray(table.features), want.features)
            assert table.labels.dtype == want.labels.dtype
            assert table.labels.tolist() == want.labels.tolist()
            base = 0 if zero_based else 1
            assert table.feature_names == [f"x{i + base}" for i in range(30)]


def test_libsvm_width_from_the_spec_pads_missing_trailing_features(tmp_path):
    path = tmp_path / "s.svm"
    path.write_text("1 1:0.5 3:2\n0 2:-1\n")
    assert in_memory(str(path), "libsvm", None).features.tolist() == [[0.5, 0, 2], [0, -1, 0]]
    wide = in_memory(str(path), "libsvm", None, n_features=5)
    assert wide.features.tolist() == [[0.5, 0, 2, 0, 0], [0, -1, 0, 0, 0]]
    assert wide.labels.tolist() == [1, 0]


def test_libsvm_spec_builds_the_same_split_as_the_csv(tmp_path):
    plain = _spec(tmp_path / "a", MLP % "")
    os.makedirs(tmp_path / "b")
    write_libsvm(BC, "benign", tmp_path / "b" / "bc.libsvm")
    svm = _spec(tmp_path / "b", (MLP % "").replace("path: breast_cancer.csv, label: benign",
                                                   "path: bc.libsvm"))
    assert source_format(svm.data.train) == "libsvm"
    same_split(load_data(plain), load_data(svm), names=False)  # libsvm names: x1..x30


@pytest.mark.parametrize("text, message", [
    ("1 1:0.5\n0 2:x\n", ":2: column 'x2': not a number: 'x'"),
    ("1 1:0.5\n0 2:nan\n", ":2: column 'x2': not a finite number: nan"),
    ("1 1:0.5\n0 a:1\n", ":2: feature index 'a' is not an integer"),
    ("1 1:0.5\n\n0 0:1\n", ":3: feature index 0: indices count from 1 (zero_based: true reads "
                           "a file that counts from 0)"),
    ("1 1:0.5\n0 4:1\n", ":2: feature index 4 is beyond the 3 features the input's shape gives"),
    ("1 1:0.5 1:2\n", ":1: feature index 1 appears twice"),
    ("1:0.5 2:1\n", ":1: expected the label first, found '1:0.5'"),
    ("1 qid:3 1:0.5\n", ":1: qid (a ranking query id) is not supported"),
    ("1 1:\n", ":1: expected index:value, found '1:'"),
    ("# only a comment\n\n", ": no data rows"),
])
def test_libsvm_errors_are_located(tmp_path, text, message):
    path = tmp_path / "bad.svm"
    path.write_text(text)
    for stream in (False, True):
        got = _message(lambda: read_table(str(path), "libsvm", label=None, shown_path="d.svm",
                                          options=ReadOptions(cache_dir=str(tmp_path / "c"),
                                                              stream=stream, n_features=3)))
        assert got == "d.svm" + message


# -- npz / npy ---------------------------------------------------------------------------

def test_uncompressed_npz_is_memory_mapped_and_compressed_streams(tmp_path):
    rng = np.random.RandomState(0)
    x = rng.rand(500, 3, 4).astype(np.float32)
    y = rng.randint(0, 2, 500)
    np.savez(tmp_path / "plain.npz", X=x, y=y)
    np.savez_compressed(tmp_path / "packed.npz", X=x, y=y)
    np.savez(tmp_path / "f64.npz", X=x.astype(np.float64), y=y)
    plain = in_memory(str(tmp_path / "plain.npz"), "npz", None)
    assert isinstance(plain.features, np.memmap) and np.array_equal(plain.features, x)
    packed = in_memory(str(tmp_path / "packed.npz"), "npz", None)
    assert not isinstance(packed.features, np.memmap) and np.array_equal(packed.features, x)
    for name in ("packed", "f64"):
        table = streamed(str(tmp_path / f"{name}.npz"), "npz", None, tmp_path / "c")
        assert isinstance(table.features, np.memmap), name
        assert table.features.dtype == np.float32 and np.array_equal(table.features, x)
        assert table.labels.tolist() == y.tolist()
    np.save(tmp_path / "x64.npy", x.astype(np.float64))
    table = streamed(str(tmp_path / "x64.npy"), "npy", None, tmp_path / "c")
    assert isinstance(table.features, np.memmap) and np.array_equal(table.features, x)


def test_a_non_finite_value_in_a_memory_mapped_npy_is_located(tmp_path):
    x = np.ones((70000, 3), np.float32)
    x[66000, 2] = np.inf
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.zeros(70000, np.int64))
    spec = loads_spec(textwrap.dedent(f"""\
        name: n
        input: {{shape: [3]}}
        layers: [{{op: FullyConnected, num_hidden: 2}}]
        output: {{op: SoftmaxOutput}}
        data: {{train: {{path: {tmp_path / 'x.npy'}, label: y.npy, stream: true}}}}
        """))
    with pytest.raises(DataError) as e:
        load_data(spec, cache_dir=str(tmp_path / "c"))
    assert str(e.value).endswith("row 66000, column 'x2': not a finite number: inf")


# -- labels ------------------------------------------------------------------------------

def test_vectorised_integer_label_encoding_matches_the_generic_one():
    spec = loads_spec(textwrap.dedent("""\
        name: n
        input: {shape: [3]}
        layers: [{op: FullyConnected, num_hidden: 20}]
        output: {op: SoftmaxOutput}
        """))
    rng = np.random.RandomState(0)
    train_y = rng.choice([-3, 0, 7, 11, 2], 300)
    val_y = rng.choice([0, 7, 11], 50)
    fast = encode_labels(spec, train_y, [val_y], ("k",))
    slow = encode_labels(spec, train_y.astype(object), [val_y.astype(object)], ("k",))
    assert fast[2] == slow[2] == [-3, 0, 2, 7, 11]
    assert all(type(c) is int for c in fast[2])
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1][0], slow[1][0])
    assert fast[0].dtype == fast[1][0].dtype == np.float32
    with pytest.raises(DataError, match=r"validation labels \[5\] never occur"):
        encode_labels(spec, train_y, [np.array([0, 5])], ("k",))


# -- prefetching -------------------------------------------------------------------------

def _batches(it, n=None):
    out = []
    for i, batch in enumerate(it):
        out.append(([d.asnumpy() for d in batch.data], batch.label[0].asnumpy(), batch.pad))
        if n is not None and i + 1 == n:
            break
    return out


def _same_batches(a, b):
    assert len(a) == len(b)
    for (da, la, pa), (db, lb, pb) in zip(a, b):
        assert pa == pb and np.array_equal(la, lb)
        assert all(np.array_equal(x, y) for x, y in zip(da, db))


@pytest.mark.parametrize("shard", [None, (1, 3)])
def test_prefetching_iterator_yields_the_plain_iterators_batches(tmp_path, monkeypatch, shard):
    monkeypatch.setattr("symbuilder.data.iterators.CHUNK_BYTES", 4096)  # many chunks per epoch
    rng = np.random.RandomState(0)
    x = rng.rand(1003, 2, 5).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    inputs = {"a": np.load(tmp_path / "x.npy", mmap_mode="r"), "b": rng.rand(1003, 3)}
    labels = rng.randint(0, 4, 1003).astype(np.float32)
    seen = []

    def make(prefetch):
        return ArrayIter(inputs, labels, label_name="softmax_label", batch_size=32,
                         shuffle=True, seed=9, epoch=2, shard=shard, prefetch=prefetch,
                         on_epoch_start=lambda e: seen.append((prefetch, e)))
    plain, ahead = make(0), make(2)
    for _ in range(2):  # two epochs
        _same_batches(_batches(plain), _batches(ahead))
        plain.reset()
        ahead.reset()
    # A reset mid-epoch (Module.predict resets first) starts the next epoch cleanly.
    _same_batches(_batches(plain, 5), _batches(ahead, 5))
    plain.reset()
    ahead.reset()
    _same_batches(_batches(plain), _batches(ahead))
    # The epoch-start callback ran in the caller's thread, at the same points.
    assert [e for p, e in seen if p == 0] == [e for p, e in seen if p == 2] == [2, 3, 4, 5]
    ahead.close()
    assert not [t for t in threading.enumerate() if t.name == "symbuilder-prefetch"]


@pytest.mark.parametrize("shuffle", [True, False])
def test_chunked_batches_are_the_per_batch_definition(monkeypatch, shuffle):
    """epoch_chunks sorts a whole chunk's batches in one call; each batch must still be
    _batch_indices' batch: order[s:s+B], sorted when shuffling, the last one padded from
    the start of the order."""
    from symbuilder.data.iterators import _batch_indices
    monkeypatch.setattr("symbuilder.data.iterators.CHUNK_BYTES", 3 * 7 * 4 * 10)  # 3 batches a chunk
    rng = np.random.RandomState(4)
    x = rng.rand(101, 7).astype(np.float32)
    labels = np.arange(101, dtype=np.float32)
    it = ArrayIter({"data": x}, labels, label_name="l", batch_size=10, shuffle=shuffle,
                   seed=2, epoch=1, prefetch=0)
    order = it._order.copy()
    for k, batch in enumerate(_batches(it)):
        idx, pad = _batch_indices(order, 10 * k, 10, shuffle)
        assert batch[2] == pad and np.array_equal(batch[1], labels[idx])
        assert np.array_equal(batch[0][0], x[idx])
    assert k == 10 and pad == 9


def test_prefetch_is_on_for_memory_mapped_inputs_only(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 2), np.float32))
    labels = np.zeros(10, np.float32)
    mapped = ArrayIter({"d": np.load(tmp_path / "x.npy", mmap_mode="r")}, labels,
                       label_name="l", batch_size=4, shuffle=True)
    ram = ArrayIter({"d": np.zeros((10, 2), np.float32)}, labels, label_name="l",
                    batch_size=4, shuffle=True)
    assert mapped.prefetch == 2 and ram.prefetch == 0


def test_a_failure_in_the_prefetch_thread_reaches_the_caller():
    class Broken(np.ndarray):
        def __getitem__(self, item):
            if isinstance(item, np.ndarray):
                raise OSError("disk went away")
            return super().__getitem__(item)
    x = np.zeros((64, 3), np.float32).view(Broken)
    it = ArrayIter({"data": x}, np.zeros(64, np.float32), label_name="l", batch_size=8,
                   shuffle=False, prefetch=2)
    with pytest.raises(OSError, match="disk went away"):
        next(it)
    it.close()


# -- MXNet's log noise (issue 6, item 8) --------------------------------------------------

@pytest.mark.parametrize("verbose", [False, True])
def test_build_is_quiet_by_default_and_verbose_shows_mxnet_logging(tmp_path, verbose):
    spec = tmp_path / "spec.yaml"
    shutil.copy(BC, tmp_path / "breast_cancer.csv")
    spec.write_text(textwrap.dedent((MLP % "").replace("epochs: 2", "epochs: 1")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MXNET_")}
    exe = os.path.join(os.path.dirname(sys.executable), "symbuilder")
    proc = subprocess.run([exe, "build", str(spec), "--out", str(tmp_path / "out")]
                          + (["--verbose"] if verbose else []), capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    noise = [line for line in proc.stderr.splitlines() if not line.startswith("epoch ")]
    if verbose:
        assert any("Subgraph backend MKLDNN is activated" in line for line in noise), noise
    else:
        assert noise == [], noise


def test_a_streamed_build_caches_beside_its_out_folder_and_nowhere_else(tmp_path, monkeypatch):
    from helpers import write_spec
    from symbuilder.cli import main
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # a cache under ./export would land here
    spec = write_spec(tmp_path / "spec", """\
        name: streamed
        input: {shape: [30]}
        layers: [{op: FullyConnected, name: fc, num_hidden: 2}]
        output: {op: SoftmaxOutput, name: softmax}
        data: {train: {path: bc.csv, label: benign, stream: true}}
        train: {epochs: 1}
        """)
    out = tmp_path / "exports" / "streamed"
    assert main(["build", spec, "--out", str(out), "-q"]) == 0
    assert sorted(os.listdir(tmp_path / "exports")) == [".streamed.data", "streamed"]
    cached = [f for _, _, files in os.walk(tmp_path / "exports" / ".streamed.data") for f in files]
    assert any(f.endswith(".npy") for f in cached)
    assert os.listdir(work) == []


def test_a_conversion_that_fails_or_declines_leaves_nothing_in_the_cache(tmp_path):
    cache = tmp_path / "c"
    # Fails: a bad value in a streamed CSV; the staging folder goes with the error.
    bad = tmp_path / "bad.csv"
    bad.write_text("a,y\n1,0\noops,1\n")
    with pytest.raises(DataError):
        streamed(str(bad), "csv", "y", cache)
    # Declines: a Fortran-ordered compressed member is loaded the ordinary way, not cached.
    x = np.asfortranarray(np.random.RandomState(1).rand(40, 3).astype(np.float32))
    np.savez_compressed(tmp_path / "f.npz", X=x, y=np.zeros(40, dtype=np.int64))
    table = streamed(str(tmp_path / "f.npz"), "npz", None, cache)
    assert np.array_equal(np.asarray(table.features), x)
    left = [n for _, dirs, files in os.walk(cache) for n in dirs + files if n != "sources"]
    assert left == []
