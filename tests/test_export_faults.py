"""Fault injection: an export killed (SIGKILL) at any moment leaves the previous export or the
new one, whole and verifiable; the staging folders a kill leaves behind are cleaned up (or the
previous export restored) by the next export to the same target.

The child process runs the real pipeline.export_model; the kill comes from inside it, at a
chosen step (deterministic), or from outside once its staging folder appears (timing).
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import mlp_spec, write_spec

from symbuilder.export import folder as exporting
from symbuilder.serving.audit import read_manifest, verify_export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "specs", "data", "breast_cancer.csv")

SPEC = mlp_spec("faulty", hidden=8, epochs=2, batch_size=64,
                export="formats: [checkpoint, onnx, triton], verify: {samples: 16}")

# Re-exports the first export's weights as epoch NEW_EPOCH through pipeline.export_model, and
# SIGKILLs itself at the step named by argv[5].
CHILD = r"""
import os, signal, sys
from types import SimpleNamespace
import mxnet as mx
from symbuilder import pipeline, proof
from symbuilder.export import checkpoint, folder as exporting, onnxfile, triton
from symbuilder.data import load_data
from symbuilder.graph import build_model
from symbuilder.spec.load import load_spec

spec_path, out_dir, prefix, epoch, point = sys.argv[1:6]
spec = load_spec(spec_path)
data = load_data(spec)
sym, args, auxs = mx.model.load_checkpoint(prefix, int(epoch))
result = SimpleNamespace(model=build_model(spec), symbol=sym, arg_params=args, aux_params=auxs,
                         epoch=NEW_EPOCH,
                         epochs_trained=NEW_EPOCH, stopped_early=False, history=[],
                         input_stats=None, final_metrics={"train": {}, "val": {}})

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def hook(module, name, when):
    original = getattr(module, name)
    def wrapped(*a, **k):
        if when == "before":
            die()
        out = original(*a, **k)
        die()
    setattr(module, name, wrapped)

in_publish = []
if point == "staged":
    hook(checkpoint, "save_checkpoint", "before")
elif point == "checkpoint":
    hook(checkpoint, "save_checkpoint", "after")
elif point == "export_onnx":
    hook(onnxfile, point, "after")
elif point == "write_manifest":
    hook(exporting, point, "after")
elif point == "parity_or_fail":
    hook(proof, point, "after")
elif point == "write_triton":
    hook(triton, point, "after")
elif point == "exchanged":
    hook(exporting, "_exchange", "after")
elif point in ("renamed-aside", "renamed-both"):
    exporting._exchange = lambda a, b: False  # the two-rename fallback
    publish, rename = exporting.publish, os.rename
    def counting_rename(a, b):
        rename(a, b)
        if in_publish:
            in_publish.append(b)
            if len(in_publish) == (2 if point == "renamed-aside" else 3):
                die()
    def flagged_publish(staging, target):
        in_publish.append("start")
        publish(staging, target)
    os.rename = counting_rename
    exporting.publish = flagged_publish
elif point == "slow":
    original = proof.parity_or_fail
    def slow(*a, **k):
        import time
        time.sleep(30)
        return original(*a, **k)
    proof.parity_or_fail = slow
pipeline.export_model(spec, result, data, out_dir)
print("published")
"""
NEW_EPOCH = 7
# (where the kill comes, which export must be in place afterwards)
POINTS = [("staged", "old"), ("checkpoint", "old"), ("export_onnx", "old"),
          ("parity_or_fail", "old"), ("write_triton", "old"), ("write_manifest", "old"),
          ("exchanged", "new"), ("renamed-aside", "old"), ("renamed-both", "new")]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_export(tmp_path_factory):
    from symbuilder.pipeline import build
    from symbuilder.spec.load import load_spec
    folder = tmp_path_factory.mktemp("faults")
    write_spec(folder, SPEC)
    out = str(folder / "exports" / "faulty")
    result = build(load_spec(str(folder / "spec.yaml")), out_dir=out)
    assert result.result.epoch != NEW_EPOCH
    return folder, out, result.result.epoch


def child(folder, out, epoch, point):
    script = folder / "child.py"
    script.write_text(CHILD.replace("NEW_EPOCH", str(NEW_EPOCH)))
    env = dict(os.environ, MXNET_SUBGRAPH_VERBOSE="0", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), str(folder / "spec.yaml"), out,
                             os.path.join(out, "faulty"), str(epoch), point],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def staging_leftovers(out):
    parent, base = os.path.split(out)
    return sorted(n for n in os.listdir(parent) if n.startswith(f".{base}.tmp-"))


def test_a_kill_at_every_step_leaves_a_whole_verifiable_export(first_export):
    folder, out, old_epoch = first_export
    pristine = str(folder / "pristine")
    shutil.copytree(out, pristine)
    for point, expected in POINTS:
        # Each round starts from the first export (a kill after the swap published the new one).
        shutil.rmtree(out)
        shutil.copytree(pristine, out)
        proc = child(folder, out, old_epoch, point)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, (point, stderr[-2000:])
        if point == "renamed-aside":
            # Killed between the two renames: the previous export sits in '<staging>.old' and
            # the target is missing until the next export to it puts it back.
            assert not os.path.exists(out)
            assert [n for n in staging_leftovers(out) if n.endswith(".old")]
            exporting.clean_stale_staging(out)
        report = verify_export(out, random_samples=8)
        assert report["passed"], (point, report["problems"])
        epoch = read_manifest(out)["epoch"]
        assert epoch == (old_epoch if expected == "old" else NEW_EPOCH), point
        # What a later export does first: the killed run's staging folders go away.
        exporting.clean_stale_staging(out)
        assert staging_leftovers(out) == [], point
    shutil.rmtree(out)
    shutil.copytree(pristine, out)


def test_a_kill_from_outside_during_export_then_a_clean_export(first_export):
    folder, out, old_epoch = first_export
    proc = child(folder, out, old_epoch, "slow")  # sleeps in the parity check
    deadline = time.time() + 60
    while not staging_leftovers(out) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert staging_leftovers(out), "the export never started staging"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert staging_leftovers(out)  # SIGKILL leaves them: nothing can clean up in the process
    report = verify_export(out, random_samples=8)
    assert report["passed"], report["problems"]
    before = read_manifest(out)["epoch"]
    # The next export to the same target removes the dead run's staging folder and publishes.
    proc = child(folder, out, before, "none")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and stdout.strip() == "published", stderr[-2000:]
    assert staging_leftovers(out) == []
    assert read_manifest(out)["epoch"] == NEW_EPOCH
    assert verify_export(out, random_samples=8)["passed"]


def test_clean_stale_staging_spares_live_exports(tmp_path):
    target = str(tmp_path / "model")
    live = tmp_path / f".model.tmp-{os.getpid()}-abc"
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    dead = tmp_path / f".model.tmp-{int(done.stdout)}-xyz"
    other = tmp_path / ".othermodel.tmp-1-xyz"
    for p in (live, dead, other):
        p.mkdir()
        (p / "file").write_text("x")
    assert exporting.clean_stale_staging(target) == [str(dead)]
    assert live.exists() and other.exists() and not dead.exists()
