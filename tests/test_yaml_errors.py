"""YAML mistakes through the CLI: the located line and a plain hint instead of PyYAML's own
words (`expected <block end>, but found '<block mapping start>'`), exit 2, nothing written;
and random byte-level edits of a real spec never escape as a traceback."""
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import write_spec
from symbuilder.cli import main

GOOD = """\
name: y
input: {shape: [30]}
layers:
  - {op: FullyConnected, name: fc1, num_hidden: 4}
  - {op: FullyConnected, name: fc2, num_hidden: 2}
output: {op: SoftmaxOutput}
data:
  train: {path: bc.csv, label: benign}
train:
  epochs: 1
  batch_size: 32
"""

# PyYAML's vocabulary, none of which a user should have to read.
JARGON = ("<block end>", "<block mapping start>", "<scalar>", "while parsing", "while scanning",
          "<stream end>", "simple key", "token")


def edit(old, new):
    assert old in GOOD
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize("text, expected", [
    (edit("  batch_size: 32", "   batch_size: 32"),
     "spec.yaml:11:4: the indentation of this line does not match the lines above it"),
    (edit("  - {op: FullyConnected, name: fc2", " - {op: FullyConnected, name: fc2"),
     "spec.yaml:5:2: the indentation of this line does not match the lines above it"),
    (edit("  epochs: 1", "\tepochs: 1"), "spec.yaml:10:1: a tab: YAML indents with spaces"),
    (edit("input: {shape: [30]}", "input: {shape: [30}"),
     "spec.yaml:2:19: expected ',' or ']' here (the '[' at column 16 is still open)"),
    (edit("input: {shape: [30]}", "input: {shape: [30]"), "spec.yaml:2:8: this '{' is never closed"),
    (edit("input: {shape: [30]}", "input: {shape: [30}}"),
     "spec.yaml:2:19: expected ',' or ']' here (the '[' at column 16 is still open)"),
    (edit("output: {op: SoftmaxOutput}", "output: {op: SoftmaxOutput}}"),
     "spec.yaml:6:28: this '}' closes a bracket that was never opened"),
    (edit("name: y", "name: 'y"), "spec.yaml:1:7: this ' quote is never closed"),
    (edit("name: y", 'name: "y'), 'spec.yaml:1:7: this " quote is never closed'),
    (edit("output: {op: SoftmaxOutput}", "output"),
     "spec.yaml:6:1: a key without ':' (write key: value)"),
    (edit("  epochs: 1", "  epochs:1"), "spec.yaml:10:9: put a space after this ':' (key: value)"),
    (edit("name: y", "name:y"), "spec.yaml:1:5: put a space after this ':' (key: value)"),
    (edit("input: {shape: [30]}", "input:{shape: [30]}"),
     "spec.yaml:2:6: put a space after this ':' (key: value)"),
    (edit("name: y", "name: 'y'z"),
     "spec.yaml:1:10: text after a complete value; put the whole value in quotes"),
    (edit("name: y", "name: |x"), "spec.yaml:1:8: after '|' or '>' only a digit, '+' or '-' "
                                  "may follow; the text goes on the next lines, indented"),
    (edit("name: y", "name: y: z"), "spec.yaml:1:8: a value holding ': ' must be quoted"),
    (edit("\ntrain:\n", "\nname: x\ntrain:\n"),
     "spec.yaml:9:1: duplicate key 'name' (first at line 1)"),
    ("- name: y\n- layers: []\n", "spec.yaml:1:1: a spec is a mapping of keys (name: ..., "
                                  "input: ..., layers: ...), but this document is a list"),
    ("just some words\n", "spec.yaml:1:1: a spec is a mapping of keys (name: ..., input: ..., "
                          "layers: ...), but this document is a single value ('just some words')"),
    ("", "spec.yaml:1:1: the spec is empty; it needs at least name:, input:, layers: and output:"),
    ("# nothing yet\n", "spec.yaml:1:1: the spec is empty; it needs at least name:, input:, "
                        "layers: and output:"),
    (GOOD + "---\nname: z\n", "spec.yaml:12:1: a second document ('---'); a spec is one document"),
    (edit("name: y", "name: *y"), "spec.yaml:1:7: '*y' refers to an anchor '&y' that is not "
                                  "defined before it"),
    (edit("name: y", "name: `y`"), "spec.yaml:1:7: '`' cannot start a value; put the value in "
                                   "quotes"),
    (edit("name: y", 'name: "y\\q"'), "spec.yaml:1:10: unknown escape '\\q' in a double-quoted "
                                      "string; use single quotes, or '\\\\' for a backslash"),
    (edit("name: y", "name: y\n%TAG"), "spec.yaml:2:1: a line starting with '%' is a YAML "
                                       "directive; quote a value that starts with '%'"),
    (edit("name: y", "name: y\n%YAML 1.1"), "spec.yaml:3:1: the document ended above (a '...' "
                                            "line, or a line starting with '%', which YAML reads "
                                            "as a directive); a spec is one document"),
    (b"name: caf\xe9\n", "spec.yaml:1:10: not UTF-8 text (byte 9: 0xe9); save the file as UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
     "spec.yaml:3:1: not a YAML text file: it holds binary data (a NUL byte)"),
    (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "spec.yaml:1:6: not a YAML text file: it holds "
                                            "binary data (a NUL byte)"),
])
def test_a_yaml_mistake_is_its_line_and_a_plain_hint(tmp_path, capsys, monkeypatch, text,
                                                     expected):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, "")
    (tmp_path / "spec.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    before = sorted(os.listdir(tmp_path))
    for command in (["validate"], ["build", "--out", "out", "-q"]):
        code = main([command[0], "spec.yaml"] + command[1:])
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert err == expected
        assert not any(word in err for word in JARGON), err
        assert sorted(os.listdir(tmp_path)) == before


def test_the_unedited_spec_is_valid(tmp_path, capsys, monkeypatch):
    """The edits above break a spec that is otherwise good."""
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, GOOD)
    assert main(["validate", "spec.yaml"]) == 0, capsys.readouterr().err


def test_a_mistake_no_hint_covers_is_still_one_located_line_in_plain_words(tmp_path, capsys,
                                                                           monkeypatch):
    # A verbatim tag left open (`!<...`) is a case the table has no row for.
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path, "name: !<tag:x 1\n")
    assert main(["validate", "spec.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "spec.yaml:1:14: not valid YAML here (expected '>', but found ' ')"


# -- fuzz: byte-level edits of a real spec ---------------------------------------------------

@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_spec_bytes_give_exit_0_or_2(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    write_spec(folder, "")
    raw = bytearray(GOOD.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        kind = data.draw(st.sampled_from(["delete", "duplicate", "insert", "byte"]))
        if kind == "delete":
            del raw[i]
        elif kind == "duplicate":
            raw[i:i] = raw[i:i + data.draw(st.integers(1, 12))]
        elif kind == "insert":
            raw[i:i] = data.draw(st.sampled_from(
                [b":", b" ", b"\t", b"\n", b"-", b"[", b"]", b"{", b"}", b"'", b'"', b"&a",
                 b"*a", b"!!python/object:os.system ", b"%", b"#", b"\xff", b"\x00", b"? "]))
        else:
            raw[i] = data.draw(st.integers(0, 255))
    (folder / "spec.yaml").write_bytes(bytes(raw))
    before = sorted(os.listdir(folder))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        code = main(["validate", "spec.yaml"])  # a traceback would raise here
    assert code in (0, 2)
    assert sorted(os.listdir(folder)) == before
