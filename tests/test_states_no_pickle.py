"""Nothing symbuilder reads runs code: resumable optimizer state is an NDArray file plus JSON,
never a pickle, and every numpy loader refuses pickles.

A resume is checked against an uninterrupted run of the same spec (the final params, bit for
bit); a planted pickle must not run (its payload would create a marker file); a states file
that does not fit is one located line, exit 2, and nothing written.
"""
import ast
import hashlib
import json
import os
import pickle
import shutil

import mxnet as mx
import numpy as np
import pytest

import helpers

from symbuilder.cli import main
from symbuilder.pipeline import build
from symbuilder.spec.load import load_spec

MLP = """\
    name: mlp
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 16}
      - {op: Activation, name: relu1, act_type: relu}
      - {op: Dropout, name: drop, p: 0.2}
      - {op: FullyConnected, name: fc2, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data: {train: {path: bc.csv, label: benign}}
    train:
      epochs: 6
      batch_size: 64
      seed: 5
    """
SGD = "optimizer: sgd\noptimizer_params: {learning_rate: 0.05, momentum: 0.9, wd: 1.0e-4}"
ADAM = "optimizer: adam\noptimizer_params: {learning_rate: 0.003}"
FACTOR = SGD + "\nlr_scheduler: {name: factor, step_epochs: 2, factor: 0.5, warmup_epochs: 1}"
TWO_DEVICES = ADAM + "\ncontext: [cpu(0), cpu(1)]\nkvstore: local"
TWO_DEVICES_DEVICE_KV = FACTOR + "\ncontext: [cpu(0), cpu(1)]\nkvstore: device"
INTERRUPTED_AFTER = 3


class _Interrupt(Exception):
    pass


def _spec_body(train_lines: str) -> str:
    indented = "".join(f"      {line}\n" for line in train_lines.splitlines())
    return MLP.rstrip(" ") + indented


def _stop_after(epoch: int):
    """A progress callback that interrupts the build as epoch+1 ends, before its checkpoint:
    the run folder then holds epoch `epoch`'s, as after a SIGKILL at that moment."""
    def say(line: str) -> None:
        if line.startswith(f"epoch {epoch + 1}/"):
            raise _Interrupt()
    return say


def _interrupted(folder, train_lines: str):
    """(spec path, out dir, run dir) of a build interrupted after INTERRUPTED_AFTER epochs."""
    spec = helpers.write_spec(folder, _spec_body(train_lines))
    out = os.path.join(folder, "out")
    with pytest.raises(_Interrupt):
        build(load_spec(spec), out_dir=out, progress=_stop_after(INTERRUPTED_AFTER))
    run_dir = os.path.join(folder, ".out.run")
    assert json.load(open(os.path.join(run_dir, "state.json")))["epoch"] == INTERRUPTED_AFTER
    return spec, out, run_dir


def _params(folder):
    saved = mx.nd.load(os.path.join(folder, "mlp-0006.params"))
    return {k: v.asnumpy() for k, v in saved.items()}


@pytest.mark.parametrize("train_lines", [SGD, ADAM, FACTOR, TWO_DEVICES, TWO_DEVICES_DEVICE_KV],
                         ids=["sgd-momentum", "adam", "factor-schedule", "two-devices",
                              "two-devices-kvstore-device"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, train_lines, capsys):
    spec, out, run_dir = _interrupted(tmp_path / "broken", train_lines)
    doc = json.load(open(os.path.join(run_dir, f"mlp-{INTERRUPTED_AFTER:04d}.states.json")))
    # Two devices go through the kvstore's updater (states keyed by name), one device
    # through the module's own (keyed by slot number): both paths are exercised.
    keys = [index for index, _ in doc["states"]]
    two = "cpu(1)" in train_lines
    assert keys and all(isinstance(k, str) if two else isinstance(k, int) for k in keys)
    whole = str(tmp_path / "whole")
    build(load_spec(helpers.write_spec(tmp_path / "w", _spec_body(train_lines))), out_dir=whole)
    capsys.readouterr()
    assert main(["build", spec, "--out", out, "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"resuming from epoch {INTERRUPTED_AFTER}" in err
    assert sum(line.startswith("epoch ") for line in err.splitlines()) == 6 - INTERRUPTED_AFTER
    a, b = _params(whole), _params(out)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A folder with a spec and the run folder of its build, interrupted after epoch 3."""
    folder = tmp_path_factory.mktemp("interrupted")
    _interrupted(folder, ADAM)
    return folder


class _Payload:
    """Unpickling this creates the marker file: proof that the pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _resume_refused(folder, capsys) -> str:
    """Resume in `folder`: exit 2, one line, nothing written or removed; the line."""
    before = _snapshot(folder)
    capsys.readouterr()
    code = main(["build", os.path.join(folder, "spec.yaml"), "--out",
                 os.path.join(folder, "out"), "--resume", "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert _snapshot(folder) == before  # nothing written, nothing removed
    assert not os.path.exists(os.path.join(folder, "out"))
    return err.strip()


def _copy(run_folder, tmp_path):
    folder = str(tmp_path / "copy")
    shutil.copytree(run_folder, folder)
    run_dir = os.path.join(folder, ".out.run")
    doc, nd = (os.path.join(run_dir, f"mlp-0003.states.{ext}") for ext in ("json", "nd"))
    return folder, run_dir, doc, nd


def _plant(path: str, marker: str) -> None:
    with open(path, "wb") as f:
        f.write(pickle.dumps(_Payload(marker)))


@pytest.mark.parametrize("where", ["json", "nd", "old-format"])
def test_a_planted_pickle_never_runs(run_folder, tmp_path, capsys, where):
    folder, run_dir, doc, nd = _copy(run_folder, tmp_path)
    marker = str(tmp_path / "pwned")
    if where == "old-format":  # a run folder of an older symbuilder: only MXNet's pickle
        os.remove(doc)
        os.remove(nd)
        target = os.path.join(run_dir, "mlp-0003.states")
        want = ("optimizer state in MXNet's pickle format (an older symbuilder wrote it), "
                "which symbuilder does not load: unpickling can run code; build again "
                "without --resume")
    elif where == "json":
        target = doc
        want = "not a JSON text file (UnicodeDecodeError); build again without --resume"
    else:
        target = nd
        want = ("does not match the nd_sha256 in mlp-0003.states.json (corrupted or "
                "replaced); build again without --resume")
    _plant(target, marker)
    line = _resume_refused(folder, capsys)
    assert not os.path.exists(marker)
    assert line == f"{target}: {want}"


def _rewrite_nd(doc_path: str, nd_path: str, arrays) -> None:
    """Replace the .nd file and, like a careful forger, its checksum in the JSON."""
    mx.nd.save(nd_path, arrays)
    _rewrite_nd_checksum(doc_path, nd_path)


def _edit_doc(doc_path: str, edit) -> None:
    doc = json.load(open(doc_path))
    edit(doc)
    json.dump(doc, open(doc_path, "w"))


def _attr(doc, name):
    return next(pair for pair in doc["attrs"]["dict"] if pair[0] == name)


def _truncate(path: str) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])


CORRUPTIONS = {
    "truncated-nd": ("nd", lambda doc, nd: _truncate(nd),
                     "does not match the nd_sha256 in mlp-0003.states.json"),
    "truncated-nd-checksum-fixed": (
        "nd", lambda doc, nd: (_truncate(nd), _rewrite_nd_checksum(doc, nd)),
        "not a readable NDArray file (fi->Read(data): Invalid NDArray file format)"),
    "truncated-json": ("json:1:", lambda doc, nd: _truncate(doc), "not valid JSON ("),
    "unknown-key": ("json", lambda doc, nd: _edit_doc(doc, lambda d: d.update(extra=1)),
                    "(top level): expected the keys ['attrs', 'current_device', 'format', "
                    "'lr_scheduler', 'nd_sha256', 'optimizer', 'states'], received ['attrs', "
                    "'current_device', 'extra', "),
    "index-out-of-range": (
        "json", lambda doc, nd: _edit_doc(doc, lambda d: d["states"][0].__setitem__(0, 99)),
        "states[0]: index 99 is not one of this network's 6 parameter slots"),
    "wrong-type": ("json", lambda doc, nd: _edit_doc(
        doc, lambda d: _attr(d, "num_update").__setitem__(1, "x")),
        'attrs.num_update: expected int like 0, received "x"'),
    "count-out-of-range": ("json", lambda doc, nd: _edit_doc(
        doc, lambda d: _attr(d, "_all_index_update_counts")[1]["dict"][0][1]["dict"]
        .append([42, 1])),
        "attrs._all_index_update_counts[0][42]: expected a parameter slot's update count"),
    "wrong-shape": ("json", lambda doc, nd: _rewrite_nd(
        doc, nd, dict(mx.nd.load(nd), **{"2/0": mx.nd.zeros((3,))})),
        "states[0] (2)[0]: expected shape (16, 30) float32 default, received (3,) float32 "
        "default"),
    "unreferenced-array": ("json", lambda doc, nd: _rewrite_nd(
        doc, nd, dict(mx.nd.load(nd), stray=mx.nd.zeros((1,)))),
        "states: the .nd file has arrays no state names: ['stray']"),
}


def _rewrite_nd_checksum(doc_path: str, nd_path: str) -> None:
    with open(nd_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    _edit_doc(doc_path, lambda d: d.update(nd_sha256=digest))


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_states_file_that_does_not_fit_is_one_located_line(run_folder, tmp_path, capsys,
                                                              case):
    folder, run_dir, doc, nd = _copy(run_folder, tmp_path)
    located, corrupt, want = CORRUPTIONS[case]
    corrupt(doc, nd)
    line = _resume_refused(folder, capsys)
    kind, _, position = located.partition(":")
    assert line.startswith(f"{doc if kind == 'json' else nd}:{position}"), line
    assert want in line, line
    assert line.endswith("build again without --resume"), line


# --- the audit: no loader in symbuilder/ can run code --------------------------------------
PICKLERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "shelve"}
# MXNet's pickle-based optimizer state (Updater.get_states/set_states, KVStore and Module
# save/load_optimizer_states, Module.load(..., load_optimizer_states=True)).
PICKLED_STATE = {"set_states", "get_states", "load_optimizer_states", "save_optimizer_states"}


def _findings(source: str, filename: str):
    """What in `source` could unpickle: `file:line: what` strings."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        line = getattr(node, "lineno", 0)
        where = f"{filename}:{line}"
        if isinstance(node, ast.Import):
            found += [(line, f"{where}: import {a.name}") for a in node.names
                      if a.name.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLERS:
            found.append((line, f"{where}: from {node.module} import"))
        elif isinstance(node, ast.Attribute) and node.attr in PICKLED_STATE:
            found.append((line, f"{where}: .{node.attr}"))
        elif isinstance(node, ast.keyword) and node.arg in PICKLED_STATE:
            found.append((line, f"{where}: {node.arg}="))
        elif isinstance(node, ast.Call) and _is_np_load(node.func) and not any(
                k.arg == "allow_pickle" and isinstance(k.value, ast.Constant)
                and k.value.value is False for k in node.keywords):
            found.append((node.lineno, f"{where}: np.load without allow_pickle=False"))
    return [text for _, text in sorted(found, key=lambda item: item[0])]


def _is_np_load(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "load"
            and isinstance(func.value, ast.Name) and func.value.id in ("np", "numpy"))


def test_the_audit_catches_what_it_looks_for():
    bad = ("import pickle\nfrom dill import loads\nimport numpy as np\nnp.load('x')\n"
           "np.load('x', allow_pickle=True)\nnp.load('x', allow_pickle=False)\n"
           "u.set_states(b)\nkv.load_optimizer_states(f)\n"
           "m.load('p', 1, load_optimizer_states=True)\n")
    assert _findings(bad, "bad.py") == [
        "bad.py:1: import pickle", "bad.py:2: from dill import",
        "bad.py:4: np.load without allow_pickle=False",
        "bad.py:5: np.load without allow_pickle=False", "bad.py:7: .set_states",
        "bad.py:8: .load_optimizer_states", "bad.py:9: load_optimizer_states="]


def test_no_loader_in_symbuilder_can_unpickle():
    package = os.path.join(helpers.ROOT, "symbuilder")
    found, files = [], 0
    for root, _, names in os.walk(package):
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(root, name)
            files += 1
            with open(path) as f:
                found += _findings(f.read(), os.path.relpath(path, helpers.ROOT))
    assert files > 20  # the walk saw the package
    assert found == []
