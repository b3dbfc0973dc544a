"""Mistakes in the data a spec names, through the CLI: one located line, exit 2, nothing
written. A wrong name (path, label, array) is located at its spec key; a wrong value at its
line of the data file (or its row and array); never a traceback, never a pickle loaded."""
import csv
import os
import subprocess
import sys
import tempfile
import textwrap
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ROOT, write_spec
from symbuilder.cli import main

SPEC = """\
    name: t
    input: {shape: [%(width)d]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 4}
      - {op: FullyConnected, name: fc2, num_hidden: %(out)d}
    output: {op: %(head)s}
    data:
      train: {%(train)s}
    %(extra)strain: {epochs: 1, batch_size: 32}
    """
# Columns of the keys on line 8 ("  train: {path: ...", dedented): path 11, the next key 25
# when the path is bc.csv.
CSV_TRAIN = "path: bc.csv, label: benign"


def spec_text(train=CSV_TRAIN, width=30, out=2, head="SoftmaxOutput", extra=""):
    return SPEC % dict(train=train, width=width, out=out, head=head, extra=extra)


def cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(folder, capsys, command="validate"):
    """Run `command` on folder/spec.yaml from inside the folder; the one stderr line, after
    checking exit 2, one line, and that nothing was written."""
    before = sorted(os.listdir(folder))
    argv = [command, "spec.yaml"] + (["--out", "out", "-q"] if command == "build" else [])
    code, out, err = cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert sorted(os.listdir(folder)) == before  # no export, no cache, no run folder
    return lines[0]


def edit_csv(folder, edit):
    path = os.path.join(folder, "bc.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    edit(header, body)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + body)


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A folder with bc.csv that is the working folder, so shown paths are relative."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- names the spec gives: located at the key ----------------------------------------------

def _files_for(folder):
    x = np.random.RandomState(0).rand(40, 30)
    y = np.arange(40) % 2
    np.savez(os.path.join(folder, "d.npz"), X=x, y=y)
    np.save(os.path.join(folder, "x.npy"), x)
    np.save(os.path.join(folder, "y.npy"), y)
    os.makedirs(os.path.join(folder, "folder.csv"))
    open(os.path.join(folder, "empty.csv"), "w").close()


@pytest.mark.parametrize("train, extra, expected", [
    ("path: bc2.csv, label: benign", "",
     "spec.yaml:8:11: data.train.path: no such data file 'bc2.csv' (did you mean 'bc.csv'?)"),
    ("path: nothing_like_it.csv, label: benign", "",
     "spec.yaml:8:11: data.train.path: no such data file 'nothing_like_it.csv'"),
    (CSV_TRAIN, "  val: {path: bcc.csv, label: benign}\n    ",
     "spec.yaml:9:9: data.val.path: no such data file 'bcc.csv' (did you mean 'bc.csv'?)"),
    ("path: folder.csv, label: benign", "",
     "spec.yaml:8:11: data.train.path: 'folder.csv' is a folder, not a data file"),
    ("path: empty.csv, label: benign", "",
     "spec.yaml:8:11: data.train.path: data file 'empty.csv' is empty (0 bytes)"),
    ("path: bc.csv, label: benig", "",
     "spec.yaml:8:25: data.train.label: no label column 'benig' in bc.csv (closest: benign, "),
    ("path: x.npy, label: yy.npy", "",
     "spec.yaml:8:24: data.train.label: no such label file 'yy.npy' (did you mean 'y.npy'?)"),
    ("path: x.npy, label: folder.csv", "",
     "spec.yaml:8:24: data.train.label: 'folder.csv' is a folder, not a label file"),
    ("path: d.npz, features: XX", "",
     "spec.yaml:8:24: data.train.features: no feature array 'XX' in d.npz (arrays: X, y)"),
    ("path: d.npz, label: Y", "",
     "spec.yaml:8:24: data.train.label: no label array 'Y' in d.npz (arrays: X, y)"),
])
@pytest.mark.parametrize("command", ["validate", "build"])
def test_a_wrong_name_is_located_at_its_spec_key(here, capsys, train, extra, expected, command):
    write_spec(here, spec_text(train=train, extra=extra))
    _files_for(here)
    line = refused(here, capsys, command)
    assert line.startswith(expected) if expected.endswith(", ") else line == expected, line


def test_the_label_the_user_meant_comes_first_though_it_is_the_last_of_31_columns(here, capsys):
    write_spec(here, spec_text(train="path: bc.csv, label: Benign"))
    line = refused(here, capsys)
    assert line.startswith("spec.yaml:8:25: data.train.label: no label column 'Benign' in "
                           "bc.csv (closest: benign, "), line
    assert line.endswith(", ...)")


def test_paths_are_shown_as_openable_from_the_working_folder(tmp_path, capsys, monkeypatch):
    write_spec(tmp_path / "specs", spec_text(train="path: bc2.csv, label: benign"))
    monkeypatch.chdir(tmp_path)  # the spec is below: paths relative to here
    code, _, err = cli(["validate", os.path.join("specs", "spec.yaml")], capsys)
    assert code == 2
    assert err.strip() == (f"{os.path.join('specs', 'spec.yaml')}:8:11: data.train.path: no "
                           f"such data file '{os.path.join('specs', 'bc2.csv')}' (did you mean "
                           f"'{os.path.join('specs', 'bc.csv')}'?)")
    elsewhere = tempfile.mkdtemp()
    try:
        monkeypatch.chdir(elsewhere)  # not below: absolute
        spec = str(tmp_path / "specs" / "spec.yaml")
        code, _, err = cli(["validate", spec], capsys)
        missing = tmp_path / "specs" / "bc2.csv"
        assert code == 2
        assert f"data.train.path: no such data file '{missing}'" in err.strip()
    finally:
        os.rmdir(elsewhere)


def test_a_feature_pattern_that_matches_nothing_names_the_closest_columns(here, capsys):
    write_spec(here, spec_text(width=10).replace("input: {shape: [10]}",
                                                  'input: {shape: [10], columns: ["men_*"]}'))
    line = refused(here, capsys)
    assert line.startswith("spec.yaml:2:22: input.columns: no feature column matches 'men_*'")
    assert "(closest: mean_" in line


UNREADABLE = """
import os, sys
sys.path.insert(0, {root!r})
from symbuilder.cli import main
os.chdir({folder!r})
if os.geteuid() == 0:  # root reads every file: load everything first, then become nobody
    main(["validate", "--no-data", "spec.yaml"])
    import symbuilder.data
    os.setgid(65534); os.setuid(65534)
sys.exit(main(["validate", "spec.yaml"]))
"""


def test_an_unreadable_file_is_located_at_the_path_key():
    folder = tempfile.mkdtemp()  # pytest's tmp_path is private to its owner
    try:
        os.chmod(folder, 0o755)
        write_spec(folder, spec_text())
        for name in os.listdir(folder):
            os.chmod(os.path.join(folder, name), 0o644)
        os.chmod(os.path.join(folder, "bc.csv"), 0)
        env = dict(os.environ, PYTHONPATH=ROOT)
        done = subprocess.run([sys.executable, "-c", UNREADABLE.format(root=ROOT,
                                                                       folder=folder)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == ("spec.yaml:8:11: data.train.path: cannot read data "
                                       "file 'bc.csv': permission denied")
        assert sorted(os.listdir(folder)) == ["bc.csv", "spec.yaml"]
    finally:
        os.chmod(os.path.join(folder, "bc.csv"), 0o644)
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


# -- CSV values: located at the line and column ---------------------------------------------

def _put(row, column, value):
    def edit(header, rows):
        rows[row][header.index(column)] = value
    return edit


@pytest.mark.parametrize("edit, head, expected", [
    (lambda h, r: h.__setitem__(1, "mean_radius"), "SoftmaxOutput",
     "bc.csv:1: columns 1 and 2 are both named 'mean_radius'; column names must be unique"),
    (lambda h, r: (h.__setitem__(3, ""), h.__setitem__(5, "")), "SoftmaxOutput",
     "bc.csv:1: columns 4 and 6 have no name; column names must be unique"),
    (_put(3, "benign", "nan"), "SoftmaxOutput",
     "bc.csv:5: column 'benign': label nan is not a finite value (a missing value?)"),
    (_put(3, "benign", "NaN"), "LinearRegressionOutput",
     "bc.csv:5: column 'benign': label NaN is not a finite value (a missing value?)"),
    (_put(6, "benign", "-inf"), "LinearRegressionOutput",
     "bc.csv:8: column 'benign': label -inf is not a finite value (a missing value?)"),
    (_put(6, "benign", ""), "SoftmaxOutput", "bc.csv:8: column 'benign': empty label"),
    (_put(3, "mean_radius", "1e39"), "SoftmaxOutput",
     "bc.csv:5: column 'mean_radius': value 1e39 does not fit float32 (max 3.4e38)"),
    (_put(3, "worst_area", "-4e38"), "SoftmaxOutput",
     "bc.csv:5: column 'worst_area': value -4e38 does not fit float32 (max 3.4e38)"),
    (_put(9, "mean_area", "abc"), "SoftmaxOutput",
     "bc.csv:11: column 'mean_area': not a number: 'abc'"),
    (lambda h, r: r[2].append("1"), "SoftmaxOutput",
     "bc.csv:4: expected 31 fields as in the header, found 32"),
    (lambda h, r: r.clear(), "SoftmaxOutput", "bc.csv: no data rows"),
])
def test_a_wrong_csv_value_is_located_at_its_line(here, capsys, edit, head, expected):
    write_spec(here, spec_text(head=head, out=2 if head == "SoftmaxOutput" else 1))
    edit_csv(here, edit)
    assert refused(here, capsys) == expected
    assert refused(here, capsys, "build") == expected


def test_a_byte_that_is_not_utf8_is_located_at_its_line_and_column(here, capsys):
    write_spec(here, spec_text())
    raw = open("bc.csv", "rb").read().split(b"\n")
    raw[2] = raw[2][:7] + b"\xff" + raw[2][8:]  # line 3, column 8
    open("bc.csv", "wb").write(b"\n".join(raw))
    assert refused(here, capsys) == \
        "bc.csv:3:8: not UTF-8 text (byte 0xff); save the file as UTF-8"


def _features(folder):
    from symbuilder.data import load_data
    from symbuilder.spec.load import load_spec
    data = load_data(load_spec(os.path.join(folder, "spec.yaml")), cache_dir=str(folder / "c"))
    return np.concatenate([data.train.features, data.val.features]), data.classes


@pytest.mark.parametrize("rewrite", ["bom", "crlf", "quoted", "spaces"])
def test_a_csv_variant_reads_as_the_plain_file(tmp_path, capsys, rewrite):
    """A BOM, Windows line endings, quoted numbers, blanks around cells: the same data as
    the plain file (compared value by value), not an error."""
    plain, other = tmp_path / "plain", tmp_path / "other"
    write_spec(plain, spec_text())
    write_spec(other, spec_text())
    text = open(other / "bc.csv", newline="").read()
    lines = text.split("\n")
    if rewrite == "bom":
        text = "\ufeff" + text
    elif rewrite == "crlf":
        text = "\r\n".join(lines)
    elif rewrite == "quoted":
        text = "\n".join(",".join(f'"{c}"' for c in line.split(",")) if line else line
                         for line in lines)
    else:
        text = "\n".join(", ".join(line.split(",")) for line in lines)
    open(other / "bc.csv", "w", newline="").write(text)
    code, _, err = cli(["validate", str(other / "spec.yaml")], capsys)
    assert code == 0, err
    want, want_classes = _features(plain)
    got, got_classes = _features(other)
    assert got_classes == want_classes == [0, 1]
    assert np.array_equal(got, want)


# -- arrays: located at the file (and member), never unpickled -------------------------------

class _Marker:
    """Unpickling this creates a file: proof that a loader ran code."""
    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def _npz(**arrays):
    return lambda folder: np.savez(os.path.join(folder, "d.npz"), **arrays)


def _npy(x, y=None, allow_pickle=False):
    def write(folder):
        np.save(os.path.join(folder, "x.npy"), x, allow_pickle=allow_pickle)
        if y is not None:
            np.save(os.path.join(folder, "y.npy"), y, allow_pickle=allow_pickle)
    return write


def _raw(name, data):
    def write(folder):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return write


def _truncated(folder):
    np.save(os.path.join(folder, "x.npy"), X)
    np.save(os.path.join(folder, "y.npy"), Y)
    data = open(os.path.join(folder, "x.npy"), "rb").read()
    open(os.path.join(folder, "x.npy"), "wb").write(data[:-80])


def _text_member(folder):
    with zipfile.ZipFile(os.path.join(folder, "d.npz"), "w") as z:
        z.writestr("X.txt", "1,2,3")
        z.writestr("y.npy", b"")


X = np.random.RandomState(1).rand(40, 30)
Y = np.arange(40) % 2
BIG = X.copy()
BIG[7, 3] = 1e39
NPZ, NPY = "path: d.npz", "path: x.npy, label: y.npy"
PICKLED = "holds Python objects (dtype object), which only pickle can load, and pickle can run code; save an array of numbers"


@pytest.mark.parametrize("train, write, expected", [
    (NPZ, _npz(X=X, y=np.array([_Marker()] * 40, dtype=object)), f"d.npz: array 'y' {PICKLED}"),
    (NPZ, _npz(X=np.array([[_Marker()] * 30] * 40, dtype=object), y=Y),
     f"d.npz: array 'X' {PICKLED}"),
    (NPZ + ", features: X.txt", _text_member,
     "d.npz: member 'X.txt' is not a .npy array (np.savez writes them)"),
    (NPZ, _raw("d.npz", b"just some text, not a zip archive"),
     "d.npz: not an .npz archive (not a zip file)"),
    (NPZ, lambda f: np.save(open(os.path.join(f, "d.npz"), "wb"), X),
     "d.npz: a .npy file, not an .npz archive (format: npy reads it)"),
    (NPZ, _npz(X=np.array(3.0), y=Y), "d.npz: array 'X' has shape (); expected one sample a "
                                      "row (N, ...)"),
    (NPZ, _npz(X=X, y=Y.reshape(20, 2)),
     "d.npz: array 'y' has shape (20, 2); expected one label a row (40,)"),
    (NPZ, _npz(X=X, y=Y[:30]), "d.npz: array 'y' has 30 labels, but array 'X' has 40 rows"),
    (NPZ, _npz(X=X.astype(str), y=Y), "d.npz: array 'X' has dtype <U32; expected numbers"),
    (NPZ, _npz(X=BIG, y=Y), "d.npz: array 'X': row 7, column 'x3': value 1e+39 does not fit "
                            "float32 (max 3.4e38)"),
    (NPZ, _npz(X=X, y=np.where(np.arange(40) == 9, np.nan, Y)),
     "d.npz: array 'y': row 9: label nan is not a finite value (a missing value?)"),
    (NPY, _npy(X, np.array([_Marker()] * 40, dtype=object), allow_pickle=True),
     f"y.npy: the array {PICKLED}"),
    (NPY, _npy(np.array([[_Marker()] * 30] * 40, dtype=object), Y, allow_pickle=True),
     f"x.npy: the array {PICKLED}"),
    (NPY, _truncated,
     "x.npy: the array is truncated: its header promises 9600 bytes of data, it holds 9520"),
    (NPY, lambda f: (_raw("x.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': 'zz'}\n")(f),
                     np.save(os.path.join(f, "y.npy"), Y)),
     "x.npy: not a .npy array (a bad header: "),
    (NPY, lambda f: (_raw("x.npy", b"not numpy at all")(f), np.save(os.path.join(f, "y.npy"), Y)),
     "x.npy: not a .npy array (a bad header: "),
    (NPY, _npy(BIG, Y), "x.npy: the feature array: row 7, column 'x3': value 1e+39 does not "
                        "fit float32 (max 3.4e38)"),
    (NPY, _npy(X, Y[:39]), "y.npy: the label array has 39 labels, but the feature array has "
                           "40 rows"),
    ("path: d.svm", _raw("d.svm", b"".join(b"%d 1:0.5 2:%s\n" % (i % 2, b"1e39" if i == 5 else b"1")
                                         for i in range(40))),
     "d.svm:6: column 'x2': value 1e39 does not fit float32 (max 3.4e38)"),
    ("path: d.svm", _raw("d.svm", b"".join(b"%s 1:0.5 2:1\n" % (b"nan" if i == 5 else b"1")
                                         for i in range(40))),
     "d.svm:6: label nan is not a finite value (a missing value?)"),
])
def test_a_wrong_array_file_is_one_located_line(here, capsys, train, write, expected):
    width = 2 if "svm" in train else 30
    write_spec(here, spec_text(train=train, width=width))
    _Marker.path = str(here / "pickle-ran")
    write(str(here))
    for command in ("validate", "build"):
        line = refused(here, capsys, command)
        assert line.startswith(expected) if expected.endswith(": ") else line == expected, line
    assert not os.path.exists(_Marker.path)  # nothing was unpickled


# -- fuzz: random mutations of a small CSV never escape as a traceback ------------------------

SMALL_CSV = "a,b,c,y\n" + "".join(f"{i * 0.5},{i % 3},{-i},{i % 2}\n" for i in range(12))
CELLS = ["nan", "1e39", "", "abc", "inf", '"', "1,2", "\ufeff", "\xff"]


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_csv_files_give_exit_0_or_2(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    with open(folder / "spec.yaml", "w") as f:
        f.write(textwrap.dedent(spec_text(train="path: s.csv, label: y", width=3)))
    text = SMALL_CSV
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["cell", "delete", "duplicate", "insert"]))
        i = data.draw(st.integers(0, max(0, len(text) - 1)))
        if kind == "delete":
            text = text[:i] + text[i + 1:]
        elif kind == "duplicate":
            text = text[:i] + text[i:i + 1] * 2 + text[i + 1:]
        elif kind == "insert":
            text = text[:i] + data.draw(st.sampled_from(list(",\n\r\"' .-e0\t"))) + text[i:]
        else:
            rows = [r.split(",") for r in text.split("\n")]
            r = data.draw(st.integers(0, len(rows) - 1))
            # The label column half the time: labels take another path than features.
            c = data.draw(st.one_of(st.just(len(rows[r]) - 1),
                                    st.integers(0, len(rows[r]) - 1)))
            rows[r][c] = data.draw(st.sampled_from(CELLS))
            text = "\n".join(",".join(row) for row in rows)
    (folder / "s.csv").write_bytes(text.encode("utf-8", "surrogateescape")
                                   .replace("\xff".encode(), b"\xff"))
    before = sorted(os.listdir(folder))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        code = main(["validate", "spec.yaml"])  # a traceback would raise here
    assert code in (0, 2)
    assert sorted(os.listdir(folder)) == before


def test_the_small_csv_the_fuzzer_mutates_is_valid(here, capsys):
    """So the fuzzer starts from a file that reaches every check (exit 0), not an error."""
    with open("spec.yaml", "w") as f:
        f.write(textwrap.dedent(spec_text(train="path: s.csv, label: y", width=3)))
    open("s.csv", "w").write(SMALL_CSV)
    code, out, err = cli(["validate", "spec.yaml"], capsys)
    assert code == 0, err
    # fc1 3*4+4, fc2 4*2+2, the input layer 4 per channel; 12 rows split 10/2
    assert out.strip() == "spec.yaml: ok (2 layers, 38 parameters, 10 training and 2 " \
                          "validation samples, 2 classes)"
