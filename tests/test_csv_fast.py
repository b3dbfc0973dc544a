"""The CSV reader's fast path (numpy's C parser on plain blocks) against an independent
reading of the same files: Python's csv module and float() in this test, row by row.

Files are generated to mix what the fast path takes (plain numbers, exponents, long digit
strings, spaces, CRLF) with what it must hand to the careful reader (quotes, blank lines,
`1_000`, bad cells, wrong field counts, NaN labels) at any row, including deep in a file
whose first blocks were read fast: the values must be the same, and an error must name the
same line as the careful reader's."""
import csv
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from symbuilder.data import sources
from symbuilder.data.sources import read_table
from symbuilder.errors import DataError

PLAIN = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-3e38, max_value=3e38)
    .map(repr),
    st.integers(-10**12, 10**12).map(str),
    st.sampled_from(["0", "-0", "1e-45", "3.4028234e38", "  2.5 ", "1E+3", ".5", "7.",
                     "0.1000000000000000055511151231257827", "123456789.123456789"]))
HOSTILE = st.sampled_from(['"1.5"', '"1,5"', '1,5', "1_000", "", "abc", "nan", "inf", "1e39",
                           "0x10", "\u0661\u0662"])


def oracle(text: str, label: str):
    """csv + float(), the definition the reader's careful path follows: (features float32,
    labels) or the DataError's line."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = [h.strip() for h in rows[0]]
    li = header.index(label)
    feats, labels = [], []
    first = {}  # the reader reports a wrong field count first, then a bad cell, then a label
    for line, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            first.setdefault("count", line)
            continue
        try:
            values = [float(c) for i, c in enumerate(row) if i != li]
        except ValueError:
            values = [np.inf]
        if not all(abs(v) <= np.finfo(np.float32).max for v in values):
            first.setdefault("cell", line)
            continue
        lab = row[li].strip()
        if lab == "" or lab.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            first.setdefault("label", line)
        feats.append(values)
        labels.append(lab)
    for kind in ("count", "cell", "label"):
        if kind in first:
            return ("line", first[kind])
    return np.array(feats, dtype=np.float64).astype(np.float32), labels


def check(tmp_path, text: str) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(text.encode("utf-8"))
    expected = oracle(text, "y")
    try:
        table = read_table(str(path), "csv", label="y")
    except DataError as e:
        assert isinstance(expected[0], str), f"reader refused what csv + float() reads: {e}"
        assert f":{expected[1]}:" in str(e) or f"line {expected[1]}" in str(e), (str(e), expected)
        return
    assert not isinstance(expected[0], str), f"reader took a file csv + float() refuses: {expected}"
    feats, labels = expected
    np.testing.assert_array_equal(table.features.reshape(len(feats), -1), feats)
    assert [str(v) for v in table.labels] == labels  # whole-number labels are read as ints


def render(rows, newline, label_at=1):
    """Columns a, y, b with the label column y moved to position `label_at`."""
    def order(cells):
        cells = list(cells)
        label = cells.pop(1)
        cells.insert(label_at, label)
        return cells
    return ",".join(order(["a", "y", "b"])) + newline + "".join(
        ",".join(order(r)) + newline for r in rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(PLAIN, st.sampled_from(["0", "1", "cat", " dog "]), PLAIN),
                     min_size=1, max_size=30),
       newline=st.sampled_from(["\n", "\r\n"]), label_at=st.sampled_from([0, 1, 2]))
def test_plain_files_read_as_csv_and_float_read_them(tmp_path, rows, newline, label_at):
    check(tmp_path, render(rows, newline, label_at))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(PLAIN, st.sampled_from(["0", "1", "nan", ""]), PLAIN),
                     min_size=1, max_size=30),
       hostile=st.tuples(st.integers(0, 29), st.sampled_from([0, 2]), HOSTILE),
       blank=st.booleans())
def test_hostile_cells_anywhere_give_the_careful_readers_result(tmp_path, rows, hostile, blank):
    rows = [list(r) for r in rows]
    at, column, cell = hostile
    rows[at % len(rows)][column] = cell
    text = render(rows, "\n")
    if blank:
        text = text.replace("\n", "\n\n", 2)
    check(tmp_path, text)


@pytest.mark.parametrize("bad_row", [0, 2500, 9999])
def test_an_error_after_fast_blocks_names_its_line(tmp_path, monkeypatch, bad_row):
    """Blocks of 100 rows: the first ones go fast, then the bad row's block falls back, and
    the error names the file's line, as a whole careful read would."""
    monkeypatch.setattr(sources, "BLOCK_CELLS", 300)
    rng = np.random.RandomState(bad_row)
    rows = [[repr(float(v)), str(int(v > 0)), repr(float(w))] for v, w in rng.randn(10000, 2)]
    rows[bad_row][2] = "1.5x"
    check(tmp_path, render(rows, "\n"))
    path = tmp_path / "d.csv"
    with pytest.raises(DataError, match=rf":{bad_row + 2}:.*column 'b'"):
        read_table(str(path), "csv", label="y")


def test_quotes_after_fast_blocks_are_read_by_csv_rules(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "BLOCK_CELLS", 30)
    rows = [[str(i), "1", str(i * 2)] for i in range(100)]
    rows[57] = ['"57"', '"a,\nb"', '"114"']  # a quoted label holding a comma and a newline
    check(tmp_path, render(rows, "\n"))
    table = read_table(str(tmp_path / "d.csv"), "csv", label="y")
    assert table.labels[57] == "a,\nb" and table.features[99].tolist() == [99, 198]


@pytest.mark.parametrize("text, line", [
    ("a,y,b\n1,0,2,3\n4,1,5,6\n", 2),   # every row one field too many: numpy would take it
    ("a,y,b\n1,0,2\n4,1\n", 3),
    ("a,y,b\n1,0,2\n\n4,1,5\n7,1,8,9\n", 5),  # blank lines count as lines
])
def test_field_counts_are_the_headers_or_located(tmp_path, text, line):
    assert oracle(text, "y") == ("line", line)
    check(tmp_path, text)
